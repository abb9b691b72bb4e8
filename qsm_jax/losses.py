"""QSM losses as pure functions ``f(params, ...) -> (loss, aux)``.

Equations refer to docs/algorithm.md ("One update"), which writes out the reference code of
Psenka et al., "Learning a Diffusion Model Policy from Rewards via Q-Score Matching" (ICML 2024).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from qsm_jax.diffusion import q_sample
from qsm_jax.types import Batch

Params = Any
ApplyFn = Callable[..., jax.Array]


def td_target(rewards: jax.Array, terminals: jax.Array, next_q: jax.Array, gamma: float) -> jax.Array:
    """Clipped double-Q TD target y = r + gamma (1 - terminal) min_i Qbar_i(s', a').

    Args:
      rewards: (B,).
      terminals: 1.0 on true termination, (B,). Truncated transitions carry 0.0 and bootstrap.
      next_q: target-critic values at (s', a'), (N, B).
      gamma: discount.

    Returns:
      y, (B,).
    """
    return rewards + gamma * (1.0 - terminals) * next_q.min(axis=0)


def critic_loss(
    critic_params: Params,
    target_critic_params: Params,
    critic_apply_fn: ApplyFn,
    batch: Batch,
    next_actions: jax.Array,
    gamma: float,
    next_bonus: jax.Array | float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Critic TD loss L_Q = sum_i mean_B (Q_i(s, a) - stop_grad(y))^2.

    y = r + gamma (1 - terminal) (min_i Qbar_i(s', a') + next_bonus); QSM and TD3 use no bonus,
    SAC the entropy term -temperature * log pi(a' | s').

    Args:
      critic_params: online critic ensemble parameters (differentiated).
      target_critic_params: target critic parameters.
      critic_apply_fn: ``apply({'params': p}, obs (B, S), act (B, A)) -> (N, B)``.
      batch: transitions, B of them.
      next_actions: a' for s', already noised and clipped, (B, A).
      gamma: discount.
      next_bonus: added to the clipped next value, scalar or (B,).

    Returns:
      (loss, aux) with aux = {"critic_loss", "q_mean", "target_q_mean"}.
    """
    chex.assert_rank([batch.observations, batch.actions, batch.rewards, batch.terminals], [2, 2, 1, 1])
    chex.assert_equal_shape([batch.actions, next_actions])
    next_q = critic_apply_fn({"params": target_critic_params}, batch.next_observations, next_actions)
    target = jax.lax.stop_gradient(td_target(batch.rewards, batch.terminals, next_q + next_bonus, gamma))
    q = critic_apply_fn({"params": critic_params}, batch.observations, batch.actions)
    loss = ((q - target[None]) ** 2).mean(axis=1).sum()
    return loss, {"critic_loss": loss, "q_mean": q.mean(), "target_q_mean": target.mean()}


class GradRMS(NamedTuple):
    """Running RMS of the critic's action-gradient, for ``normalize_grad``.

    Attributes:
      mean_sq: exponential moving average of mean(g^2) before this update, float32 scalar.
      count: number of updates including this one (for the bias correction), int32 scalar.
      decay: decay of the average.
    """

    mean_sq: jax.Array
    count: jax.Array
    decay: float


def update_grad_rms(grad_rms: GradRMS, grad_q: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One step of the running RMS of g: ``(new mean_sq, rms)``.

    m_t   = decay m_{t-1} + (1 - decay) mean_{B,A}(g^2)
    rms_t = sqrt(m_t / (1 - decay^t))           (bias-corrected as in Adam; m_0 = 0)
    """
    mean_sq = grad_rms.decay * grad_rms.mean_sq + (1.0 - grad_rms.decay) * jnp.mean(grad_q**2)
    correction = 1.0 - jnp.asarray(grad_rms.decay, jnp.float32) ** grad_rms.count.astype(jnp.float32)
    return mean_sq, jnp.sqrt(mean_sq / correction)


def score_target(
    kind: str, grad_q: jax.Array, noise: jax.Array, alpha_bar: jax.Array, alpha: float, lam: float
) -> jax.Array:
    """What the denoiser eps_theta(s, a_k, k) is regressed onto.

    With the DDPM relation grad log p_k(a_k) = -eps / sqrt(1 - abar_k), a target score S at level
    k corresponds to the noise prediction eps = -sqrt(1 - abar_k) S. With g = grad_a Q(s, a_k):

      "qsm"    (reference):  -alpha g
      "tilted":              -sqrt(1 - abar_k) g / lam        (S = g / lam: the score of exp(Q / lam))
      "mirror":        eps - sqrt(1 - abar_k) g / lam         (S = -eps / sqrt(1 - abar_k) + g / lam)

    "mirror" is the ordinary denoising target (the score of the replay distribution at a_k, whose
    eps term pulls samples back towards the data) plus the tilt: its fixed point is the replay
    distribution times exp(Q / lam), a KL-regularised (mirror-descent) policy-improvement step.

    Args:
      kind: "qsm", "tilted" or "mirror".
      grad_q: g, (B, A) (already normalised if ``normalize_grad``).
      noise: eps that made a_k from the replay action, (B, A).
      alpha_bar: abar_k per sample, (B,).
      alpha: scale of the "qsm" target.
      lam: temperature of the tilt.

    Returns:
      The target, (B, A).
    """
    if kind == "qsm":
        return -alpha * grad_q
    sigma = jnp.sqrt(1.0 - alpha_bar)[:, None]
    if kind == "tilted":
        return -sigma * grad_q / lam
    if kind == "mirror":
        return noise - sigma * grad_q / lam
    raise ValueError(f"score_target must be 'qsm', 'tilted' or 'mirror', got {kind!r}")


def qsm_actor_loss(
    actor_params: Params,
    actor_apply_fn: ApplyFn,
    q_fn: Callable[[jax.Array, jax.Array], jax.Array],
    observations: jax.Array,
    actions: jax.Array,
    levels: jax.Array,
    noise: jax.Array,
    alpha_bars: jax.Array,
    alpha: float,
    target: str = "qsm",
    lam: float = 1.0,
    grad_rms: GradRMS | None = None,
    normalize_grad: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Q-score matching loss: regress the denoiser onto a score target built from grad_a Q.

      a_k  = sqrt(alphabar_k) a + sqrt(1 - alphabar_k) eps
      g    = stop_grad(grad_a Q(s, a_k))          (Q = mean of the online critics)
      g    = g / rms(g)                           (only with ``normalize_grad``; see ``update_grad_rms``)
      L_pi = mean_B mean_A (eps_theta(s, a_k, k) - target)^2,  target = ``score_target(...)``

    With the defaults the target is the reference's -alpha g. The minus sign makes the reverse
    step, which subtracts eps_theta, move actions uphill on Q. As in the reference code, g is taken
    at the noised replay action a_k (the paper's Algorithm 1 is reported to take it at the denoised
    action).

    Args:
      actor_params: denoiser parameters (differentiated).
      actor_apply_fn: ``apply({'params': p}, obs (B, S), a_k (B, A), k (B, 1) float) -> (B, A)``.
      q_fn: ``q_fn(obs (B, S), act (B, A)) -> (B,)``, the critic whose action-gradient is matched.
      observations: s, (B, S).
      actions: replay actions a, (B, A).
      levels: diffusion levels k ~ Uniform{0..T-1}, int (B,).
      noise: eps ~ N(0, I), (B, A).
      alpha_bars: schedule, (T,).
      alpha: score scale (M_q) of the "qsm" target.
      target: "qsm" (reference), "tilted" or "mirror" (``score_target``).
      lam: temperature of the "tilted" and "mirror" targets.
      grad_rms: running RMS state of g; its update is returned in aux as ``grad_sq``.
      normalize_grad: divide g by the updated running RMS (needs ``grad_rms``).

    Returns:
      (loss, aux) with aux = {"actor_loss", "grad_q_abs_mean" (of the raw g)} and, with
      ``grad_rms``, "grad_sq" (the new running mean of g^2).
    """
    chex.assert_rank([observations, actions, levels], [2, 2, 1])
    chex.assert_equal_shape([actions, noise])
    noised = q_sample(actions, levels, noise, alpha_bars)
    grad_q = jax.lax.stop_gradient(jax.grad(lambda a: q_fn(observations, a).sum())(noised))
    aux = {"grad_q_abs_mean": jnp.abs(grad_q).mean()}
    g = grad_q
    if grad_rms is not None:
        grad_sq, rms = update_grad_rms(grad_rms, grad_q)
        aux["grad_sq"] = grad_sq
        if normalize_grad:
            g = grad_q / (rms + 1e-8)
    elif normalize_grad:
        raise ValueError("normalize_grad needs grad_rms")
    eps_target = score_target(target, g, noise, alpha_bars[levels], alpha, lam)
    pred = actor_apply_fn({"params": actor_params}, observations, noised, levels[:, None].astype(jnp.float32))
    loss = ((pred - eps_target) ** 2).mean()
    return loss, {"actor_loss": loss, **aux}

"""QSM losses as pure functions ``f(params, ...) -> (loss, aux)``.

Equations refer to ALGORITHM.md ("One update"), which writes out the reference code of
Psenka et al., "Learning a Diffusion Model Policy from Rewards via Q-Score Matching" (ICML 2024).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Q-score matching loss: regress the denoiser onto -alpha * grad_a Q at the noised action.

      a_k  = sqrt(alphabar_k) a + sqrt(1 - alphabar_k) eps
      g    = stop_grad(grad_a Q(s, a_k))          (Q = mean of the online critics)
      L_pi = mean_B mean_A (eps_theta(s, a_k, k) - (-alpha g))^2

    The minus sign makes the reverse step, which subtracts eps_theta, move actions uphill on Q.
    As in the reference code, g is taken at the noised replay action a_k (the paper's Algorithm 1
    is reported to take it at the denoised action).

    Args:
      actor_params: denoiser parameters (differentiated).
      actor_apply_fn: ``apply({'params': p}, obs (B, S), a_k (B, A), k (B, 1) float) -> (B, A)``.
      q_fn: ``q_fn(obs (B, S), act (B, A)) -> (B,)``, the critic whose action-gradient is matched.
      observations: s, (B, S).
      actions: replay actions a, (B, A).
      levels: diffusion levels k ~ Uniform{0..T-1}, int (B,).
      noise: eps ~ N(0, I), (B, A).
      alpha_bars: schedule, (T,).
      alpha: score scale (M_q).

    Returns:
      (loss, aux) with aux = {"actor_loss", "grad_q_abs_mean"}.
    """
    chex.assert_rank([observations, actions, levels], [2, 2, 1])
    chex.assert_equal_shape([actions, noise])
    noised = q_sample(actions, levels, noise, alpha_bars)
    grad_q = jax.lax.stop_gradient(jax.grad(lambda a: q_fn(observations, a).sum())(noised))
    target = -alpha * grad_q
    pred = actor_apply_fn({"params": actor_params}, observations, noised, levels[:, None].astype(jnp.float32))
    loss = ((pred - target) ** 2).mean()
    return loss, {"actor_loss": loss, "grad_q_abs_mean": jnp.abs(grad_q).mean()}

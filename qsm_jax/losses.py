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
    kind: str,
    grad_q: jax.Array,
    noise: jax.Array,
    alpha_bar: jax.Array,
    alpha: float,
    lam: float,
    keep: float | jax.Array = 1.0,
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
    With ``keep`` = kappa < 1 its eps term becomes kappa eps: the anchor's score times kappa, the
    anchor's density raised to the power kappa (flattened), as in the entropy-regularised step
    pi^(lam / (lam + tau)) exp(Q / (lam + tau)) (kappa = lam / (lam + tau), lam -> lam + tau).

    Args:
      kind: "qsm", "tilted" or "mirror".
      grad_q: g, (B, A) (already normalised if ``normalize_grad``).
      noise: eps that made a_k from the replay action, (B, A).
      alpha_bar: abar_k per sample, (B,).
      alpha: scale of the "qsm" target.
      lam: temperature of the tilt.
      keep: kappa of "mirror" (1: the plain mirror step).

    Returns:
      The target, (B, A).
    """
    if kind == "qsm":
        return -alpha * grad_q
    sigma = jnp.sqrt(1.0 - alpha_bar)[:, None]
    if kind == "tilted":
        return -sigma * grad_q / lam
    if kind == "mirror":
        return keep * noise - sigma * grad_q / lam  # keep = 1 multiplies exactly: the plain target bit for bit
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
    keep: float | jax.Array = 1.0,
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
      keep: kappa of the "mirror" target (``score_target``).

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
    eps_target = score_target(target, g, noise, alpha_bars[levels], alpha, lam, keep)
    pred = actor_apply_fn({"params": actor_params}, observations, noised, levels[:, None].astype(jnp.float32))
    loss = ((pred - eps_target) ** 2).mean()
    return loss, {"actor_loss": loss, **aux}


def log_prob_estimate(
    eps_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    observations: jax.Array,
    actions: jax.Array,
    alpha_bars: jax.Array,
    key: jax.Array,
    num_draws: int,
    min_log_prob: float | None = None,
) -> jax.Array:
    """Estimate of log pi(a | s) for the diffusion policy whose denoiser is ``eps_fn``.

    Derivation (docs/algorithm.md, "Maximum-entropy QSM"). Write a_g = sqrt(g) a + eps for the
    action seen at signal-to-noise ratio g, and mmse(a, g) = E_eps ||a - E[a | a_g]||^2. The I-MMSE
    identity of Guo, Shamai and Verdu, used for diffusion models by Kong et al. (ICLR 2023), gives
    the exact log-density

      log p(a) = -A/2 log(2 pi e) + 1/2 int_0^inf (A / (1 + g) - mmse(a, g)) dg.

    At diffusion level k, a_k = sqrt(abar_k) a + sqrt(1 - abar_k) eps has SNR g_k = abar_k / (1 - abar_k)
    and a - E[a | a_k] = (eps_hat - eps) / sqrt(g_k), with eps_hat the ideal denoiser. In log-SNR
    l = log g the integrand becomes f(l) = A abar - E_eps ||eps_hat - eps||^2, so

      log p(a) = -A/2 log(2 pi e) + 1/2 int f(l) dl,

    estimated here from the policy's own T levels, ``num_draws`` noise draws each (the learned
    denoiser stands in for eps_hat):
      * between the levels: the trapezoid rule in l;
      * below the noisiest level: f decays as e^l, so the tail adds f(l_min);
      * above the cleanest level (the part that sets how sharp the policy is; with the default
        T = 5 it starts at SNR 4): the density is closed by a Gaussian of per-dimension variance v
        fitted to the measured mmse there, mmse = A v / (1 + g v), whose tail integral is exact:
        A (-log v - softplus(l_max) + softplus(l_max + log v)).
    Exact for a Gaussian policy up to the quadrature and the Monte-Carlo noise; biased upward
    (log pi too high) by the log of a noisy mmse with few draws; blind to the point masses that
    clipping puts at the walls of [-1, 1]; and it reports the density the denoiser implies, which
    is the chain's only when the denoiser is a true denoiser (docs/algorithm.md says where this fails).
    Cost: B * T * num_draws denoiser evaluations.

    Args:
      eps_fn: denoiser ``eps_fn(obs (M, S), a_k (M, A), level (M, 1) float) -> (M, A)``.
      observations: s, (B, S).
      actions: a, (B, A).
      alpha_bars: abar_k of levels k = 0..T-1 (decreasing), (T,).
      key: PRNG key of the noise draws.
      num_draws: noise draws per level.
      min_log_prob: floor of the estimate. The policy lives on [-1, 1]^A, where no density is
        lower on average than the uniform one, -A log 2; the learner passes that floor, which caps
        the entropy of an untrained denoiser (whose implied density is far wider than the box).

    Returns:
      The estimate of log pi(a | s), (B,).
    """
    chex.assert_rank([observations, actions, alpha_bars], [2, 2, 1])
    (batch, action_dim), levels = actions.shape, alpha_bars.shape[0]
    noise = jax.random.normal(key, (num_draws, levels, batch, action_dim))
    abar = alpha_bars[None, :, None, None]
    noised = jnp.sqrt(abar) * actions + jnp.sqrt(1.0 - abar) * noise
    obs = jnp.broadcast_to(observations, (num_draws, levels, *observations.shape))
    level = jnp.broadcast_to(jnp.arange(levels, dtype=jnp.float32)[None, :, None, None], (num_draws, levels, batch, 1))
    pred = eps_fn(obs.reshape(-1, obs.shape[-1]), noised.reshape(-1, action_dim), level.reshape(-1, 1))
    err = ((pred.reshape(noise.shape) - noise) ** 2).sum(-1).mean(0)  # E ||eps_hat - eps||^2, (T, B)
    log_snr = jnp.log(alpha_bars) - jnp.log1p(-alpha_bars)  # (T,), decreasing
    f = action_dim * alpha_bars[:, None] - err
    between = (0.5 * (f[:-1] + f[1:]) * (log_snr[:-1] - log_snr[1:])[:, None]).sum(0)
    # Gaussian closure above the cleanest level: v from mmse = err / g = A v / (1 + g v).
    snr = jnp.exp(log_snr[0])
    err0 = jnp.clip(err[0], 1e-6 * action_dim, (1.0 - 1e-6) * action_dim)
    log_v = jnp.log(err0 / snr) - jnp.log(action_dim - err0)
    above = action_dim * (-log_v - jax.nn.softplus(log_snr[0]) + jax.nn.softplus(log_snr[0] + log_v))
    below = f[-1]
    log_prob = -0.5 * action_dim * jnp.log(2 * jnp.pi * jnp.e) + 0.5 * (between + above + below)
    return log_prob if min_log_prob is None else jnp.maximum(log_prob, min_log_prob)


def _unbiased_log_var(var: jax.Array, n: jax.Array | int, min_var: float) -> jax.Array:
    """log of an unbiased variance of n Gaussian draws (floored at ``min_var``), less its bias:
    (n - 1) s^2 / var ~ chi^2_{n-1}, so E[log s^2] = log var + digamma((n - 1) / 2) - log((n - 1) / 2)."""
    half_dof = 0.5 * (n - 1)
    return jnp.log(jnp.maximum(var, min_var)) - (jax.scipy.special.digamma(half_dof) - jnp.log(half_dof))


def sample_entropy(samples: jax.Array, max_entropy: float | None = None, min_var: float = 1e-6) -> jax.Array:
    """Entropy of the policy at each state from N of its samples, with an atom at each wall.

    The chain clips to [-1, 1], so in each dimension d a sample lies exactly on a wall (mass p_-,
    p_+) or inside (mass q = 1 - p_- - p_+). Read at a resolution delta (an atom counts as a
    uniform piece of width delta), that mixed distribution has the entropy

      H_d = -p_- log p_- - p_+ log p_+ - q log q + (p_- + p_+) log delta + q h_d,

    h_d = min(1/2 log(2 pi e var_d), log 2) the Gaussian fit of the inside samples (capped at the
    uniform interval's), and H(s) = sum_d H_d. delta = sqrt(2 pi e min_var) makes an atom as sharp
    as the variance floor: a dimension with every sample on one wall reads 1/2 log(2 pi e min_var)
    (-5.5 nats at 1e-6), the value a Gaussian fit of zero spread reads. With no sample on a wall
    H(s) is the diagonal Gaussian fit, each dimension capped at log 2.

    Bias: the sum over dimensions and the Gaussian fit are upper bounds (the independent Gaussian
    has the largest entropy for given variances: two sharp modes inside the box read as one wide
    one); the plug-in masses p log p are biased low with few samples. log var is corrected for its
    own bias: with s^2 the unbiased variance of n Gaussian draws, (n - 1) s^2 / var ~ chi^2_{n-1}, so
    E[log s^2] = log var + digamma((n - 1) / 2) - log((n - 1) / 2), which is subtracted. A dimension
    with fewer than 2 inside samples takes h_d = log 2.
    Cost: the N chain samples (N * T denoiser evaluations per state, as ``log_prob_estimate`` with
    N draws). Unlike ``log_prob_estimate`` it sees the mass clipping puts at the walls.

    Args:
      samples: N >= 2 actions in [-1, 1] per state, (N, B, A).
      max_entropy: cap of H(s); the learner passes A log 2, the uniform box's.
      min_var: floor of each inside variance; sets the atoms' resolution delta.

    Returns:
      H(s), (B,).
    """
    chex.assert_rank(samples, 3)
    n = samples.shape[0]
    if n < 2:
        raise ValueError(f"sample_entropy needs at least 2 samples per state, got {n}")
    low, high = samples <= -1.0, samples >= 1.0
    inside = ~(low | high)
    p_low, p_high, q = low.mean(0), high.mean(0), inside.mean(0)  # (B, A)
    n_in = inside.sum(0)
    mean = (samples * inside).sum(0) / jnp.maximum(n_in, 1)
    var = (((samples - mean) * inside) ** 2).sum(0) / jnp.maximum(n_in - 1, 1)
    log_var = _unbiased_log_var(var, jnp.maximum(n_in, 2), min_var)
    log_two = jnp.log(2.0)
    h_inside = jnp.where(n_in >= 2, jnp.minimum(0.5 * (jnp.log(2 * jnp.pi * jnp.e) + log_var), log_two), log_two)
    log_delta = 0.5 * jnp.log(2 * jnp.pi * jnp.e * min_var)
    xlogx = jax.scipy.special.xlogy
    per_dim = -(xlogx(p_low, p_low) + xlogx(p_high, p_high) + xlogx(q, q)) + (p_low + p_high) * log_delta + q * h_inside
    entropy = per_dim.sum(-1)
    return entropy if max_entropy is None else jnp.minimum(entropy, max_entropy)


def tanh_log_jacobian(latent: jax.Array) -> jax.Array:
    """J(u) = sum_d log(1 - tanh(u_d)^2), the log-density change of a = tanh(u), (..., A) -> (...).

    Written as 2 (log 2 - u - softplus(-2 u)) per dimension, exact and finite for any u (the plain
    form is log 0 once tanh rounds to 1); its gradient is -2 tanh(u).
    """
    return (2.0 * (jnp.log(2.0) - latent - jax.nn.softplus(-2.0 * latent))).sum(-1)


def latent_entropy(latents: jax.Array, min_var: float = 1e-6) -> jax.Array:
    """Entropy in action space of a tanh-squashed policy at each state, from N of its latent samples.

      H(a | s) = H(u | s) + E[J(u)],   J = ``tanh_log_jacobian``

    with H(u | s) the diagonal Gaussian fit of the samples, sum_d 1/2 log(2 pi e var_d) (log var
    corrected for its bias as in ``sample_entropy``; an upper bound for a non-Gaussian latent), and
    E[J] their mean. Unlike ``sample_entropy`` there are no atoms: tanh never reaches the walls, so
    piling mass near a wall lowers this estimate smoothly (J -> -inf there).

    Args:
      latents: N >= 2 latent samples u per state, (N, B, A).
      min_var: floor of each variance.

    Returns:
      H(a | s), (B,).
    """
    chex.assert_rank(latents, 3)
    n = latents.shape[0]
    if n < 2:
        raise ValueError(f"latent_entropy needs at least 2 samples per state, got {n}")
    log_var = _unbiased_log_var(latents.var(0, ddof=1), n, min_var)
    gaussian = 0.5 * (jnp.log(2 * jnp.pi * jnp.e) + log_var).sum(-1)
    return gaussian + tanh_log_jacobian(latents).mean(0)


def entropy_with_noise(chain_entropy: jax.Array, noise_std: jax.Array, action_dim: int) -> jax.Array:
    """Entropy of chain sample + N(0, noise_std^2 I), by the entropy-power inequality as an equality.

      H = A/2 log(exp(2 H_chain / A) + 2 pi e noise_std^2)

    Exact when the chain's sample is Gaussian, never below either part alone; with a deterministic
    chain (H_chain -> -inf) it is the closed-form entropy of the added Gaussian.
    """
    gaussian = 2.0 * jnp.log(noise_std) + jnp.log(2 * jnp.pi * jnp.e)
    return 0.5 * action_dim * jnp.logaddexp(2.0 * chain_entropy / action_dim, gaussian)


def dual_loss(value: jax.Array, entropy: jax.Array, target_entropy: float) -> jax.Array:
    """SAC's rule for a coefficient that holds the entropy at a target: value * (H - H_target).

    ``value`` (a temperature, or a noise scale) is the differentiated quantity, H is not: descending
    this loss lowers ``value`` while the entropy is above target and raises it while below.
    """
    return value * jax.lax.stop_gradient(entropy - target_entropy)


def kl_dual_loss(lam: jax.Array, q_samples: jax.Array, kl_bound: float) -> jax.Array:
    """MPO's E-step dual for the temperature of a tilt exp(Q / lam) over N samples per state.

    g(lam) = lam eps + lam mean_s log mean_j exp(Q_sj / lam) is convex in lam and its derivative is
    eps - mean_s KL(w_s || uniform), with w_sj proportional to exp(Q_sj / lam) (``tilt_kl``): descending
    it raises lam while the tilt moves the samples' weights further than eps, and lowers it otherwise.
    Only ``lam`` is differentiated.

    Args:
      lam: the temperature, a positive scalar.
      q_samples: Q of N policy samples at each of M states, (M, N).
      kl_bound: eps.

    Returns:
      The scalar dual.
    """
    q = jax.lax.stop_gradient(q_samples)
    log_mean_exp = jax.nn.logsumexp(q / lam, axis=-1) - jnp.log(q.shape[-1])
    return lam * kl_bound + lam * log_mean_exp.mean()


def tilt_kl(q_samples: jax.Array, lam: jax.Array) -> jax.Array:
    """Mean over states of KL(w_s || uniform), w_s = softmax(Q_s / lam) over the N samples; (M, N) -> ()."""
    logits = q_samples / lam
    log_w = jax.nn.log_softmax(logits, axis=-1)
    return (jnp.exp(log_w) * (log_w + jnp.log(q_samples.shape[-1]))).sum(-1).mean()

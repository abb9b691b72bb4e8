"""Diffusion over actions as pure functions: noise schedules, forward noising, the reverse DDPM chain.

Levels are indexed k in {0, ..., T-1}, k = 0 the least noisy (docs/algorithm.md, "Noise schedule").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Schedule(NamedTuple):
    """Noise schedule constants, each of shape (T,) float32."""

    betas: jax.Array
    alphas: jax.Array
    alpha_bars: jax.Array


def vp_betas(num_steps: int, b_min: float = 0.1, b_max: float = 10.0) -> np.ndarray:
    """Variance-preserving schedule of the reference code.

    beta_k = 1 - exp(-b_min / T - 0.5 (b_max - b_min) (2 (k + 1) - 1) / T^2), k = 0..T-1.
    """
    t = np.arange(1, num_steps + 1, dtype=np.float64)
    return 1.0 - np.exp(-b_min / num_steps - 0.5 * (b_max - b_min) * (2 * t - 1) / num_steps**2)


def linear_betas(num_steps: int, start: float = 1e-4, end: float = 2e-2) -> np.ndarray:
    """Linear schedule of DDPM (Ho et al., 2020), from ``start`` to ``end``."""
    return np.linspace(start, end, num_steps, dtype=np.float64)


def cosine_betas(num_steps: int, s: float = 0.008) -> np.ndarray:
    """Cosine schedule (Nichol & Dhariwal, 2021), betas clipped to 0.999."""
    t = np.linspace(0.0, 1.0, num_steps + 1, dtype=np.float64)
    alpha_bars = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2
    alpha_bars = alpha_bars / alpha_bars[0]
    return np.clip(1.0 - alpha_bars[1:] / alpha_bars[:-1], 0.0, 0.999)


_BETAS = {"vp": vp_betas, "linear": linear_betas, "cosine": cosine_betas}


def make_schedule(name: str, num_steps: int) -> Schedule:
    """Builds the schedule ``name`` ("vp", "linear" or "cosine") with ``num_steps`` levels."""
    if name not in _BETAS:
        raise ValueError(f"unknown beta schedule {name!r}; choose one of {sorted(_BETAS)}")
    betas = _BETAS[name](num_steps)
    alphas = 1.0 - betas
    return Schedule(
        betas=jnp.asarray(betas, jnp.float32),
        alphas=jnp.asarray(alphas, jnp.float32),
        alpha_bars=jnp.asarray(np.cumprod(alphas), jnp.float32),
    )


def q_sample(actions: jax.Array, levels: jax.Array, noise: jax.Array, alpha_bars: jax.Array) -> jax.Array:
    """Forward noising: a_k = sqrt(alphabar_k) a + sqrt(1 - alphabar_k) eps (not clipped).

    Args:
      actions: clean actions, (B, A).
      levels: integer diffusion levels k, (B,).
      noise: standard normal eps, (B, A).
      alpha_bars: cumulative products of the schedule, (T,).

    Returns:
      Noised actions a_k, (B, A).
    """
    alpha_bar = alpha_bars[levels][:, None]
    return jnp.sqrt(alpha_bar) * actions + jnp.sqrt(1.0 - alpha_bar) * noise


EpsFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def ddpm_sample(
    eps_fn: EpsFn,
    observations: jax.Array,
    key: jax.Array,
    schedule: Schedule,
    action_dim: int,
    temperature: float = 1.0,
    clip: bool = True,
    latent: bool = False,
) -> jax.Array:
    """Reverse DDPM chain with ``jax.lax.scan``, batched over observations.

    x_{T} ~ N(0, I); for k = T-1 .. 0:
      x <- (x - beta_k / sqrt(1 - alphabar_k) * eps(s, x, k)) / sqrt(alpha_k)
      x <- x + sqrt(beta_k) * temperature * z   (z ~ N(0, I); skipped at k = 0)
      x <- clip(x, -1, 1)                        (if ``clip``)
    x_0 <- clip(x_0, -1, 1)                      (always, as the reference does)

    Args:
      eps_fn: denoiser ``eps_fn(observations (B, S), x (B, A), level (1, 1) float) -> (B, A)``; the
        level is shared by the whole batch.
      observations: (B, S).
      key: PRNG key.
      schedule: noise schedule with T levels.
      action_dim: A.
      temperature: scale of the injected noise.
      clip: clip to [-1, 1] after every step (the final output is clipped either way).
      latent: return x_0 as the chain leaves it, with no clipping at all (the latent of a
        tanh-squashed chain; ``clip`` must then be False).

    Returns:
      Actions x_0 in [-1, 1], (B, A); with ``latent``, unbounded x_0.
    """
    if latent and clip:
        raise ValueError("a latent chain is not clipped: pass clip=False with latent=True")
    batch = observations.shape[0]
    num_steps = schedule.betas.shape[0]
    init_key, key = jax.random.split(key)
    x = jax.random.normal(init_key, (batch, action_dim))
    noise = jax.random.normal(key, (num_steps, batch, action_dim))

    def step(x, inputs):
        k, z = inputs
        eps = eps_fn(observations, x, jnp.full((1, 1), k, jnp.float32))
        beta, alpha, alpha_bar = schedule.betas[k], schedule.alphas[k], schedule.alpha_bars[k]
        x = (x - beta / jnp.sqrt(1.0 - alpha_bar) * eps) / jnp.sqrt(alpha)
        x = x + (k > 0) * jnp.sqrt(beta) * temperature * z
        if clip:
            x = jnp.clip(x, -1.0, 1.0)
        return x, None

    levels = jnp.arange(num_steps - 1, -1, -1)
    # Unrolled (T is small and static): XLA fuses across steps and drops the loop overhead.
    x, _ = jax.lax.scan(step, x, (levels, noise), unroll=True)
    return x if clip or latent else jnp.clip(x, -1.0, 1.0)


def sample_chain(
    actor: Any,
    config: Any,
    observations: jax.Array,
    key: jax.Array,
    action_dim: int,
    temperature: float | None = None,
    latent: bool = False,
) -> jax.Array:
    """The reverse chain of a diffusion policy (QSM's, Diffusion-QL's): ``ddpm_sample`` with the
    denoiser ``actor`` and the schedule and sampler settings of ``config``. With ``squash="tanh"``
    (QSM's option) the chain runs unclipped and its output u is squashed, a = tanh(u).

    Args:
      actor: the denoiser's ``TrainState`` (``apply_fn``, ``params``): ``apply({'params': p}, obs (B, S),
        x (B, A), level (1, 1)) -> (B, A)``.
      config: a ``DiffusionPolicyConfig`` (``beta_schedule``, ``diffusion_steps``, ``temperature``,
        ``clip_sampler``).
      observations: (B, S).
      key: PRNG key.
      action_dim: A.
      temperature: overrides ``config.temperature`` (0 = the noise-free chain).
      latent: with ``squash="tanh"``, return the latent u instead of tanh(u).

    Returns:
      Actions in [-1, 1], (B, A) (with ``latent``: the unbounded latent).
    """
    tanh = getattr(config, "squash", "clip") == "tanh"
    if latent and not tanh:
        raise ValueError("only a tanh-squashed chain (squash='tanh') has a latent")
    x = ddpm_sample(
        lambda o, x, k: actor.apply_fn({"params": actor.params}, o, x, k),
        observations,
        key,
        make_schedule(config.beta_schedule, config.diffusion_steps),
        action_dim=action_dim,
        temperature=config.temperature if temperature is None else temperature,
        clip=config.clip_sampler and not tanh,
        latent=tanh,
    )
    return jnp.tanh(x) if tanh and not latent else x

"""Flax modules: the score network eps_theta(s, a_k, k) and the critic ensemble Q_i(s, a).

This file holds modules only; the math that uses them lives in `diffusion.py` and `losses.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

default_init = nn.initializers.xavier_uniform


def mish(x: jax.Array) -> jax.Array:
    """Mish, x * tanh(softplus(x)), written with one exp and one division.

    tanh(log(1 + e^x)) = n / (n + 2) with n = e^x (e^x + 2). The same function as
    ``jax.nn.mish`` (max relative difference ~3e-7 in float32, as close to a float64 reference),
    3x faster on CPU, where the three transcendentals of the textbook form dominate a layer's
    cost. Inputs above 20 are clamped inside the exp (the ratio is 1.0 in float32 there).
    """
    e = jnp.exp(jnp.minimum(x, 20.0))
    n = e * (e + 2.0)
    return x * (n / (n + 2.0))


class MLP(nn.Module):
    """Dense layers with ``activation`` between them; the last layer is linear.

    Attributes:
      features: output sizes of the layers, the last one included.
      activation: nonlinearity after every layer but the last.
    """

    features: Sequence[int]
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, *inputs: jax.Array) -> jax.Array:
        """inputs: one (B, D) array, or several (B_i, D_i) whose rows broadcast (B_i = B or 1), taken
        as their concatenation (``ConcatDense``) -> (B, features[-1])."""
        x = ConcatDense(self.features[0], name="Dense_0")(*inputs) if len(inputs) > 1 else inputs[0]
        for i, size in enumerate(self.features):
            if i > 0 or len(inputs) == 1:
                x = nn.Dense(size, kernel_init=default_init(), name=f"Dense_{i}")(x)
            if i + 1 < len(self.features):
                x = self.activation(x)
        return x


class ConcatDense(nn.Module):
    """``nn.Dense`` on the concatenation of its inputs, with the same parameters (kernel (sum D_i, F),
    bias (F,)), computed as one matmul per input: an input with a single row is multiplied once and
    broadcast. In the reverse chain the time embedding is shared by the whole batch: concatenated
    to every row it cost as much as the actions and states together (docs/algorithm.md, "Networks").

    Attributes:
      features: output size F.
    """

    features: int

    @nn.compact
    def __call__(self, *inputs: jax.Array) -> jax.Array:
        """inputs (B_i, D_i), rows broadcasting (B_i = B or 1) -> (B, F)."""
        sizes = [x.shape[-1] for x in inputs]
        kernel = self.param("kernel", default_init(), (sum(sizes), self.features))
        out = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        start = 0
        for x, size in zip(inputs, sizes, strict=True):
            out = out + x @ kernel[start : start + size]
            start += size
        return out


class FourierFeatures(nn.Module):
    """Learnable Fourier features [cos(2 pi k W^T), sin(2 pi k W^T)], W ~ N(0, 0.2^2).

    Attributes:
      output_size: number of features (even); W has shape (output_size // 2, in_dim).
    """

    output_size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, in_dim) float -> (B, output_size)."""
        w = self.param("kernel", nn.initializers.normal(0.2), (self.output_size // 2, x.shape[-1]))
        f = 2 * jnp.pi * x @ w.T
        return jnp.concatenate([jnp.cos(f), jnp.sin(f)], axis=-1)


class ScoreNetwork(nn.Module):
    """Denoiser eps_theta(s, a_k, k) of the diffusion policy (docs/algorithm.md, "Networks").

    Attributes:
      action_dim: A.
      hidden_dims: hidden sizes of the body MLP (Mish).
      time_features: number of Fourier features of k.
      time_hidden_dims: hidden sizes of the MLP on the Fourier features (Mish).
      prior_sigmas: None (the reference), or sqrt(1 - abar_k) for k = 0..T-1: the output is then the
        body's plus sqrt(1 - abar_k) a_k, the eps of a N(0, I) distribution, so an untrained body samples
        N(0, I) instead of a chain that grows by 1 / sqrt(abar_T) (QSM's ``squash="tanh"``, whose latent
        has no clip to hold it).
    """

    action_dim: int
    hidden_dims: Sequence[int] = (512, 512)
    time_features: int = 64
    time_hidden_dims: Sequence[int] = (128, 128)
    prior_sigmas: tuple[float, ...] | None = None

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array, levels: jax.Array) -> jax.Array:
        """observations (B, S), noised actions (B, A), levels (B, 1) float -> eps (B, A).

        ``levels`` may also be (1, 1), one level for the whole batch (as in the reverse chain):
        the time embedding and its share of the first layer are then computed once and broadcast.
        """
        t = FourierFeatures(self.time_features)(levels)
        t = MLP(self.time_hidden_dims, activation=mish)(t)
        # The body's first layer sees [actions, observations, t]: a (1, .) t is multiplied once.
        eps = MLP((*self.hidden_dims, self.action_dim), activation=mish)(actions, observations, t)
        if self.prior_sigmas is None:
            return eps
        return eps + jnp.asarray(self.prior_sigmas, jnp.float32)[levels.astype(jnp.int32)] * actions


class CriticEnsemble(nn.Module):
    """``num_critics`` independent Q networks evaluated in one pass (``nn.vmap`` over parameters).

    Attributes:
      hidden_dims: hidden sizes of each Q network (ReLU).
      num_critics: ensemble size.
    """

    hidden_dims: Sequence[int] = (512, 512)
    num_critics: int = 2

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        """observations (B, S), actions (B, A) -> Q values (num_critics, B)."""
        ensemble = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_critics,
        )
        q = ensemble((*self.hidden_dims, 1), activation=nn.relu)(jnp.concatenate([observations, actions], axis=-1))
        return q[..., 0]


class TanhGaussianActor(nn.Module):
    """SAC policy: a Gaussian over pre-tanh actions, squashed to [-1, 1] by tanh.

    Attributes:
      action_dim: A.
      hidden_dims: hidden sizes (ReLU).
      log_std_min, log_std_max: clip of the log standard deviation.
    """

    action_dim: int
    hidden_dims: Sequence[int] = (256, 256)
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        """observations (B, S) -> (mean (B, A), log_std (B, A)) of the pre-tanh Gaussian."""
        out = MLP((*self.hidden_dims, 2 * self.action_dim))(observations)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


class DeterministicActor(nn.Module):
    """TD3 policy: an MLP with a tanh output in [-1, 1]."""

    action_dim: int
    hidden_dims: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        """observations (B, S) -> actions (B, A)."""
        return jnp.tanh(MLP((*self.hidden_dims, self.action_dim))(observations))


class Temperature(nn.Module):
    """SAC's learned entropy temperature, stored as its log."""

    initial: float = 1.0

    @nn.compact
    def __call__(self) -> jax.Array:
        log_temp = self.param("log_temp", lambda _: jnp.full((), jnp.log(self.initial), jnp.float32))
        return jnp.exp(log_temp)

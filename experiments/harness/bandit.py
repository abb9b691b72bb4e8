"""One-step continuous bandits with several equally good optima, to look at policy multi-modality
and at how QSM scales with the action dimension.

The reward is ``max_j exp(-||a - c_j||^2 / (2 width^2))`` over four peaks c_j, so Q is in [0, 1] and
every peak is optimal. ``TWO_D``: the 2-D bandit of the multi-modality study, peaks near (+-0.5, +-0.5).
``scaled(d)``: the d-dimensional generalisation, peaks 0.5 s_j with sign vectors s_j that differ
pairwise in 2/3 of the coordinates (distance sqrt(2 d / 3), never at the walls) and a width that grows
as sqrt(d), so the ratio of peak separation to width, and the reward between two peaks, do not change
with d. Agents are trained through their public ``create_train_state`` / ``train_step`` /
``policy_sample`` on one constant observation, with data collected on-policy as they learn; with
``exact_gradient`` the critic is replaced by the reward itself.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from qsm_jax.algorithms import get_algorithm
from qsm_jax.types import Batch

PEAKS = np.array([[0.55, 0.45], [-0.5, 0.6], [-0.45, -0.5], [0.6, -0.55]], np.float32)
WIDTH = 0.25
MODE_RADIUS = 0.25


class Bandit(NamedTuple):
    """Four equal Gaussian peaks (K, d) of one width; an optimum is held by the samples within
    ``mode_radius`` of it."""

    peaks: np.ndarray
    width: float
    mode_radius: float

    @property
    def dim(self) -> int:
        return self.peaks.shape[1]


TWO_D = Bandit(PEAKS, WIDTH, MODE_RADIUS)
# The three non-constant columns of the 4x4 Hadamard matrix, cycled over the coordinates.
_SIGNS = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float32)


def scaled(dim: int) -> Bandit:
    """The d-dimensional bandit: peaks 0.5 s_j, width = mode radius = sqrt(0.05 d) (0.32 at d = 2)."""
    if dim < 2:
        raise ValueError(f"the scaled bandit needs dim >= 2, got {dim}")
    peaks = 0.5 * _SIGNS[:, np.arange(dim) % 3]
    width = float(np.sqrt(0.05 * dim))
    return Bandit(peaks, width, width)


def jax_reward(bandit: Bandit, actions: jax.Array) -> jax.Array:
    """``reward`` in JAX (differentiable): actions (..., d) -> (...)."""
    d2 = ((actions[..., None, :] - jnp.asarray(bandit.peaks)) ** 2).sum(-1)
    return jnp.exp(-d2 / (2 * bandit.width**2)).max(-1)


# The policy's own action distribution: QSM's reverse chain (without the extra exploration noise),
# SAC's tanh-Gaussian (its sample, not its mode), TD3's deterministic action.
_EXPLORE_FOR_DISTRIBUTION = {"qsm": False, "dql": False, "sac": True, "td3": False}


def reward(actions: np.ndarray, bandit: Bandit = TWO_D) -> np.ndarray:
    """Reward of actions (..., d): the highest of four Gaussian bumps of height 1."""
    d2 = ((np.asarray(actions)[..., None, :] - bandit.peaks) ** 2).sum(-1)
    return np.exp(-d2 / (2 * bandit.width**2)).max(-1)


def mode_mass(actions: np.ndarray, bandit: Bandit = TWO_D) -> np.ndarray:
    """Fraction of the actions (N, d) within the mode radius of each peak, (4,)."""
    d = np.linalg.norm(np.asarray(actions)[:, None, :] - bandit.peaks, axis=-1)
    return (d < bandit.mode_radius).mean(0)


def exact_critic(state: Any, bandit: Bandit) -> Any:
    """``state`` with its critics replaced by the reward (Q = r on this one-step task): every critic
    of the ensemble returns r(a), its parameters get zero gradients, so ``grad_a Q`` is exact."""

    def apply_fn(variables, observations, actions):
        del variables, observations
        return jnp.broadcast_to(jax_reward(bandit, actions), (2, actions.shape[0]))

    return state.replace(critic=state.critic.replace(apply_fn=_cached(apply_fn, bandit)))


_APPLY_FNS: dict = {}


def _cached(fn, bandit: Bandit):
    """One apply function per bandit, so ``train_step`` compiles once per bandit (it is static)."""
    key = (bandit.peaks.tobytes(), bandit.width)
    return _APPLY_FNS.setdefault(key, fn)


def train_on_bandit(
    algo: str,
    config: Any,
    *,
    updates: int = 3000,
    batch_size: int = 256,
    collect_every: int = 25,
    seed: int = 0,
    bandit: Bandit = TWO_D,
    exact_gradient: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Trains ``algo`` with ``config`` on ``bandit``; returns (state, summary of 4096 policy samples
    and the last update's metrics). With ``exact_gradient`` the agent's critics are the reward
    itself (``exact_critic``), which separates the critic's error from the policy's."""
    algorithm = get_algorithm(algo)
    dim = bandit.dim
    state = algorithm.create_train_state(jax.random.key(seed), 1, dim, config)
    if exact_gradient:
        state = exact_critic(state, bandit)
    sample = jax.jit(algorithm.policy_sample, static_argnames="explore")
    rng = np.random.default_rng(seed)
    obs = np.ones((batch_size, 1), np.float32)
    data = [rng.uniform(-1, 1, (4096, dim)).astype(np.float32)]
    key = jax.random.key(seed + 1)
    for i in range(updates):
        if i % collect_every == 0:
            key, sub = jax.random.split(key)
            data.append(np.asarray(sample(state, obs, sub, explore=True)))
            data = data[-40:]
        pool = np.concatenate(data)
        actions = pool[rng.integers(0, len(pool), batch_size)]
        batch = Batch(obs, actions, reward(actions, bandit).astype(np.float32), obs, np.ones(batch_size, np.float32))
        state, metrics = algorithm.train_step(state, batch)
    explore = _EXPLORE_FOR_DISTRIBUTION[algo]
    samples = np.asarray(sample(state, np.ones((4096, 1), np.float32), jax.random.key(seed + 2), explore=explore))
    mass = mode_mass(samples, bandit)
    return state, {
        "samples": samples,
        "mean_reward": float(reward(samples, bandit).mean()),
        "uniform_reward": float(reward(rng.uniform(-1, 1, (100_000, dim)), bandit).mean()),
        "mode_mass": mass.tolist(),
        "modes_held": int((mass >= 0.1).sum()),
        "at_walls": float((np.abs(samples) > 0.98).any(-1).mean()),
        "dims_at_walls": float((np.abs(samples) > 0.98).mean()),
        "metrics": {k: float(v) for k, v in metrics.items()},
    }

"""A one-step continuous bandit with several equally good optima, to look at policy multi-modality.

Actions are 2-D in [-1, 1]^2; the reward is ``max_j exp(-||a - c_j||^2 / (2 width^2))`` with four
peaks c_j = (+-0.5, +-0.5), so Q is in [0, 1] and every peak is optimal. Agents are trained through
their public ``create_train_state`` / ``train_step`` / ``policy_sample`` on one constant observation,
with data collected on-policy as they learn.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from qsm_jax.algorithms import get_algorithm
from qsm_jax.types import Batch

PEAKS = np.array([[0.55, 0.45], [-0.5, 0.6], [-0.45, -0.5], [0.6, -0.55]], np.float32)
WIDTH = 0.25
MODE_RADIUS = 0.25
# The policy's own action distribution: QSM's reverse chain (without the extra exploration noise),
# SAC's tanh-Gaussian (its sample, not its mode), TD3's deterministic action.
_EXPLORE_FOR_DISTRIBUTION = {"qsm": False, "dql": False, "sac": True, "td3": False}


def reward(actions: np.ndarray) -> np.ndarray:
    """Reward of actions (..., 2): the highest of four Gaussian bumps of height 1."""
    d2 = ((np.asarray(actions)[..., None, :] - PEAKS) ** 2).sum(-1)
    return np.exp(-d2 / (2 * WIDTH**2)).max(-1)


def mode_mass(actions: np.ndarray) -> np.ndarray:
    """Fraction of the actions (N, 2) within ``MODE_RADIUS`` of each peak, (4,)."""
    d = np.linalg.norm(np.asarray(actions)[:, None, :] - PEAKS, axis=-1)
    return (d < MODE_RADIUS).mean(0)


def train_on_bandit(
    algo: str, config: Any, *, updates: int = 3000, batch_size: int = 256, collect_every: int = 25, seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """Trains ``algo`` with ``config`` on the bandit; returns (state, summary of 4096 policy samples
    and the last update's metrics)."""
    algorithm = get_algorithm(algo)
    state = algorithm.create_train_state(jax.random.key(seed), 1, 2, config)
    sample = jax.jit(algorithm.policy_sample, static_argnames="explore")
    rng = np.random.default_rng(seed)
    obs = np.ones((batch_size, 1), np.float32)
    data = [rng.uniform(-1, 1, (4096, 2)).astype(np.float32)]
    key = jax.random.key(seed + 1)
    for i in range(updates):
        if i % collect_every == 0:
            key, sub = jax.random.split(key)
            data.append(np.asarray(sample(state, obs, sub, explore=True)))
            data = data[-40:]
        pool = np.concatenate(data)
        actions = pool[rng.integers(0, len(pool), batch_size)]
        batch = Batch(obs, actions, reward(actions).astype(np.float32), obs, np.ones(batch_size, np.float32))
        state, metrics = algorithm.train_step(state, batch)
    explore = _EXPLORE_FOR_DISTRIBUTION[algo]
    samples = np.asarray(sample(state, np.ones((4096, 1), np.float32), jax.random.key(seed + 2), explore=explore))
    mass = mode_mass(samples)
    return state, {
        "samples": samples,
        "mean_reward": float(reward(samples).mean()),
        "uniform_reward": float(reward(rng.uniform(-1, 1, (100_000, 2))).mean()),
        "mode_mass": mass.tolist(),
        "modes_held": int((mass >= 0.1).sum()),
        "at_walls": float((np.abs(samples) > 0.98).any(-1).mean()),
        "metrics": {k: float(v) for k, v in metrics.items()},
    }

"""Evaluation episodes of K stacked agents in lockstep, and the share of their actions at the walls."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from qsm_jax.algorithms import algorithm_of


@jax.jit
def _eval_actions(states, observations, keys, t):
    keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 1), t))(keys)
    return jax.vmap(algorithm_of(states).policy_sample)(states, observations, keys)


WALL = 0.99  # |action| above this counts as "at the wall" of [-1, 1] (docs/algorithm.md: bang-bang QSM)


def evaluate(
    states: Any, envs: list, seeds: np.ndarray, keys: jax.Array, frames: list | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One episode per env for K stacked agents, in lockstep, one batched action call per time step.

    Evaluation actions are ``policy_sample(..., explore=False)``: for QSM a single stochastic sample
    of the chain without exploration noise, for SAC the mode, for TD3 the deterministic action.

    Args:
      states: K stacked agents.
      envs: K * E envs (agent k uses envs[k * E:(k + 1) * E]).
      seeds: reset seeds, (K, E).
      keys: raw keys, (K, 2).
      frames: if a list, ``envs[0]`` (made with ``render=True``) appends an RGB frame (H, W, 3)
        after its reset and after each of its steps; rendering does not change the returns.

    Returns:
      ``(returns, wall_share)``: undiscounted returns, (K, E), and per agent the share of all its
      action dimensions over all steps with ``|a| > WALL``, (K,) (1.0 for a bang-bang policy).
    """
    num_seeds, episodes = seeds.shape
    obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds.ravel(), strict=True)])
    obs = obs.astype(np.float32).reshape(num_seeds, episodes, -1)
    if frames is not None:
        frames.append(envs[0].render())
    returns = np.zeros(num_seeds * episodes)
    at_wall, counted = np.zeros(num_seeds * episodes), np.zeros(num_seeds * episodes)
    done = np.zeros(num_seeds * episodes, bool)
    t = 0
    while not done.all():
        actions = np.asarray(_eval_actions(states, obs, keys, t)).reshape(num_seeds * episodes, -1)
        flat_obs = obs.reshape(num_seeds * episodes, -1)
        live = ~done
        at_wall[live] += (np.abs(actions[live]) > WALL).sum(axis=1)
        counted[live] += actions.shape[1]
        for i in np.flatnonzero(live):
            o, r, terminated, truncated, _ = envs[i].step(actions[i])
            if frames is not None and i == 0:
                frames.append(envs[0].render())
            flat_obs[i] = o
            returns[i] += r
            done[i] = terminated or truncated
        t += 1
    wall_share = at_wall.reshape(num_seeds, episodes).sum(1) / counted.reshape(num_seeds, episodes).sum(1)
    return returns.reshape(num_seeds, episodes), wall_share

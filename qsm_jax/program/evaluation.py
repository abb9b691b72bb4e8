"""Evaluation episodes of K stacked agents in lockstep, the share of their actions at the walls, and what a
diffusion policy does at given states (``policy_spread``)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qsm_jax import diffusion
from qsm_jax.algorithms import algorithm_of


@jax.jit
def _eval_actions(states, observations, keys, t):
    keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 1), t))(keys)
    return jax.vmap(algorithm_of(states).policy_sample)(states, observations, keys)


WALL = 0.99  # |action| above this counts as "at the wall" of [-1, 1] (docs/algorithm.md: bang-bang QSM)
BACKOFF = 0.9  # where ``policy_spread`` moves the wall dimensions to price what the walls are worth to Q


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


def policy_spread(state, observations: jax.Array, key: jax.Array, samples: int) -> dict[str, float]:
    """What a diffusion policy does at ``observations`` (M, S): ``samples`` plain chain samples per
    state (no best-of, no exploration noise), scored by the critics' mean Q.

    Returns:
      Means over the states: ``chain_std`` (per action dimension, the std of the samples),
      ``wall_share`` (share of sample dimensions at |a| > WALL), ``q_std`` (std of Q over the samples),
      ``best_of_8_gain`` (Q of the best of the first 8 samples minus their mean: what best-of-8 acting
      buys), ``grad_q`` (|dQ/da| per dimension at the first sample) and ``q_abs`` (|Q|); and why the
      samples at the walls are there: ``wall_outward`` (share of the wall dimensions whose dQ/da points
      out of the box, i.e. the critic would push them further) and ``wall_backoff_q`` (over the samples
      with a wall dimension, the Q lost by moving every one of those dimensions to +-BACKOFF: to read
      beside ``q_std``); both NaN when no sample is at a wall.
    """
    m, cfg = observations.shape[0], state.config
    tiled = jnp.tile(observations, (samples, 1))  # sample i of state b at row i * M + b
    actions = diffusion.sample_chain(state.actor, cfg, tiled, key, state.action_dim)

    def q_of(obs, act):  # (R, S), (R, A) -> (R,), the critics' mean
        return state.critic.apply_fn({"params": state.critic.params}, obs, act).mean(axis=0)

    q = np.asarray(q_of(tiled, actions)).reshape(samples, m)
    grad = np.asarray(jax.grad(lambda a: q_of(tiled, a).sum())(actions))  # (samples * M, A)
    flat = np.asarray(actions)  # (samples * M, A)
    a = flat.reshape(samples, m, -1)
    best = q[: min(8, samples)]
    wall = np.abs(flat) > WALL
    backed = np.where(wall, BACKOFF * np.sign(flat), flat)
    lost = q.reshape(-1) - np.asarray(q_of(tiled, jnp.asarray(backed)))
    any_wall = wall.any(axis=1)
    return {
        "chain_std": float(a.std(axis=0).mean()),
        "wall_share": float((np.abs(a) > WALL).mean()),
        "q_std": float(q.std(axis=0).mean()),
        "best_of_8_gain": float((best.max(axis=0) - best.mean(axis=0)).mean()),
        "grad_q": float(np.abs(grad[:m]).mean()),
        "q_abs": float(np.abs(q).mean()),
        "wall_outward": float((np.sign(flat) * grad > 0)[wall].mean()) if wall.any() else float("nan"),
        "wall_backoff_q": float(lost[any_wall].mean()) if any_wall.any() else float("nan"),
    }

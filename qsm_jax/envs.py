"""Gymnasium environments for the training loop: creation, validation and action rescaling."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def make_env(env_id: str) -> gym.Env:
    """Makes ``env_id`` with its actions rescaled so that the agent acts in [-1, 1].

    Raises:
      ValueError: unknown id, a non-Box or unbounded action space, or a non-flat observation
        space; the message says what is wrong.
    """
    try:
        env = gym.make(env_id)
    except gym.error.Error as e:
        raise ValueError(
            f"unknown env id {env_id!r} ({e}); pass a registered gymnasium id such as Walker2d-v4"
        ) from None
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        env.close()
        raise ValueError(
            f"env {env_id!r} has a {type(space).__name__} action space; QSM needs continuous (Box) actions"
        )
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        env.close()
        raise ValueError(f"env {env_id!r} has an unbounded action space {space}; QSM needs finite bounds")
    obs_space = env.observation_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        env.close()
        raise ValueError(f"env {env_id!r} has observation space {obs_space}; QSM needs flat Box observations")
    ones = np.ones(space.shape, np.float32)
    return gym.wrappers.RescaleAction(env, min_action=-ones, max_action=ones)


def env_dims(env: gym.Env) -> tuple[int, int]:
    """(obs_dim, action_dim) of a flat-Box env."""
    return int(env.observation_space.shape[0]), int(env.action_space.shape[0])

"""The data and the agent interface shared by the losses, the learners and the training program.

An algorithm (QSM in ``learner.py``; SAC, TD3 and Diffusion-QL in ``baselines/``) is four things
(``Algorithm``): a frozen config class, ``create_train_state``, a jitted ``train_step`` and a
traceable ``policy_sample``. Its train state is an immutable pytree with the fields of
``AgentState``. ``qsm_jax.algorithms.ALGORITHMS`` registers them for the training program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np


class Batch(NamedTuple):
    """A batch of transitions, float32 with a leading batch axis B.

    Attributes:
      observations: s, (B, S).
      actions: a in [-1, 1], (B, A).
      rewards: r, (B,).
      next_observations: s', (B, S).
      terminals: 1.0 only on true termination (not on time-limit truncation), else 0.0, (B,).
    """

    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_observations: jax.Array
    terminals: jax.Array


def check_batch(batch: Batch, obs_dim: int | None = None, action_dim: int | None = None) -> None:
    """Host-side validation of a batch; raises ``ValueError`` naming the field to fix.

    Checks shapes (leading batch axis, ``obs_dim`` and ``action_dim`` when given), finiteness,
    actions in [-1, 1] and terminals in {0, 1}. Call it on data from outside before ``train_step``
    (which cannot raise inside ``jit``).
    """
    arrays = {name: np.asarray(value) for name, value in batch._asdict().items()}
    size = arrays["observations"].shape[0] if arrays["observations"].ndim else None
    expected_ndim = {"observations": 2, "actions": 2, "rewards": 1, "next_observations": 2, "terminals": 1}
    for name, value in arrays.items():
        if value.ndim != expected_ndim[name] or value.shape[0] != size:
            raise ValueError(
                f"batch.{name} has shape {value.shape}; expected {expected_ndim[name]} dims with the "
                f"leading batch axis of observations ({size})"
            )
        if not np.all(np.isfinite(value)):
            raise ValueError(f"batch.{name} contains NaN or inf; drop or repair those transitions")
    for name in ("observations", "next_observations"):
        if obs_dim is not None and arrays[name].shape[1] != obs_dim:
            raise ValueError(f"batch.{name} has {arrays[name].shape[1]} features; the agent expects {obs_dim}")
    if action_dim is not None and arrays["actions"].shape[1] != action_dim:
        raise ValueError(f"batch.actions has {arrays['actions'].shape[1]} dims; the agent expects {action_dim}")
    if np.any(np.abs(arrays["actions"]) > 1.0):
        raise ValueError("batch.actions must lie in [-1, 1]; rescale them from the env's bounds first")
    if not np.all((arrays["terminals"] == 0.0) | (arrays["terminals"] == 1.0)):
        raise ValueError("batch.terminals must be 0.0 or 1.0 (1.0 only on true termination)")


class AgentState(Protocol):
    """What the training program reads of any algorithm's train state (a ``flax.struct`` pytree).

    Attributes:
      config: the algorithm's frozen config (static: not a pytree leaf).
      obs_dim, action_dim: static sizes S and A.
      key: raw uint32 PRNG key data (2,), advanced by every ``train_step``.
      step: number of ``train_step`` calls so far, int32 scalar.
    """

    config: Any
    obs_dim: int
    action_dim: int
    key: jax.Array
    step: jax.Array


class Algorithm(NamedTuple):
    """One algorithm, as the training program and the benchmark use it.

    Attributes:
      name: its ``--algo`` name.
      config_cls: frozen dataclass of its settings (defaults = its reference settings).
      state_cls: its train-state class (an ``AgentState``).
      create_train_state: ``(key, obs_dim, action_dim, config) -> state``; equal configs give
        states of equal structure, so ``train_step`` compiles once for them.
      train_step: jitted ``(state, batch: Batch) -> (state, metrics: dict of scalars)``.
      policy_sample: traceable ``(state, observations (B, S), key, explore: bool) -> actions (B, A)``
        in [-1, 1]; ``explore`` adds the training-time exploration noise.
    """

    name: str
    config_cls: type
    state_cls: type
    create_train_state: Callable[[jax.Array, int, int, Any], AgentState]
    train_step: Callable[[AgentState, Batch], tuple[AgentState, dict[str, jax.Array]]]
    policy_sample: Callable[..., jax.Array]

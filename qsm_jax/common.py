"""Helpers every agent (QSM and the baselines) builds on: keys, train states built without
silent recompiles, and the one-line checks of settings.

``jax.jit`` caches a compiled ``train_step`` per train-state *structure*, and the static parts of a
``flax`` ``TrainState`` (``apply_fn``, the optax ``tx``) belong to that structure. Modules and
optimisers made afresh for every ``create_train_state`` call compare unequal (bound methods and
optax closures compare by identity), so each fresh state would compile ``train_step`` again.
``module`` and ``adam`` build each distinct one once and hand out the same object afterwards.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState


def raw_key(key: jax.Array) -> jax.Array:
    """Raw uint32 key data of a typed (``jax.random.key``) or raw (``PRNGKey``) key."""
    return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


def module(cls: type, **fields: Any) -> Any:
    """The flax module ``cls(**fields)``, built once per (class, fields) and shared afterwards.

    Field values must be hashable (tuples, not lists)."""
    return _module(cls, tuple(sorted(fields.items())))


@functools.cache
def _module(cls: type, fields: tuple) -> Any:
    return cls(**dict(fields))


@functools.cache
def adam(learning_rate: float, cosine_decay_steps: int = 0) -> optax.GradientTransformation:
    """Adam, with the learning rate decayed to 0 by a cosine over ``cosine_decay_steps`` updates
    when > 0; built once per setting and shared afterwards."""
    if cosine_decay_steps > 0:
        return optax.adam(optax.cosine_decay_schedule(learning_rate, cosine_decay_steps))
    return optax.adam(learning_rate)


def adam_train_state(net: Any, params: Any, learning_rate: float, cosine_decay_steps: int = 0) -> TrainState:
    """A ``TrainState`` of ``net``'s parameters (``net`` from ``module``) with ``adam`` and an int32
    step counter."""
    tx = adam(learning_rate, cosine_decay_steps)
    return TrainState.create(apply_fn=net.apply, params=params, tx=tx).replace(step=jnp.zeros((), jnp.int32))


def finite(value: Any) -> bool:
    """Whether ``value`` is a finite number."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def check(ok: bool, message: str) -> None:
    """Raises ``ValueError(message)`` (one line, naming what to change) unless ``ok``."""
    if not ok:
        raise ValueError(message)

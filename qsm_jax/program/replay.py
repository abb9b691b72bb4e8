"""The replay buffer as a pytree of device arrays, with pure functions to add and sample.

Held on the accelerator and updated inside the compiled training step (with buffer donation, in
place), so no batch is sampled on the host or copied per update.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from qsm_jax.types import Batch


class ReplayBuffer(struct.PyTreeNode):
    """Ring buffer of float32 transitions; its memory is fixed by the capacity.

    Attributes:
      data: a ``Batch`` whose fields have a leading capacity axis C: (C, S), (C, A), (C,), (C, S), (C,).
      pointer: index where the next transition goes, int32 scalar.
      size: number of transitions held, int32 scalar.
    """

    data: Batch
    pointer: jax.Array
    size: jax.Array

    @property
    def capacity(self) -> int:
        return self.data.rewards.shape[-1]

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes for x in jax.tree.leaves(self.data))


def replay_init(capacity: int, obs_dim: int, action_dim: int, num_seeds: int | None = None) -> ReplayBuffer:
    """An empty buffer of ``capacity`` transitions; with ``num_seeds``, K of them stacked on a leading axis."""
    if not isinstance(capacity, int) or capacity <= 0:
        raise ValueError(f"buffer_size must be a positive integer, got {capacity!r}")
    lead = () if num_seeds is None else (num_seeds,)
    data = Batch(
        observations=jnp.zeros((*lead, capacity, obs_dim), jnp.float32),
        actions=jnp.zeros((*lead, capacity, action_dim), jnp.float32),
        rewards=jnp.zeros((*lead, capacity), jnp.float32),
        next_observations=jnp.zeros((*lead, capacity, obs_dim), jnp.float32),
        terminals=jnp.zeros((*lead, capacity), jnp.float32),
    )
    return ReplayBuffer(data=data, pointer=jnp.zeros(lead, jnp.int32), size=jnp.zeros(lead, jnp.int32))


def replay_add(buffer: ReplayBuffer, transitions: Batch) -> ReplayBuffer:
    """Stores N transitions (fields with a leading axis N) in order, overwriting the oldest."""
    n = transitions.rewards.shape[0]
    idx = (buffer.pointer + jnp.arange(n)) % buffer.capacity
    data = jax.tree.map(lambda d, x: d.at[idx].set(x.astype(d.dtype)), buffer.data, transitions)
    return ReplayBuffer(
        data=data,
        pointer=(buffer.pointer + n) % buffer.capacity,
        size=jnp.minimum(buffer.size + n, buffer.capacity),
    )


def replay_sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Batch:
    """Uniform sample, with replacement, of ``batch_size`` stored transitions."""
    idx = _sample_indices(key, batch_size, buffer.size)
    return jax.tree.map(lambda d: d[idx], buffer.data)


def _sample_indices(key: jax.Array, batch_size: int, size: jax.Array) -> jax.Array:
    """``batch_size`` slots drawn uniformly, with replacement, from the ``size`` filled ones."""
    return jax.random.randint(key, (batch_size,), 0, jnp.maximum(size, 1))


def replay_sample_after_add(buffer: ReplayBuffer, transitions: Batch, key: jax.Array, batch_size: int) -> Batch:
    """What ``replay_sample(replay_add(buffer, transitions), key, batch_size)`` draws, read from ``buffer`` itself.

    The same indices are drawn; those that land on the slots the N new transitions will overwrite
    return the new transitions. This lets a compiled step sample before it stores, so that all reads
    of the buffer can be ordered before its in-place update (see ``fused.act_and_learn``).
    """
    n = transitions.rewards.shape[0]
    idx = _sample_indices(key, batch_size, jnp.minimum(buffer.size + n, buffer.capacity))
    offset = (idx - buffer.pointer) % buffer.capacity  # position among the new transitions, if < n
    is_new = offset < n
    new_idx = jnp.minimum(offset, n - 1)

    def pick(stored, new):
        mask = is_new.reshape(is_new.shape + (1,) * (stored.ndim - 1))
        return jnp.where(mask, jnp.asarray(new, stored.dtype)[new_idx], stored[idx])

    return jax.tree.map(pick, buffer.data, transitions)


def replay_to_host(buffer: ReplayBuffer) -> dict[str, np.ndarray]:
    """The filled part of a buffer stacked over seeds, (K, size, ...) NumPy arrays (what a checkpoint stores)."""
    size = int(np.max(np.asarray(buffer.size)))
    return {name: np.asarray(value[:, :size]) for name, value in buffer.data._asdict().items()}

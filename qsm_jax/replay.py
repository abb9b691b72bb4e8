"""A replay buffer of float32 transitions in preallocated NumPy arrays."""

from __future__ import annotations

import numpy as np

from qsm_jax.types import Batch


class ReplayBuffer:
    """Ring buffer of (s, a, r, s', terminal), float32, memory fixed by ``capacity``.

    Attributes:
      capacity: number of transitions held at most; the oldest are overwritten.
      size: number of transitions held now.
      pointer: index where the next transition goes.
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int):
        if capacity <= 0:
            raise ValueError(f"buffer_size must be > 0, got {capacity}")
        self.capacity = int(capacity)
        self.data = {
            "observations": np.zeros((capacity, obs_dim), np.float32),
            "actions": np.zeros((capacity, action_dim), np.float32),
            "rewards": np.zeros((capacity,), np.float32),
            "next_observations": np.zeros((capacity, obs_dim), np.float32),
            "terminals": np.zeros((capacity,), np.float32),
        }
        self.size = 0
        self.pointer = 0

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.data.values())

    def add(self, obs, action, reward, next_obs, terminal: bool) -> None:
        """Stores one transition; raises ``ValueError`` on NaN or inf (a broken env)."""
        row = {
            "observations": obs,
            "actions": action,
            "rewards": reward,
            "next_observations": next_obs,
            "terminals": float(terminal),
        }
        for name, value in row.items():
            if not np.all(np.isfinite(value)):
                raise ValueError(
                    f"the env returned a non-finite {name[:-1] if name.endswith('s') else name}: {value}; "
                    "the environment is unstable (check its state or reward)"
                )
            self.data[name][self.pointer] = value
        self.pointer = (self.pointer + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """Uniform sample with replacement of ``batch_size`` transitions."""
        idx = rng.integers(0, self.size, size=batch_size)
        return Batch(**{name: value[idx] for name, value in self.data.items()})

    def state_dict(self) -> dict[str, np.ndarray]:
        """The filled part of the arrays (what a checkpoint stores)."""
        return {name: value[: self.size] for name, value in self.data.items()}

    def load_state_dict(self, arrays: dict[str, np.ndarray], pointer: int) -> None:
        size = len(arrays["rewards"])
        if size > self.capacity:
            raise ValueError(f"checkpoint holds {size} transitions; buffer_size is {self.capacity}")
        for name, value in arrays.items():
            self.data[name][:size] = value
        self.size, self.pointer = size, int(pointer)

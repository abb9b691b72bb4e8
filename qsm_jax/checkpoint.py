"""Orbax checkpoints of a whole run: train state, replay buffer and loop counters."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from qsm_jax.replay import ReplayBuffer


class RunCheckpointer:
    """Saves and restores ``(train state, replay buffer, meta)`` under ``workdir/checkpoints``.

    ``meta`` is a JSON dict (env-step counter, episode index, evaluation history, the run's
    config). Saves are synchronous and atomic (Orbax writes to a temporary folder and renames it),
    so a run killed at any moment leaves the last finished checkpoint intact.
    """

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, buffer: ReplayBuffer, meta: dict) -> None:
        meta = {**meta, "buffer_pointer": buffer.pointer, "buffer_size": buffer.size}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                buffer=ocp.args.StandardSave(buffer.state_dict()),
                meta=ocp.args.JsonSave(meta),
            ),
        )
        self.manager.wait_until_finished()

    def restore_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, state_template: Any, buffer: ReplayBuffer) -> tuple[Any, dict]:
        """Restores into ``buffer`` in place; returns ``(state, meta)``."""
        meta = self.restore_meta(step)
        size = meta["buffer_size"]
        buffer_template = {name: np.zeros((size, *value.shape[1:]), value.dtype) for name, value in buffer.data.items()}
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)),
                buffer=ocp.args.StandardRestore(buffer_template),
            ),
        )
        buffer.load_state_dict({k: np.asarray(v) for k, v in restored["buffer"].items()}, meta["buffer_pointer"])
        return restored["state"], meta

    def close(self) -> None:
        self.manager.close()

"""Orbax checkpoints of a whole run: train state, replay buffer and loop counters."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from qsm_jax.replay import ReplayBuffer, replay_to_host


class RunCheckpointer:
    """Saves and restores ``(train states, replay buffers, meta)`` under ``workdir/checkpoints``.

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

    def save(self, step: int, states: Any, buffers: ReplayBuffer, meta: dict) -> None:
        """Saves stacked ``states``, the filled part of stacked ``buffers`` and the JSON ``meta``."""
        meta = {
            **meta,
            "buffer_pointer": int(np.asarray(buffers.pointer)[0]),
            "buffer_size": int(np.asarray(buffers.size)[0]),
        }
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(states),
                buffer=ocp.args.StandardSave(replay_to_host(buffers)),
                meta=ocp.args.JsonSave(meta),
            ),
        )
        self.manager.wait_until_finished()

    def restore_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, state_template: Any, empty_buffers: ReplayBuffer) -> tuple[Any, dict, dict]:
        """Returns ``(states, buffer arrays (K, size, ...) as NumPy, meta)``."""
        meta = self.restore_meta(step)
        size = meta["buffer_size"]
        buffer_template = {
            name: jax.ShapeDtypeStruct((value.shape[0], size, *value.shape[2:]), value.dtype)
            for name, value in empty_buffers.data._asdict().items()
        }
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)),
                buffer=ocp.args.StandardRestore(buffer_template),
            ),
        )
        return restored["state"], {k: np.asarray(v) for k, v in restored["buffer"].items()}, meta

    def close(self) -> None:
        self.manager.close()

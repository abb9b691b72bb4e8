"""Orbax checkpoints of a whole run: train state, replay buffer and loop counters."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging as std_logging
import os
import shutil
import sys
import time
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from qsm_jax.program.replay import ReplayBuffer, replay_to_host

_DISK_ERRORS = {
    errno.ENOSPC: "No space left on device",
    errno.EROFS: "Read-only file system",
    errno.EACCES: "ermission denied",
}


class NoIntactCheckpoint(ValueError):
    """A run has checkpoints and none of them restores (each was damaged)."""


class RunCheckpointer:
    """Saves and restores ``(train states, replay buffers, meta)`` under ``workdir/checkpoints``.

    ``meta`` is a JSON dict (env-step counter, episode index, evaluation history, the run's
    config). Saves are synchronous and atomic (Orbax writes to a temporary folder and renames it),
    so a run killed at any moment leaves the last finished checkpoint intact.
    """

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        with _quiet():  # an empty step folder makes Orbax log a warning line of its own; restoring says more
            self.manager = ocp.CheckpointManager(
                self.directory,
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
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(states),
            buffer=ocp.args.StandardSave(replay_to_host(buffers)),
            meta=ocp.args.JsonSave(meta),
        )
        try:
            with _quiet():  # a failing save makes Orbax's threads print hundreds of lines
                self.manager.save(step, args=args)
                self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 (a full or read-only disk surfaces as several error types)
            mute_late_reader_errors()
            text = str(e)
            code = next((c for c, words in _DISK_ERRORS.items() if words in text), errno.EIO)
            raise OSError(
                code,
                f"saving checkpoint {step} failed ({os.strerror(code)}); the previous one is intact",
                self.directory,
            ) from None

    def restore_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def readable_metas(self) -> list[tuple[int, dict]]:
        """``(step, meta)`` of every checkpoint whose meta reads, newest first: what a start can check
        before anything compiles (a damaged checkpoint is skipped here; restoring says so)."""
        out = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                with _quiet():
                    out.append((step, self.restore_meta(step)))
            except Exception:  # noqa: BLE001 (any failure to read means damage)
                mute_late_reader_errors()
        return out

    def restore(self, step: int, state_template: Any, empty_buffers: ReplayBuffer) -> tuple[Any, dict, dict]:
        """Returns ``(states, buffer arrays (K, size, ...) as NumPy, meta)``."""
        meta = self.restore_meta(step)
        size = meta["buffer_size"]
        buffer_template = {
            name: jax.ShapeDtypeStruct((value.shape[0], size, *value.shape[2:]), value.dtype)
            for name, value in empty_buffers.data._asdict().items()
        }
        template = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)

        def restore_as(state_item):
            args = ocp.args.Composite(
                state=ocp.args.StandardRestore(state_item), buffer=ocp.args.StandardRestore(buffer_template)
            )
            return self.manager.restore(step, args=args)

        if dataclasses.is_dataclass(template) and set(self.stored_state_fields(step)) != _pytree_fields(template):
            # Written before optional state fields (None unless their option is on) existed: restore the
            # fields it has; the config check has already made sure the new ones are off (None).
            restored = restore_as(fields_present(template))
            states = state_template.replace(**restored["state"])
        else:
            restored = restore_as(template)
            states = restored["state"]
        return states, {k: np.asarray(v) for k, v in restored["buffer"].items()}, meta

    def stored_state_fields(self, step: int) -> list[str]:
        """The top-level fields of the state saved at ``step``, read from the checkpoint's metadata."""
        path = epath.Path(self.directory) / str(step) / "state"
        return list(ocp.StandardCheckpointHandler().metadata(path).keys())

    def restore_checked(self, step: int, state_template: Any, empty_buffers: ReplayBuffer):
        """``restore`` of one step, with a one-line ValueError if it is missing or damaged."""
        steps = sorted(self.manager.all_steps())
        if step not in steps:
            raise ValueError(f"no checkpoint at step {step} in {self.directory}; it has steps {steps}")
        try:
            with _quiet():
                return self.restore(step, state_template, empty_buffers)
        except Exception as e:  # noqa: BLE001 (any failure to read means damage)
            mute_late_reader_errors()
            raise ValueError(
                f"checkpoint {step} in {self.directory} is damaged or incomplete ({type(e).__name__}); "
                "restore without a step for the newest intact one"
            ) from None

    def restore_newest_intact(
        self, state_template: Any, empty_buffers: ReplayBuffer, check_meta=None, set_aside: bool = True
    ):
        """Restores the newest checkpoint that restores completely: ``(step, states, arrays, meta)``,
        or None if there is no checkpoint.

        A damaged or partial checkpoint (a truncated or missing file, a missing item) gets one
        warning line on stderr and the previous one is tried. With ``set_aside`` (training) it is
        also moved to ``<checkpoints>_damaged/<step>-<time>`` (kept for inspection, out of the way
        of the next save); without it (reading a run, which may still be training) nothing is
        moved. ``check_meta(meta, step)`` may raise ValueError (e.g. another config); that is not
        damage and propagates.

        Raises:
          NoIntactCheckpoint: checkpoints exist but none restores (one line, naming the folder).
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            return None
        for step in steps:
            try:
                with _quiet():
                    meta = self.restore_meta(step)
            except Exception as e:  # noqa: BLE001 (any failure to read means damage)
                self._skip(step, e, set_aside)
                continue
            if check_meta is not None:
                check_meta(meta, step)
            try:
                with _quiet():
                    states, arrays, meta = self.restore(step, state_template, empty_buffers)
            except Exception as e:  # noqa: BLE001
                self._skip(step, e, set_aside)
                continue
            return step, states, arrays, meta
        moved = f", moved to {self.directory}_damaged" if set_aside else ""
        raise NoIntactCheckpoint(f"no checkpoint in {self.directory} restores ({len(steps)} damaged{moved})")

    def _skip(self, step: int, error: Exception, set_aside: bool) -> None:
        """One warning line for a damaged checkpoint; with ``set_aside`` it is moved out of the way."""
        src = os.path.join(self.directory, str(step))
        done = "left in place"
        if set_aside:
            dst = os.path.join(self.directory + "_damaged", f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.move(src, dst)
            done = f"moved to {dst}"
        mute_late_reader_errors()
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        print(
            f"warning: checkpoint {src} is damaged or incomplete ({type(error).__name__}: {reason}); "
            f"{done}, trying the previous one",
            file=sys.stderr,
            flush=True,
        )
        if set_aside:
            self.manager.reload()

    def close(self) -> None:
        self.manager.close()


def _pytree_fields(state: Any) -> set[str]:
    """The names of a state dataclass's pytree fields (what today's layout saves, None ones included)."""
    return {f.name for f in dataclasses.fields(state) if f.metadata.get("pytree_node", True)}


def fields_present(state: Any) -> dict:
    """A state dataclass's pytree fields that are not None, as a dict (the layout of its checkpoint)."""
    return {
        f.name: getattr(state, f.name)
        for f in dataclasses.fields(state)
        if f.metadata.get("pytree_node", True) and getattr(state, f.name) is not None
    }


# The RuntimeWarning of an Orbax deserialisation coroutine collected before it ever ran.
_UNAWAITED_ORBAX_READER = r"coroutine '[^']*(_read_\w+|deserialize\w*)' was never awaited"


def mute_late_reader_errors() -> None:
    """After a failed read, Orbax's asyncio reader tasks may log "Task exception was never retrieved"
    with a traceback when they are collected, and its reader coroutines may be collected unfinished
    ("Exception ignored in: <coroutine ...>" through ``sys.unraisablehook``) or never started (a
    "coroutine ... was never awaited" RuntimeWarning), at any later moment (even at exit, after
    ``_quiet``); our one line already said what happened, so from then on the asyncio logger is muted
    and Orbax's reader coroutines are dropped (other coroutines still print)."""
    std_logging.getLogger("asyncio").setLevel(std_logging.CRITICAL)
    warnings.filterwarnings("ignore", _UNAWAITED_ORBAX_READER, RuntimeWarning)
    if getattr(sys.unraisablehook, "_drops_orbax", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        code = getattr(unraisable.object, "cr_code", None)
        if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
            return
        previous(unraisable)

    hook._drops_orbax = True
    sys.unraisablehook = hook


VERBOSE = False  # True (run.py --verbose): Orbax's own log lines and tracebacks reach the terminal


@contextlib.contextmanager
def _quiet():
    """Silences Orbax while a checkpoint is saved or a possibly damaged one is tried: its logs, and
    the asyncio tracebacks its threads print straight to stderr when a read or write fails (our
    one-line message says what happened). A no-op with ``VERBOSE``."""
    if VERBOSE:
        yield
        return
    level = logging.get_verbosity()
    logging.set_verbosity(logging.FATAL)
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with contextlib.redirect_stderr(open(os.devnull, "w")):  # noqa: SIM115
            try:
                yield
            except BaseException:
                time.sleep(0.2)  # let failing reader or writer threads finish printing into the void
                raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        logging.set_verbosity(level)

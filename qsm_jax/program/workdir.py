"""A run's folder: the checks that can refuse a start before anything is written, the lock a
training process holds on it, and the JSON files written there atomically."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: runs are not locked
    fcntl = None

import jax

from qsm_jax.program.run_config import RunConfig, check_same_experiment


def read_config_json(path: str) -> dict:
    """A run's ``config.json``; unreadable or not JSON is a one-line ValueError."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path} is unreadable ({e}); restore it, or delete it to resume with the flags given now"
        ) from None


def check_workdir(config: RunConfig, workdir: str, restart: bool) -> bool:
    """Everything about ``workdir`` that can refuse a start, read before anything is written.
    Returns whether the run starts over with other flags: an earlier start with them saved no
    checkpoint (it diverged, was killed or ran out of memory before its first one).

    Raises:
      ValueError: a file, not a folder; not writable; another run's config.json; a metrics.jsonl
        this program did not write; a run whose every checkpoint was damaged, without ``restart``.
    """
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir {workdir!r} is a file, not a folder; pass a folder path")
    existing = workdir
    while not os.path.exists(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write to {existing!r} (read-only or not yours); pass a --workdir you can write to")
    config_path = os.path.join(workdir, "config.json")
    checkpoints = os.path.join(workdir, "checkpoints")
    has_checkpoints = os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints))
    start_over = False
    if os.path.exists(config_path):
        try:
            check_same_experiment(read_config_json(config_path), config.to_dict(), f"workdir {workdir!r}")
        except ValueError:
            if has_checkpoints or os.path.isdir(checkpoints + "_damaged"):
                raise
            start_over = True  # an earlier start (diverged, killed, out of memory) saved nothing to resume
    metrics = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(metrics) and not os.path.exists(config_path) and not has_checkpoints:
        raise ValueError(
            f"{metrics} was not written by a run of this program (no config.json, no checkpoint beside it); "
            "pass another --workdir"
        )
    if os.path.isdir(checkpoints + "_damaged") and not has_checkpoints and os.path.exists(metrics) and not restart:
        raise ValueError(
            f"every checkpoint of the run in {workdir!r} was damaged (kept in {checkpoints}_damaged); pass --restart "
            "to train it again from step 0 (its metrics.jsonl is kept aside), or use another --workdir"
        )
    return start_over


def check_resume(config: RunConfig, workdir: str) -> None:
    """What a run's files decide about resuming it, read before envs open and anything compiles: its
    metrics.jsonl, and the meta of its checkpoints (the newest readable one's config, every one's env
    step). Restoring checks the same again on the checkpoint it takes.

    Raises:
      ValueError: a metrics line that is not a row; a checkpoint of another experiment; ``--max_steps``
        below every checkpoint (one line).
    """
    from qsm_jax.program.checkpoint import RunCheckpointer
    from qsm_jax.program.metrics import read_rows

    metrics = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(metrics):
        read_rows(metrics, warn=False)
    folder = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(folder) or not any(n.isdigit() for n in os.listdir(folder)):
        return
    checkpointer = RunCheckpointer(folder)
    try:
        metas = checkpointer.readable_metas()
    finally:
        checkpointer.close()
    if not metas:
        return  # every checkpoint damaged: restoring sets them aside and says what to do
    step, meta = metas[0]
    check_same_experiment(meta["config"], config.to_dict(), f"checkpoint {step}")
    first = min(m["env_step"] for _, m in metas)
    if first > config.max_steps:
        raise ValueError(past_max_steps(first, config.max_steps))


def past_max_steps(env_step: int, max_steps: int) -> str:
    """The message for a checkpoint at ``env_step`` past ``--max_steps``."""
    return (
        f"the run's checkpoint is at env step {env_step}, past --max_steps={max_steps}; pass "
        f"--max_steps >= {env_step} to resume or extend it, or another --workdir"
    )


def lock_workdir(workdir: str, stack: contextlib.ExitStack) -> None:
    """Holds an exclusive lock (``flock``) on the ``workdir`` folder itself while the run trains
    (released by ``stack``, or by the OS if the process dies; no file is written): a second process
    on the same run would interleave its checkpoints and metrics with this one's. No-op where
    ``fcntl`` does not exist (Windows).

    Raises:
      ValueError: another process holds it (one line).
    """
    if fcntl is None:
        return
    fd = os.open(workdir, os.O_RDONLY)
    stack.callback(os.close, fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise ValueError(
            f"another process is training the run in {workdir!r}; wait for it to end, or pass another --workdir"
        ) from None


def workdir_in_use(workdir: str) -> bool:
    """Whether a process is training the run in ``workdir`` now (it holds the folder's lock)."""
    if fcntl is None or not os.path.isdir(workdir):
        return False
    fd = os.open(workdir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


def check_memory(config: RunConfig, obs_dim: int, action_dim: int) -> None:
    """Refuses a replay buffer that cannot fit in the host memory available now (CPU backend)."""
    need = config.num_seeds * config.buffer_size * (2 * obs_dim + action_dim + 2) * 4  # float32 fields
    if jax.default_backend() != "cpu":
        return
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return
    if need > avail:
        raise ValueError(
            f"the replay buffer needs {need / 2**30:.1f} GiB ({config.num_seeds} x {config.buffer_size} transitions of "
            f"{obs_dim}+{action_dim} dims) and {avail / 2**30:.1f} GiB of memory is available; lower --buffer_size"
        )


def write_text_atomically(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file beside it: a killed writer never leaves half
    a file, and a reader meanwhile sees the old file or the new one."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_json_atomically(path: str, value: Any) -> None:
    """``value`` as indented JSON, written with ``write_text_atomically``."""
    write_text_atomically(path, json.dumps(value, indent=2))

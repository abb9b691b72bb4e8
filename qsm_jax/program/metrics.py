"""A run's outputs behind one interface (``Output``): the JSONL metrics file (always), TensorBoard,
the learning-curve PNG, the progress bar, evaluation videos, and Weights & Biases (optional).

The training loop talks to one ``Outputs`` object, which hands every event to each output:

- ``row(step, kind, values)``: a metrics row (``kind`` = train, episode, eval or video);
- ``evaluated(step, history, frames)``: an evaluation finished (``history``: every eval row so far;
  ``frames``: the RGB frames of its first episode when a video is due, else None);
- ``advanced(env_steps)``: the loop moved on;
- ``close()``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from qsm_jax.program.workdir import write_text_atomically  # noqa: E402


class Output:
    """One destination of a run's outputs; each event is a no-op unless overridden."""

    def row(self, step: int, kind: str, values: dict[str, float]) -> None:
        pass

    def evaluated(self, step: int, history: list[dict], frames: list | None) -> None:
        pass

    def advanced(self, env_steps: int) -> None:
        pass

    def close(self) -> None:
        pass


class Outputs(Output):
    """Hands every event to each of ``outputs``, in order; ``close`` closes them all. A write that
    fails (a full disk) is an OSError naming the output's file or folder (its ``path``)."""

    def __init__(self, outputs: Sequence[Output]):
        self.outputs = list(outputs)

    def row(self, step, kind, values):
        values = {k: v if isinstance(v, int) else float(v) for k, v in values.items()}
        for out in self.outputs:
            with _naming_path(out):
                out.row(int(step), kind, values)

    def evaluated(self, step, history, frames):
        for out in self.outputs:
            with _naming_path(out):
                out.evaluated(step, history, frames)

    def advanced(self, env_steps):
        for out in self.outputs:
            out.advanced(env_steps)

    def close(self):
        for out in self.outputs:
            out.close()


@contextlib.contextmanager
def _naming_path(output: Output):
    """Gives an OSError that names no file (matplotlib's, PIL's) the path ``output`` writes to."""
    try:
        yield
    except OSError as e:
        if e.filename or not getattr(output, "path", None):
            raise
        raise OSError(e.errno, e.strerror or str(e), output.path) from None


class JsonlOutput(Output):
    """Rows ``{"step", "kind", ...}`` appended to ``workdir/metrics.jsonl``, flushed at once.

    On resume from env step ``resume_step``, rows after it (written after the checkpoint by a
    killed run) are dropped, so no row is duplicated."""

    def __init__(self, workdir: str, resume_step: int = 0):
        self.path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(self.path):
            rows = [line for line in read_rows(self.path) if line[1]["step"] <= resume_step]
            write_text_atomically(self.path, "".join(text for text, _ in rows))
        self.file = open(self.path, "a")  # noqa: SIM115 (closed by close())

    def row(self, step, kind, values):
        try:
            self.file.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")
            self.file.flush()
        except OSError as e:
            raise OSError(e.errno, f"writing a metrics row failed ({e.strerror})", self.path) from None

    def close(self):
        with contextlib.suppress(OSError):  # a full disk: the run's own error says so
            self.file.close()


class TensorBoardOutput(Output):
    """Scalars ``<kind>/<name>`` and 4 frames of each evaluation video under ``workdir/tensorboard``;
    on resume, events after ``resume_step`` are purged.

    tensorboardX writes from a thread of its own; a write that fails there (a full disk) is not
    printed as that thread's traceback but raised at the next row as an OSError naming the folder."""

    def __init__(self, workdir: str, resume_step: int = 0):
        from tensorboardX import SummaryWriter

        self.path = os.path.join(workdir, "tensorboard")
        before = set(threading.enumerate())
        self.tb = SummaryWriter(self.path, purge_step=resume_step + 1)
        self.threads = set(threading.enumerate()) - before  # its writer thread
        _watch_threads(self.threads)

    def _check(self) -> None:
        error = next((_THREAD_ERRORS[t] for t in self.threads if t in _THREAD_ERRORS), None)
        if error is not None:
            code = getattr(error, "errno", None) or errno.EIO
            raise OSError(code, getattr(error, "strerror", None) or str(error), self.path)

    def row(self, step, kind, values):
        for name, value in values.items():
            self._check()  # before each event: a dead writer thread leaves its queue full
            self.tb.add_scalar(f"{kind}/{name}", value, step)

    def evaluated(self, step, history, frames):
        if frames:
            self._check()
            picks = np.linspace(0, len(frames) - 1, 4).astype(int)
            self.tb.add_images("eval/video_frames", np.stack([frames[i] for i in picks]), step, dataformats="NHWC")

    def close(self):
        with contextlib.suppress(OSError):  # a full disk: the run's own error says so
            self._check()
            self.tb.close()


# Exceptions of the threads of optional writers (``_watch_threads``), kept instead of printed.
_THREAD_ERRORS: dict[threading.Thread, BaseException] = {}
_WATCHED: set[threading.Thread] = set()


def _watch_threads(threads: set[threading.Thread]) -> None:
    """Routes the exceptions of ``threads`` into ``_THREAD_ERRORS`` instead of the terminal; other
    threads' exceptions go to the hook that was there before."""
    if not _WATCHED:
        previous = threading.excepthook

        def hook(args):
            if args.thread in _WATCHED:
                _THREAD_ERRORS[args.thread] = args.exc_value
                return
            previous(args)

        threading.excepthook = hook
    _WATCHED.update(threads)


class CurveOutput(Output):
    """``workdir/learning_curve.png``, redrawn after each evaluation."""

    def __init__(self, workdir: str, title: str):
        self.path, self.title = os.path.join(workdir, "learning_curve.png"), title

    def evaluated(self, step, history, frames):
        plot_learning_curve(history, self.path, self.title)


class VideoOutput(Output):
    """``workdir/videos/<step>.mp4`` (H.264 through imageio-ffmpeg) of each filmed evaluation episode."""

    def __init__(self, workdir: str, fps: int = 30):
        self.folder, self.fps = os.path.join(workdir, "videos"), fps
        self.path = self.folder

    def evaluated(self, step, history, frames):
        if not frames:
            return
        import imageio.v2 as imageio

        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"{step}.mp4")
        imageio.mimwrite(path + ".tmp.mp4", frames, fps=self.fps, codec="libx264", macro_block_size=1)
        os.replace(path + ".tmp.mp4", path)


class ProgressOutput(Output):
    """A tqdm progress bar over env steps, showing the last evaluation's mean return."""

    def __init__(self, total: int, initial: int, history: list[dict], enabled: bool = True):
        import tqdm

        self.bar = tqdm.tqdm(total=total, initial=initial, unit="step", disable=not enabled, dynamic_ncols=True)
        if history:
            self.evaluated(initial, history, None)

    def evaluated(self, step, history, frames):
        last = [h["return_mean"] for h in history if h["step"] == history[-1]["step"]]
        self.bar.set_postfix(eval_return=f"{np.mean(last):.1f}")

    def advanced(self, env_steps):
        self.bar.update(env_steps)

    def close(self):
        self.bar.close()


class WandbOutput(Output):
    """Weights & Biases (optional: ``pip install -e ".[wandb]"``): every row as ``<kind>/<name>``
    against ``env_step``, with the run's config. The W&B run starts at the first row (a run that
    fails to start makes none) and its id is derived from the workdir, so a resumed run continues
    the same W&B run. ``WANDB_MODE=offline`` logs to ``workdir/wandb`` without an account.

    An optional output never stops training: if W&B cannot start (no API key, no network) or fails
    mid-run, one warning line says what to do and the run goes on with its local outputs."""

    def __init__(self, project: str, workdir: str, config: dict[str, Any]):
        try:
            import wandb
        except ImportError:
            raise ValueError('--wandb_project needs the wandb package: pip install -e ".[wandb]"') from None
        self.wandb, self.project, self.workdir, self.config = wandb, project, workdir, config
        self.run, self.summary, self.off = None, {}, False

    def _start(self) -> None:
        import hashlib

        os.environ.setdefault("WANDB_SILENT", "true")  # its banner and login lines, not our one-line warnings
        self.run = self.wandb.init(
            project=self.project,
            id=hashlib.sha256(os.path.abspath(self.workdir).encode()).hexdigest()[:16],
            resume="allow",
            dir=self.workdir,
            config=self.config,
            name=os.path.basename(os.path.normpath(self.workdir)),
        )
        self.run.define_metric("env_step")
        self.run.define_metric("*", step_metric="env_step")

    def row(self, step, kind, values):
        if self.off:
            return
        try:
            if self.run is None:
                self._start()
            self.run.log({"env_step": step, **{f"{kind}/{name}": value for name, value in values.items()}})
        except Exception as e:  # noqa: BLE001 -- a logging service that is away must not stop training
            self._turn_off(e, step)

    def _turn_off(self, error: Exception, step: int | None) -> None:
        """Stops logging to W&B for the rest of the run, with one warning line naming what to do."""
        self.off = True
        lines = str(error).strip().splitlines()
        why = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        if "api key" in why.lower():
            fix = "run `wandb login` (or set WANDB_API_KEY), or set WANDB_MODE=offline to log into the run folder"
        else:
            fix = "set WANDB_MODE=offline to log into the run folder (`wandb sync` later), or check the network"
        when = "could not start" if self.run is None else f"failed at env step {step}" if step else "failed to finish"
        print(
            f"warning: W&B {when} ({why}); {fix}; training goes on with its local outputs",
            file=sys.stderr,
            flush=True,
        )
        if self.run is not None:
            with contextlib.suppress(Exception):
                self.run.finish(exit_code=1)
            self.run = None

    def close(self):
        if self.run is not None:
            try:
                self.summary = dict(self.run.summary)  # the last value of each metric, kept for inspection
                self.run.finish()
            except Exception as e:  # noqa: BLE001 -- the local outputs are written; W&B's loss is not the run's
                self._turn_off(e, None)


def read_rows(path: str, warn: bool = True) -> list[tuple[str, dict]]:
    """The rows of a metrics file as ``(line, row)``. A partial last line (what a kill or a full disk
    leaves mid-write) is dropped, with a warning line if ``warn``.

    Raises:
      ValueError: a line other than the last that is not a metrics row (one line, naming the line).
    """
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int) or "kind" not in row:
                raise ValueError("not a metrics row")
        except ValueError as e:
            if number == len(lines):
                if warn:
                    print(f"warning: {path}: dropped its partial last line ({e})", file=sys.stderr)
                break
            raise ValueError(
                f"{path}, line {number}: not a metrics row ({e}); repair or delete that line to resume"
            ) from None
        rows.append((line if line.endswith("\n") else line + "\n", row))
    return rows


def read_metrics(workdir: str, kind: str | None = None) -> list[dict]:
    """The rows of ``workdir/metrics.jsonl`` (of one ``kind`` if given)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if kind is None or r["kind"] == kind]


def plot_learning_curve(history: list[dict], path: str, title: str) -> None:
    """Evaluation return (mean +- std over episodes) against env steps, one line per seed, as a PNG."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for seed in sorted({h.get("seed", 0) for h in history}):
        rows = [h for h in history if h.get("seed", 0) == seed]
        steps = [h["step"] for h in rows]
        mean = np.array([h["return_mean"] for h in rows])
        std = np.array([h["return_std"] for h in rows])
        ax.plot(steps, mean, marker="o", ms=3, label=f"seed {seed}")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=100)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)

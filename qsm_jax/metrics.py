"""Run outputs: JSONL metrics (always), TensorBoard events and the learning-curve PNG."""

from __future__ import annotations

import json
import os

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboardX import SummaryWriter  # noqa: E402


class MetricsWriter:
    """Writes rows ``{"step", "kind", ...}`` to ``metrics.jsonl`` and to TensorBoard.

    On resume from env step ``resume_step``, rows after it (written after the checkpoint by a
    killed run) are dropped from the JSONL file and TensorBoard is told to purge them, so no
    row is duplicated.
    """

    def __init__(self, workdir: str, resume_step: int = 0):
        self.path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(self.path):
            with open(self.path) as f:
                rows = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(rows)
        self.file = open(self.path, "a")  # noqa: SIM115
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1)

    def write(self, step: int, kind: str, values: dict[str, float]) -> None:
        values = {k: v if isinstance(v, int) else float(v) for k, v in values.items()}
        self.file.write(json.dumps({"step": int(step), "kind": kind, **values}) + "\n")
        self.file.flush()
        for name, value in values.items():
            self.tb.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        self.file.close()
        self.tb.close()


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

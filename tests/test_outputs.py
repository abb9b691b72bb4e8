"""The run's outputs behind one interface: fan-out, and Weights & Biases in its offline mode."""

import glob
import os

import pytest

from qsm_jax.program.metrics import JsonlOutput, Output, Outputs, read_metrics
from qsm_jax.program.train import train_and_evaluate

from .helpers import _tiny


class Recorder(Output):
    def __init__(self, log, name):
        self.log, self.name = log, name

    def row(self, step, kind, values):
        self.log.append((self.name, "row", step, kind, values))

    def close(self):
        self.log.append((self.name, "close"))


def test_outputs_hand_every_event_to_each_output_in_order(tmp_path):
    log = []
    outputs = Outputs([Recorder(log, "a"), JsonlOutput(str(tmp_path)), Recorder(log, "b")])
    outputs.row(5, "train", {"seed": 0, "loss": 1})  # ints stay ints, other numbers become floats
    outputs.evaluated(5, [], None)  # outputs that ignore an event need not define it
    outputs.advanced(1)
    outputs.close()
    assert log == [
        ("a", "row", 5, "train", {"seed": 0, "loss": 1}),
        ("b", "row", 5, "train", {"seed": 0, "loss": 1}),
        ("a", "close"),
        ("b", "close"),
    ]
    assert read_metrics(str(tmp_path)) == [{"step": 5, "kind": "train", "seed": 0, "loss": 1}]


def test_wandb_output_logs_every_row_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from qsm_jax.program.metrics import WandbOutput

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    config = _tiny(max_steps=400)
    workdir = str(tmp_path / "run")
    wandb_output = WandbOutput("qsm-test", workdir, config.to_dict())
    result = train_and_evaluate(config, workdir, progress=False, extra_outputs=[wandb_output])
    runs = glob.glob(os.path.join(workdir, "wandb", "offline-run-*", "run-*.wandb"))
    assert len(runs) == 1 and os.path.getsize(runs[0]) > 0, os.listdir(workdir)  # the log to `wandb sync`
    last = result["per_seed"][0]
    summary = wandb_output.summary
    assert summary["env_step"] == 400 and summary["eval/return_mean"] == pytest.approx(last["return_mean"])
    assert summary["train/critic_loss"] == pytest.approx(read_metrics(workdir, "train")[-1]["critic_loss"])

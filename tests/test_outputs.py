"""The run's outputs behind one interface: fan-out, and Weights & Biases in its offline mode."""

import glob
import os
import sys

import pytest

from qsm_jax.program.metrics import JsonlOutput, Output, Outputs, read_metrics
from qsm_jax.program.train import train_and_evaluate

from .helpers import tiny_run


@pytest.fixture(autouse=True)
def _fresh_wandb():
    """W&B keeps the settings of a run (offline mode, say) in a process-wide singleton: each test starts anew."""
    wandb = sys.modules.get("wandb")
    if hasattr(wandb, "teardown"):
        wandb.teardown()
    yield


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
    config = tiny_run(max_steps=400)
    workdir = str(tmp_path / "run")
    wandb_output = WandbOutput("qsm-test", workdir, config.to_dict())
    result = train_and_evaluate(config, workdir, progress=False, extra_outputs=[wandb_output])
    runs = glob.glob(os.path.join(workdir, "wandb", "offline-run-*", "run-*.wandb"))
    assert len(runs) == 1 and os.path.getsize(runs[0]) > 0, os.listdir(workdir)  # the log to `wandb sync`
    last = result["per_seed"][0]
    summary = wandb_output.summary
    assert summary["env_step"] == 400 and summary["eval/return_mean"] == pytest.approx(last["return_mean"])
    assert summary["train/critic_loss"] == pytest.approx(read_metrics(workdir, "train")[-1]["critic_loss"])


def _w_and_b_warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: W&B")]


@pytest.mark.parametrize("key", [None, "0" * 40], ids=["no-key", "key-no-network"])
def test_wandb_that_cannot_start_is_one_warning_and_the_run_goes_on(tmp_path, monkeypatch, capfd, key):
    """No API key, or a key that W&B cannot check (no network here; a wrong key elsewhere): one
    warning line naming what to do, no traceback, and the local outputs complete."""
    pytest.importorskip("wandb")
    from qsm_jax.program.metrics import WandbOutput

    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_SILENT"):
        monkeypatch.delenv(name, raising=False)
    if key:
        monkeypatch.setenv("WANDB_API_KEY", key)
        monkeypatch.setenv("WANDB_INIT_TIMEOUT", "5")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a stored key
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    workdir = str(tmp_path / "run")
    output = WandbOutput("qsm-test", workdir, {})
    result = train_and_evaluate(tiny_run(max_steps=400), workdir, progress=False, extra_outputs=[output])
    err = capfd.readouterr().err
    warnings = _w_and_b_warnings(err)
    assert len(warnings) == 1 and warnings[0].startswith("warning: W&B could not start ("), err
    assert "training goes on with its local outputs" in warnings[0]
    assert ("wandb login" if key is None else "WANDB_MODE=offline") in warnings[0]
    assert "Traceback" not in err and "wandb:" not in err
    assert result["history"][-1]["step"] == 400 and read_metrics(workdir, "eval")[-1]["step"] == 400


def test_wandb_failing_mid_run_is_one_warning_and_the_run_goes_on(tmp_path, monkeypatch, capfd):
    """A W&B run that starts and then fails (its service gone): one warning naming the env step, the
    W&B run is closed, and training finishes with the same local outputs as without W&B."""
    import types

    from qsm_jax.program.metrics import WandbOutput

    class Run:
        summary: dict = {}

        def __init__(self):
            self.logged, self.finished = 0, []

        def define_metric(self, *args, **kwargs):
            pass

        def log(self, row):
            self.logged += 1
            if self.logged == 3:
                raise ConnectionError("wandb service went away\nsecond line of detail")

        def finish(self, exit_code=0):
            self.finished.append(exit_code)

    run = Run()
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kwargs: run))
    workdir = str(tmp_path / "run")
    output = WandbOutput("qsm-test", workdir, {})
    result = train_and_evaluate(tiny_run(max_steps=400), workdir, progress=False, extra_outputs=[output])
    plain = train_and_evaluate(tiny_run(max_steps=400), str(tmp_path / "plain"), progress=False)
    warnings = _w_and_b_warnings(capfd.readouterr().err)
    assert len(warnings) == 1 and warnings[0].startswith("warning: W&B failed at env step "), warnings
    assert "(ConnectionError: wandb service went away)" in warnings[0] and "second line" not in warnings[0]
    assert run.logged == 3 and run.finished == [1]  # no row after the failure; the run closed once
    assert result["history"] == plain["history"]


def test_a_tensorboard_write_failing_in_its_thread_is_raised_at_the_next_row_naming_the_folder(tmp_path, capfd):
    """tensorboardX writes from its own thread: a failure there (a full disk) prints no thread
    traceback; the next row raises one OSError naming the TensorBoard folder."""
    import errno
    import time

    from qsm_jax.program.metrics import TensorBoardOutput

    out = TensorBoardOutput(str(tmp_path))
    thread = next(t for t in out.threads if hasattr(t, "_record_writer"))  # its event-writing thread

    def full_disk(event):
        raise OSError(errno.ENOSPC, "No space left on device")

    thread._record_writer.write_event = full_disk
    out.row(1, "train", {"loss": 1.0})  # handed to the thread, which fails writing it
    deadline = time.time() + 30
    while thread.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    with pytest.raises(OSError, match="No space left on device") as raised:
        out.row(2, "train", {"loss": 1.0})
    assert raised.value.filename == str(tmp_path / "tensorboard") and raised.value.errno == errno.ENOSPC
    out.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception in thread" not in err, err

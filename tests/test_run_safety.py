"""A run's record is never lost or locked: checks before writes, metrics owned by the run, one line
for every refusal (issue: "a run's record is never lost or locked")."""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import qsm_jax
from qsm_jax.program.metrics import Output
from qsm_jax.program.train import train_and_evaluate
from qsm_jax.program.workdir import lock_workdir, workdir_in_use

from .helpers import ROOT, run_py, tiny_run


def _snapshot(folder) -> dict[str, str]:
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            path = os.path.join(root, n)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny run finished at step 400 (checkpoints at 200 and 400)."""
    workdir = tmp_path_factory.mktemp("finished")
    train_and_evaluate(tiny_run(max_steps=400), str(workdir), progress=False)
    return workdir


def _copy(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    return workdir


def test_a_refused_start_changes_no_file(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    os.remove(workdir / "config.json")  # what the program advises for a damaged config.json
    before = _snapshot(workdir)
    other = tiny_run(max_steps=600, agent=qsm_jax.QSMConfig(**{**tiny_run().agent.to_dict(), "alpha": 10.0}))
    with pytest.raises(ValueError, match="checkpoint 400 was written by a different configuration"):
        train_and_evaluate(other, str(workdir), progress=False)
    assert _snapshot(workdir) == before  # no config.json with alpha=10 written: the original command still works
    result = train_and_evaluate(tiny_run(max_steps=600), str(workdir), progress=False)
    assert result["step"] == 600


def test_a_run_another_process_is_training_is_refused_and_left_alone(finished, tmp_path):
    """The training process holds a lock on its workdir (flock on the folder; released when it ends or
    dies): a second start on it is one line and touches nothing; once the lock is free it resumes."""
    workdir = _copy(finished, tmp_path)
    before = _snapshot(workdir)
    assert not workdir_in_use(str(workdir))
    with contextlib.ExitStack() as other_process:
        lock_workdir(str(workdir), other_process)
        assert workdir_in_use(str(workdir))
        with pytest.raises(ValueError, match="another process is training the run in .*pass another --workdir"):
            train_and_evaluate(tiny_run(max_steps=400), str(workdir), progress=False)
    assert _snapshot(workdir) == before and not workdir_in_use(str(workdir))
    assert train_and_evaluate(tiny_run(max_steps=400), str(workdir), progress=False)["step"] == 400


def test_max_steps_below_the_checkpoint_is_refused(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    before = _snapshot(workdir)
    with pytest.raises(
        ValueError, match=r"checkpoint is at env step 400, past --max_steps=200; pass --max_steps >= 400"
    ):
        train_and_evaluate(tiny_run(max_steps=200), str(workdir), progress=False)
    assert _snapshot(workdir) == before


def test_a_foreign_metrics_file_is_refused_and_kept(tmp_path):
    workdir = tmp_path / "theirs"
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text('{"step": 5, "loss": 1.0}\n{"step": 10, "loss": 0.5}\n')
    before = _snapshot(workdir)
    with pytest.raises(ValueError, match="metrics.jsonl was not written by a run of this program"):
        train_and_evaluate(tiny_run(), str(workdir), progress=False)
    assert _snapshot(workdir) == before


def test_a_partial_last_metrics_line_is_dropped_and_a_garbage_line_named(finished, tmp_path, capfd):
    workdir = _copy(finished, tmp_path)
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 400, "kind": "tra')  # a kill mid-write
    result = train_and_evaluate(tiny_run(max_steps=600), str(workdir), progress=False)
    assert result["step"] == 600
    err = capfd.readouterr().err
    assert "dropped its partial last line" in err and "resuming from env step 400" in err
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 600
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    lines[3] = "garbage"
    (workdir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 4: not a metrics row .*repair or delete that line"):
        train_and_evaluate(tiny_run(max_steps=800), str(workdir), progress=False)


@pytest.mark.slow
def test_all_checkpoints_damaged_needs_restart_and_keeps_the_metrics(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    for step in ("200", "400"):
        shutil.rmtree(workdir / "checkpoints" / step / "state")
    with pytest.raises(ValueError, match=r"no checkpoint in .* restores \(2 damaged.*; pass --restart to train"):
        train_and_evaluate(tiny_run(max_steps=400), str(workdir), progress=False)
    metrics = (workdir / "metrics.jsonl").read_text()
    out = run_py(*_flags(workdir))
    assert out.returncode == 1 and "every checkpoint of the run" in out.stderr and "--restart" in out.stderr
    assert out.stderr.strip().count("\n") == 0 and (workdir / "metrics.jsonl").read_text() == metrics
    out = run_py(*_flags(workdir), "--restart")
    assert out.returncode == 0, out.stderr[-2000:]
    kept = [n for n in os.listdir(workdir) if n.startswith("metrics.jsonl.before-restart-")]
    assert len(kept) == 1 and (workdir / kept[0]).read_text() == metrics


def _flags(workdir):
    """run.py flags equal to ``tiny_run(max_steps=400)``."""
    flags = ["--env=Pendulum-v1", "--seed=3", "--max_steps=400", "--start_steps=100", "--batch_size=32"]
    flags += ["--buffer_size=1000", "--eval_interval=200", "--eval_episodes=2", "--checkpoint_interval=200"]
    flags += ["--log_interval=50", "--actor_hidden_dims=16,16", "--critic_hidden_dims=16,16", "--time_features=8"]
    return [*flags, "--time_hidden_dims=16", "--progress=false", f"--workdir={workdir}"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--buffer_size=100", "--batch_size=256"], "buffer_size (100) must be at least batch_size (256)"),
        (["--buffer_size=20000000000", "--env=Pendulum-v1"], "the replay buffer needs"),
    ],
)
def test_silent_acceptances_are_one_line(tmp_path, flags, message):
    out = run_py(*flags, f"--workdir={tmp_path / 'w'}", "--progress=false")
    assert out.returncode == 1 and message in out.stderr and out.stderr.strip().count("\n") == 0, out.stderr
    assert not (tmp_path / "w").exists()  # refused before anything was written


@contextlib.contextmanager
def _tmpfs(path, size: str):
    """A small tmpfs at ``path`` (a real full or read-only disk); skips where mounting is not allowed."""
    os.makedirs(path, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if out.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs ({out.stderr.decode().strip()[:80]})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_run_resumes_once_freed(tmp_path):
    with _tmpfs(tmp_path / "disk", "300k") as disk:
        flags = _flags(disk / "run")  # checkpoint 200 fits, checkpoint 400 does not
        out = run_py(*flags)
        assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr[-3000:]
        assert "saving checkpoint 400 failed (No space left on device); the previous one is intact" in out.stderr
        subprocess.run(["mount", "-o", "remount,size=3m", str(disk)], check=True)
        out = run_py(*flags)
        assert out.returncode == 0 and "resuming from env step 200" in out.stderr, out.stderr[-2000:]


_FILL_BETWEEN_CHECKPOINTS = """
import os, runpy, sys
from qsm_jax.program import opening
from qsm_jax.program.metrics import Output

DISK = sys.argv[1]

class Fill(Output):  # at env step 250, between checkpoints 200 and 400, the disk fills up
    def row(self, step, kind, values):
        if step >= 250 and not os.path.exists(DISK + "/filler"):
            free = os.statvfs(DISK).f_bavail * os.statvfs(DISK).f_frsize
            with open(DISK + "/filler", "wb") as f:
                try:
                    f.write(bytes(free))
                except OSError:
                    pass

opened = opening.open_outputs
opening.open_outputs = lambda run, progress, extra: opened(run, progress, [*extra, Fill()])
sys.argv = ["run.py", *sys.argv[2:]]
runpy.run_path(sys.argv.pop(1), run_name="__main__")
"""


@pytest.mark.slow
def test_a_disk_that_fills_between_checkpoints_is_one_line_naming_the_path_and_the_resume_point(tmp_path):
    """Whichever output hits the full disk first (metrics rows, TensorBoard's writer thread, the curve
    PNG): one line naming the path and the env step the run resumes from; no thread's traceback."""
    script = tmp_path / "fill.py"
    script.write_text(_FILL_BETWEEN_CHECKPOINTS)
    with _tmpfs(tmp_path / "disk", "3m") as disk:
        flags = _flags(disk / "run")
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "disable"}
        cmd = [sys.executable, str(script), str(disk), os.path.join(ROOT, "experiments", "run.py"), *flags]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
        assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr[-3000:]
        line = out.stderr.strip()
        assert line.startswith("run.py: error: No space left on device (" + str(disk / "run")), line
        assert line.endswith("); once fixed, re-run the same command: it resumes from env step 200"), line
        os.remove(disk / "filler")
        out = run_py(*flags)
        assert out.returncode == 0 and "resuming from env step 200" in out.stderr, out.stderr[-2000:]


def test_a_read_only_workdir_is_one_line(tmp_path):
    with _tmpfs(tmp_path / "disk", "1m") as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        out = run_py("--env=Pendulum-v1", f"--workdir={disk / 'run'}", "--progress=false")
        assert out.returncode == 1 and "cannot write to" in out.stderr and out.stderr.strip().count("\n") == 0


def test_a_start_that_saved_nothing_does_not_lock_the_workdir(tmp_path, capfd):
    workdir = tmp_path / "w"
    diverging = tiny_run(max_steps=400, checkpoint_interval=400)
    first = tiny_run(max_steps=400, checkpoint_interval=400, batch_size=16)
    with pytest.raises(KeyboardInterrupt):  # stands for a start that dies before its first checkpoint

        class Die(Output):
            def row(self, step, kind, values):
                if step >= 200:
                    raise KeyboardInterrupt

        train_and_evaluate(first, str(workdir), progress=False, extra_outputs=[Die()])
    assert (workdir / "config.json").exists() and not any(n.isdigit() for n in os.listdir(workdir / "checkpoints"))
    rows = (workdir / "metrics.jsonl").read_text()
    result = train_and_evaluate(diverging, str(workdir), progress=False)  # other flags: allowed, nothing to resume
    assert result["step"] == 400 and "saved no checkpoint; starting from step 0" in capfd.readouterr().err
    kept = [n for n in os.listdir(workdir) if n.startswith("metrics.jsonl.before-restart-")]
    assert len(kept) == 1 and (workdir / kept[0]).read_text() == rows
    with pytest.raises(ValueError, match="different configuration"):  # now it has a checkpoint: locked to its flags
        train_and_evaluate(first, str(workdir), progress=False)


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "experiments", "run.py"), f"--workdir={tmp_path / 'w'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "disable"},
    )
    time.sleep(1.0)  # the libraries are still loading
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().count("\n") == 0 and "interrupted" in err, err
    assert not (tmp_path / "w").exists()


def test_a_normal_run_prints_only_the_programs_lines_unless_verbose(tmp_path):
    quiet = run_py(*_flags(tmp_path / "quiet"))
    assert quiet.returncode == 0 and quiet.stderr.strip() == "", quiet.stderr[-2000:]
    assert quiet.stdout.splitlines()[-1].startswith("outputs in")
    loud = run_py(*_flags(tmp_path / "loud"), "--verbose")
    assert loud.returncode == 0 and "checkpoint" in loud.stderr.lower()  # Orbax's INFO lines about its saves


def test_a_checkpoint_written_before_optional_state_fields_existed_restores(tmp_path):
    """A state saved without the fields added later (None unless their option is on) restores into today's."""
    import dataclasses

    import jax
    import numpy as np

    from qsm_jax.program import checkpoint
    from qsm_jax.program.fused import init_agents
    from qsm_jax.program.replay import replay_add, replay_init
    from qsm_jax.types import Batch

    from .helpers import tiny_run

    states, _ = init_agents(tiny_run(), 3, 2)
    assert states.temperature is None and states.noise_scale is None
    four = Batch(*(np.zeros(shape, np.float32) for shape in [(4, 3), (4, 2), (4,), (4, 3), (4,)]))
    buffers = jax.tree.map(lambda x: x[None], replay_add(replay_init(16, 3, 2), four))
    old = checkpoint.fields_present(states)  # the layout of a checkpoint written before those fields
    assert set(old) < {f.name for f in dataclasses.fields(states)}
    writer = checkpoint.RunCheckpointer(str(tmp_path))
    writer.save(100, old, buffers, {"env_step": 100})
    writer.close()
    reader = checkpoint.RunCheckpointer(str(tmp_path))
    assert set(reader.stored_state_fields(100)) == set(old)  # the layout, read from the checkpoint's metadata
    restored, _, meta = reader.restore(100, states, buffers)
    assert meta["env_step"] == 100 and restored.temperature is None
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(states), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_restart_the_first_time_every_checkpoint_is_damaged_trains_again_from_step_0(finished, tmp_path, capfd):
    """--restart given at once (the damaged checkpoints still in place) is enough: they are set aside,
    the metrics kept aside, and the run trains from step 0 as a fresh one does."""
    workdir = _copy(finished, tmp_path)
    for step in ("200", "400"):
        shutil.rmtree(workdir / "checkpoints" / step / "state")
    metrics = (workdir / "metrics.jsonl").read_text()
    result = train_and_evaluate(tiny_run(max_steps=400), str(workdir), progress=False, restart=True)
    fresh = train_and_evaluate(tiny_run(max_steps=400), str(tmp_path / "fresh"), progress=False)
    assert result["history"] == fresh["history"]
    kept = [n for n in os.listdir(workdir) if n.startswith("metrics.jsonl.before-restart-")]
    assert len(kept) == 1 and (workdir / kept[0]).read_text() == metrics
    assert "starting from step 0; the earlier metrics are kept in" in capfd.readouterr().err


class _Opened(Exception):
    pass


@pytest.fixture
def nothing_opens(monkeypatch):
    """Fails the test if a start opens an env or builds an agent (compiles) before it refuses."""
    from qsm_jax.program import opening

    def fail(*args, **kwargs):
        raise _Opened("an env was opened or an agent built before the refusal")

    for name in ("EnvPool", "make_env", "init_agents"):
        monkeypatch.setattr(opening, name, fail)


def _garbage_metrics(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    lines[3] = "garbage"
    (workdir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("locked", "another process is training the run in"),
        ("garbage metrics", r"metrics.jsonl, line 4: not a metrics row"),
        ("lower max_steps", r"the run's checkpoint is at env step 200, past --max_steps=100"),
        ("other config, no config.json", "checkpoint 400 was written by a different configuration"),
    ],
)
def test_refusals_decided_from_files_come_before_envs_open_or_anything_compiles(
    finished, tmp_path, nothing_opens, case, message
):
    workdir = _copy(finished, tmp_path)
    config = tiny_run(max_steps=600)
    with contextlib.ExitStack() as stack:
        if case == "locked":
            lock_workdir(str(workdir), stack)
        elif case == "garbage metrics":
            _garbage_metrics(workdir)
        elif case == "lower max_steps":
            config = tiny_run(max_steps=100)  # below both checkpoints (200, 400)
        else:
            os.remove(workdir / "config.json")
            config = tiny_run(max_steps=600, agent=qsm_jax.QSMConfig(**{**tiny_run().agent.to_dict(), "alpha": 10.0}))
        before = _snapshot(workdir)
        with pytest.raises(ValueError, match=message):
            train_and_evaluate(config, str(workdir), progress=False)
        assert _snapshot(workdir) == before


def test_restart_on_a_run_with_an_intact_checkpoint_is_refused_in_one_line(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    before = _snapshot(workdir)
    out = run_py(*_flags(workdir), "--restart")
    assert out.returncode == 1 and out.stderr.strip().count("\n") == 0, out.stderr[-2000:]
    assert out.stderr.startswith("run.py: error: --restart trains again from step 0 only a run whose every checkpoint")
    assert "checkpoint 400 in" in out.stderr and "re-run without --restart to resume from it" in out.stderr
    assert _snapshot(workdir) == before

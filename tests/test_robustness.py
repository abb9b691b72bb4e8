"""Runs that survive what users do to them: damaged checkpoints, damaged config.json, odd workdirs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import gymnasium as gym
import jax
import numpy as np
import pytest

import qsm_jax
from qsm_jax.program.restore import restore_run
from qsm_jax.program.train import train_and_evaluate

from .helpers import ROOT, TINY_FLAGS, TINY_NETS, run_py, tiny_run


def _truncate_data_files(checkpoint_dir):
    """Truncates every data file of a checkpoint's train state, as a full disk or a killed copy leaves it."""
    hit = 0
    for root, _, files in os.walk(os.path.join(checkpoint_dir, "state")):
        for name in files:
            path = os.path.join(root, name)
            if os.path.basename(root) == "d" and os.path.getsize(path) > 16:
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 3)
                hit += 1
    assert hit > 0


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capfd):
    whole = train_and_evaluate(tiny_run(max_steps=600), str(tmp_path / "whole"), progress=False)
    hurt = tmp_path / "hurt"
    train_and_evaluate(tiny_run(max_steps=400), str(hurt), progress=False)
    _truncate_data_files(hurt / "checkpoints" / "400")
    capfd.readouterr()
    resumed = train_and_evaluate(tiny_run(max_steps=600), str(hurt), progress=False)
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: checkpoint")]
    assert len(warnings) == 1 and "checkpoints/400 is damaged or incomplete" in warnings[0], err
    assert "Traceback" not in err
    assert os.listdir(hurt / "checkpoints_damaged")[0].startswith("400-")  # kept for inspection
    # Resumed from step 200, the run redoes 200..600 exactly as the uninterrupted one did.
    assert resumed["history"] == whole["history"] and whole["history"][-1]["step"] == 600


@pytest.mark.slow
def test_restore_run_skips_a_damaged_checkpoint_and_moves_nothing(tmp_path, capfd):
    workdir = tmp_path / "w"
    train_and_evaluate(tiny_run(max_steps=400), str(workdir), progress=False)
    _truncate_data_files(workdir / "checkpoints" / "400")
    capfd.readouterr()
    _, _, meta = restore_run(str(workdir))
    assert meta["env_step"] == 200
    err = capfd.readouterr().err
    assert "checkpoints/400 is damaged or incomplete" in err and "left in place" in err and "Traceback" not in err
    assert sorted(os.listdir(workdir / "checkpoints")) == ["200", "400"]  # a run in progress keeps its files
    assert not (workdir / "checkpoints_damaged").exists()
    with pytest.raises(ValueError, match=r"checkpoint 400 in .* is damaged or incomplete"):
        restore_run(str(workdir), step=400)
    with pytest.raises(ValueError, match=r"no checkpoint at step 300 .*it has steps \[200, 400\]"):
        restore_run(str(workdir), step=300)
    # experiments/evaluate_run.py reads the same way: step 200, one line per seed, one-line errors.
    script = os.path.join(ROOT, "experiments", "evaluate_run.py")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, script, f"--workdir={workdir}", "--episodes=2", "--spread=16", f"--out={tmp_path / 'e.json'}"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("qsm Pendulum-v1 seed 3 step 200: return ") and "at |a| > 0.99" in out.stdout
    (row,) = json.loads((tmp_path / "e.json").read_text())
    assert row["step"] == 200 and row["episodes"] == 2 and 0.0 <= row["wall_share"] <= 1.0
    assert "at the last 16 replay states: chain_std " in out.stdout and row["spread"]["chain_std"] > 0
    bad = subprocess.run(
        [sys.executable, script, f"--workdir={tmp_path / 'none'}"], capture_output=True, text=True, env=env
    )
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and "holds no run" in bad.stderr


@pytest.mark.slow
def test_an_empty_newest_checkpoint_is_one_warning_and_the_resume_line_on_the_terminal(tmp_path):
    """An empty step folder (a copy cut short): the program's warning and resume lines only, not
    Orbax's own "Metadata file does not exist" warning."""
    agent = qsm_jax.QSMConfig(**TINY_NETS)
    workdir = tmp_path / "w"
    train_and_evaluate(tiny_run(max_steps=400, agent=agent), str(workdir), progress=False)
    for entry in (workdir / "checkpoints" / "400").iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    flags = ["--env=Pendulum-v1", "--seed=3", "--start_steps=100", "--batch_size=32", "--buffer_size=1000"]
    flags += ["--eval_interval=200", "--eval_episodes=2", "--checkpoint_interval=200", "--log_interval=50"]
    out = run_py(*flags, *TINY_FLAGS, "--max_steps=600", f"--workdir={workdir}")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2, out.stderr
    assert lines[0].startswith("warning: checkpoint ") and "checkpoints/400 is damaged or incomplete" in lines[0]
    assert lines[1].startswith("resuming from env step 200")


def test_orbax_reader_coroutines_collected_after_a_failed_read_print_nothing():
    """Once a read failed, Orbax's unfinished reader coroutines that the garbage collector finds later
    are dropped by the unraisable hook; any other unraisable exception still goes to the hook before."""
    import types

    from orbax.checkpoint._src.serialization import serialization

    from qsm_jax.program import checkpoint

    saved, seen = sys.unraisablehook, []
    try:
        sys.unraisablehook = lambda unraisable: seen.append(unraisable.object)  # stands for the default printer
        checkpoint.mute_late_reader_errors()
        none = dict.fromkeys(("global_shape", "new_shard_shape", "dtype", "byte_limiter", "strict", "dll"))
        coroutine = serialization._read_array_index_and_device_put(None, None, None, **none, memory_kind=None)
        other = object()
        for obj in (coroutine, other):
            sys.unraisablehook(
                types.SimpleNamespace(
                    exc_type=ValueError, exc_value=ValueError("x"), exc_traceback=None, err_msg=None, object=obj
                )
            )
        assert seen == [other]
        coroutine.close()
    finally:
        sys.unraisablehook = saved


def test_orbax_reader_coroutines_never_started_print_no_warning_after_a_failed_read():
    """A reader coroutine that Orbax created but never ran, collected after a failed read, would print
    "coroutine ... was never awaited" and "Enable tracemalloc ..." at exit: it is filtered; a coroutine
    of anyone else still warns."""
    import gc
    import warnings

    from orbax.checkpoint._src.serialization import serialization

    from qsm_jax.program import checkpoint

    async def fetch():  # someone else's coroutine
        return None

    saved = sys.unraisablehook
    none = dict.fromkeys(("global_shape", "new_shard_shape", "dtype", "byte_limiter", "strict", "dll"))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            checkpoint.mute_late_reader_errors()
            serialization._read_array_index_and_device_put(None, None, None, **none, memory_kind=None)
            gc.collect()
            assert caught == []
            fetch()
            gc.collect()
        assert [str(w.message) for w in caught] == [f"coroutine '{fetch.__qualname__}' was never awaited"]
    finally:
        sys.unraisablehook = saved


def test_no_intact_checkpoint_and_damaged_inputs_give_one_line(tmp_path):
    # A run that experiments/run.py can name with its flags (default time features).
    agent = qsm_jax.QSMConfig(**TINY_NETS)
    workdir = tmp_path / "w"
    train_and_evaluate(tiny_run(max_steps=400, agent=agent), str(workdir), progress=False)
    for step in ("200", "400"):
        _truncate_data_files(workdir / "checkpoints" / step)
    flags = ["--env=Pendulum-v1", "--seed=3", "--start_steps=100", "--batch_size=32", "--buffer_size=1000"]
    flags += ["--eval_interval=200", "--eval_episodes=2", "--checkpoint_interval=200", "--log_interval=50"]
    out = run_py(*flags, *TINY_FLAGS, "--max_steps=600", f"--workdir={workdir}")
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert sum(line.startswith("warning: checkpoint") for line in lines) == 2
    assert "no checkpoint in" in lines[-1] and "restores" in lines[-1] and "--workdir" in lines[-1]

    (workdir / "config.json").write_text('{"env": "Pendulum-v1", "seed"')  # cut short
    with pytest.raises(ValueError, match=r"config.json is unreadable .*delete it to resume"):
        train_and_evaluate(tiny_run(max_steps=600), str(workdir), progress=False)

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        train_and_evaluate(tiny_run(), str(a_file), progress=False)


class _HugeRewardEnv(gym.Env):
    """Rewards 0, then 1e38 from the 250th step of its life on: the critic's loss overflows."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    lived = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        self.lived += 1
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return obs, 1e38 if self.lived >= 250 else 0.0, False, False, {}


gym.register("QSMTestHugeReward-v0", entry_point=_HugeRewardEnv, max_episode_steps=50)


def test_divergence_stops_with_one_line_and_the_last_checkpoint_restores(tmp_path):
    workdir = str(tmp_path / "w")
    with pytest.raises(ValueError) as info:
        train_and_evaluate(
            tiny_run(env="QSMTestHugeReward-v0", max_steps=600, eval_interval=600), workdir, progress=False
        )
    message = str(info.value)
    assert message.startswith("training diverged at env step ") and "\n" not in message
    step = int(message.split("env step ")[1].split(":")[0])
    assert 250 <= step <= 400 and "is not finite" in message and "--critic_lr" in message and "--alpha" in message
    assert "the checkpoint at step 200 is intact" in message
    states, buffers, meta = restore_run(workdir)
    assert meta["env_step"] == 200
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(states))


def _leaves_equal(workdir_a, workdir_b):
    state_a, buffer_a, meta_a = restore_run(str(workdir_a))
    state_b, buffer_b, meta_b = restore_run(str(workdir_b))
    assert meta_a["history"] == meta_b["history"]
    for a, b in zip(jax.tree.leaves((state_a, buffer_a)), jax.tree.leaves((state_b, buffer_b)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


AGENT = qsm_jax.QSMConfig(**TINY_NETS)  # expressible by run.py flags


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """One uninterrupted 600-step run that the wall-clock and SIGINT tests compare with."""
    workdir = tmp_path_factory.mktemp("whole")
    config = tiny_run(max_steps=600, checkpoint_interval=600, eval_interval=300, agent=AGENT)
    return train_and_evaluate(config, str(workdir), progress=False), workdir


@pytest.mark.slow
def test_wall_clock_checkpoints_change_nothing(tmp_path, whole_run):
    plain, plain_dir = whole_run
    often = train_and_evaluate(
        tiny_run(
            max_steps=600, checkpoint_interval=600, eval_interval=300, agent=AGENT, checkpoint_every_minutes=0.002
        ),
        str(tmp_path / "b"),
        progress=False,
    )
    steps = sorted(int(d) for d in os.listdir(tmp_path / "b" / "checkpoints") if d.isdigit())
    assert steps[-1] == 600 and steps[0] % 200 != 0  # a mid-episode checkpoint (Pendulum: 200-step episodes)
    assert often["history"] == plain["history"]
    _leaves_equal(plain_dir, tmp_path / "b")


@pytest.mark.slow
def test_sigint_mid_episode_saves_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path, whole_run):
    workdir = tmp_path / "stopped"
    flags = ["--env=Pendulum-v1", "--seed=3", "--start_steps=100", "--batch_size=32", "--buffer_size=1000"]
    flags += ["--eval_interval=300", "--eval_episodes=2", "--checkpoint_interval=600", "--log_interval=50"]
    args = [sys.executable, os.path.join(ROOT, "experiments", "run.py"), *flags, *TINY_FLAGS, "--max_steps=600"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "disable"}
    proc = subprocess.Popen(
        [*args, f"--workdir={workdir}"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        metrics = workdir / "metrics.jsonl"
        if metrics.exists() and any('"step": 250' in line for line in metrics.read_text().splitlines()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert "interrupted at env step" in last and "checkpoint saved there" in last
    stopped_at = int(last.split("env step ")[1].split(";")[0])
    assert 250 <= stopped_at < 600 and stopped_at % 200 != 0  # mid-episode
    out = subprocess.run([*args, f"--workdir={workdir}"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    _leaves_equal(whole_run[1], workdir)


@pytest.mark.slow
def test_evaluation_videos_are_valid_mp4s(tmp_path):
    import imageio.v3 as iio

    flags = ["--env=Hopper-v4", "--max_steps=400", "--start_steps=100", "--batch_size=32", "--buffer_size=1000"]
    flags += ["--eval_interval=200", "--eval_episodes=1", "--checkpoint_interval=400", *TINY_FLAGS]
    no_gl = run_py(*flags, "--video_interval=200", f"--workdir={tmp_path / 'no_gl'}")  # MUJOCO_GL=disable
    assert no_gl.returncode != 0 and "Traceback" not in no_gl.stderr, no_gl.stderr[-2000:]
    assert "--video_interval needs offscreen rendering" in no_gl.stderr.strip().splitlines()[-1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}
    filmed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "run.py"), *flags, "--video_interval=200"]
        + [f"--workdir={tmp_path / 'filmed'}"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert filmed.returncode == 0, filmed.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "filmed" / "metrics.jsonl").read_text().splitlines()]
    videos = {r["step"]: r["frames"] for r in rows if r["kind"] == "video"}
    assert sorted(videos) == [200, 400]
    for step, count in videos.items():
        frames = iio.imread(tmp_path / "filmed" / "videos" / f"{step}.mp4")
        assert frames.ndim == 4 and frames.shape[-1] == 3 and len(frames) == count >= 2
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [200, 400]


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, args, says",
    [
        ("scale_bandit.py", ["--dims=0,2"], "--dims must be comma-separated integers >= 2"),
        ("scale_bandit.py", ["--seeds=a"], "--seeds must be comma-separated integers >= 0"),
        ("bench_speed.py", ["--sections=nope"], "--sections must be some of updates,"),
        ("bench_speed.py", ["--sections=envs", "--env=Nope-v1"], "unknown env id 'Nope-v1'"),
        ("multimodal.py", ["--updates=0"], "--updates=0"),
        ("bench_launchers.py", ["--fake_units=0"], "--fake_units=0"),
    ],
)
def test_measurement_scripts_refuse_bad_flags_before_writing_anything(tmp_path, script, args, says):
    """A bad flag used to rewrite results/ (scale_bandit.py --dims=0 emptied scale.json) or run anyway."""
    out = ["--out_dir", str(tmp_path)] if script == "multimodal.py" else ["--out", str(tmp_path / "r.md")]
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", script), *args, f"{out[0]}={out[1]}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "disable"},
        timeout=120,
    )
    assert run.returncode != 0 and "Traceback" not in run.stderr and says in run.stderr, run.stderr[-2000:]
    assert os.listdir(tmp_path) == []

"""The d-dimensional bandit of the scale study (harness.bandit.scaled), its sweep, and the scale100k suite."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harness import bandit, benchmark

from .helpers import ROOT


@pytest.mark.parametrize("dim", [2, 6, 17, 38])
def test_peaks_inside_the_box_equally_separated(dim):
    b = bandit.scaled(dim)
    assert b.peaks.shape == (4, dim) and np.abs(b.peaks).max() == 0.5  # never at the walls
    dist = np.linalg.norm(b.peaks[:, None] - b.peaks[None], axis=-1)[np.triu_indices(4, 1)]
    # Every pair differs in 2/3 of the coordinates (up to rounding of d / 3): separation grows as sqrt(d).
    assert dist.min() >= np.sqrt(2 * (dim // 3)) - 1e-6 and dist.min() / b.width > 2.5
    np.testing.assert_allclose(bandit.reward(b.peaks, b), 1.0, rtol=1e-6)  # every peak is optimal


@pytest.mark.parametrize("dim", [2, 17])
def test_reward_and_its_gradient_equal_numpy(dim):
    b = bandit.scaled(dim)
    a = np.random.default_rng(dim).uniform(-1, 1, (64, dim)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(bandit.jax_reward(b, jnp.asarray(a))), bandit.reward(a, b), rtol=1e-5)
    grad = np.asarray(jax.vmap(jax.grad(lambda x: bandit.jax_reward(b, x)))(jnp.asarray(a)))
    d2 = ((a[:, None] - b.peaks) ** 2).sum(-1)
    j = d2.argmin(-1)  # the highest bump is the nearest peak
    expected = -np.exp(-d2[np.arange(64), j] / (2 * b.width**2))[:, None] * (a - b.peaks[j]) / b.width**2
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)


def test_exact_gradient_replaces_the_critic(tiny_config):
    import qsm_jax

    b = bandit.scaled(3)
    state = bandit.exact_critic(qsm_jax.create_train_state(jax.random.key(0), 1, 3, tiny_config), b)
    a = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (8, 3)), jnp.float32)
    q = state.critic.apply_fn({"params": state.critic.params}, jnp.ones((8, 1)), a)
    np.testing.assert_allclose(np.asarray(q), np.broadcast_to(bandit.reward(np.asarray(a), b), (2, 8)), rtol=1e-5)


@pytest.mark.slow
def test_sweep_on_a_tiny_budget_writes_its_files(tmp_path):
    out = tmp_path / "scale.md"
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "scale_bandit.py"), "--dims=2,3", "--seeds=0"]
    cmd += ["--updates=3", "--agents=SAC", f"--out={out}"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "scale.json").read_text())
    assert len(report["runs"]) == 4 and (tmp_path / "scale.png").exists()
    text = out.read_text()
    assert "| 2 | - | SAC |" in text and "| 3 | - | SAC |" in text and "4 of 4 planned runs done" in text
    bad = subprocess.run([*cmd, "--agents=Nope"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and "Nope" in bad.stderr


@pytest.mark.slow
def test_two_shards_share_one_sweep_and_reuse_counts_other_files(tmp_path):
    out = tmp_path / "scale.md"
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "scale_bandit.py"), "--dims=2,3", "--seeds=0,1"]
    cmd += ["--updates=3", "--agents=SAC", f"--out={out}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([*cmd, f"--shard={i}/2"], cwd=ROOT, env=env, stderr=subprocess.PIPE) for i in (0, 1)]
    assert all(p.wait() == 0 for p in procs), [p.stderr.read()[-2000:] for p in procs]
    report = json.loads((tmp_path / "scale.json").read_text())
    assert len(report["runs"]) == 8 and "--shard" not in report["command"]  # every run, from both processes
    assert "8 of 8 planned runs done" in out.read_text()
    other = tmp_path / "depth.md"  # a sweep planning a subset finds its runs in --reuse, runs nothing
    run = subprocess.run(
        [
            *cmd[:2],
            "--dims=3",
            "--seeds=1",
            "--updates=3",
            "--agents=SAC",
            f"--out={other}",
            f"--reuse={tmp_path}/scale.json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert run.returncode == 0 and "reward" not in run.stdout, run.stderr[-2000:]
    assert json.loads((tmp_path / "depth.json").read_text())["runs"] == {
        k: v for k, v in report["runs"].items() if "|d3|" in k and "|s1|" in k
    }
    bad = subprocess.run([*cmd, "--shard=2/2"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and "--shard" in bad.stderr


def test_scale_suite_lists_its_units():
    units = benchmark.suite_units("scale100k")
    assert len(units) == 18 and {u.config.env for u in units} == {"Ant-v4", "Humanoid-v4"}
    assert {benchmark.label(u.config) for u in units} == {"QSM", "QSM-mirror", "SAC"}

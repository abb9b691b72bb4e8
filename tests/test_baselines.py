"""SAC and TD3 in the same framework, the learning benchmark script, and the multi-modality claim."""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harness.bandit import train_on_bandit
from qsm_jax import QSMConfig
from qsm_jax.algorithms import ALGORITHMS
from qsm_jax.baselines import sac, td3
from qsm_jax.types import Batch

OBS, ACT, B = 4, 2, 32
SMALL = {"actor_hidden_dims": (32, 32), "critic_hidden_dims": (32, 32)}


def _batch(seed):
    rng = np.random.default_rng(seed)
    return Batch(
        rng.normal(size=(B, OBS)).astype(np.float32),
        rng.uniform(-1, 1, (B, ACT)).astype(np.float32),
        rng.normal(size=B).astype(np.float32),
        rng.normal(size=(B, OBS)).astype(np.float32),
        np.zeros(B, np.float32),
    )


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_train_step_contract(algo):
    algorithm = ALGORITHMS[algo]
    state = algorithm.create_train_state(jax.random.key(0), OBS, ACT, algorithm.config_cls(**SMALL))
    jax.clear_caches()
    for i in range(20):
        state, metrics = algorithm.train_step(state, _batch(i))
        chex.assert_tree_all_finite(metrics)
    assert algorithm.train_step._cache_size() == 1 and int(state.step) == 20
    for explore in (False, True):
        actions = algorithm.policy_sample(state, jnp.ones((64, OBS)), jax.random.key(1), explore=explore)
        assert actions.shape == (64, ACT) and float(jnp.abs(actions).max()) <= 1.0


def test_sac_log_prob_matches_numpy():
    state = sac.create_train_state(jax.random.key(0), OBS, ACT, sac.SACConfig(**SMALL))
    obs = jax.random.normal(jax.random.key(1), (5, OBS))
    actions, log_prob = sac.sample_with_log_prob(state.actor, state.actor.params, obs, jax.random.key(2))
    mean, log_std = (np.asarray(x, np.float64) for x in state.actor.apply_fn({"params": state.actor.params}, obs))
    u = np.arctanh(np.clip(np.asarray(actions, np.float64), -1 + 1e-7, 1 - 1e-7))
    std = np.exp(log_std)
    gauss = np.sum(-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi), -1)
    want = gauss - np.sum(np.log(1 - np.tanh(u) ** 2), -1)
    np.testing.assert_allclose(log_prob, want, rtol=1e-3, atol=1e-3)


def test_td3_delays_actor_and_target_updates():
    state = td3.create_train_state(jax.random.key(0), OBS, ACT, td3.TD3Config(**SMALL))
    changed = []
    for i in range(4):
        new, _ = td3.train_step(state, _batch(i))
        diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new.actor.params, state.actor.params)
        changed.append(max(jax.tree.leaves(diff)) > 0)
        target_diff = jax.tree.map(
            lambda a, b: float(jnp.abs(a - b).max()), new.target_critic_params, state.target_critic_params
        )
        assert (max(jax.tree.leaves(target_diff)) > 0) == changed[-1]
        state = new
    assert changed == [True, False, True, False]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_baselines_find_the_optimum_of_a_one_step_bandit(algo):
    a_star = np.array([0.5, -0.4], np.float32)
    algorithm = ALGORITHMS[algo]
    # SAC's entropy bonus pulls its soft optimum toward the centre; a small temperature keeps it near a*.
    extra = {"initial_temperature": 0.05} if algo == "sac" else {}
    config = algorithm.config_cls(
        actor_hidden_dims=(64, 64), critic_hidden_dims=(64, 64), actor_lr=1e-3, critic_lr=1e-3, **extra
    )
    state = algorithm.create_train_state(jax.random.key(0), 1, 2, config)
    rng = np.random.default_rng(0)
    obs = np.ones((128, 1), np.float32)
    for _ in range(1500):
        actions = rng.uniform(-1, 1, (128, 2)).astype(np.float32)
        rewards = -np.sum((actions - a_star) ** 2, -1).astype(np.float32)
        state, _ = algorithm.train_step(state, Batch(obs, actions, rewards, obs, np.ones(128, np.float32)))
    greedy = np.asarray(algorithm.policy_sample(state, obs[:1], jax.random.key(0), explore=False))[0]
    assert np.linalg.norm(greedy - a_star) < 0.15, greedy


@pytest.mark.slow
def test_qsm_holds_several_optima_where_sac_holds_one():
    """The multi-modality claim, at the settings README names (experiments/multimodal.py)."""
    small = {"actor_hidden_dims": (64, 64), "critic_hidden_dims": (64, 64)}
    _, q = train_on_bandit("qsm", QSMConfig(**small, alpha=3.0, diffusion_steps=20, temperature=0.7))
    _, s = train_on_bandit("sac", sac.SACConfig(**small, initial_temperature=0.1))
    print("qsm", q["mean_reward"], q["mode_mass"], "sac", s["mean_reward"], s["mode_mass"])
    assert q["mean_reward"] > 1.5 * q["uniform_reward"]
    assert q["modes_held"] >= 2
    assert s["modes_held"] == 1


@pytest.mark.slow
def test_bench_learning_runs_pending_units_lists_and_reports(tmp_path):
    """The unit runner end to end: the two cheapest units of the smoke suite, one per core; then
    --list shows them done and --report writes the table with the rest pending."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "disable"}
    script = os.path.join(root, "experiments", "bench_learning.py")
    dirs = [f"--units_dir={tmp_path / 'units'}", f"--runs_dir={tmp_path / 'runs'}"]
    out = subprocess.run(
        [sys.executable, script, "--suite=smoke", "--max_units=2", "--pin=", *dirs],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    done = sorted(os.listdir(tmp_path / "units"))
    assert len(done) == 2 and all(name.startswith("td3_Pendulum-v1_seed") for name in done), done
    assert out.stdout.count("done     ") == 2
    listed = subprocess.run([sys.executable, script, "--suite=smoke", "--list", *dirs], capture_output=True, text=True)
    assert listed.stdout.strip().splitlines()[-1].startswith("2/8 done")
    docs = {name: open(os.path.join(root, name)).read() for name in ("README.md", "docs/variants.md")}
    report = subprocess.run(
        [sys.executable, script, "--report", "--suite=smoke", *dirs[:1], f"--out_dir={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    # A report of other units leaves the project's docs alone (it once rewrote README.md from these two).
    assert all(open(os.path.join(root, name)).read() == text for name, text in docs.items())
    text = (tmp_path / "out" / "README.md").read_text()
    assert (
        "## Suite `smoke`: 8 units, 2 done, 6 pending" in text and (tmp_path / "out" / "smoke_Pendulum-v1.png").exists()
    )

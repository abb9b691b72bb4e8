"""DeepMind Control Suite tasks (through shimmy) in the same program: flat observations, truncation, resume."""

import logging
import warnings

import jax
import numpy as np
import pytest
from absl import logging as absl_logging

from qsm_jax.program.envs import EnvPool, env_dims, make_env
from qsm_jax.program.restore import restore_run
from qsm_jax.program.train import train_and_evaluate

from .helpers import run_py, tiny_run

DMC_TASKS = {  # id -> flat observation size
    "dm_control/walker-walk-v0": 24,
    "dm_control/walker-run-v0": 24,
    "dm_control/cheetah-run-v0": 17,
    "dm_control/humanoid-walk-v0": 67,
}


@pytest.mark.parametrize("env_id", sorted(DMC_TASKS))
def test_dmc_tasks_give_flat_float32_observations_of_a_fixed_size(env_id):
    env = make_env(env_id)
    obs_dim, action_dim = env_dims(env)
    assert obs_dim == DMC_TASKS[env_id] and env.observation_space.dtype == np.float32
    first, _ = env.reset(seed=7)
    again, _ = env.reset(seed=7)
    other, _ = env.reset(seed=8)
    assert first.dtype == np.float32 and first.shape == (obs_dim,)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    obs, reward, terminated, truncated, _ = env.step(np.ones(action_dim, np.float32))
    assert obs.shape == (obs_dim,) and obs.dtype == np.float32 and np.isfinite(reward)
    env.close()
    pool = EnvPool(env_id, 2)
    obs = pool.reset([1, 2])
    assert obs.shape == (2, obs_dim) and obs.dtype == np.float32
    transitions, next_obs, _ = pool.step(obs, np.zeros((2, action_dim), np.float32))
    assert transitions.next_observations.shape == (2, obs_dim) and next_obs.dtype == np.float32
    pool.close()


def test_dmc_flattening_follows_the_observation_spec_order():
    env = make_env("dm_control/walker-walk-v0")
    raw = env.unwrapped
    dict_obs, _ = raw.reset(seed=3)
    flat, _ = env.reset(seed=3)
    assert sorted(dict_obs) == ["height", "orientations", "velocity"]  # alphabetical, as gymnasium's Dict
    want = np.concatenate([np.ravel(dict_obs[k]) for k in sorted(dict_obs)]).astype(np.float32)
    np.testing.assert_array_equal(flat, want)


def test_making_a_dmc_task_prints_no_third_party_noise(caplog):
    """No RuntimeWarning from float32 bounds on dm_control's float64 actions, no MuJoCo settotalmass
    notices; other absl warnings still get through."""
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = make_env("dm_control/cheetah-run-v0")
        absl_logging.warning("a warning of the user's own")
    env.close()
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert [r.getMessage() for r in caplog.records] == ["a warning of the user's own"]
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    np.testing.assert_array_equal(env.action_space.high, 1.0)


def test_dmc_episode_ends_as_a_truncation_at_1000_steps():
    pool = EnvPool("dm_control/cheetah-run-v0", 1)
    obs = pool.reset([0])
    rng = np.random.default_rng(0)
    for _ in range(1000):
        transitions, obs, finished = pool.step(obs, rng.uniform(-1, 1, (1, 6)).astype(np.float32))
        assert transitions.terminals[0] == 0.0  # a time limit is never a termination
        if finished:
            break
    assert finished and finished[0][2] == 1000
    pool.close()


@pytest.mark.slow
def test_tiny_qsm_run_on_a_dmc_task_resumes_exactly(tmp_path):
    config = tiny_run(env="dm_control/cheetah-run-v0", eval_episodes=1)
    full = train_and_evaluate(config, str(tmp_path / "full"), progress=False)
    train_and_evaluate(
        tiny_run(env="dm_control/cheetah-run-v0", eval_episodes=1, max_steps=200), str(tmp_path / "split")
    )
    resumed = train_and_evaluate(config, str(tmp_path / "split"), progress=False)
    assert resumed["history"] == full["history"] and [h["step"] for h in full["history"]] == [200, 400]
    for name in ("config.json", "metrics.jsonl", "learning_curve.png"):
        assert (tmp_path / "full" / name).exists()
    state_a, buffer_a, _ = restore_run(str(tmp_path / "full"))
    state_b, buffer_b, _ = restore_run(str(tmp_path / "split"))
    for a, b in zip(jax.tree.leaves((state_a, buffer_a)), jax.tree.leaves((state_b, buffer_b)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_dmc_id_exits_with_one_line(tmp_path):
    out = run_py("--env=dm_control/walker-sprint-v0", f"--workdir={tmp_path / 'w'}")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    message = out.stderr.strip()
    assert "\n" not in message and "unknown env id 'dm_control/walker-sprint-v0'" in message
    assert "dm_control/walker-walk-v0" in message

"""The training program end to end: outputs, resume, SIGKILL, errors, episode bookkeeping, learning."""

import json
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import jax
import numpy as np
import pytest

import qsm_jax
from qsm_jax.program import evaluation, run_config
from qsm_jax.program.envs import make_env
from qsm_jax.program.metrics import read_metrics
from qsm_jax.program.replay import replay_init
from qsm_jax.program.restore import restore_run
from qsm_jax.program.train import RunConfig, train_and_evaluate

from .helpers import ROOT, TINY_AGENT, TINY_FLAGS, run_py, tiny_run  # noqa: F401 (helpers registers QSMTestEpisodes-v0)


def test_run_py_end_to_end_writes_outputs(tmp_path):
    workdir = tmp_path / "run"
    out = run_py(
        "--env=Pendulum-v1",
        "--max_steps=300",
        "--start_steps=100",
        "--batch_size=32",
        "--eval_interval=150",
        "--eval_episodes=2",
        "--checkpoint_interval=150",
        "--log_interval=50",
        f"--workdir={workdir}",
        *TINY_FLAGS,
    )
    assert out.returncode == 0, out.stderr
    assert "final evaluation at step 300" in out.stdout and "seed 0: final evaluation return" in out.stdout
    for name in ("config.json", "metrics.jsonl", "learning_curve.png"):
        assert (workdir / name).is_file(), name
    assert sorted(os.listdir(workdir / "checkpoints")) == ["150", "300"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tensorboard"))
    assert [r["step"] for r in read_metrics(str(workdir), "eval")] == [150, 300]
    train_rows = read_metrics(str(workdir), "train")
    assert [r["step"] for r in train_rows] == [100, 150, 200, 250, 300]
    assert all(np.isfinite(r["critic_loss"]) and np.isfinite(r["actor_loss"]) for r in train_rows)
    assert json.loads((workdir / "config.json").read_text())["agent"]["actor_hidden_dims"] == [16, 16]


def test_resume_equals_uninterrupted_run(tmp_path):
    full = train_and_evaluate(tiny_run(), str(tmp_path / "full"), progress=False)
    train_and_evaluate(tiny_run(max_steps=200), str(tmp_path / "split"), progress=False)
    resumed = train_and_evaluate(tiny_run(), str(tmp_path / "split"), progress=False)
    # Deterministic on CPU: same seed and flags, identical evaluation returns.
    assert resumed["history"] == full["history"]
    state_a, buffer_a, meta_a = restore_run(str(tmp_path / "full"))
    state_b, buffer_b, meta_b = restore_run(str(tmp_path / "split"))
    assert meta_a == meta_b and meta_a["env_step"] == 400 and int(buffer_a.size[0]) == 400
    for tree_a, tree_b in ((state_a, state_b), (buffer_a, buffer_b)):
        leaves_a, leaves_b = jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)
        assert len(leaves_a) == len(leaves_b) > 0
        for a, b in zip(leaves_a, leaves_b, strict=True):
            np.testing.assert_array_equal(a, b)

    def without_timing(rows):
        return [{k: v for k, v in r.items() if k != "env_steps_per_s"} for r in rows]

    assert without_timing(read_metrics(str(tmp_path / "full"))) == without_timing(read_metrics(str(tmp_path / "split")))


def test_sigkill_mid_training_then_rerun_completes(tmp_path):
    workdir = tmp_path / "killed"
    flags = [
        "--env=Pendulum-v1",
        "--max_steps=1200",
        "--start_steps=100",
        "--batch_size=32",
        "--buffer_size=1000",
        "--eval_interval=400",
        "--eval_episodes=1",
        "--checkpoint_interval=300",
        "--log_interval=50",
        f"--workdir={workdir}",
        *TINY_FLAGS,
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "disable"}
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "experiments", "run.py"), *flags],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    # Kill between checkpoints: after the one at 300 and some rows beyond it.
    while time.time() < deadline and proc.poll() is None:
        try:
            steps = [r["step"] for r in read_metrics(str(workdir), "train")]
        except (FileNotFoundError, json.JSONDecodeError):
            steps = []
        if steps and steps[-1] >= 450:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(r["step"] for r in read_metrics(str(workdir)))
    assert 450 <= killed_at < 1200

    out = run_py(*flags)
    assert out.returncode == 0, out.stderr
    assert "final evaluation at step 1200" in out.stdout
    rows = read_metrics(str(workdir))
    train_steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert train_steps == list(range(100, 1201, 50)), "rows lost or duplicated"
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [400, 800, 1200]
    _, buffer, meta = restore_run(str(workdir))
    assert meta["env_step"] == 1200 and int(buffer.size[0]) == 1000 and int(buffer.pointer[0]) == 200


@pytest.mark.parametrize(
    "args,message",
    [
        (["--batch_size=0"], "batch_size must be an integer >= 1"),
        (["--alpha=-3"], "alpha must be a finite number > 0"),
        (["--actor_hidden_dims=256,x"], "actor_hidden_dims must be comma-separated integers"),
        (["--env=NoSuchEnv-v0"], "unknown env id 'NoSuchEnv-v0'"),
        (["--env=CartPole-v1"], "Discrete action space; QSM needs continuous (Box) actions"),
    ],
)
def test_bad_flags_and_envs_exit_with_a_message(tmp_path, args, message):
    out = run_py(f"--workdir={tmp_path / 'w'}", "--max_steps=10", *TINY_FLAGS, *args)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_checkpoint_from_another_config_is_refused(tmp_path):
    workdir = str(tmp_path / "w")
    train_and_evaluate(tiny_run(max_steps=200), workdir, progress=False)
    other = tiny_run(
        agent=qsm_jax.QSMConfig(
            **{
                **TINY_AGENT.to_dict(),
                "alpha": 10.0,
                "actor_hidden_dims": (16, 16),
                "critic_hidden_dims": (16, 16),
                "time_hidden_dims": (16,),
            }
        )
    )
    with pytest.raises(ValueError, match=r"different configuration \(alpha=50.0 there, 10.0 now\)"):
        train_and_evaluate(other, workdir, progress=False)
    os.remove(os.path.join(workdir, "config.json"))  # the checkpoint itself is checked too
    with pytest.raises(ValueError, match="checkpoint 200 was written by a different configuration"):
        train_and_evaluate(other, workdir, progress=False)


def test_a_run_written_before_an_option_existed_resumes():
    """Fields a saved config lacks (options added later) read as their defaults, not as a mismatch."""
    current = tiny_run().to_dict()
    older = json.loads(json.dumps(current))
    for name in ("entropy_temperature", "exploration", "eval_sampling"):
        del older["agent"][name]
    del older["checkpoint_env_state"]
    run_config.check_same_experiment(older, current, "workdir 'w'")  # no error
    changed = tiny_run(agent=qsm_jax.QSMConfig(**{**TINY_AGENT.to_dict(), "eval_sampling": "noise_free"})).to_dict()
    with pytest.raises(ValueError, match=r"eval_sampling='chain' there, 'noise_free' now"):
        run_config.check_same_experiment(older, changed, "workdir 'w'")


def test_only_true_terminations_are_stored_as_terminals(tmp_path):
    train_and_evaluate(
        tiny_run(env="QSMTestEpisodes-v0", max_steps=300, start_steps=300), str(tmp_path), progress=False
    )
    _, buffer, _ = restore_run(str(tmp_path))
    next_obs, terminals = buffer.data.next_observations[0, :300], buffer.data.terminals[0, :300]
    should_terminate = (next_obs[:, 0] == 3) & (next_obs[:, 1] == 0)
    truncated = next_obs[:, 0] == 5
    assert should_terminate.any() and truncated.any()
    np.testing.assert_array_equal(terminals, should_terminate.astype(np.float32))
    # Rewards are the env's actions: the agent's [-1, 1] maps onto the env's [-3, 5].
    actions, rewards = buffer.data.actions[0, :300, 0], buffer.data.rewards[0, :300]
    np.testing.assert_allclose(rewards, -3.0 + (actions + 1.0) * 4.0, rtol=1e-5, atol=1e-5)


class _FiftyStepEnv(gym.Env):
    """Pendulum's spaces, 50 steps per episode, no reward: a short episode beside Pendulum's 200."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, False, False, {}


gym.register("QSMTestFiftySteps-v0", entry_point=_FiftyStepEnv, max_episode_steps=50)


def test_evaluation_measures_the_share_of_actions_at_the_walls(monkeypatch):
    """K = 2 agents x E = 2 episodes (200 and 50 steps). Agent 0 acts at the wall (|a| = 1) always:
    share 1. Agent 1 acts 0.0 in its 200-step episode and 0.995 in its 50-step one: 50 / 250 = 0.2
    (steps after an episode ended do not count: counting them would give 200 / 400)."""

    def fixed_actions(states, observations, keys, t):
        return np.array([[[1.0], [-1.0]], [[0.0], [0.995]]], np.float32)

    monkeypatch.setattr(evaluation, "_eval_actions", fixed_actions)
    envs = [make_env(e) for e in ("Pendulum-v1", "QSMTestFiftySteps-v0") * 2]
    returns, walls = evaluation.evaluate(None, envs, np.array([[0, 1], [2, 3]]), jax.random.key_data(jax.random.key(0)))
    assert returns.shape == (2, 2) and np.all(returns[:, 1] == 0.0)
    np.testing.assert_allclose(walls, [1.0, 0.2])


def test_policy_spread_against_a_numpy_recount():
    """evaluate_run.py --spread: the chain samples' std, Q's spread and best-of-8 gain recounted in NumPy
    from the same samples, and |dQ/da| against central differences."""
    state = qsm_jax.create_train_state(jax.random.key(0), 4, 2, TINY_AGENT)
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    out = evaluation.policy_spread(state, obs, jax.random.key(1), 10)
    actions = qsm_jax.diffusion.sample_chain(state.actor, state.config, np.tile(obs, (10, 1)), jax.random.key(1), 2)

    def q_of(o, a):
        return np.asarray(state.critic.apply_fn({"params": state.critic.params}, o, a)).mean(axis=0)

    q = q_of(np.tile(obs, (10, 1)), actions).reshape(10, 5)
    a = np.asarray(actions).reshape(10, 5, 2)
    assert out["chain_std"] == pytest.approx(a.std(axis=0).mean(), rel=1e-5)
    assert out["wall_share"] == pytest.approx((np.abs(a) > evaluation.WALL).mean())
    assert out["q_std"] == pytest.approx(q.std(axis=0).mean(), rel=1e-4)
    assert out["best_of_8_gain"] == pytest.approx((q[:8].max(axis=0) - q[:8].mean(axis=0)).mean(), rel=1e-4)
    assert out["q_abs"] == pytest.approx(np.abs(q).mean(), rel=1e-5)
    first, eps = np.asarray(actions[:5], np.float64), 1e-2
    grads = [
        (q_of(obs, (first + eps * e).astype(np.float32)) - q_of(obs, (first - eps * e).astype(np.float32))) / (2 * eps)
        for e in np.eye(2)
    ]
    assert out["grad_q"] == pytest.approx(np.abs(np.stack(grads)).mean(), rel=2e-2)
    # Why the walls: the sign of dQ/da at each wall dimension (central differences over all samples) and
    # the Q lost by moving each sample's wall dimensions to +-0.9.
    flat, tiled = np.asarray(actions, np.float64), np.tile(obs, (10, 1))
    wall = np.abs(flat) > evaluation.WALL
    assert 0 < wall.mean() < 1  # the untrained chain puts some samples at the walls, so both fields count
    every = np.stack(
        [
            (q_of(tiled, (flat + eps * e).astype(np.float32)) - q_of(tiled, (flat - eps * e).astype(np.float32)))
            / (2 * eps)
            for e in np.eye(2)
        ],
        axis=1,
    )
    assert out["wall_outward"] == pytest.approx((np.sign(flat) * every > 0)[wall].mean(), abs=0.05)
    backed = np.where(wall, 0.9 * np.sign(flat), flat).astype(np.float32)
    lost = q.reshape(-1) - q_of(tiled, backed)
    assert out["wall_backoff_q"] == pytest.approx(lost[wall.any(axis=1)].mean(), rel=1e-4, abs=1e-6)


def test_env_checks_and_buffer_memory():
    env = make_env("Pendulum-v1")
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    buffer = replay_init(1234, obs_dim=17, action_dim=6)
    assert buffer.nbytes == 1234 * (17 + 6 + 1 + 17 + 1) * 4
    with pytest.raises(ValueError, match="Box"):
        make_env("CartPole-v1")


@pytest.mark.slow
def test_qsm_learns_pendulum(tmp_path):
    """QSM with the reference algorithm settings (alpha 50, T 5) and 64x64 networks."""
    config = RunConfig(
        env="Pendulum-v1",
        seed=0,
        max_steps=10_000,
        start_steps=1_000,
        eval_interval=2_000,
        eval_episodes=10,
        checkpoint_interval=10_000,
        log_interval=1_000,
        agent=qsm_jax.QSMConfig(actor_hidden_dims=(64, 64), critic_hidden_dims=(64, 64)),
    )
    result = train_and_evaluate(config, str(tmp_path), progress=False)
    print([round(h["return_mean"]) for h in result["history"]])
    assert result["return_mean"] > -400


@pytest.mark.parametrize(
    "env_id",
    [
        "Walker2d-v4",
        "Walker2d-v5",
        "HalfCheetah-v4",
        "HalfCheetah-v5",
        "Hopper-v4",
        "Hopper-v5",
        "Ant-v4",
        "Ant-v5",
        "Humanoid-v4",
        "Humanoid-v5",
        "Pendulum-v1",
    ],
)
def test_supported_envs_step_in_unit_actions(env_id):
    env = make_env(env_id)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, reward, terminated, truncated, _ = env.step(np.ones(env.action_space.shape, np.float32))
    assert obs.shape == env.observation_space.shape and np.isfinite(reward)
    env.close()

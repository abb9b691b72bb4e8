"""Helpers the test modules share: the repository root, a tiny run config, and run.py as a subprocess."""

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np

import qsm_jax
from qsm_jax.program.run_config import RunConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The one tiny configuration of the tests: TINY_NETS for any algorithm (what TINY_FLAGS sets on run.py's
# command line), TINY for a diffusion policy (QSM, Diffusion-QL), TINY_AGENT = QSM with TINY.
TINY_NETS = {"actor_hidden_dims": (16, 16), "critic_hidden_dims": (16, 16)}
TINY = {**TINY_NETS, "time_features": 8, "time_hidden_dims": (16,)}
TINY_AGENT = qsm_jax.QSMConfig(**TINY)
TINY_FLAGS = ["--actor_hidden_dims=16,16", "--critic_hidden_dims=16,16", "--progress=false"]


def random_batch(seed: int = 1, n: int = 32, terminals: float = 0.0) -> qsm_jax.Batch:
    """n random transitions with 3-D observations and 2-D actions in [-1, 1]."""
    rng = np.random.default_rng(seed)
    return qsm_jax.Batch(
        observations=rng.normal(size=(n, 3)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=rng.normal(size=(n, 3)).astype(np.float32),
        terminals=np.full(n, terminals, np.float32),
    )


def run_py(*args, **kwargs):
    """``experiments/run.py *args`` in a subprocess on CPU: the CompletedProcess (text output)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "disable"}
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "run.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        **kwargs,
    )


def tiny_run(**overrides) -> RunConfig:
    """A run of TINY_AGENT on Pendulum-v1 in a few seconds: 400 env steps, checkpoints at 200 and 400."""
    base = dict(
        env="Pendulum-v1",
        seed=3,
        max_steps=400,
        start_steps=100,
        batch_size=32,
        buffer_size=1000,
        eval_interval=200,
        eval_episodes=2,
        checkpoint_interval=200,
        log_interval=50,
        agent=TINY_AGENT,
    )
    return RunConfig(**{**base, **overrides})


class _EpisodeEnv(gym.Env):
    """Observation (t, a random parity bit drawn at reset): terminates at t = 3 when the bit is 0,
    else runs to the time limit (5 steps), so stored terminals can be checked against observations."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-3.0, 5.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.parity = 0, float(self.np_random.integers(2))
        return np.array([0.0, self.parity], np.float32), {}

    def step(self, action):
        assert -3.0 <= action[0] <= 5.0
        self.t += 1
        return np.array([self.t, self.parity], np.float32), float(action[0]), self.t == 3 and not self.parity, False, {}


gym.register("QSMTestEpisodes-v0", entry_point=_EpisodeEnv, max_episode_steps=5)

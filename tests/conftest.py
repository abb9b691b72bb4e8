import os
import sys

# The benchmark harness lives in experiments/harness (it is not installed with the library).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments"))
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
os.environ.setdefault("MUJOCO_GL", "disable")

import jax  # noqa: E402
import pytest  # noqa: E402

import qsm_jax  # noqa: E402


@pytest.fixture
def tiny_config() -> qsm_jax.QSMConfig:
    return qsm_jax.QSMConfig(
        actor_hidden_dims=(16, 16),
        critic_hidden_dims=(16, 16),
        time_features=8,
        time_hidden_dims=(16,),
    )


@pytest.fixture
def key() -> jax.Array:
    return jax.random.key(0)

"""Run in a venv holding only the core (`pip install .`, no extras): the library a researcher imports
into another JAX codebase must work with jax, flax, optax and chex alone (`make test-core`)."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np

import qsm_jax
from qsm_jax.algorithms import ALGORITHMS

for absent in ("gymnasium", "mujoco", "dm_control", "rliable", "tensorboardX"):  # jax brings scipy, flax orbax
    assert importlib.util.find_spec(absent) is None, f"{absent} is installed: this venv is not core-only"

OBS, ACT, B = 6, 2, 32
rng = np.random.default_rng(0)
batch = qsm_jax.Batch(
    observations=jnp.asarray(rng.normal(size=(B, OBS)), jnp.float32),
    actions=jnp.asarray(rng.uniform(-1, 1, size=(B, ACT)), jnp.float32),
    rewards=jnp.asarray(rng.normal(size=B), jnp.float32),
    next_observations=jnp.asarray(rng.normal(size=(B, OBS)), jnp.float32),
    terminals=jnp.zeros(B, jnp.float32),
)
qsm_jax.check_batch(batch, OBS, ACT)
tiny = {"actor_hidden_dims": (32, 32), "critic_hidden_dims": (32, 32)}
config = qsm_jax.QSMConfig(**tiny, time_features=8, time_hidden_dims=(16,))
state = qsm_jax.create_train_state(jax.random.key(0), OBS, ACT, config)
for _ in range(3):
    state, metrics = qsm_jax.train_step(state, batch)
assert int(state.step) == 3 and all(np.isfinite(float(v)) for v in metrics.values()), metrics
actions = qsm_jax.sample_actions(state, batch.observations, jax.random.key(1))
assert actions.shape == (B, ACT) and float(jnp.abs(actions).max()) <= 1.0
for name, algorithm in ALGORITHMS.items():  # the baselines' learners are core too
    extra = {"time_features": 8, "time_hidden_dims": (16,)} if name in ("qsm", "dql") else {}
    s = algorithm.create_train_state(jax.random.key(0), OBS, ACT, algorithm.config_cls(**tiny, **extra))
    s, _ = algorithm.train_step(s, batch)
print(f"core-only install OK: qsm_jax {qsm_jax.__version__}, jax {jax.__version__}, algorithms {sorted(ALGORITHMS)}")

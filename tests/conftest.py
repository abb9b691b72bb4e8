import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The benchmark harness lives in experiments/harness (it is not installed with the library).
sys.path.insert(0, os.path.join(_ROOT, "experiments"))
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
os.environ.setdefault("MUJOCO_GL", "disable")
# One on-disk XLA compilation cache for the test session, shared by the xdist workers and by every
# run.py / bench_learning.py subprocess (they inherit this environment). The tests build the same small
# programs again and again: a tiny run.py compiles ~110 programs (most of them flax's op-by-op
# initialisation), 26 s of CPU cold and 8.5 s with a warm cache. Cached executables are the ones XLA
# would compile, so no number changes. The size cap turns on JAX's file lock, so concurrent processes
# never read a half-written entry. JAX reads these at import, so they are set before `import jax`.
_XLA_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": os.path.join(_ROOT, ".pytest_cache", "xla"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    "JAX_COMPILATION_CACHE_MAX_SIZE": str(2**30),
}
for _name, _value in _XLA_CACHE.items():
    os.environ.setdefault(_name, _value)

import jax  # noqa: E402
import pytest  # noqa: E402

import qsm_jax  # noqa: E402


@pytest.fixture
def tiny_config() -> qsm_jax.QSMConfig:
    from .helpers import TINY_AGENT

    return TINY_AGENT


@pytest.fixture
def key() -> jax.Array:
    return jax.random.key(0)

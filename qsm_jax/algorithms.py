"""The registry of algorithms the training program can run (``qsm_jax.types.Algorithm``).

QSM is the product; SAC, TD3 and Diffusion-QL are the baselines it is measured against. A new
algorithm joins with ``register``: the program, the fused step and the benchmark then run it.
"""

from __future__ import annotations

from typing import Any

from qsm_jax import learner
from qsm_jax.baselines import dql, sac, td3
from qsm_jax.config import QSMConfig
from qsm_jax.types import Algorithm

ALGORITHMS: dict[str, Algorithm] = {}
_BY_STATE: dict[type, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
    """Adds ``algorithm`` under its name (replacing one of the same name) and returns it."""
    ALGORITHMS[algorithm.name] = algorithm
    _BY_STATE[algorithm.state_cls] = algorithm
    return algorithm


register(
    Algorithm("qsm", QSMConfig, learner.QSMState, learner.create_train_state, learner.train_step, learner.policy_sample)
)
register(Algorithm("sac", sac.SACConfig, sac.SACState, sac.create_train_state, sac.train_step, sac.policy_sample))
register(Algorithm("td3", td3.TD3Config, td3.TD3State, td3.create_train_state, td3.train_step, td3.policy_sample))
register(Algorithm("dql", dql.DQLConfig, dql.DQLState, dql.create_train_state, dql.train_step, dql.policy_sample))


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {name!r}")
    return ALGORITHMS[name]


def algorithm_of(state: Any) -> Algorithm:
    """The algorithm whose train state ``state`` is (looked up by its class)."""
    if type(state) not in _BY_STATE:
        raise ValueError(f"no registered algorithm has train states of type {type(state).__name__}; see register()")
    return _BY_STATE[type(state)]

"""The algorithms the training program can run, behind one interface.

Each provides a frozen config class, ``create_train_state(key, obs_dim, action_dim, config)``, a
jitted ``train_step(state, batch) -> (state, metrics)`` and a traceable
``policy_sample(state, observations, key, explore) -> actions`` used inside the fused loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from qsm_jax import learner
from qsm_jax.baselines import dql, sac, td3
from qsm_jax.config import QSMConfig


class Algorithm(NamedTuple):
    name: str
    config_cls: type
    state_cls: type
    create_train_state: Callable[..., Any]
    train_step: Callable[..., Any]
    policy_sample: Callable[..., Any]


ALGORITHMS = {
    "qsm": Algorithm(
        "qsm", QSMConfig, learner.QSMState, learner.create_train_state, learner.train_step, learner.policy_sample
    ),
    "sac": Algorithm("sac", sac.SACConfig, sac.SACState, sac.create_train_state, sac.train_step, sac.policy_sample),
    "td3": Algorithm("td3", td3.TD3Config, td3.TD3State, td3.create_train_state, td3.train_step, td3.policy_sample),
    "dql": Algorithm("dql", dql.DQLConfig, dql.DQLState, dql.create_train_state, dql.train_step, dql.policy_sample),
}


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {name!r}")
    return ALGORITHMS[name]


def algorithm_of(state: Any) -> Algorithm:
    """The algorithm whose train state ``state`` is."""
    for algorithm in ALGORITHMS.values():
        if isinstance(state, algorithm.state_cls):
            return algorithm
    raise ValueError(f"no algorithm has train states of type {type(state).__name__}")

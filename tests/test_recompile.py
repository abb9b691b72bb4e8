"""Fresh train states with equal settings share one compiled train_step (no silent recompiles)."""

import jax
import jax.numpy as jnp
import pytest

from qsm_jax.algorithms import ALGORITHMS
from qsm_jax.types import Batch

from .helpers import TINY, TINY_NETS


def _batch(obs_dim: int, action_dim: int, size: int = 8) -> Batch:
    k = jax.random.split(jax.random.key(7), 3)
    return Batch(
        observations=jax.random.normal(k[0], (size, obs_dim)),
        actions=jax.random.uniform(k[1], (size, action_dim), minval=-1.0, maxval=1.0),
        rewards=jax.random.normal(k[2], (size,)),
        next_observations=jax.random.normal(k[0], (size, obs_dim)),
        terminals=jnp.zeros((size,)),
    )


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_two_fresh_states_compile_train_step_once(algo):
    algorithm = ALGORITHMS[algo]
    settings = TINY if algo in ("qsm", "dql") else TINY_NETS
    config = algorithm.config_cls(**settings)
    obs_dim, action_dim = 5, 3  # sizes no other test uses, so the first call below compiles
    batch = _batch(obs_dim, action_dim)
    first = algorithm.create_train_state(jax.random.key(0), obs_dim, action_dim, config)
    before = algorithm.train_step._cache_size()
    algorithm.train_step(first, batch)
    assert algorithm.train_step._cache_size() == before + 1
    for seed in (1, 2):  # a seed sweep, a notebook re-running its cell
        fresh = algorithm.create_train_state(jax.random.key(seed), obs_dim, action_dim, config)
        assert jax.tree.structure(fresh) == jax.tree.structure(first)
        algorithm.train_step(fresh, batch)
    assert algorithm.train_step._cache_size() == before + 1
    # An equal config built anew is the same static data: still one compile.
    again = algorithm.create_train_state(jax.random.key(3), obs_dim, action_dim, algorithm.config_cls(**settings))
    algorithm.train_step(again, batch)
    assert algorithm.train_step._cache_size() == before + 1


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_every_algorithm_has_the_agent_interface(algo):
    from qsm_jax.algorithms import algorithm_of
    from qsm_jax.types import AgentState

    algorithm = ALGORITHMS[algo]
    settings = TINY if algo in ("qsm", "dql") else TINY_NETS
    state = algorithm.create_train_state(jax.random.key(0), 4, 2, algorithm.config_cls(**settings))
    assert isinstance(state, algorithm.state_cls) and algorithm_of(state) is algorithm
    for name in AgentState.__annotations__:
        assert hasattr(state, name), f"{algo} state lacks {name}"
    assert (state.obs_dim, state.action_dim, state.key.dtype, int(state.step)) == (4, 2, jnp.uint32, 0)
    actions = algorithm.policy_sample(state, jnp.zeros((3, 4)), jax.random.key(1), explore=True)
    assert actions.shape == (3, 2) and bool(jnp.all(jnp.abs(actions) <= 1.0))
    with pytest.raises(ValueError, match="no registered algorithm has train states of type dict"):
        algorithm_of({})

"""One compiled call per env step: store the new transitions, run the updates, pick the next actions.

This is the training loop's device side (level: loss -> `train_step` -> `act_and_learn` -> loop).
`train_step` stays the reusable single-update block; here it runs under `jax.lax.scan`, on batches
sampled inside the compiled function from the device-resident replay buffer, and the whole thing is
`vmap`-ped over independent agents (seeds).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from qsm_jax.algorithms import ALGORITHMS, algorithm_of
from qsm_jax.program.replay import ReplayBuffer, replay_add, replay_sample_after_add
from qsm_jax.types import AgentState, Batch

if TYPE_CHECKING:
    from qsm_jax.program.run_config import RunConfig


def act_and_learn(
    state: AgentState,
    buffer: ReplayBuffer,
    transitions: Batch,
    observations: jax.Array,
    key: jax.Array,
    *,
    utd: int,
    batch_size: int,
    learn: bool,
) -> tuple[AgentState, ReplayBuffer, jax.Array, dict[str, jax.Array]]:
    """One env step of one agent (any registered algorithm) with N envs.

    Args:
      state: agent.
      buffer: replay buffer.
      transitions: the N transitions the envs just produced (fields with leading axis N).
      observations: the N observations to act on next, (N, S).
      key: PRNG key for this env step (batch sampling and acting).
      utd: updates per env transition; ``utd * N`` updates run, each on a fresh batch.
      batch_size: transitions per update.
      learn: False during the random warm-up: store only, and act uniformly at random.

    Returns:
      (state, buffer, actions (N, A) in [-1, 1], metrics averaged over the updates).
    """
    algorithm = algorithm_of(state)
    update_key, act_key = jax.random.split(key)
    num = observations.shape[0]
    if not learn:
        actions = jax.random.uniform(act_key, (num, state.action_dim), minval=-1.0, maxval=1.0)
        return state, replay_add(buffer, transitions), actions, {}

    # Batches are drawn as if the new transitions were already stored, but read from the buffer as it
    # was; the store comes after the updates and is made to depend on their output. XLA then orders
    # every read of the buffer before its in-place update; without that data dependency XLA (CPU)
    # copied whole buffer arrays on every call (61 ms per env step at a 1M buffer instead of 4 ms).
    def update(state, batch_key):
        return algorithm.train_step(state, replay_sample_after_add(buffer, transitions, batch_key, batch_size))

    state, metrics = jax.lax.scan(update, state, jax.random.split(update_key, utd * num))
    buffer = replay_add(buffer, _after(transitions, jax.tree.leaves(metrics)[0]))
    actions = algorithm.policy_sample(state, observations, act_key, explore=True)
    return state, buffer, actions, jax.tree.map(jnp.mean, metrics)


def _after(values, dependency: jax.Array):
    """``values`` unchanged, but computed after ``dependency`` (any float array, NaN included).

    The condition ``x != x and x == x`` is false for every float x, yet XLA does not fold it away,
    so the result carries a real data dependency that the compiler must respect.
    """
    x = dependency.ravel()[0]
    never = (x != x) & (x == x)
    return jax.tree.map(lambda v: jnp.where(never, jnp.zeros_like(v), v), values)


@functools.partial(jax.jit, static_argnames=("utd", "batch_size", "learn"), donate_argnames=("states", "buffers"))
def act_and_learn_seeds(
    states: AgentState,
    buffers: ReplayBuffer,
    transitions: Batch,
    observations: jax.Array,
    keys: jax.Array,
    step: jax.Array,
    *,
    utd: int,
    batch_size: int,
    learn: bool,
) -> tuple[AgentState, ReplayBuffer, jax.Array, dict[str, jax.Array]]:
    """``act_and_learn`` for K agents stacked on a leading seed axis, in one compiled call.

    The states and buffers are donated (updated in place). Per-step keys are
    ``fold_in(keys[k], step)``, so the stream depends only on the seed and the env step.

    Args:
      states, buffers: stacked over K seeds.
      transitions: (K, N, ...) fields.
      observations: (K, N, S).
      keys: raw base keys, (K, 2) uint32.
      step: env-step counter, int scalar.
    """
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)
    fn = functools.partial(act_and_learn, utd=utd, batch_size=batch_size, learn=learn)
    return _per_seed(fn, states, buffers, transitions, observations, step_keys)


def _per_seed(fn, *args):
    """``jax.vmap(fn)(*args)``; with one seed, ``fn`` on the unstacked arguments (same numbers).

    XLA CPU runs the matmuls of a batch-of-one vmap as batched matmuls, about 8% slower per update.
    """
    if jax.tree.leaves(args)[0].shape[0] > 1:
        return jax.vmap(fn)(*args)
    return jax.tree.map(lambda x: x[None], fn(*jax.tree.map(lambda x: x[0], args)))


@functools.partial(jax.jit, static_argnames=("learn", "explore"))
def act_seeds(
    states: AgentState, observations: jax.Array, keys: jax.Array, step: jax.Array, *, learn: bool, explore: bool
) -> jax.Array:
    """Actions of K stacked agents for (K, N, S) observations: the policy, or uniform if not ``learn``."""
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)

    def one(state, obs, key):
        if not learn:
            return jax.random.uniform(key, (obs.shape[0], state.action_dim), minval=-1.0, maxval=1.0)
        return algorithm_of(state).policy_sample(state, obs, key, explore=explore)

    return _per_seed(one, states, observations, step_keys)


def seed_sharding(num_seeds: int) -> jax.sharding.Sharding:
    """Shards a leading seed axis over as many devices as divide ``num_seeds``."""
    devices = jax.devices()
    count = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
    mesh = jax.sharding.Mesh(np.array(devices[:count]), ("seed",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seed"))


def _stack(trees: list) -> Any:
    """Stacks same-shaped pytrees (equal static fields: ``qsm_jax.common``) on a new leading axis."""
    leaves = [jnp.stack(xs) for xs in zip(*map(jax.tree.leaves, trees), strict=True)]
    return jax.tree.unflatten(jax.tree.structure(trees[0]), leaves)


def init_agents(config: RunConfig, obs_dim: int, action_dim: int) -> tuple[Any, jax.Array]:
    """K agents stacked on a leading axis, each exactly as ``create_train_state`` makes it for its
    seed, and their loop keys (K, 2) (batch sampling, acting, evaluation)."""
    states, loop_keys = [], []
    for k in range(config.num_seeds):
        init_key, loop_key = jax.random.split(jax.random.key(config.seed + k))
        states.append(ALGORITHMS[config.algo].create_train_state(init_key, obs_dim, action_dim, config.agent))
        loop_keys.append(jax.random.key_data(loop_key))
    return _stack(states), jnp.stack(loop_keys)

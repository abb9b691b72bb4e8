"""The public API: shapes, compile-once, RNG, stability and a learning test on a bandit."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qsm_jax
from qsm_jax import learner

OBS_DIM, ACT_DIM, BATCH = 5, 3, 32


def _random_batch(seed: int, batch: int = BATCH) -> qsm_jax.Batch:
    rng = np.random.default_rng(seed)
    return qsm_jax.Batch(
        observations=rng.normal(size=(batch, OBS_DIM)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(batch, ACT_DIM)).astype(np.float32),
        rewards=rng.normal(size=(batch,)).astype(np.float32),
        next_observations=rng.normal(size=(batch, OBS_DIM)).astype(np.float32),
        terminals=(rng.uniform(size=(batch,)) < 0.1).astype(np.float32),
    )


@pytest.mark.parametrize("use_jit", [True, pytest.param(False, marks=pytest.mark.slow)])  # op by op: slow
def test_shapes_with_and_without_jit(tiny_config, key, use_jit):
    state = qsm_jax.create_train_state(key, OBS_DIM, ACT_DIM, tiny_config)
    step = learner.train_step if use_jit else learner.train_step.__wrapped__
    new_state, metrics = step(state, _random_batch(0))
    chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)
    assert set(metrics) == {"critic_loss", "actor_loss", "q_mean", "target_q_mean", "grad_q_abs_mean"}
    for value in metrics.values():
        chex.assert_shape(value, ())
    q = state.critic.apply_fn({"params": state.critic.params}, jnp.zeros((BATCH, OBS_DIM)), jnp.zeros((BATCH, ACT_DIM)))
    chex.assert_shape(q, (2, BATCH))
    sample = learner._sample_jit if use_jit else learner.policy_sample
    chex.assert_shape(sample(state, jnp.zeros((7, OBS_DIM)), key, False), (7, ACT_DIM))
    chex.assert_shape(qsm_jax.sample_actions(state, jnp.zeros(OBS_DIM), key), (ACT_DIM,))


def test_train_step_compiles_once_key_advances_and_stays_finite(tiny_config, key):
    state = qsm_jax.create_train_state(key, OBS_DIM, ACT_DIM, tiny_config)
    jax.clear_caches()
    keys = [state.key]
    for i in range(100):
        state, metrics = qsm_jax.train_step(state, _random_batch(i))
        keys.append(state.key)
        chex.assert_tree_all_finite(metrics)
    assert qsm_jax.train_step._cache_size() == 1
    assert int(state.step) == 100 and int(state.actor.step) == 100 and int(state.critic.step) == 100
    assert len({tuple(np.asarray(k).ravel()) for k in keys}) == len(keys), "the key must advance every step"
    chex.assert_tree_all_finite(state)
    # Targets move toward the online critics by tau each step, so they differ from both.
    diff = jax.tree.map(lambda a, b: jnp.abs(a - b).max(), state.target_critic_params, state.critic.params)
    assert max(jax.tree.leaves(diff)) > 0


def test_sampled_actions_stay_in_bounds(tiny_config, key):
    config = dataclasses.replace(tiny_config, alpha=1e4, clip_sampler=True)
    state = qsm_jax.create_train_state(key, OBS_DIM, ACT_DIM, config)
    for i in range(5):
        state, _ = qsm_jax.train_step(state, _random_batch(i))
    obs = jax.random.normal(key, (512, OBS_DIM)) * 10
    for explore in (False, True):
        actions = qsm_jax.sample_actions(state, obs, jax.random.key(7), explore=explore)
        assert actions.shape == (512, ACT_DIM)
        assert float(jnp.abs(actions).max()) <= 1.0


def test_bad_inputs_are_rejected(tiny_config, key):
    with pytest.raises(ValueError, match="alpha"):
        qsm_jax.QSMConfig(alpha=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        qsm_jax.QSMConfig(gamma=1.0)
    with pytest.raises(ValueError, match="diffusion_steps"):
        qsm_jax.QSMConfig(diffusion_steps=0)
    with pytest.raises(ValueError, match="beta_schedule"):
        qsm_jax.QSMConfig(beta_schedule="quadratic")
    with pytest.raises(ValueError, match="actor_hidden_dims"):
        qsm_jax.QSMConfig(actor_hidden_dims=(256, 0))
    with pytest.raises(ValueError, match="obs_dim"):
        qsm_jax.create_train_state(key, 0, ACT_DIM, tiny_config)
    state = qsm_jax.create_train_state(key, OBS_DIM, ACT_DIM, tiny_config)
    with pytest.raises(ValueError, match="observations must have shape"):
        qsm_jax.sample_actions(state, jnp.zeros((2, OBS_DIM + 1)), key)
    with pytest.raises(ValueError, match="observations must have shape"):
        qsm_jax.sample_actions(state, jnp.zeros(OBS_DIM + 1), key)
    bad = _random_batch(0)._replace(rewards=np.array([np.nan] + [0.0] * (BATCH - 1), np.float32))
    with pytest.raises(ValueError, match="batch.rewards contains NaN"):
        qsm_jax.check_batch(bad, OBS_DIM, ACT_DIM)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        qsm_jax.check_batch(_random_batch(0)._replace(actions=np.full((BATCH, ACT_DIM), 2.0, np.float32)))
    qsm_jax.check_batch(_random_batch(0), OBS_DIM, ACT_DIM)


def test_learns_the_optimum_of_a_one_step_bandit():
    """Through the public API only: reward -||a - a*||^2 on a one-step task; samples end near a*.
    The learning test `make test` keeps (the others are marked slow)."""
    a_star = np.array([0.5, -0.4], np.float32)
    obs_dim, act_dim, batch = 2, 2, 128
    config = qsm_jax.QSMConfig(
        actor_hidden_dims=(64, 64),
        critic_hidden_dims=(64, 64),
        time_hidden_dims=(32, 32),
        alpha=1.5,
        actor_lr=1e-3,
        critic_lr=1e-3,
    )
    state = qsm_jax.create_train_state(jax.random.key(0), obs_dim, act_dim, config)
    rng = np.random.default_rng(0)

    def reward(a):
        return -np.sum((a - a_star) ** 2, axis=-1)

    obs = np.zeros((batch, obs_dim), np.float32)
    buffer = [rng.uniform(-1, 1, size=(2048, act_dim)).astype(np.float32)]
    key = jax.random.key(1)
    for it in range(1500):
        if it % 50 == 0:
            key, sub = jax.random.split(key)
            buffer.append(np.asarray(qsm_jax.sample_actions(state, obs, sub, explore=True)))
        data = np.concatenate(buffer[-20:])
        actions = data[rng.integers(0, len(data), batch)]
        state, metrics = qsm_jax.train_step(
            state,
            qsm_jax.Batch(obs, actions, reward(actions).astype(np.float32), obs, np.ones(batch, np.float32)),
        )
    samples = np.asarray(qsm_jax.sample_actions(state, np.zeros((1000, obs_dim), np.float32), jax.random.key(2)))
    uniform = rng.uniform(-1, 1, size=(1000, act_dim))
    dist = np.linalg.norm(samples - a_star, axis=-1)
    print("mean action", samples.mean(0), "median distance", np.median(dist), "reward", reward(samples).mean())
    # QSM's chain overshoots a* slightly outward (each reverse step divides by sqrt(alpha_k)).
    assert np.median(dist) < 0.25
    assert np.linalg.norm(samples.mean(0) - a_star) < 0.2
    assert reward(samples).mean() > 0.2 * reward(uniform).mean()

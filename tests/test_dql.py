"""The Diffusion-QL baseline: its loss by hand, the gradient through every chain step, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qsm_jax import diffusion, learner
from qsm_jax.baselines import dql
from qsm_jax.types import Batch

A_STAR = np.array([0.3, -0.2], np.float32)


def _q(o, a):
    return -jnp.sum((a - A_STAR) ** 2, axis=-1)


def _setup(batch=6, steps=2, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(batch, 3)).astype(np.float32)
    actions = rng.uniform(-1, 1, (batch, 2)).astype(np.float32)
    noise = rng.normal(size=(batch, 2)).astype(np.float32)
    params = {
        "W": (0.3 * rng.normal(size=(2, 2))).astype(np.float32),
        "c": (0.1 * rng.normal(size=(2,))).astype(np.float32),
    }
    return obs, actions, noise, params, diffusion.make_schedule("vp", steps)


def _linear(variables, o, x, k):  # eps(s, x, k) = x W + k c
    p = variables["params"]
    return x @ p["W"] + k * p["c"]


def test_dql_loss_equals_a_hand_computation():
    obs, actions, noise, params, schedule = _setup()
    levels = np.array([0, 1, 1, 0, 1, 0])
    key, eta = jax.random.key(3), 2.0
    loss, aux = dql.dql_actor_loss(
        params, _linear, _q, obs, actions, jnp.asarray(levels), noise, schedule, key, eta, clip=False
    )
    betas, alphas, abars = (np.asarray(x, np.float64) for x in schedule)
    # Denoising term.
    ab = abars[levels][:, None]
    a_k = np.sqrt(ab) * actions + np.sqrt(1 - ab) * noise
    pred = a_k @ params["W"] + levels[:, None] * params["c"]
    denoise = np.mean((pred - noise) ** 2)
    # The chain, by hand, with the sampler's own random draws.
    init_key, chain_noise_key = jax.random.split(key)
    x = np.asarray(jax.random.normal(init_key, (6, 2)), np.float64)
    z = np.asarray(jax.random.normal(chain_noise_key, (2, 6, 2)), np.float64)
    for i, k in enumerate((1, 0)):
        eps = x @ params["W"] + k * params["c"]
        x = (x - betas[k] / np.sqrt(1 - abars[k]) * eps) / np.sqrt(alphas[k])
        x = x + (k > 0) * np.sqrt(betas[k]) * z[i]
    x = np.clip(x, -1, 1)
    q = -np.sum((x - A_STAR) ** 2, -1)
    q_loss = -eta * q.mean() / np.abs(q).mean()
    np.testing.assert_allclose(aux["denoise_loss"], denoise, rtol=1e-5)
    np.testing.assert_allclose(aux["q_loss"], q_loss, rtol=1e-4)
    np.testing.assert_allclose(loss, denoise + q_loss, rtol=1e-4)


def test_actor_gradient_flows_through_every_chain_step():
    """The parameter c acts only at the first reverse step (level T-1) and the denoising term sees
    only level 0, so dL/dc reaches c only through all T steps of the chain: it is zero if any step
    stops the gradient. It must also equal a finite difference."""
    steps = 4
    obs, actions, noise, params, schedule = _setup(batch=64, steps=steps)
    params = {"W": np.zeros((2, 2), np.float32), "c": np.array([0.05, -0.05], np.float32)}

    def first_step_only(variables, o, x, k):
        return jnp.zeros_like(x) + (k == steps - 1) * variables["params"]["c"]

    levels = jnp.zeros(64, jnp.int32)
    key = jax.random.key(0)

    def loss_of_c(c):
        p = {"W": params["W"], "c": c}
        return dql.dql_actor_loss(p, first_step_only, _q, obs, actions, levels, noise, schedule, key, 1.0, clip=False)

    grad = np.asarray(jax.grad(lambda c: loss_of_c(c)[0])(jnp.asarray(params["c"])))
    assert np.all(np.abs(grad) > 1e-3), grad
    # L_q = -mean Q / stop_grad(mean |Q|) (Q <= 0 here, so mean |Q| = -mean Q): its gradient is
    # d(mean Q)/dc / mean Q, and mean Q is what a finite difference can see.
    q0 = float(loss_of_c(params["c"])[1]["q_pi_mean"])
    h = 1e-3
    for i in range(2):
        e = np.zeros(2, np.float32)
        e[i] = h
        dq = (loss_of_c(params["c"] + e)[1]["q_pi_mean"] - loss_of_c(params["c"] - e)[1]["q_pi_mean"]) / (2 * h)
        np.testing.assert_allclose(grad[i], float(dq) / q0, rtol=0.05, atol=1e-4)


@pytest.mark.slow
def test_dql_finds_the_optimum_of_a_one_step_bandit():
    a_star = np.array([0.5, -0.4], np.float32)
    config = dql.DQLConfig(
        actor_hidden_dims=(64, 64),
        critic_hidden_dims=(64, 64),
        time_hidden_dims=(32, 32),
        actor_lr=1e-3,
        critic_lr=1e-3,
    )
    state = dql.create_train_state(jax.random.key(0), 1, 2, config)
    rng = np.random.default_rng(0)
    obs = np.ones((128, 1), np.float32)
    for _ in range(1500):
        actions = rng.uniform(-1, 1, (128, 2)).astype(np.float32)
        rewards = -np.sum((actions - a_star) ** 2, -1).astype(np.float32)
        state, metrics = dql.train_step(state, Batch(obs, actions, rewards, obs, np.ones(128, np.float32)))
    samples = np.asarray(dql.policy_sample(state, np.ones((1000, 1), np.float32), jax.random.key(1)))
    dist = np.linalg.norm(samples - a_star, axis=-1)
    print("median distance", np.median(dist), "mean", samples.mean(0))
    assert np.median(dist) < 0.2 and np.linalg.norm(samples.mean(0) - a_star) < 0.15
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_dql_acts_with_the_public_chain_sampler_as_qsm_does_on_the_same_networks():
    """Diffusion-QL's acting is ``learner.policy_sample`` on its own state (no stand-in QSM state):
    the same actions, bit for bit, as QSM acting with the same networks and sampler settings."""
    config = dql.DQLConfig(actor_hidden_dims=(16, 16), critic_hidden_dims=(16, 16), num_action_samples=4)
    state = dql.create_train_state(jax.random.key(0), 3, 2, config)
    qsm_state = learner.create_train_state(jax.random.key(0), 3, 2, config.policy_config())
    obs = jax.random.normal(jax.random.key(1), (5, 3))
    for explore in (False, True):
        got = dql.policy_sample(state, obs, jax.random.key(2), explore)
        expected = learner.policy_sample(qsm_state, obs, jax.random.key(2), explore)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    chain = diffusion.sample_chain(state.actor, config, obs, jax.random.key(3), 2)
    assert chain.shape == (5, 2) and bool(jnp.all(jnp.abs(chain) <= 1.0))

"""The QSM losses against hand arithmetic and NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np

from qsm_jax import diffusion, losses
from qsm_jax.types import Batch


def test_td_target_hand_arithmetic():
    rewards = jnp.array([1.0, 2.0, 3.0])
    terminals = jnp.array([0.0, 1.0, 0.0])
    next_q = jnp.array([[1.0, 5.0, 2.0], [3.0, 4.0, -1.0]])
    y = losses.td_target(rewards, terminals, next_q, gamma=0.9)
    # min over critics: [1, 4, -1]; the terminal one does not bootstrap.
    np.testing.assert_allclose(y, [1.0 + 0.9 * 1.0, 2.0, 3.0 + 0.9 * -1.0], rtol=1e-6)


def _linear_critic(variables, obs, act):
    """Q_i(s, a) = w_i * (sum s + sum a): a critic whose values are easy to write by hand."""
    w = variables["params"]["w"]
    return w[:, None] * (obs.sum(axis=1) + act.sum(axis=1))[None, :]


def test_critic_loss_hand_arithmetic():
    batch = Batch(
        observations=jnp.array([[1.0], [0.0], [2.0]]),
        actions=jnp.array([[0.5], [-0.5], [0.0]]),
        rewards=jnp.array([1.0, 0.0, -1.0]),
        next_observations=jnp.array([[2.0], [1.0], [0.0]]),
        terminals=jnp.array([0.0, 0.0, 1.0]),
    )
    next_actions = jnp.array([[0.0], [1.0], [0.5]])
    params = {"w": jnp.array([1.0, 2.0])}
    target_params = {"w": jnp.array([0.5, -1.0])}
    loss, aux = losses.critic_loss(params, target_params, _linear_critic, batch, next_actions, 0.5)
    # Target critics at (s', a'): s'+a' = [2, 2, 0.5] -> Q1 = [1, 1, .25], Q2 = [-2, -2, -.5]; min = Q2.
    y = np.array([1.0 + 0.5 * -2.0, 0.0 + 0.5 * -2.0, -1.0])  # = [0, -1, -1]
    s_plus_a = np.array([1.5, -0.5, 2.0])
    q1, q2 = 1.0 * s_plus_a, 2.0 * s_plus_a
    want = np.mean((q1 - y) ** 2) + np.mean((q2 - y) ** 2)
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_allclose(aux["target_q_mean"], y.mean(), rtol=1e-6)
    # The target is not differentiated: d loss / d w_i = 2 mean((w_i x - y) x).
    grads = jax.grad(lambda p: losses.critic_loss(p, target_params, _linear_critic, batch, next_actions, 0.5)[0])(
        params
    )
    want_grad = [2 * np.mean((w * s_plus_a - y) * s_plus_a) for w in (1.0, 2.0)]
    np.testing.assert_allclose(grads["w"], want_grad, rtol=1e-6)


def test_qsm_actor_loss_matches_numpy_with_known_critic_gradient():
    rng = np.random.default_rng(0)
    batch, obs_dim, act_dim, alpha = 6, 3, 2, 7.5
    obs = rng.normal(size=(batch, obs_dim)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(batch, act_dim)).astype(np.float32)
    levels = np.array([0, 1, 2, 3, 4, 2])
    noise = rng.normal(size=(batch, act_dim)).astype(np.float32)
    a_star = np.array([0.3, -0.6], np.float32)
    alpha_bars = np.asarray(diffusion.make_schedule("vp", 5).alpha_bars)

    # Q = -||a - a*||^2, so grad_a Q = -2 (a - a*).
    def q_fn(o, a):
        return -jnp.sum((a - a_star) ** 2, axis=-1)

    # A linear "denoiser" eps(s, a, k) = a W + s V + k c, easy to write in NumPy.
    params = {
        "W": rng.normal(size=(act_dim, act_dim)).astype(np.float32),
        "V": rng.normal(size=(obs_dim, act_dim)).astype(np.float32),
        "c": rng.normal(size=(act_dim,)).astype(np.float32),
    }

    def actor_apply(variables, o, a, k):
        p = variables["params"]
        return a @ p["W"] + o @ p["V"] + k * p["c"]

    loss, aux = losses.qsm_actor_loss(
        params, actor_apply, q_fn, obs, actions, jnp.asarray(levels), noise, jnp.asarray(alpha_bars), alpha
    )
    ab = alpha_bars[levels][:, None]
    a_k = np.sqrt(ab) * actions + np.sqrt(1 - ab) * noise
    grad_q = -2 * (a_k - a_star)
    pred = a_k @ params["W"] + obs @ params["V"] + levels[:, None] * params["c"]
    want = np.mean((pred - (-alpha * grad_q)) ** 2)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(aux["grad_q_abs_mean"], np.abs(grad_q).mean(), rtol=1e-5)

    # Gradient w.r.t. the denoiser only (the critic target is a constant): d/dc = mean 2 (pred - t) k.
    grads = jax.grad(
        lambda p: losses.qsm_actor_loss(
            p, actor_apply, q_fn, obs, actions, jnp.asarray(levels), noise, jnp.asarray(alpha_bars), alpha
        )[0]
    )(params)
    resid = pred - (-alpha * grad_q)
    np.testing.assert_allclose(grads["c"], 2 * (resid * levels[:, None]).sum(0) / resid.size, rtol=1e-4)

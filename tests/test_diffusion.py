"""Schedules and the reverse chain against closed forms and a plain Python loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qsm_jax import diffusion


def test_vp_schedule_matches_closed_form_for_t5():
    s = diffusion.make_schedule("vp", 5)
    k = np.arange(5)
    betas = 1 - np.exp(-0.1 / 5 - 0.5 * (10 - 0.1) * (2 * (k + 1) - 1) / 25)
    np.testing.assert_allclose(s.betas, betas, rtol=1e-6)
    np.testing.assert_allclose(s.alphas, 1 - betas, rtol=1e-6)
    np.testing.assert_allclose(s.alpha_bars, np.cumprod(1 - betas), rtol=1e-5)
    # The rounded values docs/algorithm.md quotes.
    np.testing.assert_allclose(s.betas, [0.196, 0.459, 0.636, 0.755, 0.835], atol=1e-3)
    np.testing.assert_allclose(s.alpha_bars, [0.804, 0.435, 0.159, 0.039, 0.0064], atol=1e-3)


def test_linear_and_cosine_schedules():
    lin = diffusion.make_schedule("linear", 10)
    np.testing.assert_allclose(np.asarray(lin.betas)[[0, -1]], [1e-4, 2e-2], rtol=1e-6)
    cos = diffusion.make_schedule("cosine", 10)
    assert np.all(np.diff(cos.alpha_bars) < 0)
    assert np.all((cos.betas > 0) & (cos.betas <= 0.999))
    with pytest.raises(ValueError, match="beta schedule"):
        diffusion.make_schedule("sigmoid", 5)


def test_q_sample_closed_form():
    ab = jnp.array([0.81, 0.25])
    a = jnp.array([[1.0, -1.0], [0.5, 0.0]])
    eps = jnp.array([[0.0, 1.0], [2.0, -2.0]])
    out = diffusion.q_sample(a, jnp.array([0, 1]), eps, ab)
    expected = [[0.9 * 1.0, 0.9 * -1.0 + np.sqrt(0.19)], [0.5 * 0.5 + np.sqrt(0.75) * 2, -np.sqrt(0.75) * 2]]
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def _numpy_eps(obs, x, levels):
    return 0.3 * x + 0.1 * obs.sum(axis=1, keepdims=True) - 0.05 * levels


def _python_loop_sampler(eps_fn, obs, key, schedule, action_dim, temperature, clip):
    """The chain written as a plain loop over k, drawing the same random numbers."""
    init_key, key = jax.random.split(key)
    x = np.asarray(jax.random.normal(init_key, (obs.shape[0], action_dim)), np.float64)
    noise = np.asarray(jax.random.normal(key, (len(schedule.betas), obs.shape[0], action_dim)))
    betas, alphas, alpha_bars = (np.asarray(v, np.float64) for v in schedule)
    for i, k in enumerate(range(len(betas) - 1, -1, -1)):
        eps = np.asarray(eps_fn(obs, x, np.full((obs.shape[0], 1), k, np.float64)))
        x = (x - betas[k] / np.sqrt(1 - alpha_bars[k]) * eps) / np.sqrt(alphas[k])
        if k > 0:
            x = x + np.sqrt(betas[k]) * temperature * noise[i]
        if clip:
            x = np.clip(x, -1, 1)
    return np.clip(x, -1, 1)  # the output is clipped either way, as in the reference


@pytest.mark.parametrize("name,temperature,clip", [("vp", 1.0, True), ("cosine", 0.5, False), ("linear", 1.0, True)])
def test_scan_sampler_equals_python_loop(name, temperature, clip):
    obs = np.asarray(jax.random.normal(jax.random.key(1), (7, 3)))
    schedule = diffusion.make_schedule(name, 5)
    key = jax.random.key(2)
    sample = jax.jit(
        lambda o, k: diffusion.ddpm_sample(_numpy_eps, o, k, schedule, 2, temperature=temperature, clip=clip)
    )
    got = sample(obs, key)
    want = _python_loop_sampler(_numpy_eps, obs, key, schedule, 2, temperature, clip)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(got) <= 1)


def test_scan_sampler_with_score_network_equals_loop(tiny_config):
    from qsm_jax.networks import ScoreNetwork

    net = ScoreNetwork(action_dim=2, hidden_dims=(16, 16), time_features=8, time_hidden_dims=(16,))
    obs = np.asarray(jax.random.normal(jax.random.key(3), (4, 3)), np.float32)
    params = net.init(jax.random.key(4), obs, jnp.zeros((4, 2)), jnp.zeros((4, 1)))

    def eps_fn(o, x, k):
        return net.apply(params, jnp.asarray(o, jnp.float32), jnp.asarray(x, jnp.float32), jnp.asarray(k, jnp.float32))

    schedule = diffusion.make_schedule("vp", 5)
    got = diffusion.ddpm_sample(eps_fn, obs, jax.random.key(5), schedule, 2)
    want = _python_loop_sampler(eps_fn, obs, jax.random.key(5), schedule, 2, 1.0, True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

"""Networks: the Mish form, the shared-level time embedding and the critic ensemble."""

import jax
import jax.numpy as jnp
import numpy as np

from qsm_jax.networks import CriticEnsemble, ScoreNetwork, mish


def test_mish_matches_the_textbook_form():
    x = jnp.linspace(-60.0, 60.0, 100_001)
    x64 = np.asarray(x, np.float64)
    reference = x64 * np.tanh(np.log1p(np.exp(x64)))
    np.testing.assert_allclose(mish(x), reference, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mish(x), jax.nn.mish(x), rtol=1e-6, atol=1e-6)
    grads = jax.vmap(jax.grad(mish))(x)
    np.testing.assert_allclose(grads, jax.vmap(jax.grad(jax.nn.mish))(x), rtol=1e-5, atol=1e-5)


def test_shared_level_equals_per_sample_levels():
    net = ScoreNetwork(action_dim=3, hidden_dims=(16, 16), time_features=8, time_hidden_dims=(16,))
    obs = jax.random.normal(jax.random.key(0), (5, 4))
    act = jax.random.normal(jax.random.key(1), (5, 3))
    params = net.init(jax.random.key(2), obs, act, jnp.zeros((5, 1)))
    shared = net.apply(params, obs, act, jnp.full((1, 1), 3.0))
    per_sample = net.apply(params, obs, act, jnp.full((5, 1), 3.0))
    np.testing.assert_allclose(shared, per_sample, rtol=1e-6, atol=1e-6)


def test_critic_ensemble_members_are_independent_networks():
    net = CriticEnsemble(hidden_dims=(8, 8), num_critics=2)
    obs, act = jnp.ones((3, 4)), jnp.ones((3, 2))
    params = net.init(jax.random.key(0), obs, act)
    q = net.apply(params, obs, act)
    assert q.shape == (2, 3) and not np.allclose(q[0], q[1])
    # Each member equals a plain MLP with its slice of the parameters.
    for i in range(2):
        x = jnp.concatenate([obs, act], -1)
        layers = params["params"]["VmapMLP_0"]
        for j, name in enumerate(sorted(layers, key=lambda n: int(n.split("_")[1]))):
            x = x @ layers[name]["kernel"][i] + layers[name]["bias"][i]
            if j < 2:
                x = jax.nn.relu(x)
        np.testing.assert_allclose(q[i], x[:, 0], rtol=1e-5, atol=1e-6)

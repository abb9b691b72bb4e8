"""Networks: the Mish form, the score network against NumPy, the shared-level time embedding and the
critic ensemble."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qsm_jax.networks import MLP, ConcatDense, CriticEnsemble, ScoreNetwork, mish


def _np_mish(x):
    return x * np.tanh(np.log1p(np.exp(x)))


def test_score_network_equals_a_numpy_forward_on_the_concatenated_input():
    # eps(s, a, k) = MLP_body([a, s, MLP_time(fourier(k))]) (docs/algorithm.md, "Networks"), written in
    # float64 NumPy from the parameters; the first layer is computed one input at a time (ConcatDense).
    net = ScoreNetwork(action_dim=3, hidden_dims=(16, 16), time_features=8, time_hidden_dims=(12, 12))
    obs = jax.random.normal(jax.random.key(0), (5, 4))
    act = jax.random.normal(jax.random.key(1), (5, 3))
    params = net.init(jax.random.key(2), obs, act, jnp.zeros((5, 1)))["params"]
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)

    def dense(layer, x):
        return x @ layer["kernel"] + layer["bias"]

    for levels in (np.full((1, 1), 3.0), np.arange(5.0)[:, None]):
        f = 2 * np.pi * levels @ p["FourierFeatures_0"]["kernel"].T
        t = np.concatenate([np.cos(f), np.sin(f)], -1)
        t = dense(p["MLP_0"]["Dense_1"], _np_mish(dense(p["MLP_0"]["Dense_0"], t)))
        x = np.concatenate([np.asarray(act), np.asarray(obs), np.broadcast_to(t, (5, t.shape[-1]))], -1)
        body = p["MLP_1"]
        x = _np_mish(dense(body["Dense_1"], _np_mish(dense(body["Dense_0"], x))))
        want = dense(body["Dense_2"], x)
        got = net.apply({"params": params}, obs, act, jnp.asarray(levels, jnp.float32))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_concat_dense_is_dense_on_the_concatenation_with_the_same_parameters():
    parts = [jax.random.normal(jax.random.key(i), shape) for i, shape in enumerate([(6, 2), (6, 5), (1, 3)])]
    joined = jnp.concatenate([parts[0], parts[1], jnp.broadcast_to(parts[2], (6, 3))], -1)
    split = MLP((7, 4), activation=mish)
    plain = MLP((7, 4), activation=mish)
    split_params = split.init(jax.random.key(9), *parts)
    plain_params = plain.init(jax.random.key(9), joined)
    # Same names, shapes and initial values: checkpoints of either form load into the other.
    chex_equal = jax.tree.map(lambda a, b: bool((a == b).all()), split_params, plain_params)
    assert all(jax.tree.leaves(chex_equal))
    np.testing.assert_allclose(
        split.apply(split_params, *parts), plain.apply(plain_params, joined), rtol=1e-5, atol=1e-6
    )
    layer = ConcatDense(7)
    dense_params = nn.Dense(7, kernel_init=nn.initializers.xavier_uniform()).init(jax.random.key(3), joined)
    np.testing.assert_allclose(
        layer.apply(dense_params, *parts), nn.Dense(7).apply(dense_params, joined), rtol=1e-5, atol=1e-6
    )


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

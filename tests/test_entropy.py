"""Max-ent QSM and adaptive exploration: the log pi estimate against exact densities, the soft
target, the temperature and noise-scale rules, the evaluation protocols, and the defaults untouched."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qsm_jax
from qsm_jax import diffusion, learner, losses

from .helpers import random_batch as _batch

A = 3


def _gaussian_eps(mu, sigma, alpha_bars):
    """The exact denoiser of N(mu, sigma^2 I):
    eps = sqrt(1 - abar) (a_k - sqrt(abar) mu) / (abar sigma^2 + 1 - abar)."""

    def eps_fn(obs, x, level):
        ab = alpha_bars[level[:, 0].astype(jnp.int32)][:, None]
        return jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * mu) / (ab * sigma**2 + 1 - ab)

    return eps_fn


def _gaussian_case(sigma, steps, draws, n=2000, mu=0.2, seed=0):
    alpha_bars = diffusion.make_schedule("vp", steps).alpha_bars
    x = mu + sigma * np.random.default_rng(seed).normal(size=(n, A)).astype(np.float32)
    exact = -0.5 * A * np.log(2 * np.pi * sigma**2) - ((x - mu) ** 2).sum(-1) / (2 * sigma**2)
    est = losses.log_prob_estimate(
        _gaussian_eps(mu, sigma, alpha_bars), jnp.zeros((n, 1)), jnp.asarray(x), alpha_bars, jax.random.key(seed), draws
    )
    return np.asarray(est), exact


@pytest.mark.parametrize("sigma", [0.5, 0.1])
def test_log_prob_of_a_gaussian_policy(sigma):
    """Exact denoiser of a Gaussian, T = 20, 64 draws: the mean log-likelihood within 0.2 nats
    (A = 3) and per-sample estimates that track the exact ones."""
    est, exact = _gaussian_case(sigma, steps=20, draws=64)
    assert abs(est.mean() - exact.mean()) < 0.2
    assert np.corrcoef(est, exact)[0, 1] > 0.95


def test_more_draws_smaller_error():
    errors = []
    for draws in (2, 16, 64):
        est, exact = _gaussian_case(0.3, steps=20, draws=draws)
        errors.append(np.sqrt(((est - exact) ** 2).mean()))
    assert errors[0] > errors[1] > errors[2], errors


def test_default_depth_keeps_order_with_a_stated_bias():
    """At the default T = 5 the cleanest level has SNR 4 only; the Gaussian closure keeps the
    estimate within 0.6 nats (0.2 per dimension) for std 0.5 .. 0.05, and sharper is always higher."""
    means = []
    for sigma in (0.5, 0.2, 0.1, 0.05):
        est, exact = _gaussian_case(sigma, steps=5, draws=16)
        assert abs(est.mean() - exact.mean()) < 0.6, (sigma, est.mean(), exact.mean())
        means.append(est.mean())
    assert np.all(np.diff(means) > 1.0)


def test_log_prob_of_a_two_component_mixture():
    """Exact denoiser of 0.5 N(-m, s^2 I) + 0.5 N(m, s^2 I) in 2-D (two separated modes)."""
    dim, s, steps = 2, 0.15, 50
    m = np.array([0.5, -0.3], np.float32)
    alpha_bars = diffusion.make_schedule("vp", steps).alpha_bars

    def eps_fn(obs, x, level):
        ab = alpha_bars[level[:, 0].astype(jnp.int32)][:, None]
        var = ab * s**2 + 1 - ab
        means = jnp.stack([-m, m]) * jnp.sqrt(ab)[:, None]  # (M, 2, dim)
        logits = -((x[:, None] - means) ** 2).sum(-1) / (2 * var)
        w = jax.nn.softmax(logits, axis=-1)[..., None]
        score = -(w * (x[:, None] - means)).sum(1) / var
        return -jnp.sqrt(1 - ab) * score

    rng = np.random.default_rng(1)
    n = 2000
    signs = np.where(rng.uniform(size=(n, 1)) < 0.5, -1.0, 1.0)
    x = (signs * m + s * rng.normal(size=(n, dim))).astype(np.float32)
    comp = [np.exp(-((x - c) ** 2).sum(-1) / (2 * s**2)) / (2 * np.pi * s**2) for c in (-m, m)]
    exact = np.log(0.5 * comp[0] + 0.5 * comp[1])
    est = np.asarray(
        losses.log_prob_estimate(eps_fn, jnp.zeros((n, 1)), jnp.asarray(x), alpha_bars, jax.random.key(2), 64)
    )
    assert abs(est.mean() - exact.mean()) < 0.2, (est.mean(), exact.mean())
    assert np.corrcoef(est, exact)[0, 1] > 0.9


def _digamma_half_integer_or_integer(x):
    """digamma at x = m / 2 by its recurrences from digamma(1) = -gamma, digamma(1/2) = -gamma - 2 log 2."""
    value, start = (-np.euler_gamma, 1.0) if float(x).is_integer() else (-np.euler_gamma - 2 * np.log(2), 0.5)
    while start < x:
        value, start = value + 1.0 / start, start + 1.0
    return value


def _sample_entropy_numpy(samples, min_var=1e-6):
    n, batch, dim = samples.shape
    log_delta = 0.5 * np.log(2 * np.pi * np.e * min_var)
    out = np.zeros(batch)
    for b in range(batch):
        for d in range(dim):
            x = samples[:, b, d]
            inside = x[np.abs(x) < 1.0]
            h = np.log(2.0)
            if len(inside) >= 2:
                half = 0.5 * (len(inside) - 1)
                log_var = np.log(max(inside.var(ddof=1), min_var)) - (
                    _digamma_half_integer_or_integer(half) - np.log(half)
                )
                h = min(0.5 * (np.log(2 * np.pi * np.e) + log_var), np.log(2.0))
            for mass in ((x <= -1).mean(), (x >= 1).mean()):
                out[b] += (-mass * np.log(mass) if mass > 0 else 0.0) + mass * log_delta
            q = len(inside) / n
            out[b] += (-q * np.log(q) if q > 0 else 0.0) + q * h
    return out


def test_sample_entropy_equals_numpy():
    """Samples of a wide Gaussian clipped to the box (some on the walls, some inside), N = 5 and 8."""
    for n in (5, 8):
        samples = np.clip(0.8 * np.random.default_rng(n).normal(size=(n, 40, A)), -1, 1).astype(np.float32)
        expected = _sample_entropy_numpy(samples)
        got = np.asarray(losses.sample_entropy(jnp.asarray(samples)))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
        capped = losses.sample_entropy(jnp.asarray(samples), max_entropy=0.5)
        np.testing.assert_allclose(np.asarray(capped), np.minimum(expected, 0.5), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [2, 4, 16])
def test_sample_entropy_is_unbiased_for_a_gaussian_policy(n):
    """2000 states of a diagonal Gaussian well inside the box (stds 0.2, 0.1, 0.02): the mean estimate
    is the exact entropy within 0.1 nats at every N; without the digamma correction N = 2 reads 1.9
    nats low (A = 3)."""
    stds = np.array([0.2, 0.1, 0.02])
    samples = np.clip(stds * np.random.default_rng(n).normal(size=(n, 2000, A)), -0.999, 0.999)
    exact = 0.5 * np.log(2 * np.pi * np.e * stds**2).sum()
    est = np.asarray(losses.sample_entropy(jnp.asarray(samples, jnp.float32), min_var=1e-12))
    assert abs(est.mean() - exact) < 0.1, (est.mean(), exact)


def test_sample_entropy_sees_the_walls():
    """The failure of the denoiser estimate (docs/algorithm.md): a policy clipped against the walls.
    A dimension with every sample on one wall reads 1/2 log(2 pi e 1e-6) = -5.49, one split evenly
    between the two walls log 2 more: far below SAC's target of -1 per dimension, where the
    automatic temperature rises. A Gaussian fit would read the split one as the widest possible."""
    rng = np.random.default_rng(0)
    one_wall = np.ones((8, 100))
    two_walls = np.where(np.arange(8)[:, None] < 4, -1.0, 1.0) * np.ones((8, 100))
    spread = 0.3 * rng.normal(size=(8, 100))
    est = np.asarray(losses.sample_entropy(jnp.asarray(np.stack([one_wall, two_walls, spread], -1), jnp.float32)))
    floor = 0.5 * np.log(2 * np.pi * np.e * 1e-6)
    np.testing.assert_allclose(est, 2 * floor + np.log(2) + _sample_entropy_numpy(spread[:, :, None]), rtol=1e-4)
    assert np.all(est < -9.0), est.max()
    with pytest.raises(ValueError, match="at least 2 samples"):
        losses.sample_entropy(jnp.zeros((1, 4, A)))


def test_entropy_with_noise_equals_numpy():
    h_chain, std = np.array([-2.0, 0.5, -30.0]), np.array([0.1, 0.3, 0.2])
    got = np.asarray(losses.entropy_with_noise(jnp.asarray(h_chain), jnp.asarray(std), A))
    expected = 0.5 * A * np.log(np.exp(2 * h_chain / A) + 2 * np.pi * np.e * std**2)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Gaussian chain of std c: the sum is Gaussian of std sqrt(c^2 + std^2), exactly.
    c = 0.4
    h_gauss = 0.5 * A * np.log(2 * np.pi * np.e * c**2)
    got = float(losses.entropy_with_noise(jnp.asarray(h_gauss), jnp.asarray(0.3), A))
    assert got == pytest.approx(0.5 * A * np.log(2 * np.pi * np.e * (c**2 + 0.09)), rel=1e-5)
    # A deterministic chain leaves the closed form of the added Gaussian.
    assert float(losses.entropy_with_noise(jnp.asarray(-1e4), jnp.asarray(0.3), A)) == pytest.approx(
        0.5 * A * np.log(2 * np.pi * np.e * 0.09), rel=1e-5
    )


def test_dual_loss_lowers_the_value_while_entropy_is_above_target():
    grad = jax.grad(losses.dual_loss)
    assert float(grad(1.0, jnp.asarray(2.0), -1.0)) == pytest.approx(3.0)
    assert float(grad(1.0, jnp.asarray(-4.0), -1.0)) == pytest.approx(-3.0)


def _maxent(config, **kwargs):
    return dataclasses.replace(config, score_target="mirror", entropy_temperature=0.5, **kwargs)


def test_soft_target_subtracts_temperature_times_log_pi(tiny_config):
    """Same parameters, keys and batch: the soft target's mean is the hard one's minus
    gamma * temp * mean log pi(a' | s') (no terminals)."""
    hard = qsm_jax.create_train_state(jax.random.key(0), 3, 2, tiny_config)
    soft = qsm_jax.create_train_state(jax.random.key(0), 3, 2, _maxent(tiny_config))
    _, m_hard = qsm_jax.train_step(hard, _batch())
    _, m_soft = qsm_jax.train_step(soft, _batch())
    expected = float(m_hard["target_q_mean"]) - tiny_config.gamma * 0.5 * float(m_soft["log_prob"])
    assert float(m_soft["target_q_mean"]) == pytest.approx(expected, abs=1e-4)
    assert float(m_soft["temperature"]) == pytest.approx(0.5)
    assert "log_prob" not in m_hard and "temperature" not in m_hard


@pytest.mark.slow
def test_soft_actor_target_is_the_mirror_target_at_lam_temp(tiny_config):
    """With a fixed temperature the actor step equals the plain mirror variant at lam = temp."""
    batch = _batch()
    soft = qsm_jax.create_train_state(jax.random.key(0), 3, 2, _maxent(tiny_config))
    mirror_cfg = dataclasses.replace(tiny_config, score_target="mirror", lam=0.5)
    mirror = qsm_jax.create_train_state(jax.random.key(0), 3, 2, mirror_cfg)
    # Give the mirror agent the soft agent's updated critic: then only the actor targets can differ.
    new_soft, _ = qsm_jax.train_step(soft, batch)
    cfg = mirror.config
    schedule = diffusion.make_schedule(cfg.beta_schedule, cfg.diffusion_steps)
    _, _, _, level_key, noise_key = jax.random.split(mirror.key, 5)

    def q_fn(o, a):
        return new_soft.critic.apply_fn({"params": new_soft.critic.params}, o, a).mean(axis=0)

    grads, _ = jax.grad(losses.qsm_actor_loss, has_aux=True)(
        mirror.actor.params, mirror.actor.apply_fn, q_fn, batch.observations, batch.actions,
        jax.random.randint(level_key, (32,), 0, cfg.diffusion_steps), jax.random.normal(noise_key, (32, 2)),
        schedule.alpha_bars, cfg.alpha, target="mirror", lam=0.5,
    )  # fmt: skip
    expected = mirror.actor.apply_gradients(grads=grads).params
    for a, b in zip(jax.tree.leaves(new_soft.actor.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("estimate", ["denoiser", "samples"])
@pytest.mark.parametrize("scale, direction", [(5.0, 1), (-50.0, -1)])
def test_auto_temperature_moves_toward_the_target(tiny_config, scale, direction, estimate):
    cfg = _maxent(
        tiny_config, auto_temperature=True, target_entropy_scale=scale, temperature_lr=1e-2, entropy_estimate=estimate
    )
    state = qsm_jax.create_train_state(jax.random.key(0), 3, 2, cfg)
    for i in range(5):
        state, metrics = qsm_jax.train_step(state, _batch(i))
    assert np.sign(float(learner.entropy_temperature(state)) - 0.5) == direction
    assert np.isfinite(float(metrics["log_prob"]))


@pytest.mark.parametrize("scale, direction", [(5.0, 1), (-50.0, -1)])
def test_adaptive_noise_moves_toward_the_target(tiny_config, scale, direction):
    cfg = dataclasses.replace(tiny_config, exploration="adaptive", target_entropy_scale=scale)
    state = qsm_jax.create_train_state(jax.random.key(0), 3, 2, cfg)
    assert float(learner.exploration_std(state)) == pytest.approx(cfg.exploration_noise)
    for i in range(5):
        state, metrics = qsm_jax.train_step(state, _batch(i))
    assert np.sign(float(learner.exploration_std(state)) - cfg.exploration_noise) == direction
    assert "temperature" in metrics and float(metrics["temperature"]) == 0.0
    # Acting adds exactly that std (before clipping): the same key without exploration is the chain.
    obs = jnp.zeros((4096, 3))
    plain = learner.policy_sample(state, obs, jax.random.key(3), explore=False)
    explored = learner.policy_sample(state, obs, jax.random.key(3), explore=True)
    inside = np.abs(np.asarray(explored)) < 1.0
    diff = np.asarray(explored - plain)[inside]
    assert diff.std() == pytest.approx(float(learner.exploration_std(state)), rel=0.1)


def test_evaluation_protocols(tiny_config):
    state = qsm_jax.create_train_state(jax.random.key(0), 3, 2, tiny_config)
    obs, key = jnp.asarray(_batch().observations), jax.random.key(5)
    noise_free = state.replace(config=dataclasses.replace(tiny_config, eval_sampling="noise_free"))
    chain_key, _ = jax.random.split(key)
    np.testing.assert_array_equal(
        learner.policy_sample(noise_free, obs, key),
        diffusion.sample_chain(state.actor, state.config, obs, chain_key, state.action_dim, 0.0),
    )
    best = state.replace(config=dataclasses.replace(tiny_config, eval_sampling="best_of_n", eval_candidates=4))
    four = state.replace(config=dataclasses.replace(tiny_config, num_action_samples=4))
    np.testing.assert_array_equal(learner.policy_sample(best, obs, key), learner.policy_sample(four, obs, key))
    # Acting is never changed by the evaluation protocol.
    np.testing.assert_array_equal(
        learner.policy_sample(best, obs, key, explore=True), learner.policy_sample(state, obs, key, explore=True)
    )


def test_defaults_carry_no_entropy_state(tiny_config):
    state = qsm_jax.create_train_state(jax.random.key(0), 3, 2, tiny_config)
    assert state.temperature is None and state.noise_scale is None
    _, metrics = qsm_jax.train_step(state, _batch())
    assert set(metrics) == {"critic_loss", "q_mean", "target_q_mean", "actor_loss", "grad_q_abs_mean"}


def test_entropy_config_errors():
    for kwargs, message in (
        ({"entropy_temperature": 0.1}, "use --score_target=tilted or mirror"),
        ({"entropy_temperature": -1.0}, "entropy_temperature must be"),
        ({"auto_temperature": True}, "auto_temperature needs entropy_temperature > 0"),
        ({"entropy_temperature": 0.1, "score_target": "mirror", "normalize_grad": True}, "turn off --normalize_grad"),
        ({"exploration": "noisy"}, "exploration must be one of"),
        ({"exploration": "adaptive", "exploration_noise": 0.0}, "set --exploration_noise > 0"),
        ({"eval_sampling": "mean"}, "eval_sampling must be one of"),
        ({"entropy_draws": 0}, "entropy_draws must be"),
        ({"entropy_estimate": "gmm"}, "entropy_estimate must be one of"),
        ({"entropy_estimate": "samples", "entropy_draws": 1}, "set --entropy_draws >= 2"),
        ({"eval_candidates": 0}, "eval_candidates must be"),
    ):
        with pytest.raises(ValueError, match=message):
            qsm_jax.QSMConfig(**kwargs)


def test_floor_is_the_uniform_density_on_the_box():
    """A denoiser that predicts 0 implies a density far wider than [-1, 1]^A; the floor holds it at
    the uniform density, -A log 2."""
    alpha_bars = diffusion.make_schedule("vp", 5).alpha_bars
    actions = jnp.zeros((4, A))
    raw = losses.log_prob_estimate(lambda o, x, k: 0 * x, jnp.zeros((4, 1)), actions, alpha_bars, jax.random.key(0), 4)
    floored = losses.log_prob_estimate(
        lambda o, x, k: 0 * x, jnp.zeros((4, 1)), actions, alpha_bars, jax.random.key(0), 4, min_log_prob=-A * np.log(2)
    )
    assert float(raw.max()) < -A * np.log(2)
    np.testing.assert_allclose(np.asarray(floored), -A * np.log(2), rtol=1e-6)

"""The tanh-squashed chain (``squash="tanh"``) and the entropy-regularised KL step (``tilt_entropy``)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import digamma

import qsm_jax
from qsm_jax import diffusion, learner, losses

from .helpers import random_batch as _batch

TANH = {
    "score_target": "mirror",
    "kl_bound": 0.1,
    "anchor": "policy",
    "squash": "tanh",
    "kl_samples": 4,
    "kl_states": 8,
}


def _state(tiny_config, **kwargs):
    return qsm_jax.create_train_state(jax.random.key(0), 3, 2, dataclasses.replace(tiny_config, **{**TANH, **kwargs}))


def test_the_tanh_chain_is_tanh_of_the_unclipped_chain(tiny_config):
    """squash=tanh: the chain runs with no clipping at all and its output u becomes tanh(u); the
    clipped chain (the default) has no latent."""
    state = _state(tiny_config)
    obs, key = _batch(0).observations, jax.random.key(5)
    latent = diffusion.sample_chain(state.actor, state.config, obs, key, 2, latent=True)
    by_hand = diffusion.ddpm_sample(
        lambda o, x, k: state.actor.apply_fn({"params": state.actor.params}, o, x, k),
        obs,
        key,
        diffusion.make_schedule("vp", tiny_config.diffusion_steps),
        2,
        clip=False,
        latent=True,
    )
    np.testing.assert_array_equal(np.asarray(latent), np.asarray(by_hand))
    assert np.abs(np.asarray(latent)).max() > 1.0  # unclipped
    actions = diffusion.sample_chain(state.actor, state.config, obs, key, 2)
    np.testing.assert_allclose(np.asarray(actions), np.tanh(np.asarray(latent)), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="only a tanh-squashed chain"):
        diffusion.sample_chain(state.actor, tiny_config, obs, key, 2, latent=True)
    with pytest.raises(ValueError, match="pass clip=False"):
        diffusion.ddpm_sample(lambda o, x, k: x, obs, key, diffusion.make_schedule("vp", 5), 2, latent=True)


def test_tanh_log_jacobian_and_latent_entropy_equal_numpy():
    """J(u) = sum log(1 - tanh(u)^2), finite where tanh rounds to 1, with gradient -2 tanh(u); the
    entropy of a = tanh(u) as the Gaussian fit of u (bias-corrected log variance) plus the mean J."""
    u = np.random.default_rng(0).normal(size=(6, 5, 3)).astype(np.float32) * 1.5
    jacobian, entropy = jax.jit(losses.tanh_log_jacobian), jax.jit(losses.latent_entropy)
    np.testing.assert_allclose(jacobian(u), np.log(1 - np.tanh(u.astype(np.float64)) ** 2).sum(-1), rtol=1e-5)
    far = np.array([[20.0, -30.0], [1.0, 2.0]], np.float32)
    assert np.isfinite(np.asarray(jacobian(far))).all()
    np.testing.assert_allclose(jacobian(far)[0], 2 * (np.log(2) - 20) + 2 * (np.log(2) - 30), rtol=1e-6)
    grad = jax.jit(jax.grad(lambda x: losses.tanh_log_jacobian(x).sum()))(u[0])
    np.testing.assert_allclose(grad, -2 * np.tanh(u[0]), rtol=1e-5, atol=1e-6)
    n = u.shape[0]
    log_var = np.log(u.var(0, ddof=1)) - (digamma((n - 1) / 2) - np.log((n - 1) / 2))
    want = 0.5 * (np.log(2 * np.pi * np.e) + log_var).sum(-1) + np.log(1 - np.tanh(u) ** 2).sum(-1).mean(0)
    np.testing.assert_allclose(entropy(u), want, rtol=1e-4)
    # Wide latents pile a = tanh(u) near the walls: the estimate falls, as a's entropy does.
    assert float(entropy(u * 10).mean()) < float(entropy(u).mean())


def test_keep_scales_only_the_mirror_targets_anchor_term():
    """score_target("mirror", keep=kappa) = kappa eps - sqrt(1 - abar) g / lam; keep=1 is the plain
    mirror target bit for bit."""
    rng = np.random.default_rng(1)
    g, noise = rng.normal(size=(2, 8, 2)).astype(np.float32)
    alpha_bar = diffusion.make_schedule("vp", 5).alpha_bars[np.array([0, 1, 2, 3, 4, 2, 0, 4])]
    got = losses.score_target("mirror", g, noise, alpha_bar, 50.0, 0.7, keep=0.4)
    sigma = np.sqrt(1 - np.asarray(alpha_bar))[:, None]
    np.testing.assert_allclose(got, 0.4 * noise - sigma * g / 0.7, rtol=1e-6, atol=1e-7)
    plain = losses.score_target("mirror", g, noise, alpha_bar, 50.0, 0.7)
    np.testing.assert_array_equal(losses.score_target("mirror", g, noise, alpha_bar, 50.0, 0.7, keep=1.0), plain)


@pytest.mark.parametrize(("tau", "flags", "tilt", "j_weight", "keep"), [
    (0.0, {}, 0.8, 0.0, 1.0),
    (0.3, {}, 1.1, 0.3, 0.8 / 1.1),
    (0.3, {"tilt_within_bound": True}, 0.8, 0.3, 1 - 0.3 / 0.8),
    (1.2, {"tilt_within_bound": True}, 0.8, 1.2, 0.0),
    (0.3, {"tilt_within_bound": True, "tilt_max_temperature": True}, 0.8, 0.3, 1 - 0.3 / 0.8),
    (1.2, {"tilt_within_bound": True, "tilt_max_temperature": True}, 1.2, 1.2, 0.0),
    (0.3, {"tilt_within_bound": True, "tilt_bounded_entropy": True}, 0.8, 0.3, 1 - 0.3 / 0.8),
    (1.2, {"tilt_within_bound": True, "tilt_bounded_entropy": True}, 0.8, 0.8, 0.0),
])  # fmt: skip
def test_the_tanh_step_is_the_mirror_step_in_the_latent(tiny_config, tau, flags, tilt, j_weight, keep):
    """squash=tanh: the actor step is the mirror step on the chain's latent samples u with the critic
    read at tanh(u); with tilt_entropy, Q + tau J in place of Q, lam + tau in place of lam and the
    anchor's eps term kept at lam / (lam + tau); with tilt_within_bound too, lam stays the tilt and the
    eps term is kept at 1 - tau / lam, none of it once tau >= lam; with tilt_max_temperature too the
    tilt is max(lam, tau), with tilt_bounded_entropy instead J's coefficient is min(tau, lam) (either way
    J's weight at most 1). Written out from the public pieces (lam = 0.8), the tilt, J's coefficient
    and kappa by hand."""
    state = _state(tiny_config, tilt_entropy=tau, **flags)
    batch, lam = _batch(0), 0.8
    level_key, noise_key = jax.random.split(jax.random.key(7))
    actor, _, _ = jax.jit(learner.actor_update)(state, state.critic, batch, level_key, noise_key, lam=lam, tau=tau)
    cfg = state.config
    latent = diffusion.sample_chain(
        state.actor, cfg, batch.observations, jax.random.fold_in(noise_key, 2), 2, latent=True
    )

    def q_fn(o, u):
        q = state.critic.apply_fn({"params": state.critic.params}, o, jnp.tanh(u)).mean(axis=0)
        return q + j_weight * losses.tanh_log_jacobian(u)

    grads, _ = jax.grad(losses.qsm_actor_loss, has_aux=True)(
        state.actor.params, state.actor.apply_fn, q_fn, batch.observations, latent,
        jax.random.randint(level_key, (32,), 0, cfg.diffusion_steps), jax.random.normal(noise_key, (32, 2)),
        diffusion.make_schedule(cfg.beta_schedule, cfg.diffusion_steps).alpha_bars, cfg.alpha,
        target="mirror", lam=tilt, keep=keep,
    )  # fmt: skip
    by_hand = state.actor.apply_gradients(grads=grads)
    for a, b in zip(jax.tree.leaves(actor.params), jax.tree.leaves(by_hand.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("target_scale", "direction"), [(5.0, 1), (-1000.0, -1)])
def test_tau_follows_sacs_rule_on_the_latent_entropy(tiny_config, target_scale, direction):
    """tilt_entropy: tau rises every update while the entropy read from the KL dual's latent samples
    is below target_entropy_scale * A and falls while it is above; the KL step's lam is unchanged by it."""
    state = _state(tiny_config, tilt_entropy=0.5, target_entropy_scale=target_scale, temperature_lr=0.05)
    plain = _state(tiny_config)
    assert plain.kl_tau is None and learner.kl_tau(plain) == 0.0
    taus, entropies = [float(learner.kl_tau(state))], []
    kl_step = jax.jit(learner._kl_step)
    for i in range(2):
        observations, key = _batch(i).observations, jax.random.key(i)
        new, aux = kl_step(state, observations, key)
        without = state.replace(config=dataclasses.replace(state.config, tilt_entropy=0.0), kl_tau=None)
        plain_new, plain_aux = kl_step(without, observations, key)
        assert float(aux["tilt_kl"]) == float(plain_aux["tilt_kl"])
        for a, b in zip(jax.tree.leaves(new.kl_lam), jax.tree.leaves(plain_new.kl_lam), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        entropies.append(float(aux["policy_entropy"]))
        state = new
        taus.append(float(learner.kl_tau(state)))
    assert np.all(np.sign(target_scale * 2 - np.array(entropies)) == direction)
    assert np.all(np.sign(np.diff(taus)) == direction)
    state, metrics = qsm_jax.train_step(state, _batch(5))  # the whole update runs and reports both
    assert {"tilt_tau", "policy_entropy", "tilt_lam"} <= set(metrics)
    actions = qsm_jax.sample_actions(state, _batch(5).observations, jax.random.key(0))
    assert np.abs(np.asarray(actions)).max() <= 1.0


def test_squash_config_errors():
    for kwargs, message in (
        ({"squash": "sigmoid"}, "squash must be one of"),
        ({"squash": "tanh"}, "use --anchor=policy"),
        ({"squash": "tanh", "anchor": "next"}, "use --anchor=policy"),
        (
            {"squash": "tanh", "anchor": "policy", "score_target": "mirror", "entropy_temperature": 0.1},
            "use --entropy_temperature=0 and --exploration=fixed",
        ),
        ({"tilt_entropy": 0.5}, "set --kl_bound > 0, --score_target=mirror and --squash=tanh"),
        ({**TANH, "score_target": "tilted", "tilt_entropy": 0.5}, "--score_target=mirror"),
        ({"tilt_entropy": -0.1}, "tilt_entropy must be a finite number >= 0"),
        ({**TANH, "tilt_within_bound": True}, "set --tilt_entropy > 0"),
        ({**TANH, "tilt_entropy": 0.5, "tilt_max_temperature": True}, "set --tilt_within_bound"),
        ({**TANH, "tilt_entropy": 0.5, "tilt_bounded_entropy": True}, "set --tilt_within_bound"),
        (
            {
                **TANH,
                "tilt_entropy": 0.5,
                "tilt_within_bound": True,
                "tilt_max_temperature": True,
                "tilt_bounded_entropy": True,
            },
            "set one of them",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            qsm_jax.QSMConfig(**kwargs)
    assert qsm_jax.QSMConfig().squash == "clip" and qsm_jax.QSMConfig().tilt_entropy == 0.0
    default = qsm_jax.QSMConfig()
    assert not (default.tilt_within_bound or default.tilt_max_temperature or default.tilt_bounded_entropy)


def test_the_tanh_chains_denoiser_adds_the_eps_of_a_standard_normal(tiny_config):
    """squash=tanh: the denoiser's output is its body's plus sqrt(1 - abar_k) a_k (the eps of N(0, I)),
    so the untrained chain samples about N(0, I) in the latent instead of growing by 1 / sqrt(abar_T)."""
    state = _state(tiny_config)
    sigmas = np.sqrt(1 - np.asarray(diffusion.make_schedule("vp", tiny_config.diffusion_steps).alpha_bars))
    body = qsm_jax.networks.ScoreNetwork(
        action_dim=2, hidden_dims=(16, 16), time_features=8, time_hidden_dims=(16,)
    )  # the same parameters without the prior term
    obs, x = _batch(0).observations, np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)
    levels = np.arange(32, dtype=np.float32)[:, None] % tiny_config.diffusion_steps
    got = state.actor.apply_fn({"params": state.actor.params}, obs, x, levels)
    want = body.apply({"params": state.actor.params}, obs, x, levels) + sigmas[levels.astype(int)] * x
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    latent = diffusion.sample_chain(
        state.actor, state.config, np.ones((4096, 3), np.float32), jax.random.key(0), 2, latent=True
    )
    assert 0.5 < float(latent.std()) < 2.0  # about N(0, I) (the untrained body adds a little)
    plain = _state(tiny_config, squash="clip", tilt_entropy=0.0)
    assert state.actor.params.keys() == plain.actor.params.keys()  # no parameter of its own

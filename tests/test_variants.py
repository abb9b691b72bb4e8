"""QSM beyond the reference: score targets (tilted, mirror), grad normalisation, best-of-N acting."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qsm_jax
from qsm_jax import diffusion, learner, losses

from .helpers import random_batch as _batch

A_STAR = np.array([0.3, -0.6], np.float32)


def _q(o, a):  # Q = -||a - a*||^2, grad_a Q = -2 (a - a*)
    return -jnp.sum((a - A_STAR) ** 2, axis=-1)


def _problem(seed=0, batch=8):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(batch, 3)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(batch, 2)).astype(np.float32)
    levels = np.array([0, 1, 2, 3, 4, 2, 0, 4])[:batch]
    noise = rng.normal(size=(batch, 2)).astype(np.float32)
    return obs, actions, levels, noise


def _numpy_target(kind, actions, levels, noise, alpha, lam, rms=None):
    ab = np.asarray(diffusion.make_schedule("vp", 5).alpha_bars)[levels][:, None]
    a_k = np.sqrt(ab) * actions + np.sqrt(1 - ab) * noise
    g = -2 * (a_k - A_STAR)
    if rms is not None:
        g = g / (rms + 1e-8)
    return {
        "qsm": -alpha * g,
        "tilted": -np.sqrt(1 - ab) * g / lam,
        "mirror": noise - np.sqrt(1 - ab) * g / lam,
    }[kind], a_k


@pytest.mark.parametrize("kind", ["qsm", "tilted", "mirror"])
@pytest.mark.parametrize("normalize", [False, True])
def test_score_targets_equal_numpy(kind, normalize):
    obs, actions, levels, noise = _problem()
    alpha, lam, decay = 7.5, 0.3, 0.9
    alpha_bars = diffusion.make_schedule("vp", 5).alpha_bars
    prev_sq = 0.4  # running mean of g^2 before this update, which is update number 3
    rms_state = losses.GradRMS(jnp.float32(prev_sq), jnp.int32(3), decay)

    def zero_actor(variables, o, a, k):  # pred = 0: the loss is mean(target^2)
        return jnp.zeros_like(a) + 0.0 * variables["params"]["w"]

    loss, aux = losses.qsm_actor_loss(
        {"w": jnp.float32(1.0)}, zero_actor, _q, obs, actions, jnp.asarray(levels), noise, alpha_bars, alpha,
        target=kind, lam=lam, grad_rms=rms_state, normalize_grad=normalize,
    )  # fmt: skip
    _, a_k = _numpy_target(kind, actions, levels, noise, alpha, lam)
    g = -2 * (a_k - A_STAR)
    new_sq = decay * prev_sq + (1 - decay) * np.mean(g**2)
    rms = np.sqrt(new_sq / (1 - decay**3))
    want, _ = _numpy_target(kind, actions, levels, noise, alpha, lam, rms if normalize else None)
    np.testing.assert_allclose(aux["grad_sq"], new_sq, rtol=1e-5)
    np.testing.assert_allclose(loss, np.mean(want**2), rtol=1e-5)
    got = losses.score_target(kind, jnp.asarray(g), noise, alpha_bars[levels], alpha, lam)
    np.testing.assert_allclose(got, _numpy_target(kind, actions, levels, noise, alpha, lam)[0], rtol=1e-5, atol=1e-6)


def test_signs_follow_the_ddpm_score_relation():
    """At the top of the chain a_k ~ pure noise; with a flat critic "mirror" is the ordinary denoising
    target eps, "tilted" and "qsm" ask for nothing; uphill g lowers eps (the reverse step adds -eps)."""
    noise = jnp.array([[0.5, -1.0]])
    zero = jnp.zeros((1, 2))
    ab = jnp.array([0.3])
    np.testing.assert_allclose(losses.score_target("mirror", zero, noise, ab, 1.0, 1.0), noise)
    np.testing.assert_allclose(losses.score_target("tilted", zero, noise, ab, 1.0, 1.0), zero)
    up = jnp.array([[1.0, 0.0]])
    for kind in ("qsm", "tilted", "mirror"):
        delta = losses.score_target(kind, up, noise, ab, 1.0, 1.0) - losses.score_target(
            kind, zero, noise, ab, 1.0, 1.0
        )
        assert float(delta[0, 0]) < 0 and float(delta[0, 1]) == 0


def test_running_rms_over_three_steps_by_hand():
    decay = 0.5
    gs = [jnp.full((2, 2), 2.0), jnp.full((2, 2), 4.0), jnp.array([[1.0, -1.0], [3.0, -3.0]])]
    mean_sq, rmss = jnp.float32(0.0), []
    for t, g in enumerate(gs, start=1):
        mean_sq, rms = losses.update_grad_rms(losses.GradRMS(mean_sq, jnp.int32(t), decay), g)
        rmss.append(float(rms))
    # m1 = 0.5*4 = 2, rms1 = sqrt(2/0.5) = 2; m2 = 1 + 0.5*16 = 9, rms2 = sqrt(9/0.75);
    # m3 = 4.5 + 0.5*5 = 7, rms3 = sqrt(7/0.875).
    np.testing.assert_allclose(rmss, [2.0, np.sqrt(12.0), np.sqrt(8.0)], rtol=1e-6)
    np.testing.assert_allclose(mean_sq, 7.0, rtol=1e-6)


def test_train_step_threads_the_running_rms(tiny_config):
    """state.grad_sq after three train_steps equals the hand recursion on each step's mean g^2."""
    config = dataclasses.replace(tiny_config, normalize_grad=True, score_target="tilted", grad_rms_decay=0.8)
    state = qsm_jax.create_train_state(jax.random.key(0), 3, 2, config)
    mean_sq = 0.0
    for i in range(3):
        batch = _batch(i)
        # Recompute this step's g exactly as train_step does (same keys, critic after its update).
        _, _, _, level_key, noise_key = jax.random.split(state.key, 5)
        new_state, metrics = qsm_jax.train_step(state, batch)
        levels = jax.random.randint(level_key, (32,), 0, 5)
        noise = jax.random.normal(noise_key, (32, 2))
        a_k = diffusion.q_sample(batch.actions, levels, noise, diffusion.make_schedule("vp", 5).alpha_bars)

        def q(a, critic=new_state.critic, o=batch.observations):
            return critic.apply_fn({"params": critic.params}, o, a).mean(0).sum()

        g = np.asarray(jax.grad(q)(a_k))
        mean_sq = 0.8 * mean_sq + 0.2 * np.mean(g**2)
        np.testing.assert_allclose(new_state.grad_sq, mean_sq, rtol=1e-4)
        np.testing.assert_allclose(metrics["grad_q_abs_mean"], np.abs(g).mean(), rtol=1e-4)
        state = new_state


def test_best_of_n_keeps_the_highest_q_sample(tiny_config):
    n, batch = 6, 5
    config = dataclasses.replace(tiny_config, num_action_samples=n)
    state = qsm_jax.create_train_state(jax.random.key(0), 3, 2, config)
    # A critic of known shape: every ensemble member is Q = -||a - a*||^2.
    known = state.critic.replace(apply_fn=lambda v, o, a: jnp.stack([_q(o, a)] * 2))
    state = state.replace(critic=known)
    obs = jnp.asarray(_batch(0, batch).observations)
    key = jax.random.key(3)
    chosen = learner.policy_sample(state, obs, key)
    # The N candidates by hand: the plain chain on the tiled observations with the same key.
    chain_key, _ = jax.random.split(key)
    single = state.replace(config=dataclasses.replace(config, num_action_samples=1))
    candidates = np.asarray(
        diffusion.sample_chain(single.actor, single.config, jnp.tile(obs, (n, 1)), chain_key, single.action_dim)
    )
    candidates = candidates.reshape(n, batch, 2)
    q = -((candidates - A_STAR) ** 2).sum(-1)  # (N, B)
    want = candidates[q.argmax(0), np.arange(batch)]
    np.testing.assert_array_equal(np.asarray(chosen), want)
    assert len({tuple(c) for c in candidates[:, 0]}) >= 3 and (q.argmax(0) != 0).any()  # a real choice
    # Exploration noise comes after the choice.
    explored = learner.policy_sample(state, obs, key, explore=True)
    assert np.abs(np.asarray(explored) - want).max() <= 4 * config.exploration_noise + 1e-6


def test_one_sample_is_the_plain_chain_bit_for_bit(tiny_config):
    state = qsm_jax.create_train_state(jax.random.key(0), 3, 2, tiny_config)
    obs = jnp.asarray(_batch(0, 7).observations)
    key = jax.random.key(4)
    chain_key, _ = jax.random.split(key)
    plain = jax.jit(lambda s, o, k: diffusion.sample_chain(s.actor, s.config, o, k, s.action_dim))(
        state, obs, chain_key
    )
    np.testing.assert_array_equal(qsm_jax.sample_actions(state, obs, key), plain)


def test_unclipped_chain_still_clips_its_output():
    """As the reference: clip_sampler=False drops the per-step clip but the final action is clipped."""
    obs = jnp.zeros((64, 1))

    def eps_fn(o, x, k):  # pushes far outside [-1, 1]
        return jnp.full_like(x, -3.0)

    schedule = diffusion.make_schedule("vp", 5)
    out = diffusion.ddpm_sample(eps_fn, obs, jax.random.key(0), schedule, 2, clip=False)
    assert float(jnp.abs(out).max()) == 1.0
    # Without the final clip the same chain leaves the box: the clip is what keeps it in.
    x = jax.random.normal(jax.random.split(jax.random.key(0))[0], (64, 2))
    for k in range(4, -1, -1):
        b, a, ab = schedule.betas[k], schedule.alphas[k], schedule.alpha_bars[k]
        x = (x - b / jnp.sqrt(1 - ab) * -3.0) / jnp.sqrt(a)
    assert float(jnp.abs(x).max()) > 1.5


def test_variant_config_errors():
    for kwargs, message in (
        ({"score_target": "x"}, "score_target must be one of"),
        ({"lam": 0.0}, "lam must be"),
        ({"num_action_samples": 0}, "num_action_samples must be"),
        ({"grad_rms_decay": 1.0}, "grad_rms_decay must be"),
        ({"anchor": "target"}, "anchor must be one of"),
    ):
        with pytest.raises(ValueError, match=message):
            qsm_jax.QSMConfig(**kwargs)


def test_reference_defaults_compute_the_pre_variant_update(tiny_config):
    """The default train_step equals the update as it was before the variants existed (written out
    here from the public pieces: reference target -alpha g, no normalisation, plain chain).
    Checked bit for bit against the previous commit's code once (see the #11 note); here to rounding."""
    import optax

    state = qsm_jax.create_train_state(jax.random.key(0), 3, 2, tiny_config)
    cfg = tiny_config

    @jax.jit
    def old_step(state, batch):
        key, chain_key, target_noise_key, level_key, noise_key = jax.random.split(state.key, 5)
        next_actions = diffusion.sample_chain(
            state.actor, state.config, batch.next_observations, chain_key, state.action_dim
        )
        next_actions = jnp.clip(
            next_actions + cfg.target_noise * jax.random.normal(target_noise_key, next_actions.shape), -1, 1
        )
        grads, _ = jax.grad(losses.critic_loss, has_aux=True)(
            state.critic.params, state.target_critic_params, state.critic.apply_fn, batch, next_actions, cfg.gamma
        )
        critic = state.critic.apply_gradients(grads=grads)
        targets = optax.incremental_update(critic.params, state.target_critic_params, cfg.tau)

        def q_fn(o, a):
            return critic.apply_fn({"params": critic.params}, o, a).mean(axis=0)

        schedule = diffusion.make_schedule(cfg.beta_schedule, cfg.diffusion_steps)
        actor_grads, _ = jax.grad(losses.qsm_actor_loss, has_aux=True)(
            state.actor.params, state.actor.apply_fn, q_fn, batch.observations, batch.actions,
            jax.random.randint(level_key, (32,), 0, cfg.diffusion_steps), jax.random.normal(noise_key, (32, 2)),
            schedule.alpha_bars, cfg.alpha,
        )  # fmt: skip
        actor = state.actor.apply_gradients(grads=actor_grads)
        return state.replace(actor=actor, critic=critic, target_critic_params=targets, key=key, step=state.step + 1)

    new, old = state, state
    for i in range(3):
        new, _ = qsm_jax.train_step(new, _batch(i))
        old = old_step(old, _batch(i))

    def leaves(s):
        return jax.tree.leaves((s.actor, s.critic, s.target_critic_params, s.key, s.step))

    for a, b in zip(leaves(new), leaves(old), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_the_policy_anchor_noises_fresh_chain_samples_of_the_current_actor(tiny_config):
    """anchor="policy": the actor step is the replay-anchored step on a batch whose actions are
    chain samples of the current actor at the batch's states (drawn with fold_in(noise_key, 2))."""
    cfg = dataclasses.replace(tiny_config, score_target="mirror", normalize_grad=True, anchor="policy")
    state = qsm_jax.create_train_state(jax.random.key(0), 3, 2, cfg)
    batch = _batch(0)
    level_key, noise_key = jax.random.split(jax.random.key(7))
    by_policy = learner.actor_update(state, state.critic, batch, level_key, noise_key, cfg.lam)
    samples = diffusion.sample_chain(state.actor, cfg, batch.observations, jax.random.fold_in(noise_key, 2), 2)
    assert not np.allclose(np.asarray(samples), np.asarray(batch.actions))
    replay = state.replace(config=dataclasses.replace(cfg, anchor="replay"))
    by_hand = learner.actor_update(replay, state.critic, batch._replace(actions=samples), level_key, noise_key, cfg.lam)
    for a, b in zip(jax.tree.leaves(by_policy), jax.tree.leaves(by_hand), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The default anchor leaves train_step as it was (the replay actions).
    assert qsm_jax.QSMConfig().anchor == "replay"


def test_the_next_anchor_reuses_the_critic_targets_chain_samples_at_the_next_states(tiny_config):
    """anchor="next": the critic step is the replay-anchored one; the actor step is the replay-anchored
    step on a batch whose states are the next states and whose actions are the chain samples the
    critic target drew there (before its target noise): no chain of its own."""
    cfg = dataclasses.replace(tiny_config, score_target="mirror", lam=1.0, kl_bound=0.1, anchor="next")
    state = qsm_jax.create_train_state(jax.random.key(0), 3, 2, cfg)
    batch = _batch(0)
    new, _ = qsm_jax.train_step(state, batch)
    replay = state.replace(config=dataclasses.replace(cfg, anchor="replay"))
    by_replay, _ = qsm_jax.train_step(replay, batch)
    for a, b in zip(jax.tree.leaves(new.critic), jax.tree.leaves(by_replay.critic), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _, chain_key, _, level_key, noise_key = jax.random.split(state.key, 5)
    samples = learner.next_chain(state, batch, chain_key)
    shifted = batch._replace(observations=batch.next_observations, actions=samples)
    actor, _, _ = learner.actor_update(replay, new.critic, shifted, level_key, noise_key, learner.tilt_lam(state))
    for a, b in zip(jax.tree.leaves(new.actor), jax.tree.leaves(actor), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert not np.allclose(
        np.asarray(new.actor.params["MLP_1"]["Dense_2"]["kernel"]),
        np.asarray(by_replay.actor.params["MLP_1"]["Dense_2"]["kernel"]),
    )


def _numpy_dual(lam, q, eps):  # float64: lam eps + lam mean_s log mean_j exp(q_sj / lam)
    z = q / lam
    top = z.max(-1, keepdims=True)
    return lam * eps + lam * (top[:, 0] + np.log(np.exp(z - top).mean(-1))).mean()


def _numpy_tilt_kl(q, lam):  # mean_s KL(softmax(q_s / lam) || uniform)
    z = q / lam
    w = np.exp(z - z.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return (w * np.log(w * q.shape[-1])).sum(-1).mean()


def test_kl_dual_its_derivative_and_minimum_equal_numpy():
    """MPO's dual by hand: its value, its derivative eps - KL(tilt || uniform), and at the lam where
    the tilt's KL is eps (found by bisection in NumPy) a zero derivative and the lowest value."""
    q = np.random.default_rng(0).normal(size=(6, 5)) * 3.0 + 100.0  # an offset, as real Q values have
    eps = 0.1
    for lam in (0.3, 1.0, 4.0):
        value = losses.kl_dual_loss(jnp.float32(lam), jnp.asarray(q, jnp.float32), eps)
        np.testing.assert_allclose(float(value), _numpy_dual(lam, q, eps), rtol=1e-5)
        derivative = jax.grad(losses.kl_dual_loss)(jnp.float32(lam), jnp.asarray(q, jnp.float32), eps)
        np.testing.assert_allclose(float(derivative), eps - _numpy_tilt_kl(q, lam), atol=2e-4)
        np.testing.assert_allclose(
            float(losses.tilt_kl(jnp.asarray(q, jnp.float32), lam)), _numpy_tilt_kl(q, lam), atol=1e-5
        )
    low, high = 1e-2, 1e3  # the KL falls as lam grows
    for _ in range(100):
        mid = np.sqrt(low * high)
        low, high = (mid, high) if _numpy_tilt_kl(q, mid) > eps else (low, mid)
    assert abs(float(jax.grad(losses.kl_dual_loss)(jnp.float32(low), jnp.asarray(q, jnp.float32), eps))) < 1e-3
    assert _numpy_dual(low, q, eps) < min(_numpy_dual(0.9 * low, q, eps), _numpy_dual(1.1 * low, q, eps))


@pytest.mark.parametrize("bound, direction", [(0.5, -1.0), (1e-6, 1.0)])
def test_kl_trust_region_moves_lam_toward_its_bound(tiny_config, bound, direction):
    """kl_bound: lam falls every update while the tilt's KL over the policy's samples is below the
    bound times A and rises while it is above; the first update's actor and critic step uses the initial lam
    and equals the fixed-lam update (the KL step adds its own key, leaving the default stream)."""
    cfg = dataclasses.replace(
        tiny_config, score_target="mirror", kl_bound=bound, kl_samples=4, kl_states=8, temperature_lr=0.05
    )
    state = qsm_jax.create_train_state(jax.random.key(0), 3, 2, cfg)
    fixed = qsm_jax.create_train_state(jax.random.key(0), 3, 2, dataclasses.replace(cfg, kl_bound=0.0))
    assert fixed.kl_lam is None and float(learner.tilt_lam(state)) == pytest.approx(cfg.lam)
    lams, kls = [], []
    for i in range(4):
        state, metrics = qsm_jax.train_step(state, _batch(i))
        lams.append(float(metrics["tilt_lam"]))
        kls.append(float(metrics["tilt_kl"]))
        if i == 0:
            fixed, _ = qsm_jax.train_step(fixed, _batch(0))
            learned, fixed_leaves = (jax.tree.leaves((s.actor, s.critic, s.key)) for s in (state, fixed))
            for a, b in zip(learned, fixed_leaves, strict=True):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert np.all(np.sign(np.array(kls) - 2 * bound) == direction)  # the bound is per action dimension (A = 2)
    assert np.all(np.sign(np.diff([*lams, float(learner.tilt_lam(state))])) == direction)


def test_the_kl_bound_is_per_action_dimension(tiny_config):
    """With eps < KL < eps * A the dual's first Adam step lowers log lam by exactly the learning rate
    (its derivative eps * A - KL is positive); a bound not scaled by A would raise it."""
    cfg = dataclasses.replace(tiny_config, score_target="mirror", kl_bound=1.0, kl_samples=4, kl_states=8)
    state = qsm_jax.create_train_state(jax.random.key(0), 3, 2, cfg)
    observations, key = _batch(0).observations, jax.random.key(3)
    kl = float(learner._kl_step(state, observations, key)[1]["tilt_kl"])
    assert kl > 1e-4
    state = state.replace(config=dataclasses.replace(cfg, kl_bound=0.75 * kl))
    new, _ = learner._kl_step(state, observations, key)
    step = np.log(float(learner.tilt_lam(new))) - np.log(float(learner.tilt_lam(state)))
    np.testing.assert_allclose(step, -cfg.temperature_lr, rtol=1e-3)


def test_kl_config_errors():
    for kwargs, message in (
        ({"kl_bound": 0.1}, "use --score_target=tilted or mirror"),
        ({"kl_bound": 0.1, "score_target": "mirror", "normalize_grad": True}, "turn off --normalize_grad"),
        ({"kl_bound": 0.1, "score_target": "mirror", "entropy_temperature": 0.5}, "keep one"),
        ({"kl_bound": -1.0}, "kl_bound must be a finite number >= 0"),
        ({"kl_samples": 1}, "kl_samples must be an integer >= 2"),
        ({"kl_states": 0}, "kl_states must be an integer >= 1"),
    ):
        with pytest.raises(ValueError, match=message):
            qsm_jax.QSMConfig(**kwargs)

"""A reference-style QSM learner, for speed comparisons only (``experiments/bench_speed.py``).

It re-creates the update of the authors' reference code: two separate critic networks, each with
its own Adam, the textbook Mish, the time embedding computed for every sample; the same algorithm
and sizes as ``qsm_jax`` (VP schedule, T = 5, alpha = 50, 0.1 exploration noise).
Not a product: ``qsm_jax.learner.train_step`` is the update to use.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from qsm_jax import diffusion
from qsm_jax.networks import MLP, FourierFeatures


class RefScoreNet(nn.Module):
    action_dim: int
    hidden: tuple

    @nn.compact
    def __call__(self, s, a, t):
        t = FourierFeatures(64)(t)
        t = MLP((128, 128), activation=jax.nn.mish)(t)
        return MLP((*self.hidden, self.action_dim), activation=jax.nn.mish)(jnp.concatenate([a, s, t], -1))


class RefCritic(nn.Module):
    hidden: tuple

    @nn.compact
    def __call__(self, s, a):
        return MLP((*self.hidden, 1))(jnp.concatenate([s, a], -1))[:, 0]


def ref_create(key, obs_dim, action_dim, hidden):
    ka, k1, k2, key = jax.random.split(key, 4)
    s, a, t = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim)), jnp.zeros((1, 1))
    actor_net, critic_net = RefScoreNet(action_dim, hidden), RefCritic(hidden)
    actor = TrainState.create(
        apply_fn=actor_net.apply,
        params=actor_net.init(ka, s, a, t)["params"],
        tx=optax.adam(optax.cosine_decay_schedule(3e-4, 2_000_000)),
    )
    critics = [
        TrainState.create(apply_fn=critic_net.apply, params=critic_net.init(k, s, a)["params"], tx=optax.adam(3e-4))
        for k in (k1, k2)
    ]
    return {"actor": actor, "critics": critics, "targets": [c.params for c in critics], "key": key}


def _ref_chain(actor, params, obs, key, action_dim, sched):
    x_key, key = jax.random.split(key)
    x = jax.random.normal(x_key, (obs.shape[0], action_dim))

    def step(carry, k):
        x, key = carry
        eps = actor.apply_fn({"params": params}, obs, x, jnp.full((obs.shape[0], 1), k, jnp.float32))
        x = (x - sched.betas[k] / jnp.sqrt(1 - sched.alpha_bars[k]) * eps) / jnp.sqrt(sched.alphas[k])
        key, z_key = jax.random.split(key)
        x = x + (k > 0) * jnp.sqrt(sched.betas[k]) * jax.random.normal(z_key, x.shape)
        return (jnp.clip(x, -1, 1), key), None

    (x, _), _ = jax.lax.scan(step, (x, key), jnp.arange(len(sched.betas) - 1, -1, -1))
    return x


@jax.jit
def ref_update(agent, batch):
    sched = diffusion.make_schedule("vp", 5)
    action_dim = batch.actions.shape[1]
    key, k_chain, k_noise, k_t, k_eps = jax.random.split(agent["key"], 5)
    actor, critics = agent["actor"], agent["critics"]
    next_a = _ref_chain(actor, actor.params, batch.next_observations, k_chain, action_dim, sched)
    next_a = jnp.clip(next_a + 0.1 * jax.random.normal(k_noise, next_a.shape), -1, 1)
    next_q = jnp.minimum(
        *[
            c.apply_fn({"params": p}, batch.next_observations, next_a)
            for c, p in zip(critics, agent["targets"], strict=True)
        ]
    )
    y = batch.rewards + 0.99 * (1 - batch.terminals) * next_q
    new_critics, new_targets = [], []
    for c, p_target in zip(critics, agent["targets"], strict=True):
        grads = jax.grad(
            lambda p, c=c: ((c.apply_fn({"params": p}, batch.observations, batch.actions) - y) ** 2).mean()
        )(c.params)
        c = c.apply_gradients(grads=grads)
        new_critics.append(c)
        new_targets.append(optax.incremental_update(c.params, p_target, 0.005))
    t = jax.random.randint(k_t, (batch.actions.shape[0],), 0, 5)
    eps = jax.random.normal(k_eps, batch.actions.shape)
    ab = sched.alpha_bars[t][:, None]
    a_k = jnp.sqrt(ab) * batch.actions + jnp.sqrt(1 - ab) * eps

    def q_mean(a):
        return sum(c.apply_fn({"params": c.params}, batch.observations, a) for c in new_critics).sum() / 2

    target = -50.0 * jax.lax.stop_gradient(jax.grad(q_mean)(a_k))
    actor_grads = jax.grad(
        lambda p: (
            (actor.apply_fn({"params": p}, batch.observations, a_k, t[:, None].astype(jnp.float32)) - target) ** 2
        ).mean()
    )(actor.params)
    agent = {
        "actor": actor.apply_gradients(grads=actor_grads),
        "critics": new_critics,
        "targets": new_targets,
        "key": key,
    }
    return agent, {}


@jax.jit
def ref_act(agent, obs, key):
    sched = diffusion.make_schedule("vp", 5)
    a = _ref_chain(
        agent["actor"],
        agent["actor"].params,
        obs,
        key,
        agent["critics"][0].params["MLP_0"]["Dense_0"]["kernel"].shape[0] - obs.shape[1],
        sched,
    )
    return jnp.clip(a + 0.1 * jax.random.normal(jax.random.fold_in(key, 1), a.shape), -1, 1)

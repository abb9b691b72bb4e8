"""Soft Actor-Critic (Haarnoja et al., 2018): tanh-Gaussian policy, learned temperature.

A baseline in the same framework as QSM: same critic ensemble, TD loss, replay buffer, loop and
checkpointing, and a fused jitted ``train_step(state, batch) -> (state, metrics)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState
from jax.scipy.stats import norm

from qsm_jax import losses
from qsm_jax.common import adam_train_state, check, finite, module, raw_key
from qsm_jax.config import check_agent_config, config_to_dict
from qsm_jax.networks import CriticEnsemble, TanhGaussianActor, Temperature
from qsm_jax.types import Batch


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """SAC settings; defaults are the usual reference ones (256x256, Adam 3e-4, target entropy -A).

    Attributes:
      actor_hidden_dims, critic_hidden_dims: hidden sizes (ReLU).
      num_critics: critic ensemble size (2 = clipped double Q).
      actor_lr, critic_lr, temperature_lr: Adam learning rates.
      gamma, tau: discount and Polyak rate of the target critics.
      initial_temperature: starting entropy temperature.
      target_entropy_scale: target entropy = scale * action_dim (-1.0: the usual -A).
    """

    actor_hidden_dims: tuple[int, ...] = (256, 256)
    critic_hidden_dims: tuple[int, ...] = (256, 256)
    num_critics: int = 2
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    initial_temperature: float = 1.0
    target_entropy_scale: float = -1.0

    def __post_init__(self) -> None:
        check_agent_config(self, positive=("temperature_lr", "initial_temperature"))
        check(finite(self.target_entropy_scale), "target_entropy_scale must be finite")

    def to_dict(self) -> dict:
        return config_to_dict(self)


class SACState(struct.PyTreeNode):
    """Actor, critics, temperature (each params + Adam state), target critics, key and step."""

    actor: TrainState
    critic: TrainState
    temperature: TrainState
    target_critic_params: Any
    key: jax.Array
    step: jax.Array
    config: SACConfig = struct.field(pytree_node=False)
    obs_dim: int = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)


def create_train_state(key: jax.Array, obs_dim: int, action_dim: int, config: SACConfig) -> SACState:
    """Initialises SAC; same contract as ``qsm_jax.create_train_state``."""
    if not isinstance(config, SACConfig):
        raise ValueError(f"config must be a qsm_jax.sac.SACConfig, got {type(config).__name__}")
    actor_key, critic_key, key = jax.random.split(raw_key(key), 3)
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    actor_net = module(TanhGaussianActor, action_dim=action_dim, hidden_dims=config.actor_hidden_dims)
    critic_net = module(CriticEnsemble, hidden_dims=config.critic_hidden_dims, num_critics=config.num_critics)
    temp_net = module(Temperature, initial=config.initial_temperature)
    critic = adam_train_state(critic_net, critic_net.init(critic_key, obs, act)["params"], config.critic_lr)
    return SACState(
        actor=adam_train_state(actor_net, actor_net.init(actor_key, obs)["params"], config.actor_lr),
        critic=critic,
        temperature=adam_train_state(temp_net, temp_net.init(key)["params"], config.temperature_lr),
        target_critic_params=jax.tree.map(jnp.copy, critic.params),
        key=key,
        step=jnp.zeros((), jnp.int32),
        config=config,
        obs_dim=obs_dim,
        action_dim=action_dim,
    )


def sample_with_log_prob(actor: TrainState, params, observations, key) -> tuple[jax.Array, jax.Array]:
    """Reparameterised tanh-Gaussian sample and its log-density (with the tanh correction)."""
    mean, log_std = actor.apply_fn({"params": params}, observations)
    std = jnp.exp(log_std)
    u = mean + std * jax.random.normal(key, mean.shape)
    log_prob = norm.logpdf(u, mean, std).sum(axis=-1)
    # log(1 - tanh(u)^2), written stably.
    log_prob -= jnp.sum(2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)
    return jnp.tanh(u), log_prob


@jax.jit
def train_step(state: SACState, batch: Batch) -> tuple[SACState, dict[str, jax.Array]]:
    """Critic, target, actor and temperature updates of SAC in one compiled function."""
    cfg = state.config
    key, next_key, actor_key = jax.random.split(state.key, 3)
    temperature = state.temperature.apply_fn({"params": state.temperature.params})

    next_actions, next_log_prob = sample_with_log_prob(
        state.actor, state.actor.params, batch.next_observations, next_key
    )
    critic_grads, critic_aux = jax.grad(losses.critic_loss, has_aux=True)(
        state.critic.params,
        state.target_critic_params,
        state.critic.apply_fn,
        batch,
        next_actions,
        cfg.gamma,
        -temperature * next_log_prob,
    )
    critic = state.critic.apply_gradients(grads=critic_grads)
    target_critic_params = optax.incremental_update(critic.params, state.target_critic_params, cfg.tau)

    def actor_loss(params):
        actions, log_prob = sample_with_log_prob(state.actor, params, batch.observations, actor_key)
        q = critic.apply_fn({"params": critic.params}, batch.observations, actions).min(axis=0)
        return (temperature * log_prob - q).mean(), log_prob

    (a_loss, log_prob), actor_grads = jax.value_and_grad(actor_loss, has_aux=True)(state.actor.params)
    actor = state.actor.apply_gradients(grads=actor_grads)
    target_entropy = cfg.target_entropy_scale * state.action_dim

    def temperature_loss(params):
        t = state.temperature.apply_fn({"params": params})
        return t * jax.lax.stop_gradient(-log_prob - target_entropy).mean()

    temp_loss, temp_grads = jax.value_and_grad(temperature_loss)(state.temperature.params)
    new_state = state.replace(
        actor=actor,
        critic=critic,
        temperature=state.temperature.apply_gradients(grads=temp_grads),
        target_critic_params=target_critic_params,
        key=key,
        step=state.step + 1,
    )
    metrics = {
        **critic_aux,
        "actor_loss": a_loss,
        "entropy": -log_prob.mean(),
        "temperature": temperature,
        "temperature_loss": temp_loss,
    }
    return new_state, metrics


def policy_sample(state: SACState, observations: jax.Array, key: jax.Array, explore: bool = False) -> jax.Array:
    """Training actions (``explore``) sample the tanh-Gaussian; evaluation takes its mode tanh(mean)."""
    if explore:
        return sample_with_log_prob(state.actor, state.actor.params, observations, key)[0]
    return jnp.tanh(state.actor.apply_fn({"params": state.actor.params}, observations)[0])

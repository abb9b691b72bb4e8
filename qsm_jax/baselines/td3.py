"""TD3 (Fujimoto et al., 2018): deterministic actor, target policy smoothing, delayed actor updates.

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

from qsm_jax import losses
from qsm_jax.common import adam_train_state, check, module, raw_key
from qsm_jax.config import check_agent_config, config_to_dict
from qsm_jax.networks import CriticEnsemble, DeterministicActor
from qsm_jax.types import Batch


@dataclasses.dataclass(frozen=True)
class TD3Config:
    """TD3 settings; defaults are the paper's (docs/algorithm.md, "Baselines").

    Attributes:
      actor_hidden_dims, critic_hidden_dims: hidden sizes (ReLU).
      num_critics: critic ensemble size (2 = clipped double Q).
      actor_lr, critic_lr: Adam learning rates.
      gamma, tau: discount and Polyak rate of the target networks.
      exploration_noise: std of the Gaussian added to training actions.
      policy_noise: std of the target policy smoothing noise (Gaussian, on the target actor's action).
      noise_clip: that noise is clipped to [-noise_clip, noise_clip].
      policy_delay: critic updates per actor (and target) update.
    """

    actor_hidden_dims: tuple[int, ...] = (256, 256)
    critic_hidden_dims: tuple[int, ...] = (256, 256)
    num_critics: int = 2
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    exploration_noise: float = 0.1
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2

    def __post_init__(self) -> None:
        check_agent_config(self, non_negative=("exploration_noise", "policy_noise", "noise_clip"))
        check(
            isinstance(self.policy_delay, int) and self.policy_delay >= 1,
            f"policy_delay must be an integer >= 1, got {self.policy_delay!r}",
        )

    def to_dict(self) -> dict:
        return config_to_dict(self)


class TD3State(struct.PyTreeNode):
    """Actor and critics (params + Adam state), their targets, key and step."""

    actor: TrainState
    critic: TrainState
    target_actor_params: Any
    target_critic_params: Any
    key: jax.Array
    step: jax.Array
    config: TD3Config = struct.field(pytree_node=False)
    obs_dim: int = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)


def create_train_state(key: jax.Array, obs_dim: int, action_dim: int, config: TD3Config) -> TD3State:
    """Initialises TD3; same contract as ``qsm_jax.create_train_state``."""
    if not isinstance(config, TD3Config):
        raise ValueError(f"config must be a qsm_jax.td3.TD3Config, got {type(config).__name__}")
    actor_key, critic_key, key = jax.random.split(raw_key(key), 3)
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    actor_net = module(DeterministicActor, action_dim=action_dim, hidden_dims=config.actor_hidden_dims)
    critic_net = module(CriticEnsemble, hidden_dims=config.critic_hidden_dims, num_critics=config.num_critics)

    actor = adam_train_state(actor_net, actor_net.init(actor_key, obs)["params"], config.actor_lr)
    critic = adam_train_state(critic_net, critic_net.init(critic_key, obs, act)["params"], config.critic_lr)
    return TD3State(
        actor=actor,
        critic=critic,
        target_actor_params=jax.tree.map(jnp.copy, actor.params),
        target_critic_params=jax.tree.map(jnp.copy, critic.params),
        key=key,
        step=jnp.zeros((), jnp.int32),
        config=config,
        obs_dim=obs_dim,
        action_dim=action_dim,
    )


@jax.jit
def train_step(state: TD3State, batch: Batch) -> tuple[TD3State, dict[str, jax.Array]]:
    """Critic update every call; actor and target updates every ``policy_delay`` calls."""
    cfg = state.config
    key, noise_key = jax.random.split(state.key)
    next_actions = state.actor.apply_fn({"params": state.target_actor_params}, batch.next_observations)
    noise = jnp.clip(
        cfg.policy_noise * jax.random.normal(noise_key, next_actions.shape), -cfg.noise_clip, cfg.noise_clip
    )
    next_actions = jnp.clip(next_actions + noise, -1.0, 1.0)
    critic_grads, critic_aux = jax.grad(losses.critic_loss, has_aux=True)(
        state.critic.params, state.target_critic_params, state.critic.apply_fn, batch, next_actions, cfg.gamma
    )
    critic = state.critic.apply_gradients(grads=critic_grads)

    def actor_loss(params):
        actions = state.actor.apply_fn({"params": params}, batch.observations)
        return -critic.apply_fn({"params": critic.params}, batch.observations, actions)[0].mean()

    def delayed_update(_):
        loss, grads = jax.value_and_grad(actor_loss)(state.actor.params)
        actor = state.actor.apply_gradients(grads=grads)
        return (
            actor,
            optax.incremental_update(actor.params, state.target_actor_params, cfg.tau),
            optax.incremental_update(critic.params, state.target_critic_params, cfg.tau),
            loss,
        )

    def skip(_):
        return state.actor, state.target_actor_params, state.target_critic_params, jnp.zeros((), jnp.float32)

    actor, target_actor, target_critic, a_loss = jax.lax.cond(
        state.step % cfg.policy_delay == 0, delayed_update, skip, None
    )
    new_state = state.replace(
        actor=actor,
        critic=critic,
        target_actor_params=target_actor,
        target_critic_params=target_critic,
        key=key,
        step=state.step + 1,
    )
    return new_state, {**critic_aux, "actor_loss": a_loss}


def policy_sample(state: TD3State, observations: jax.Array, key: jax.Array, explore: bool = False) -> jax.Array:
    """The deterministic action, plus ``exploration_noise`` Gaussian noise (clipped) when ``explore``."""
    actions = state.actor.apply_fn({"params": state.actor.params}, observations)
    if explore:
        noise = state.config.exploration_noise * jax.random.normal(key, actions.shape)
        actions = jnp.clip(actions + noise, -1.0, 1.0)
    return actions

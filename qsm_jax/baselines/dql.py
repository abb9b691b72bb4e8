"""Diffusion-QL (Wang, Hunt, Zhou, ICLR 2023, "Diffusion Policies as an Expressive Policy Class for
Offline RL"), used online: the comparison QSM's computational claim is about.

The same VP diffusion policy, score network, schedule, sampler and critic ensemble as QSM; only the
actor loss differs. QSM regresses the denoiser onto grad_a Q at noised replay actions and never
differentiates through the sampler; Diffusion-QL back-propagates Q through the whole T-step chain:

  L_pi = L_denoise(replay actions) - eta * mean_B Q(s, a_0) / stop_grad(mean_B |Q(s, a_0)|)

with a_0 the output of the reverse chain (gradients through every step) and L_denoise the ordinary
DDPM noise regression. Critic: clipped double Q with next actions from the chain, as QSM
(``learner.critic_update``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct
from flax.training.train_state import TrainState

from qsm_jax import diffusion, learner
from qsm_jax.config import DiffusionPolicyConfig, QSMConfig, check_agent_config
from qsm_jax.types import Batch


@dataclasses.dataclass(frozen=True)
class DQLConfig(DiffusionPolicyConfig):
    """Online Diffusion-QL settings: QSM's diffusion policy, networks, schedule, sampler, critics
    and optimisers (``DiffusionPolicyConfig``, the same defaults), so the two differ only in the
    actor loss; acting is QSM's (``learner.policy_sample``), best-of-N included.

    Attributes:
      eta: weight of the Q term. The paper tunes it per offline dataset (0.1-3.5 on D4RL, where a
        small eta keeps the policy near the data); online the data is the policy's own, so there
        is no behaviour policy to stay near and we use eta = 1.0, which with the |Q| normalisation
        weighs the Q term like the unit-scale denoising loss.
    """

    eta: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_agent_config(self, positive=("eta",))

    def policy_config(self) -> QSMConfig:
        """The QSM config with the same networks, schedule and sampler (builds the same policy)."""
        return QSMConfig(**self.policy_settings())


class DQLState(struct.PyTreeNode):
    """A Diffusion-QL agent: the fields of ``qsm_jax.QSMState`` (same networks and optimisers)."""

    actor: TrainState
    critic: TrainState
    target_critic_params: Any
    key: jax.Array
    step: jax.Array
    config: DQLConfig = struct.field(pytree_node=False)
    obs_dim: int = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)


def create_train_state(key: jax.Array, obs_dim: int, action_dim: int, config: DQLConfig) -> DQLState:
    """Initialises DQL exactly as QSM is initialised for the same key and shared settings."""
    if not isinstance(config, DQLConfig):
        raise ValueError(f"config must be a qsm_jax.baselines.dql.DQLConfig, got {type(config).__name__}")
    qsm = learner.create_train_state(key, obs_dim, action_dim, config.policy_config())
    return DQLState(
        actor=qsm.actor,
        critic=qsm.critic,
        target_critic_params=qsm.target_critic_params,
        key=qsm.key,
        step=qsm.step,
        config=config,
        obs_dim=obs_dim,
        action_dim=action_dim,
    )


def dql_actor_loss(
    actor_params: Any,
    actor_apply_fn: Callable[..., jax.Array],
    q_fn: Callable[[jax.Array, jax.Array], jax.Array],
    observations: jax.Array,
    actions: jax.Array,
    levels: jax.Array,
    noise: jax.Array,
    schedule: diffusion.Schedule,
    chain_key: jax.Array,
    eta: float,
    temperature: float = 1.0,
    clip: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Diffusion-QL actor loss, differentiated through the whole reverse chain.

      L_denoise = mean_B mean_A (eps_theta(s, a_k, k) - eps)^2,  a_k = sqrt(abar_k) a + sqrt(1 - abar_k) eps
      a_0       = reverse chain from x_T ~ N(0, I) (``diffusion.ddpm_sample``, no stop-gradient)
      L_q       = -eta * mean_B Q(s, a_0) / stop_grad(mean_B |Q(s, a_0)|)
      L_pi      = L_denoise + L_q

    Args:
      actor_params: denoiser parameters (differentiated).
      actor_apply_fn: ``apply({'params': p}, obs (B, S), a (B, A), k (B or 1, 1) float) -> (B, A)``.
      q_fn: ``q_fn(obs (B, S), act (B, A)) -> (B,)`` (mean of the online critics).
      observations: s, (B, S).
      actions: replay actions a, (B, A).
      levels: diffusion levels k, int (B,).
      noise: eps ~ N(0, I), (B, A).
      schedule: the noise schedule (T levels).
      chain_key: PRNG key of the reverse chain.
      eta: weight of the Q term.
      temperature, clip: the sampler's settings.

    Returns:
      (loss, aux) with aux = {"actor_loss", "denoise_loss", "q_loss", "q_pi_mean"}.
    """
    chex.assert_rank([observations, actions, levels], [2, 2, 1])
    chex.assert_equal_shape([actions, noise])

    def eps_fn(o, x, k):
        return actor_apply_fn({"params": actor_params}, o, x, k)

    noised = diffusion.q_sample(actions, levels, noise, schedule.alpha_bars)
    pred = eps_fn(observations, noised, levels[:, None].astype(jnp.float32))
    denoise_loss = ((pred - noise) ** 2).mean()
    a0 = diffusion.ddpm_sample(
        eps_fn, observations, chain_key, schedule, actions.shape[-1], temperature=temperature, clip=clip
    )
    q = q_fn(observations, a0)
    q_loss = -eta * q.mean() / jax.lax.stop_gradient(jnp.abs(q).mean() + 1e-8)
    loss = denoise_loss + q_loss
    return loss, {"actor_loss": loss, "denoise_loss": denoise_loss, "q_loss": q_loss, "q_pi_mean": q.mean()}


@jax.jit
def train_step(state: DQLState, batch: Batch) -> tuple[DQLState, dict[str, jax.Array]]:
    """One DQL update: QSM's critic step and Polyak update, then the Diffusion-QL actor step."""
    cfg = state.config
    chex.assert_shape(batch.observations, (None, state.obs_dim))
    chex.assert_shape(batch.actions, (batch.observations.shape[0], state.action_dim))
    key, chain_key, target_noise_key, level_key, noise_key, actor_chain_key = jax.random.split(state.key, 6)
    critic, target_critic_params, critic_aux = learner.critic_update(state, batch, chain_key, target_noise_key)

    def q_fn(observations, actions):
        return critic.apply_fn({"params": critic.params}, observations, actions).mean(axis=0)

    batch_size = batch.actions.shape[0]
    actor_grads, actor_aux = jax.grad(dql_actor_loss, has_aux=True)(
        state.actor.params,
        state.actor.apply_fn,
        q_fn,
        batch.observations,
        batch.actions,
        jax.random.randint(level_key, (batch_size,), 0, cfg.diffusion_steps),
        jax.random.normal(noise_key, batch.actions.shape),
        diffusion.make_schedule(cfg.beta_schedule, cfg.diffusion_steps),
        actor_chain_key,
        cfg.eta,
        cfg.temperature,
        cfg.clip_sampler,
    )
    new_state = state.replace(
        actor=state.actor.apply_gradients(grads=actor_grads),
        critic=critic,
        target_critic_params=target_critic_params,
        key=key,
        step=state.step + 1,
    )
    return new_state, {**critic_aux, **actor_aux}


def policy_sample(state: DQLState, observations: jax.Array, key: jax.Array, explore: bool = False) -> jax.Array:
    """Acting is QSM's (``learner.policy_sample``): the reverse chain (best-of-N if set), plus
    exploration noise if ``explore``."""
    return learner.policy_sample(state, observations, key, explore)

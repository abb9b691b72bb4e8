"""The QSM train state and its jitted functions: `create_train_state`, `train_step`, `sample_actions`."""

from __future__ import annotations

import functools
import math
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

from qsm_jax import common, diffusion, losses
from qsm_jax.config import QSMConfig
from qsm_jax.networks import CriticEnsemble, ScoreNetwork, Temperature
from qsm_jax.types import Batch


class QSMState(struct.PyTreeNode):
    """Everything a QSM agent learns and carries, as one immutable pytree.

    Attributes:
      actor: denoiser parameters and Adam state.
      critic: critic-ensemble parameters and Adam state.
      target_critic_params: Polyak-averaged copy of ``critic.params``.
      key: raw uint32 PRNG key data (2,), advanced by every ``train_step``; stored raw, not as a
        typed key, so that checkpoints and ``chex`` tree checks handle it like any array.
      step: number of ``train_step`` calls so far, int32 scalar.
      grad_sq: running mean of mean(g^2), g = grad_a Q at the noised actions, float32 scalar
        (bias-corrected by ``losses.update_grad_rms``); updated every step, used to normalise g
        when ``config.normalize_grad``.
      config: static settings (not a pytree leaf; changing it recompiles).
      obs_dim, action_dim: static sizes S and A.
      temperature: the max-ent temperature (a ``networks.Temperature``: its log) and its Adam
        state; only with ``config.auto_temperature``, else None.
      noise_scale: the learned factor on ``exploration_noise`` (same module) and its Adam state;
        only with ``config.exploration == "adaptive"``, else None.
      kl_lam: the tilt's lam learned by the KL trust region (same module) and its Adam state; only
        with ``config.kl_bound > 0``, else None.
      kl_tau: the entropy weight tau of the KL step (same module) and its Adam state; only with
        ``config.tilt_entropy > 0``, else None.
    """

    actor: TrainState
    critic: TrainState
    target_critic_params: Any
    key: jax.Array
    step: jax.Array
    grad_sq: jax.Array
    config: QSMConfig = struct.field(pytree_node=False)
    obs_dim: int = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)
    temperature: TrainState | None = None
    noise_scale: TrainState | None = None
    kl_lam: TrainState | None = None
    kl_tau: TrainState | None = None


raw_key = common.raw_key  # kept here for code that imported it from the learner
adam_train_state = common.adam_train_state


def create_train_state(key: jax.Array, obs_dim: int, action_dim: int, config: QSMConfig) -> QSMState:
    """Initialises networks, optimizers and target critics.

    Args:
      key: PRNG key (typed or raw).
      obs_dim: size S of a (flat) observation.
      action_dim: size A of an action.
      config: agent settings.

    Returns:
      A fresh ``QSMState`` with ``step = 0``.
    """
    for name, value in (("obs_dim", obs_dim), ("action_dim", action_dim)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(config, QSMConfig):
        raise ValueError(f"config must be a qsm_jax.QSMConfig, got {type(config).__name__}")
    actor_key, critic_key, key = jax.random.split(common.raw_key(key), 3)
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    act = jnp.zeros((1, action_dim), jnp.float32)

    actor_net = common.module(
        ScoreNetwork,
        action_dim=action_dim,
        hidden_dims=config.actor_hidden_dims,
        time_features=config.time_features,
        time_hidden_dims=config.time_hidden_dims,
        prior_sigmas=_prior_sigmas(config) if config.squash == "tanh" else None,
    )
    actor_params = actor_net.init(actor_key, obs, act, jnp.zeros((1, 1), jnp.float32))["params"]
    actor = common.adam_train_state(actor_net, actor_params, config.actor_lr, config.actor_lr_decay_steps)

    critic_net = common.module(CriticEnsemble, hidden_dims=config.critic_hidden_dims, num_critics=config.num_critics)
    critic = common.adam_train_state(critic_net, critic_net.init(critic_key, obs, act)["params"], config.critic_lr)

    def positive_scalar(initial, learning_rate):  # a learned scalar, stored as its log (no randomness)
        net = common.module(Temperature, initial=initial)
        return common.adam_train_state(net, net.init(critic_key)["params"], learning_rate)

    return QSMState(
        actor=actor,
        critic=critic,
        target_critic_params=jax.tree.map(jnp.copy, critic.params),  # own buffers: states can be donated
        key=key,
        step=jnp.zeros((), jnp.int32),
        grad_sq=jnp.zeros((), jnp.float32),
        config=config,
        obs_dim=obs_dim,
        action_dim=action_dim,
        temperature=positive_scalar(config.entropy_temperature, config.temperature_lr)
        if config.auto_temperature
        else None,
        noise_scale=positive_scalar(1.0, config.noise_lr) if config.exploration == "adaptive" else None,
        kl_lam=positive_scalar(config.lam, config.temperature_lr) if config.learns_lam else None,
        kl_tau=positive_scalar(config.tilt_entropy, config.temperature_lr) if config.learns_tau else None,
    )


def _prior_sigmas(config: QSMConfig) -> tuple[float, ...]:
    """sqrt(1 - abar_k), k = 0..T-1, of the config's schedule (the tanh chain's N(0, I) prior term)."""
    alpha_bars = diffusion.make_schedule(config.beta_schedule, config.diffusion_steps).alpha_bars
    return tuple(float(x) for x in (1.0 - np.asarray(alpha_bars)) ** 0.5)


def entropy_temperature(state: QSMState) -> jax.Array | float:
    """The max-ent temperature: learned with ``auto_temperature``, else ``config.entropy_temperature``."""
    if state.temperature is None:
        return state.config.entropy_temperature
    return state.temperature.apply_fn({"params": state.temperature.params})


def tilt_lam(state: QSMState) -> jax.Array | float:
    """The tilt's lam: the max-ent temperature, the KL-learned lam (``kl_bound``), else ``config.lam``."""
    if state.config.max_entropy:
        return entropy_temperature(state)
    if state.kl_lam is not None:
        return state.kl_lam.apply_fn({"params": state.kl_lam.params})
    return state.config.lam


def kl_tau(state: QSMState) -> jax.Array | float:
    """The KL step's entropy weight tau (``tilt_entropy``), 0.0 without it."""
    if state.kl_tau is None:
        return 0.0
    return state.kl_tau.apply_fn({"params": state.kl_tau.params})


def exploration_std(state: Any) -> jax.Array | float:
    """Std of the Gaussian on training actions: ``exploration_noise``, times the learned scale
    with ``exploration="adaptive"`` (QSM only: other diffusion-policy states have no ``noise_scale``)."""
    if getattr(state, "noise_scale", None) is None:
        return state.config.exploration_noise
    return state.config.exploration_noise * state.noise_scale.apply_fn({"params": state.noise_scale.params})


def critic_update(
    state: Any,
    batch: Batch,
    chain_key: jax.Array,
    target_noise_key: jax.Array,
    log_prob_fn: Any = None,
    temperature: jax.Array | float | None = None,
    next_actions: jax.Array | None = None,
):
    """The critic half of an update of a diffusion-policy agent (QSM, or the DQL baseline).

    Next actions come from the full reverse chain plus clipped target noise; one Adam step on the
    clipped double-Q TD loss; Polyak update of the targets. With ``log_prob_fn`` (``(B, A) -> (B,)``)
    log pi of the chain's next actions (before the target noise) is estimated and reported as
    "log_prob"; with ``temperature`` too, -temperature * log pi joins the target (soft Bellman).
    ``next_actions`` (B, A): the chain's samples at the next states if the caller drew them already
    (``next_chain``), else they are drawn here with ``chain_key``.

    Returns:
      (critic TrainState, target critic params, aux metrics of ``losses.critic_loss``).
    """
    cfg = state.config
    if next_actions is None:
        next_actions = next_chain(state, batch, chain_key)
    bonus, bonus_aux = 0.0, {}
    if log_prob_fn is not None:
        log_prob = jax.lax.stop_gradient(log_prob_fn(next_actions))
        bonus_aux = {"log_prob": log_prob.mean()}
        if temperature is not None:
            bonus = -temperature * log_prob
    next_actions = jnp.clip(
        next_actions + cfg.target_noise * jax.random.normal(target_noise_key, next_actions.shape),
        -1.0,
        1.0,
    )
    critic_grads, critic_aux = jax.grad(losses.critic_loss, has_aux=True)(
        state.critic.params,
        state.target_critic_params,
        state.critic.apply_fn,
        batch,
        next_actions,
        cfg.gamma,
        next_bonus=bonus,
    )
    critic = state.critic.apply_gradients(grads=critic_grads)
    target_critic_params = optax.incremental_update(critic.params, state.target_critic_params, cfg.tau)
    return critic, target_critic_params, {**critic_aux, **bonus_aux}


def next_chain(state: Any, batch: Batch, chain_key: jax.Array) -> jax.Array:
    """The reverse chain's actions at the batch's next states, (B, A): the critic target's a' before its
    target noise (and, with ``anchor="next"``, the actions the actor's step noises)."""
    return diffusion.sample_chain(state.actor, state.config, batch.next_observations, chain_key, state.action_dim)


@jax.jit
def train_step(state: QSMState, batch: Batch) -> tuple[QSMState, dict[str, jax.Array]]:
    """One QSM update: critic TD step, Polyak target update, then the Q-score matching actor step.

    The actor step uses the critics just updated, as the reference code does; its target is
    ``config.score_target`` (the reference's -alpha grad_a Q by default). With max-ent QSM or the
    adaptive noise on, log pi of the next actions is estimated once and serves the soft target,
    the temperature step and the noise-scale step (``_entropy_steps``); with ``kl_bound`` the tilt's
    lam then takes one step of its KL dual (``_kl_step``).

    Args:
      state: current agent.
      batch: B transitions (float32; actions in [-1, 1]).

    Returns:
      (new state, metrics) with scalar metrics ``critic_loss``, ``actor_loss``, ``q_mean``,
      ``target_q_mean`` and ``grad_q_abs_mean`` (mean |grad_a Q|); with the entropy options also
      ``log_prob`` (mean estimate of log pi(a' | s')), ``temperature``, ``exploration_std``; with
      ``kl_bound`` also ``tilt_lam`` (the lam this update used) and ``tilt_kl`` (its tilt's KL); with
      ``tilt_entropy`` also ``tilt_tau`` (the tau this update used) and ``policy_entropy`` (its estimate).
    """
    cfg = state.config
    chex.assert_shape(batch.observations, (None, state.obs_dim))
    chex.assert_shape(batch.actions, (batch.observations.shape[0], state.action_dim))
    key, chain_key, target_noise_key, level_key, noise_key = jax.random.split(state.key, 5)
    temperature = entropy_temperature(state)
    log_prob_fn = _log_prob_fn(state, batch.next_observations, chain_key) if cfg.estimates_entropy else None
    next_actions = next_chain(state, batch, chain_key) if cfg.anchor == "next" else None
    critic, target_critic_params, critic_aux = critic_update(
        state, batch, chain_key, target_noise_key, log_prob_fn, temperature if cfg.max_entropy else None, next_actions
    )
    actor, grad_sq, actor_aux = actor_update(
        state, critic, batch, level_key, noise_key, lam=tilt_lam(state), next_actions=next_actions, tau=kl_tau(state)
    )
    new_state = state.replace(
        actor=actor,
        critic=critic,
        target_critic_params=target_critic_params,
        key=key,
        step=state.step + 1,
        grad_sq=grad_sq,
    )
    entropy_aux, kl_aux = {}, {}
    if cfg.estimates_entropy:
        new_state, entropy_aux = _entropy_steps(new_state, -critic_aux["log_prob"])
    if cfg.learns_lam:  # a key of its own: the default key stream stays as it was
        new_state, kl_aux = _kl_step(new_state, batch.observations, jax.random.fold_in(noise_key, 3))
    return new_state, {**critic_aux, **actor_aux, **entropy_aux, **kl_aux}


def entropy_step(cfg: QSMConfig, lam: Any, tau: Any) -> tuple[Any, Any, Any]:
    """The KL step pi^keep exp((Q + w J) / tilt) that ``actor_update`` fits, as (tilt, w, keep).

    Without ``tilt_entropy``: (lam, 0, 1), the KL step. With it: (lam + tau, tau, lam / (lam + tau));
    ``tilt_within_bound``: (lam, tau, max(0, 1 - tau / lam)); with ``tilt_max_temperature`` too the
    tilt is max(lam, tau); with ``tilt_bounded_entropy`` instead w is min(tau, lam) (J's weight w / lam
    at most 1, Q's 1 / lam).
    """
    if not cfg.learns_tau:
        return lam, 0.0, 1.0
    if not cfg.tilt_within_bound:
        return lam + tau, tau, lam / (lam + tau)
    keep = jnp.maximum(0.0, 1.0 - tau / lam)
    if cfg.tilt_max_temperature:
        return jnp.maximum(lam, tau), tau, keep
    return lam, jnp.minimum(tau, lam) if cfg.tilt_bounded_entropy else tau, keep


def actor_update(
    state: QSMState,
    critic: Any,
    batch: Batch,
    level_key: jax.Array,
    noise_key: jax.Array,
    lam: Any,
    next_actions: jax.Array | None = None,
    tau: Any = 0.0,
) -> tuple[Any, jax.Array, dict[str, jax.Array]]:
    """The actor half of a QSM update: one Adam step on ``losses.qsm_actor_loss``.

    Each of the B actions (``config.anchor``: the replay actions at the batch's states; "policy": fresh
    chain samples there, drawn with ``fold_in(noise_key, 2)``; "next": ``next_actions``, the critic
    target's chain samples at the batch's next states, where the step is then taken) gets one uniform
    diffusion level and one Gaussian noise draw; grad_a Q comes from ``critic`` (the critics just
    updated, averaged over the ensemble), the target is ``config.score_target`` with tilt ``lam``.
    With ``squash="tanh"`` the step is taken in the chain's latent: the anchor is the chain's latent
    u, the gradient that of Q(s, tanh(u)) (plus tau J(u), ``losses.tanh_log_jacobian``, with
    ``tilt_entropy``: then the tilt is lam + tau and the anchor's eps term is kept at lam / (lam + tau);
    the other forms of that step in ``entropy_step``).

    Returns:
      (actor TrainState, running mean of grad_a Q squared (for ``normalize_grad``), aux metrics).
    """
    cfg = state.config

    tanh = cfg.squash == "tanh"
    lam, j_weight, keep = entropy_step(cfg, lam, tau)

    def q_fn(observations, actions):  # with squash="tanh", "actions" are latents u and a = tanh(u)
        q = critic.apply_fn({"params": critic.params}, observations, jnp.tanh(actions) if tanh else actions)
        return q.mean(axis=0) + j_weight * losses.tanh_log_jacobian(actions) if cfg.learns_tau else q.mean(axis=0)

    batch_size = batch.actions.shape[0]
    observations, actions = batch.observations, batch.actions
    if cfg.anchor == "policy":  # a key of its own: the default key stream stays as it was
        anchor_key = jax.random.fold_in(noise_key, 2)
        actions = diffusion.sample_chain(
            state.actor, cfg, batch.observations, anchor_key, state.action_dim, latent=tanh
        )
        actions = jax.lax.stop_gradient(actions)
    elif cfg.anchor == "next":
        observations, actions = batch.next_observations, jax.lax.stop_gradient(next_actions)
    actor_grads, actor_aux = jax.grad(losses.qsm_actor_loss, has_aux=True)(
        state.actor.params,
        state.actor.apply_fn,
        q_fn,
        observations,
        actions,
        jax.random.randint(level_key, (batch_size,), 0, cfg.diffusion_steps),
        jax.random.normal(noise_key, batch.actions.shape),
        diffusion.make_schedule(cfg.beta_schedule, cfg.diffusion_steps).alpha_bars,
        cfg.alpha,
        target=cfg.score_target,
        lam=lam,
        grad_rms=losses.GradRMS(state.grad_sq, state.step + 1, cfg.grad_rms_decay),
        normalize_grad=cfg.normalize_grad,
        keep=keep,
    )
    grad_sq = actor_aux.pop("grad_sq")
    return state.actor.apply_gradients(grads=actor_grads), grad_sq, actor_aux


def _log_prob_fn(state: QSMState, next_observations: jax.Array, chain_key: jax.Array):
    """log pi(. | s') of the current actor, (B, A) -> (B,), by ``config.entropy_estimate``:
    ``losses.log_prob_estimate`` of each next action, or -``losses.sample_entropy`` of
    ``entropy_draws`` fresh chain samples per next state (E[-log pi(a' | s')] = H(s'))."""
    cfg = state.config
    entropy_key = jax.random.fold_in(chain_key, 1)  # the default key stream stays as it was
    max_entropy = state.action_dim * math.log(2.0)  # the uniform density on [-1, 1]^A
    if cfg.entropy_estimate == "samples":
        n, batch = cfg.entropy_draws, next_observations.shape[0]
        tiled = jnp.tile(next_observations, (n, 1))  # (N * B, S), sample i of obs b at row i * B + b
        samples = diffusion.sample_chain(state.actor, cfg, tiled, entropy_key, state.action_dim)
        samples = samples.reshape(n, batch, state.action_dim)
        log_prob = -losses.sample_entropy(samples, max_entropy=max_entropy)
        return lambda next_actions: log_prob
    eps_fn = functools.partial(state.actor.apply_fn, {"params": state.actor.params})
    alpha_bars = diffusion.make_schedule(cfg.beta_schedule, cfg.diffusion_steps).alpha_bars
    return lambda next_actions: losses.log_prob_estimate(
        eps_fn, next_observations, next_actions, alpha_bars, entropy_key, cfg.entropy_draws, min_log_prob=-max_entropy
    )


def _kl_step(state: QSMState, observations: jax.Array, key: jax.Array) -> tuple[QSMState, dict[str, jax.Array]]:
    """One Adam step of ``losses.kl_dual_loss`` on the tilt's log lam (the KL trust region, its bound
    ``kl_bound`` times the action dimension A); with ``tilt_entropy`` also one of ``losses.dual_loss``
    on log tau toward ``target_entropy_scale * A`` (``losses.latent_entropy`` of the same samples).

    ``kl_samples`` chain samples of the (just updated) actor at each of the first ``kl_states``
    states of the batch, valued by the (just updated) online critics, mean over the ensemble.

    Returns:
      (state with the new ``kl_lam``, {"tilt_lam": lam used this update, "tilt_kl": the mean KL
      of its tilt over the samples}).
    """
    cfg = state.config
    obs = observations[: cfg.kl_states]  # (M, S)
    m, n = obs.shape[0], cfg.kl_samples
    tiled = jnp.tile(obs, (n, 1))  # (N * M, S), sample j of state i at row j * M + i
    tanh = cfg.squash == "tanh"
    samples = diffusion.sample_chain(state.actor, cfg, tiled, key, state.action_dim, latent=tanh)
    actions = jnp.tanh(samples) if tanh else samples
    q = state.critic.apply_fn({"params": state.critic.params}, tiled, actions).mean(axis=0)
    q = q.reshape(n, m).T  # (M, N); the dual differentiates lam only
    scalar = state.kl_lam
    lam = scalar.apply_fn({"params": scalar.params})
    bound = cfg.kl_bound * state.action_dim  # eps per action dimension

    def dual(params):
        return losses.kl_dual_loss(scalar.apply_fn({"params": params}), q, bound)

    grads = jax.grad(dual)(scalar.params)
    aux = {"tilt_lam": lam, "tilt_kl": losses.tilt_kl(q, lam)}
    state = state.replace(kl_lam=scalar.apply_gradients(grads=grads))
    if cfg.learns_tau:  # SAC's rule on tau, the entropy read from the same latent samples
        entropy = losses.latent_entropy(samples.reshape(n, m, state.action_dim)).mean()
        tau = state.kl_tau
        target = cfg.target_entropy_scale * state.action_dim
        tau_grads = jax.grad(lambda p: losses.dual_loss(tau.apply_fn({"params": p}), entropy, target))(tau.params)
        aux |= {"tilt_tau": tau.apply_fn({"params": tau.params}), "policy_entropy": entropy}
        state = state.replace(kl_tau=tau.apply_gradients(grads=tau_grads))
    return state, aux


def _entropy_steps(state: QSMState, chain_entropy: jax.Array) -> tuple[QSMState, dict[str, jax.Array]]:
    """The automatic temperature and the adaptive noise scale, each one Adam step of
    ``losses.dual_loss`` toward ``target_entropy_scale * A``: the temperature holds the chain's
    entropy there, the noise scale the entropy of chain + exploration noise."""
    cfg = state.config
    target = cfg.target_entropy_scale * state.action_dim

    def dual_step(scalar: TrainState, entropy: jax.Array) -> TrainState:
        grads = jax.grad(lambda p: losses.dual_loss(scalar.apply_fn({"params": p}), entropy, target))(scalar.params)
        return scalar.apply_gradients(grads=grads)

    explore_entropy = losses.entropy_with_noise(chain_entropy, exploration_std(state), state.action_dim)
    aux = {
        "temperature": jnp.asarray(entropy_temperature(state), jnp.float32),
        "exploration_std": jnp.asarray(exploration_std(state), jnp.float32),
        "explore_entropy": explore_entropy,
    }
    if state.temperature is not None:
        state = state.replace(temperature=dual_step(state.temperature, chain_entropy))
    if state.noise_scale is not None:
        state = state.replace(noise_scale=dual_step(state.noise_scale, explore_entropy))
    return state, aux


def policy_sample(state: Any, observations: jax.Array, key: jax.Array, explore: bool = False) -> jax.Array:
    """Traceable policy sampling for use inside other jitted code (see ``sample_actions``).

    With ``config.num_action_samples = N > 1``, N chain samples are drawn per observation and the
    one with the highest mean online Q is kept (best-of-N); N = 1 is the plain chain. Without
    ``explore`` (evaluation), ``config.eval_sampling`` picks the chain ("chain"), the chain with
    no injected noise ("noise_free") or best of ``eval_candidates`` ("best_of_n").

    Args:
      state: a diffusion-policy agent: a ``QSMState``, or any state with ``actor``, ``critic``,
        ``action_dim`` and a ``DiffusionPolicyConfig`` (Diffusion-QL's; without ``eval_sampling``
        it evaluates with the plain chain).
      observations: (B, S).
      key: PRNG key.
      explore: add the exploration noise (``exploration_std``: ``config.exploration_noise``, or
        its adaptive scaling) after the best-of-N choice and re-clip (training actions).

    Returns:
      Actions in [-1, 1], (B, A).
    """
    cfg = state.config
    chain_key, noise_key = jax.random.split(key)
    n, temperature = cfg.num_action_samples, None
    eval_sampling = getattr(cfg, "eval_sampling", "chain")
    if not explore and eval_sampling == "noise_free":
        temperature = 0.0
    elif not explore and eval_sampling == "best_of_n":
        n = cfg.eval_candidates
    if n == 1:
        actions = diffusion.sample_chain(state.actor, cfg, observations, chain_key, state.action_dim, temperature)
    else:
        batch = observations.shape[0]
        tiled = jnp.tile(observations, (n, 1))  # (N * B, S), candidate i of obs b at row i * B + b
        candidates = diffusion.sample_chain(state.actor, cfg, tiled, chain_key, state.action_dim, temperature)
        q = state.critic.apply_fn({"params": state.critic.params}, tiled, candidates).mean(axis=0)
        best = jnp.argmax(q.reshape(n, batch), axis=0)  # (B,)
        actions = candidates.reshape(n, batch, -1)[best, jnp.arange(batch)]
    if explore:
        noise = exploration_std(state) * jax.random.normal(noise_key, actions.shape)
        actions = jnp.clip(actions + noise, -1.0, 1.0)
    return actions


_sample_jit = jax.jit(policy_sample, static_argnames="explore")


def sample_actions(state: QSMState, observations: jax.Array, key: jax.Array, *, explore: bool = False) -> jax.Array:
    """Samples actions from the diffusion policy, one per observation.

    Args:
      state: agent.
      observations: (B, S), or a single observation (S,).
      key: PRNG key.
      explore: add the training exploration noise (``exploration_std``), as when collecting
        data; without it (evaluation) actions are sampled as ``config.eval_sampling`` says.

    Returns:
      Actions in [-1, 1], (B, A) (or (A,) for a single observation).

    Raises:
      ValueError: observations not of shape (B, S) or (S,) (one line).
    """
    observations = jnp.asarray(observations, jnp.float32)
    if observations.ndim not in (1, 2) or observations.shape[-1] != state.obs_dim:
        raise ValueError(
            f"observations must have shape (B, {state.obs_dim}) or ({state.obs_dim},), got {observations.shape}"
        )
    if observations.ndim == 1:
        return _sample_jit(state, observations[None], key, explore)[0]
    return _sample_jit(state, observations, key, explore)

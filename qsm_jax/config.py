"""Settings of the QSM agent: a frozen, hashable dataclass that travels as static data under jit."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from qsm_jax.common import check, finite

BETA_SCHEDULES = ("vp", "linear", "cosine")
SCORE_TARGETS = ("qsm", "tilted", "mirror")
ANCHORS = ("replay", "policy", "next")
EXPLORATIONS = ("fixed", "adaptive")
ENTROPY_ESTIMATES = ("denoiser", "samples")
EVAL_SAMPLINGS = ("chain", "noise_free", "best_of_n")
SQUASHES = ("clip", "tanh")


def _positive_int_tuple(name: str, value: Sequence[int]) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of positive integers, got {value!r}") from None
    if not dims or any(d <= 0 for d in dims) or any(d != v for d, v in zip(dims, value, strict=True)):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {value!r}")
    return dims


@dataclasses.dataclass(frozen=True)
class DiffusionPolicyConfig:
    """Settings of a diffusion-model policy and its critics, shared by QSM and the Diffusion-QL
    baseline (which differ only in the actor loss); defaults are the QSM reference code's.

    Every field that fixes a shape or a loop length (hidden sizes, ``diffusion_steps``,
    ``num_critics``) is static under ``jit``: the config is stored in the train state as
    non-pytree data, so changing it recompiles ``train_step``.

    Attributes:
      actor_hidden_dims: hidden sizes of the denoiser body (Mish).
      critic_hidden_dims: hidden sizes of each Q network (ReLU).
      time_features: number of learnable Fourier features of the diffusion level (cos + sin).
      time_hidden_dims: hidden sizes of the MLP on the Fourier features.
      num_critics: size of the critic ensemble (2 = clipped double Q).
      actor_lr: Adam learning rate of the denoiser.
      actor_lr_decay_steps: cosine decay horizon of the actor learning rate, in updates
        (0 keeps it constant).
      critic_lr: Adam learning rate of the critics (constant).
      gamma: discount.
      tau: Polyak rate of the target critics, applied every update.
      diffusion_steps: number of diffusion levels T.
      beta_schedule: "vp" (default), "linear" (1e-4..2e-2) or "cosine".
      temperature: scale of the noise injected at each reverse step.
      clip_sampler: clip the chain to [-1, 1] after every reverse step (the final output is
        clipped either way, as in the reference).
      exploration_noise: std of the Gaussian added to training actions.
      target_noise: std of the Gaussian added to the critic's target actions.
      num_action_samples: acting and evaluation draw N chain samples per observation and keep the
        one with the highest mean online Q (exploration noise is added after the choice).
    """

    actor_hidden_dims: tuple[int, ...] = (512, 512)
    critic_hidden_dims: tuple[int, ...] = (512, 512)
    time_features: int = 64
    time_hidden_dims: tuple[int, ...] = (128, 128)
    num_critics: int = 2
    actor_lr: float = 3e-4
    actor_lr_decay_steps: int = 2_000_000
    critic_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    diffusion_steps: int = 5
    beta_schedule: str = "vp"
    temperature: float = 1.0
    clip_sampler: bool = True
    exploration_noise: float = 0.1
    target_noise: float = 0.1
    num_action_samples: int = 1

    def __post_init__(self) -> None:
        check_agent_config(self, dims=("time_hidden_dims",))
        check_diffusion_config(self)

    def to_dict(self) -> dict:
        return config_to_dict(self)

    def policy_settings(self) -> dict:
        """The ``DiffusionPolicyConfig`` fields of this config (what builds the same policy)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(DiffusionPolicyConfig)}


@dataclasses.dataclass(frozen=True)
class QSMConfig(DiffusionPolicyConfig):
    """Hyper-parameters of Q-Score Matching; defaults are the reference code's (docs/algorithm.md).

    The diffusion policy and critics: see ``DiffusionPolicyConfig``. QSM's own settings follow; from
    ``entropy_temperature`` on they are max-ent QSM and adaptive exploration (docs/algorithm.md,
    "Maximum-entropy QSM"), every one off by default, which is the paper's update bit for bit.

    Attributes:
      alpha: scale of the score target ``-alpha * grad_a Q`` (``M_q`` in the reference code).
        It must match the scale of Q (docs/algorithm.md, "Known behaviour").
      score_target: what the denoiser is regressed onto (``losses.score_target``), with
        ``g = grad_a Q(s, a_k)`` and ``a_k = sqrt(abar_k) a + sqrt(1 - abar_k) eps``:
        ``"qsm"`` (the reference): ``-alpha g``;
        ``"tilted"``: ``-sqrt(1 - abar_k) g / lam``, the score of ``exp(Q / lam)`` at every level;
        ``"mirror"``: ``eps - sqrt(1 - abar_k) g / lam``, the replay distribution tilted by
        ``exp(Q / lam)`` (a KL-regularised policy-improvement step with a pull-back term).
      lam: temperature of the tilt in "tilted" and "mirror" (smaller = greedier).
      anchor: the actions the score target noises: "replay" (the paper: the batch's replay actions)
        or "policy" (fresh chain samples of the current actor at the batch's states; one more
        chain per update). With "mirror" the fixed point becomes the CURRENT policy tilted by
        ``exp(Q / lam)`` (a mirror-descent step, as MPO's on its own samples) instead of the
        replay distribution tilted, so the pull-back is toward what the policy does now, not
        toward old behaviour. "next": the policy's samples too, without a chain of its own: the
        critic target's chain samples a' at the batch's next states s' (before the target noise),
        the actor's step taken at s' (as much a sample of the replay states as s).
      normalize_grad: divide ``g`` by a running RMS of ``g`` (``QSMState.grad_sq``), so that
        ``alpha`` / ``lam`` do not depend on the reward scale.
      kl_bound: eps > 0 learns the tilt's ``lam`` by a KL trust region instead of fixing it (MPO's
        E-step dual, ``losses.kl_dual_loss``): after each update one Adam step on log lam
        (``temperature_lr``, starting at ``lam``) of lam E + lam mean_s log mean_j exp(Q(s, a_j) / lam)
        over ``kl_samples`` chain samples a_j at the first ``kl_states`` states of the batch, which
        holds the mean KL of the tilt exp(Q / lam) over the policy's own samples at E = eps * A: eps
        is per action dimension (KL adds over independent dimensions, so the step along each one
        does not shrink as A grows). For
        "tilted" and "mirror" on the raw grad_a Q (no ``normalize_grad``), not with max-ent QSM
        (whose temperature is the tilt). 0 (default): ``lam`` fixed.
      kl_samples: chain samples per state of that dual (>= 2).
      kl_states: states of the batch it uses (at most the batch size).
      squash: how the chain's output becomes an action in [-1, 1]: "clip" (the reference: the chain is
        clipped after every step and at the end) or "tanh": the chain runs unclipped in a latent u and
        the action is a = tanh(u) (SAC's squashing), so no mass piles into atoms at the walls and the
        policy's entropy in action space is its latent's plus E sum_d log(1 - a_d^2). The actor's step
        is then taken in the latent, on Q(s, tanh(u)); needs ``anchor="policy"`` (a replay action at a
        wall has no latent).
      tilt_entropy: tau0 > 0 makes the KL step entropy-regularised (with ``kl_bound`` and
        ``squash="tanh"``): the fitted step becomes pi^(lam / (lam + tau)) exp((Q + tau J) / (lam + tau)),
        J(u) = sum_d log(1 - tanh(u_d)^2) (``losses.score_target``'s ``keep``), whose repeated
        application tends to the max-ent policy exp(Q / tau) in action space instead of the greedy one;
        tau starts at tau0 and is learned by SAC's rule (``temperature_lr``) toward the entropy
        ``target_entropy_scale * A``, read from the KL dual's chain samples (``losses.latent_entropy``).
        0 (default): no entropy term.
      tilt_within_bound: with ``tilt_entropy``, the KL dual's lam stays the step's whole temperature:
        the fitted step is pi^kappa exp((Q + tau J) / lam), kappa = max(0, 1 - tau / lam), so the trust
        region sizes the step and tau shapes it (the entropy-regularised step whose temperature is
        lam; it diverged on Hopper-v4: docs/variants.md). False (default): the tilt is lam + tau, a step
        smaller than the bound by the entropy weight.
      tilt_max_temperature: with ``tilt_within_bound``, the step's temperature is max(lam, tau): once
        tau passes lam the step is the max-ent policy exp((Q + tau J) / tau) (kappa 0), so J's weight
        is at most 1 and Q's at most 1 / lam (with ``tilt_within_bound`` alone J's weight tau / lam is
        unbounded: a reverse step fitted to it can overshoot; stable, but it stalls: docs/variants.md).
        False (default): temperature lam.
      tilt_bounded_entropy: with ``tilt_within_bound``, J's weight is min(1, tau / lam) while Q's stays
        1 / lam: the trust region's whole Q step, past tau = lam the step exp(Q / lam + J), the max-ent
        policy at lam; there tau no longer acts and SAC's rule runs it to overflow (it diverged on
        Hopper-v4 and Walker2d-v4 at 20k env steps: docs/variants.md). False (default): J's weight tau / lam.
      grad_rms_decay: decay of that running mean of ``g^2`` (bias-corrected, as Adam's).
      entropy_temperature: temp > 0 turns on max-ent QSM: the critic target becomes soft,
        y = r + gamma (1 - terminal) (min_i Qbar_i(s', a') - temp log pi(a' | s')), and the tilt of
        the "tilted" / "mirror" target uses lam = temp (so ``lam`` is ignored). With
        ``auto_temperature`` it is the initial value.
      auto_temperature: learn temp by SAC's rule toward the target entropy.
      target_entropy_scale: target entropy = this * A (SAC's -A by default), for the automatic
        temperature (entropy of the chain) and the adaptive noise (entropy of chain + noise).
      temperature_lr: Adam learning rate of a learned log temperature (``entropy_temperature`` with
        ``auto_temperature``, the tilt's ``lam`` with ``kl_bound``, its tau with ``tilt_entropy``; not the chain's
        ``temperature``), SAC's 3e-4.
      noise_lr: Adam learning rate of the log noise scale, with adaptive ``exploration`` (DACER's 3e-2).
      entropy_estimate: how the entropy options read log pi(a' | s'): "denoiser" (the
        denoising errors over the levels, ``losses.log_prob_estimate``) or "samples" (the entropy
        of ``entropy_draws`` chain samples per state, an atom at each wall and a Gaussian fit
        inside, ``losses.sample_entropy``, with log pi(a' | s') = -H(s'); it sees the mass
        clipping puts at the walls, which the denoiser estimate does not).
      entropy_draws: noise draws per diffusion level of the "denoiser" estimate, or chain samples
        per state of the "samples" one (>= 2); either way B * T * draws denoiser evaluations per update.
      exploration: "fixed" (the paper: Gaussian of std ``exploration_noise`` on training actions)
        or "adaptive": that std times a learned scale that holds the entropy of chain + noise at
        the target (DACER's rule, with ``losses.entropy_with_noise`` in place of a mixture fit).
      eval_sampling: the evaluation policy: "chain" (the paper's stochastic chain, best of
        ``num_action_samples``), "noise_free" (the chain with no injected noise, same best-of),
        or "best_of_n" (the chain, best of ``eval_candidates`` by mean online Q).
      eval_candidates: N of "best_of_n".
    """

    alpha: float = 50.0
    score_target: str = "qsm"
    lam: float = 1.0
    anchor: str = "replay"
    normalize_grad: bool = False
    grad_rms_decay: float = 0.99
    kl_bound: float = 0.0
    kl_samples: int = 8
    kl_states: int = 32
    squash: str = "clip"
    tilt_entropy: float = 0.0
    tilt_within_bound: bool = False
    tilt_max_temperature: bool = False
    tilt_bounded_entropy: bool = False
    entropy_temperature: float = 0.0
    auto_temperature: bool = False
    target_entropy_scale: float = -1.0
    temperature_lr: float = 3e-4
    noise_lr: float = 3e-2
    entropy_estimate: str = "denoiser"
    entropy_draws: int = 8
    exploration: str = "fixed"
    eval_sampling: str = "chain"
    eval_candidates: int = 10

    @property
    def max_entropy(self) -> bool:
        """Whether the soft critic target and the temperature-set tilt are on."""
        return self.entropy_temperature > 0

    @property
    def learns_lam(self) -> bool:
        """Whether the tilt's lam is learned by the KL trust region (``kl_bound`` > 0)."""
        return self.kl_bound > 0

    @property
    def learns_tau(self) -> bool:
        """Whether the KL step is entropy-regularised with a learned tau (``tilt_entropy`` > 0)."""
        return self.tilt_entropy > 0

    @property
    def estimates_entropy(self) -> bool:
        """Whether an update estimates log pi (max-ent QSM or the adaptive noise)."""
        return self.max_entropy or self.exploration == "adaptive"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_agent_config(
            self,
            positive=("alpha", "lam", "temperature_lr", "noise_lr"),
            non_negative=("entropy_temperature", "kl_bound", "tilt_entropy"),
        )
        check_entropy_config(self)
        check_kl_config(self)
        check_squash_config(self)
        check(
            self.score_target in SCORE_TARGETS,
            f"score_target must be one of {SCORE_TARGETS}, got {self.score_target!r}",
        )
        check(self.anchor in ANCHORS, f"anchor must be one of {ANCHORS}, got {self.anchor!r}")
        check(isinstance(self.normalize_grad, bool), f"normalize_grad must be a bool, got {self.normalize_grad!r}")
        check(
            finite(self.grad_rms_decay) and 0.0 <= self.grad_rms_decay < 1.0,
            f"grad_rms_decay must be in [0, 1), got {self.grad_rms_decay}",
        )


def check_entropy_config(config: QSMConfig) -> None:
    """Checks the max-ent, adaptive-noise and evaluation settings of ``QSMConfig``."""
    auto = config.auto_temperature
    check(isinstance(auto, bool), f"auto_temperature must be a bool, got {auto!r}")
    scale = config.target_entropy_scale
    check(finite(scale), f"target_entropy_scale must be finite, got {scale}")
    for name in ("entropy_draws", "eval_candidates"):
        value = getattr(config, name)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        check(ok, f"{name} must be an integer >= 1, got {value!r}")
    check(
        config.entropy_estimate in ENTROPY_ESTIMATES,
        f"entropy_estimate must be one of {ENTROPY_ESTIMATES}, got {config.entropy_estimate!r}",
    )
    check(
        config.entropy_estimate != "samples" or config.entropy_draws >= 2,
        f"entropy_estimate=samples fits a variance: set --entropy_draws >= 2 (got {config.entropy_draws})",
    )
    check(config.exploration in EXPLORATIONS, f"exploration must be one of {EXPLORATIONS}, got {config.exploration!r}")
    check(
        config.eval_sampling in EVAL_SAMPLINGS,
        f"eval_sampling must be one of {EVAL_SAMPLINGS}, got {config.eval_sampling!r}",
    )
    check(
        not config.auto_temperature or config.max_entropy,
        "auto_temperature needs entropy_temperature > 0 (its initial value), e.g. --entropy_temperature=0.1",
    )
    check(
        not config.max_entropy or config.score_target in ("tilted", "mirror"),
        "entropy_temperature > 0 sets the tilt of the score target: use --score_target=tilted or mirror",
    )
    check(
        not config.max_entropy or not config.normalize_grad,
        "entropy_temperature is in units of Q: turn off --normalize_grad to use it",
    )
    check(
        config.exploration == "fixed" or config.exploration_noise > 0,
        "exploration=adaptive scales exploration_noise: set --exploration_noise > 0",
    )


def check_kl_config(config: QSMConfig) -> None:
    """Checks the KL trust region on the tilt (``kl_bound`` and its sample sizes)."""
    for name, low in (("kl_samples", 2), ("kl_states", 1)):
        value = getattr(config, name)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        check(ok, f"{name} must be an integer >= {low}, got {value!r}")
    if not config.learns_lam:
        return
    check(
        config.score_target in ("tilted", "mirror"),
        f"kl_bound > 0 learns the tilt of the score target: use --score_target=tilted or mirror "
        f"(got {config.score_target!r})",
    )
    check(not config.normalize_grad, "kl_bound > 0 learns lam in units of Q: turn off --normalize_grad to use it")
    check(
        not config.max_entropy,
        "kl_bound > 0 and entropy_temperature > 0 both set the tilt's lam: keep one "
        "(--kl_bound=0 or --entropy_temperature=0)",
    )


def check_squash_config(config: QSMConfig) -> None:
    """Checks the tanh-squashed chain (``squash``) and the entropy-regularised KL step (``tilt_entropy``)."""
    check(config.squash in SQUASHES, f"squash must be one of {SQUASHES}, got {config.squash!r}")
    if config.squash == "tanh":
        check(
            config.anchor == "policy",
            f"squash=tanh steps in the chain's latent, which replay actions at a wall do not have: use --anchor=policy "
            f"(got {config.anchor!r})",
        )
        check(
            not config.estimates_entropy,
            "squash=tanh has no estimate of log pi for max-ent QSM or the adaptive noise: "
            "use --entropy_temperature=0 and --exploration=fixed",
        )
    if config.tilt_entropy > 0:
        check(
            config.learns_lam and config.score_target == "mirror" and config.squash == "tanh",
            "tilt_entropy > 0 regularises the KL step of the tanh chain: set --kl_bound > 0, --score_target=mirror "
            "and --squash=tanh",
        )
    check(
        config.tilt_entropy > 0 or not config.tilt_within_bound,
        "tilt_within_bound sets the temperature of the entropy-regularised KL step: set --tilt_entropy > 0 "
        "(or --notilt_within_bound)",
    )
    check(
        config.tilt_within_bound or not config.tilt_max_temperature,
        "tilt_max_temperature bounds the temperature of the step inside the trust region: set --tilt_within_bound "
        "(or --notilt_max_temperature)",
    )
    check(
        config.tilt_within_bound or not config.tilt_bounded_entropy,
        "tilt_bounded_entropy bounds J's weight in the step inside the trust region: set --tilt_within_bound "
        "(or --notilt_bounded_entropy)",
    )
    check(
        not (config.tilt_max_temperature and config.tilt_bounded_entropy),
        "tilt_max_temperature and tilt_bounded_entropy are two ways to bound J's weight: set one of them",
    )


def check_diffusion_config(config) -> None:
    """Checks the settings of a diffusion policy (QSM, and the DQL baseline that shares its policy)."""
    check(
        config.time_features > 0 and config.time_features % 2 == 0,
        f"time_features must be a positive even integer, got {config.time_features}",
    )
    check(
        config.actor_lr_decay_steps >= 0,
        f"actor_lr_decay_steps must be >= 0 (0 = constant), got {config.actor_lr_decay_steps}",
    )
    check(
        isinstance(config.diffusion_steps, int) and config.diffusion_steps >= 1,
        f"diffusion_steps (T) must be an integer >= 1, got {config.diffusion_steps!r}",
    )
    check(
        config.beta_schedule in BETA_SCHEDULES,
        f"beta_schedule must be one of {BETA_SCHEDULES}, got {config.beta_schedule!r}",
    )
    for name in ("temperature", "exploration_noise", "target_noise"):
        value = getattr(config, name)
        check(finite(value) and value >= 0, f"{name} must be a finite number >= 0, got {value}")
    check(
        isinstance(config.num_action_samples, int)
        and not isinstance(config.num_action_samples, bool)
        and config.num_action_samples >= 1,
        f"num_action_samples must be an integer >= 1, got {config.num_action_samples!r}",
    )


def config_to_dict(config) -> dict:
    """A JSON-friendly dict of an agent config (tuples become lists); ``type(config)(**d)`` rebuilds it."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def check_agent_config(
    config, dims: tuple[str, ...] = (), positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()
) -> None:
    """Checks (and normalises to tuples) the settings every agent config shares: hidden sizes,
    ``num_critics``, ``actor_lr``, ``critic_lr``, ``gamma``, ``tau``; plus the named extra fields."""
    for name in ("actor_hidden_dims", "critic_hidden_dims", *dims):
        object.__setattr__(config, name, _positive_int_tuple(name, getattr(config, name)))
    check(config.num_critics >= 1, f"num_critics must be >= 1, got {config.num_critics}")
    for name in ("actor_lr", "critic_lr", *positive):
        value = getattr(config, name)
        check(finite(value) and value > 0, f"{name} must be a finite number > 0, got {value}")
    for name in non_negative:
        value = getattr(config, name)
        check(finite(value) and value >= 0, f"{name} must be a finite number >= 0, got {value}")
    check(finite(config.gamma) and 0.0 <= config.gamma < 1.0, f"gamma must be in [0, 1), got {config.gamma}")
    check(finite(config.tau) and 0.0 < config.tau <= 1.0, f"tau must be in (0, 1], got {config.tau}")

"""Learning-benchmark units: a unit is one training run, (algorithm, env, seed, max_steps, every other
setting), i.e. one single-seed ``RunConfig``, identified by its key; a finished unit is one small JSON
file under ``results/learning/units/`` named by that key. Also the named configurations (``VARIANTS``)
that label units, and reading, writing and importing unit files.

Reasons to change this file: what a unit is, its key, its file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from qsm_jax.algorithms import get_algorithm
from qsm_jax.program.run_config import RunConfig
from qsm_jax.program.workdir import write_text_atomically

SCHEMA = 1
UNITS_DIR = os.path.join("results", "learning", "units")

# Settings every learning-benchmark unit shares (no per-task tuning): the reference agent defaults,
# evaluation every 5k env steps over 10 episodes, a checkpoint every 10k steps (units resume).
# Checkpoints end the episodes in progress (the rule the first units ran under; env state is not
# saved with unit checkpoints, so an interrupted unit resumes from its last 10k-step checkpoint).
BENCH_SETTINGS = {
    "start_steps": 10_000,
    "eval_interval": 5_000,
    "eval_episodes": 10,
    "checkpoint_interval": 10_000,
    "checkpoint_env_state": False,
    "checkpoint_every_minutes": 0.0,
}

# What a unit's key hashes. The settings each config had when its first units were computed are
# hashed whatever their value (frozen: never edit these lists). Every setting added since is hashed
# only when it differs from its default, so a new option whose default reproduces today's update
# needs no edit here and every committed unit keeps its key (tests/test_benchmark.py checks each
# committed file).
HASHED_ALWAYS = {
    "run": (
        "env", "seed", "max_steps", "start_steps", "batch_size", "buffer_size", "eval_interval",
        "eval_episodes", "checkpoint_interval", "log_interval", "utd", "num_envs", "num_seeds", "algo",
    ),
    "qsm": (
        "actor_hidden_dims", "critic_hidden_dims", "time_features", "time_hidden_dims", "num_critics",
        "actor_lr", "actor_lr_decay_steps", "critic_lr", "gamma", "tau", "diffusion_steps", "beta_schedule",
        "temperature", "clip_sampler", "exploration_noise", "target_noise", "alpha",
    ),
    "sac": (
        "actor_hidden_dims", "critic_hidden_dims", "num_critics", "actor_lr", "critic_lr", "temperature_lr",
        "gamma", "tau", "initial_temperature", "target_entropy_scale",
    ),
    "td3": (
        "actor_hidden_dims", "critic_hidden_dims", "num_critics", "actor_lr", "critic_lr", "gamma", "tau",
        "exploration_noise", "policy_noise", "noise_clip", "policy_delay",
    ),
    "dql": (
        "actor_hidden_dims", "critic_hidden_dims", "time_features", "time_hidden_dims", "num_critics",
        "actor_lr", "actor_lr_decay_steps", "critic_lr", "gamma", "tau", "diffusion_steps", "beta_schedule",
        "temperature", "clip_sampler", "exploration_noise", "target_noise", "eta",
    ),
}  # fmt: skip
# Run settings added later whose default is not what the earlier units ran: that value (hashed only
# when a unit differs from it; a record that lacks the setting ran with it).
LEGACY_RUN_VALUES = {"checkpoint_env_state": False, "checkpoint_every_minutes": 0.0}
_NONE = object()


@dataclasses.dataclass(frozen=True)
class Unit:
    """One learning run: a single-seed ``RunConfig``, identified by ``key``."""

    config: RunConfig

    def __post_init__(self) -> None:
        if self.config.num_seeds != 1:
            raise ValueError(f"a unit is one seed: num_seeds must be 1, got {self.config.num_seeds}")

    @property
    def config_hash(self) -> str:
        """First 10 hex digits of the SHA-256 of the hashed settings as sorted JSON: those in
        ``HASHED_ALWAYS``, and every other one that differs from its default (``LEGACY_RUN_VALUES``
        for the run settings that have one)."""
        d = self.config.to_dict()
        run_defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)} | LEGACY_RUN_VALUES
        agent_defaults = get_algorithm(self.config.algo).config_cls().to_dict()

        def hashed(settings: dict, always: tuple, defaults: dict) -> dict:
            return {k: v for k, v in settings.items() if k in always or defaults.get(k, _NONE) != v}

        agent = hashed(d.pop("agent"), HASHED_ALWAYS[self.config.algo], agent_defaults)
        text = json.dumps({**hashed(d, HASHED_ALWAYS["run"], run_defaults), "agent": agent}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    @property
    def key(self) -> str:
        """``<algo>_<env>_seed<seed>_<steps>_<hash>``: file name of the unit and of its run folder."""
        c = self.config
        steps = f"{c.max_steps // 1000}k" if c.max_steps % 1000 == 0 else str(c.max_steps)
        return f"{c.algo}_{c.env.replace('/', '-')}_seed{c.seed}_{steps}_{self.config_hash}"

    def path(self, units_dir: str = UNITS_DIR) -> str:
        return os.path.join(units_dir, self.key + ".json")

    def done(self, units_dir: str = UNITS_DIR) -> bool:
        return os.path.exists(self.path(units_dir))


def unit_of(record: dict) -> Unit:
    """The unit a record's stored config describes. Settings added after the record was written take
    the values it ran with (their defaults; ``LEGACY_RUN_VALUES``), so ``unit_of(record).key ==
    record["key"]`` for every unit this code can run."""
    return Unit(RunConfig.from_dict({**LEGACY_RUN_VALUES, **record["config"]}))


def label(config: RunConfig) -> str:
    """The name a unit's results are grouped under: the algorithm, a named variant (``VARIANTS``,
    e.g. ``QSM-mirror``), or the algorithm plus every agent setting that differs from its defaults,
    e.g. ``QSM (score_target=tilted, lam=0.1)``."""
    cls = get_algorithm(config.algo).config_cls
    for name, settings in VARIANTS.items():
        if name.split("-")[0].lower() == config.algo and config.agent == cls(**settings):
            return name
    defaults = cls().to_dict()
    changed = [f"{k}={_short(v)}" for k, v in config.agent.to_dict().items() if defaults.get(k) != v]
    return config.algo.upper() + (f" ({', '.join(changed)})" if changed else "")


def _short(value: Any) -> str:
    return "x".join(map(str, value)) if isinstance(value, list) else str(value)


def make_unit(algo: str, env: str, seed: int, max_steps: int, agent: dict | None = None, **run: Any) -> Unit:
    """A unit at the benchmark settings (``BENCH_SETTINGS``) with the algorithm's defaults, unless
    overridden by ``agent`` (agent-config fields) or ``run`` (``RunConfig`` fields)."""
    config = RunConfig(
        env=env,
        algo=algo,
        seed=seed,
        max_steps=max_steps,
        agent=get_algorithm(algo).config_cls(**(agent or {})),
        **{**BENCH_SETTINGS, **run},
    )
    return Unit(config)


def _grid(algos, envs, seeds, max_steps, agent=None, **run) -> list[Unit]:
    return [make_unit(a, e, s, max_steps, agent, **run) for a in algos for e in envs for s in seeds]


VARIANT_NORM = {"normalize_grad": True, "alpha": 1.0}
VARIANT_MIRROR = {"score_target": "mirror", "lam": 1.0, "normalize_grad": True, "num_action_samples": 8}
# Max-ent QSM (docs/algorithm.md, "Maximum-entropy QSM"), one setting for every task, chosen a priori:
# the mirror variant's target and best-of-8 acting, its tilt set by the automatic temperature (SAC's
# initial value 1 and target entropy -A) instead of a normalised gradient; 2 noise draws per level
# keep the update at 0.67x the paper's rate (results/speed.md, (h)).
VARIANT_MAXENT = {
    "score_target": "mirror",
    "entropy_temperature": 1.0,
    "auto_temperature": True,
    "entropy_draws": 2,
    "num_action_samples": 8,
}
# The same, with the entropy read from 2 chain samples per state (``losses.sample_entropy``, which sees the
# walls the denoiser estimate is blind to): only the estimate differs, at the same cost per update.
VARIANT_MAXENT_SAMPLES = {**VARIANT_MAXENT, "entropy_estimate": "samples"}
# A screening candidate (docs/variants.md, "Screening"): the mirror variant with its pull-back anchored on
# the current policy's own chain samples instead of replay actions.
VARIANT_MIRROR_POLICY = {**VARIANT_MIRROR, "anchor": "policy"}
# The mirror variant with a deeper chain (T = 10 instead of 5): on the four-peak bandit it lifted the
# mirror target's reward (d = 2) at 1.17x the paper's update cost (results/screening.md, results/speed.md (i)).
VARIANT_MIRROR_T10 = {**VARIANT_MIRROR, "diffusion_steps": 10}
# The mirror variant (and its deeper chain) as MPO's step: the tilt's lam learned by a KL trust region (the
# E-step dual on 8 chain samples at 32 of the batch's states, eps = 0.1 per action dimension, the dual's
# learning rate 1e-2 as MPO sets it) on the raw grad_a Q, and the tilt anchored on the same policy's own
# samples, so the bound holds for the step the denoiser is fitted to (with replay anchoring the bound is
# measured on the policy but the tilt applies to older, wider replay actions: docs/variants.md).
VARIANT_MIRROR_KL = {
    "score_target": "mirror",
    "lam": 1.0,
    "kl_bound": 0.1,
    "temperature_lr": 0.01,
    "anchor": "policy",
    "num_action_samples": 8,
}
VARIANT_MIRROR_T10_KL = {**VARIANT_MIRROR_KL, "diffusion_steps": 10}
# The same step without a chain of its own for the anchor: the policy's samples it tilts are the critic
# target's chain samples at the batch's next states, where the actor's step is then taken (``anchor="next"``).
# At 256x256 the anchor's chain made the KL candidate cost 3.3x SAC's time per env step (results/speed.md (j)).
VARIANT_MIRROR_T10_KL_NEXT = {**VARIANT_MIRROR_T10_KL, "anchor": "next"}
# The same step with its KL dual read at 8 of the batch's states instead of 32 (8 chain samples each: a
# chain of 64 rows instead of 256; lam is one scalar averaged by Adam over updates): the KL candidate's
# update without most of the dual's chain, to bring it within the goal's cost.
VARIANT_MIRROR_T10_KL_DUAL8 = {**VARIANT_MIRROR_T10_KL, "kl_states": 8}
# The KL candidate with a tanh-squashed chain and an entropy-regularised step (docs/variants.md, "why the
# walls"): the chain runs unclipped in a latent u, a = tanh(u), so no mass piles into atoms at the walls, and
# each KL step is pi^(lam / (lam + tau)) exp((Q + tau J) / (lam + tau)) with tau set by SAC's rule toward the
# entropy -A read from the KL dual's samples (tau starts at SAC's 1): a max-ent fixed point in place of the greedy one.
VARIANT_TANH_KL_ENT = {**VARIANT_MIRROR_KL, "squash": "tanh", "tilt_entropy": 1.0}
VARIANT_TANH_T10_KL_ENT = {**VARIANT_TANH_KL_ENT, "diffusion_steps": 10}
# The same with the KL dual's lam kept as the step's whole temperature (``tilt_within_bound``): the step is
# pi^kappa exp((Q + tau J) / lam), kappa = max(0, 1 - tau / lam), so the trust region sizes it (the walls
# candidate's tilt, lam + tau with tau about 2 lam, took a third of the bounded step and stalled on walker-run).
VARIANT_TANH_KL_ENT_IN = {**VARIANT_TANH_KL_ENT, "tilt_within_bound": True}
VARIANT_TANH_T10_KL_ENT_IN = {**VARIANT_TANH_KL_ENT_IN, "diffusion_steps": 10}
# The same with the step's temperature max(lam, tau) (``tilt_max_temperature``): J's weight at most 1, so a
# reverse step fitted to it cannot overshoot (the step inside the bound, J at weight tau / lam = 4-5, diverged on
# Hopper-v4); past lam the step is the max-ent policy exp((Q + tau J) / tau).
VARIANT_TANH_KL_ENT_CAP = {**VARIANT_TANH_KL_ENT_IN, "tilt_max_temperature": True}
VARIANT_TANH_T10_KL_ENT_CAP = {**VARIANT_TANH_KL_ENT_CAP, "diffusion_steps": 10}
# Or J's weight bounded alone (``tilt_bounded_entropy``): min(1, tau / lam), Q's weight the trust region's 1 / lam
# (with the temperature max(lam, tau), tau at about 2 lam halves Q's weight, as the first walls candidate's lam + tau).
VARIANT_TANH_KL_ENT_BOUNDED = {**VARIANT_TANH_KL_ENT_IN, "tilt_bounded_entropy": True}
VARIANT_TANH_T10_KL_ENT_BOUNDED = {**VARIANT_TANH_KL_ENT_BOUNDED, "diffusion_steps": 10}
# Width arms: QSM's reference networks are 512x512, SAC's and TD3's 256x256 (each as its authors set
# it). SAC-512 and QSM-256 change only the hidden sizes, so each pair at equal width can be compared.
WIDTH_512 = {"actor_hidden_dims": (512, 512), "critic_hidden_dims": (512, 512)}
WIDTH_256 = {"actor_hidden_dims": (256, 256), "critic_hidden_dims": (256, 256)}
# Screening at SAC's width (docs/variants.md, "Screening"): QSM-256 learned like QSM on gym MuJoCo at about a
# third of its time per env step, and at 256x256 the goal's reference is SAC itself, whose units have all run.
# The comparator (the mirror variant) and the open candidates, each with only the hidden sizes changed.
SCREEN_256 = {
    "QSM-mirror-256": {**VARIANT_MIRROR, **WIDTH_256},
    "QSM-mirror-T10-KL-256": {**VARIANT_MIRROR_T10_KL, **WIDTH_256},
    "QSM-maxent-samples-256": {**VARIANT_MAXENT_SAMPLES, **WIDTH_256},
    "QSM-mirror-T10-KL-next-256": {**VARIANT_MIRROR_T10_KL_NEXT, **WIDTH_256},
    "QSM-mirror-T10-KL-dual8-256": {**VARIANT_MIRROR_T10_KL_DUAL8, **WIDTH_256},
    "QSM-tanh-T10-KL-ent-256": {**VARIANT_TANH_T10_KL_ENT, **WIDTH_256},
    "QSM-tanh-T10-KL-ent-in-256": {**VARIANT_TANH_T10_KL_ENT_IN, **WIDTH_256},
    "QSM-tanh-T10-KL-ent-cap-256": {**VARIANT_TANH_T10_KL_ENT_CAP, **WIDTH_256},
    "QSM-tanh-T10-KL-ent-bounded-256": {**VARIANT_TANH_T10_KL_ENT_BOUNDED, **WIDTH_256},
}
# Named variants, "<ALGO>-<name>" (README, "Which configuration"; configs/*.flags hold the same settings
# for run.py): an agent config of that algorithm with these settings is labelled by the name.
VARIANTS = {
    "QSM-norm": VARIANT_NORM,
    "QSM-mirror": VARIANT_MIRROR,
    "QSM-mirror-policy": VARIANT_MIRROR_POLICY,
    "QSM-mirror-T10": VARIANT_MIRROR_T10,
    "QSM-mirror-T10-KL": VARIANT_MIRROR_T10_KL,
    "QSM-maxent": VARIANT_MAXENT,
    "QSM-maxent-samples": VARIANT_MAXENT_SAMPLES,
    "QSM-256": WIDTH_256,
    "SAC-512": WIDTH_512,
    **SCREEN_256,
}


def write_unit(record: dict, path: str) -> None:
    """Writes a unit record atomically (a killed writer leaves no half file)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_text_atomically(path, json.dumps(record, indent=1) + "\n")


def load_unit(path: str) -> dict:
    with open(path) as f:
        record = json.load(f)
    if record.get("schema") != SCHEMA:
        raise ValueError(f"{path}: unit schema {record.get('schema')!r}, this code reads {SCHEMA}")
    return record


def load_units(units_dir: str = UNITS_DIR) -> list[dict]:
    """Every unit record in ``units_dir`` (none if it does not exist)."""
    if not os.path.isdir(units_dir):
        return []
    return [load_unit(os.path.join(units_dir, n)) for n in sorted(os.listdir(units_dir)) if n.endswith(".json")]


def import_units(source: str, units_dir: str = UNITS_DIR) -> tuple[list[str], list[str]]:
    """Copies the unit files of ``source`` (a folder, or a tar archive such as the one a lent
    accelerator machine returns: ``experiments/device/units.sh``) into ``units_dir``.

    A file is taken only if its key re-derives from its stored config (the same code computed it)
    and no file of that key exists yet: a unit is never written twice.

    Returns:
      (paths written, keys skipped because they were already there).
    Raises:
      ValueError: ``source`` missing, or a file that is not a unit record or whose key does not
        match its config (one line; nothing is written then).
    """
    import tarfile

    if os.path.isdir(source):
        names = [n for n in sorted(os.listdir(source)) if n.endswith(".json")]
        texts = {n: _read(os.path.join(source, n)) for n in names}
    elif os.path.isfile(source) and tarfile.is_tarfile(source):
        with tarfile.open(source) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".json")]
            texts = {os.path.basename(m.name): tar.extractfile(m).read().decode() for m in members}
    else:
        raise ValueError(f"{source}: neither a folder nor a tar archive of unit files")
    records = []
    for name, text in texts.items():
        try:
            record = json.loads(text)
            unit = unit_of(record)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{source}: {name} is not a unit record ({e})") from None
        if record.get("schema") != SCHEMA or unit.key != record.get("key") or name != unit.key + ".json":
            raise ValueError(f"{source}: {name}: its key does not match its config (key {record.get('key')!r})")
        records.append((unit, text))
    written, skipped = [], []
    os.makedirs(units_dir, exist_ok=True)
    for unit, text in records:
        if unit.done(units_dir):
            skipped.append(unit.key)
            continue
        write_text_atomically(unit.path(units_dir), text)
        written.append(unit.path(units_dir))
    return written, skipped


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()

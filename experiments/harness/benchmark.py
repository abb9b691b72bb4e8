"""Learning-benchmark units and suites: evidence that accumulates across sessions and machines.

A **unit** is one training run: (algorithm, env, seed, max_steps, every other setting), i.e. one
single-seed ``RunConfig``. A finished unit writes one small JSON file (``unit_record``) under
``results/learning/units/``, named by its key, which ends in a hash of the full config: a unit with
other settings is another file, never an overwrite. A unit whose file exists is done and skipped; a
unit interrupted midway resumes from its run checkpoint (``runs/units/<key>``) on the same machine.

A **suite** is a named list of units (``SUITES``), e.g. ``core100k``. ``experiments/bench_learning.py``
lists, runs and reports suites; ``harness.report`` builds the tables and figures from unit files alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from qsm_jax.algorithms import get_algorithm
from qsm_jax.program.metrics import read_metrics
from qsm_jax.program.run_config import RunConfig
from qsm_jax.program.train import train_and_evaluate
from qsm_jax.program.workdir import write_text_atomically

SCHEMA = 1
UNITS_DIR = os.path.join("results", "learning", "units")
RUNS_DIR = os.path.join("runs", "units")

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

# Agent settings added after the first units were computed, with the value that reproduces the
# code those units ran (see ``Unit.config_hash``). Add a setting here only with such a value.
ADDED_RUN_SETTINGS = {"checkpoint_env_state": False, "checkpoint_every_minutes": 0.0, "video_interval": 0}
ADDED_AGENT_SETTINGS = {
    "score_target": "qsm",
    "lam": 1.0,
    "normalize_grad": False,
    "grad_rms_decay": 0.99,
    "num_action_samples": 1,
}
# QSM settings added later still (max-ent QSM, adaptive noise, evaluation protocol): left out of QSM
# units' hashes only, since SAC has settings of the same names that its hashes always held.
ADDED_QSM_SETTINGS = {
    "entropy_temperature": 0.0,
    "auto_temperature": False,
    "target_entropy_scale": -1.0,
    "temperature_lr": 3e-4,
    "noise_lr": 3e-2,
    "entropy_estimate": "denoiser",
    "entropy_draws": 8,
    "exploration": "fixed",
    "eval_sampling": "chain",
    "eval_candidates": 10,
}
_NONE = object()

# Rough env steps/s of one unit pinned to one CPU core, used for time estimates until a unit of the
# same (algo, env) has been measured (then its measured rate is used).
PRIOR_STEPS_PER_S = {"qsm": 30.0, "sac": 80.0, "td3": 110.0, "dql": 15.0}


@dataclasses.dataclass(frozen=True)
class Unit:
    """One learning run: a single-seed ``RunConfig``, identified by ``key``."""

    config: RunConfig

    def __post_init__(self) -> None:
        if self.config.num_seeds != 1:
            raise ValueError(f"a unit is one seed: num_seeds must be 1, got {self.config.num_seeds}")

    @property
    def config_hash(self) -> str:
        """First 10 hex digits of the SHA-256 of the full config as sorted JSON, leaving out the
        settings added after units were first computed while they hold the value that reproduces
        the earlier code (``ADDED_RUN_SETTINGS``, ``ADDED_AGENT_SETTINGS``), so existing units keep
        their key."""
        d = self.config.to_dict()
        d = {k: v for k, v in d.items() if ADDED_RUN_SETTINGS.get(k, _NONE) != v}
        added = {**ADDED_AGENT_SETTINGS, **(ADDED_QSM_SETTINGS if self.config.algo == "qsm" else {})}
        d["agent"] = {k: v for k, v in d["agent"].items() if added.get(k, _NONE) != v}
        text = json.dumps(d, sort_keys=True)
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
    """The unit a record's stored config describes. Settings added after the record was written
    take the values that reproduce the code it ran (``ADDED_RUN_SETTINGS``, ``ADDED_AGENT_SETTINGS``),
    so ``unit_of(record).key == record["key"]`` for every unit this code can run."""
    config = {**ADDED_RUN_SETTINGS, **record["config"]}
    if config.get("algo", "qsm") == "qsm":
        config["agent"] = {**ADDED_AGENT_SETTINGS, **ADDED_QSM_SETTINGS, **config.get("agent", {})}
    return Unit(RunConfig.from_dict(config))


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
# Width arms: QSM's reference networks are 512x512, SAC's and TD3's 256x256 (each as its authors set
# it). SAC-512 and QSM-256 change only the hidden sizes, so each pair at equal width can be compared.
WIDTH_512 = {"actor_hidden_dims": (512, 512), "critic_hidden_dims": (512, 512)}
WIDTH_256 = {"actor_hidden_dims": (256, 256), "critic_hidden_dims": (256, 256)}
# Named variants, "<ALGO>-<name>" (README, "Which configuration"; configs/*.flags hold the same settings
# for run.py): an agent config of that algorithm with these settings is labelled by the name.
VARIANTS = {
    "QSM-norm": VARIANT_NORM,
    "QSM-mirror": VARIANT_MIRROR,
    "QSM-maxent": VARIANT_MAXENT,
    "QSM-maxent-samples": VARIANT_MAXENT_SAMPLES,
    "QSM-256": WIDTH_256,
    "SAC-512": WIDTH_512,
}
DMC_TASKS = ("dm_control/walker-walk-v0", "dm_control/walker-run-v0", "dm_control/cheetah-run-v0")
GYM_TASKS = ("Walker2d-v4", "Hopper-v4")
SEEDS = (0, 1, 2)

# Named suites. Reference settings everywhere, no per-task tuning.
SUITES: dict[str, Callable[[], list[Unit]]] = {
    "core100k": lambda: (
        _grid(("qsm", "sac", "td3", "dql"), GYM_TASKS, SEEDS, 100_000)
        + _grid(("sac",), GYM_TASKS, SEEDS, 100_000, agent=WIDTH_512)
    ),
    # QSM variants (README, "QSM variants"), chosen on the four-peak bandit (results/multimodal.md): the
    # reference target with grad_a Q normalised (alpha 1: no samples at the walls), and the mirror target
    # with best-of-8 acting; beside the faithful QSM and SAC units (the same units as in core100k).
    "variants100k": lambda: (
        _grid(("qsm",), ("Walker2d-v4", "Hopper-v4"), (0, 1, 2), 100_000, agent=VARIANT_NORM)
        + _grid(("qsm",), ("Walker2d-v4", "Hopper-v4"), (0, 1, 2), 100_000, agent=VARIANT_MIRROR)
        + _grid(("qsm", "sac"), ("Walker2d-v4", "Hopper-v4"), (0, 1, 2), 100_000)
    ),
    # The paper's own benchmark (DeepMind Control Suite through shimmy), tasks its reviewers name: QSM as
    # published, SAC and TD3, and the mirror variant with the variants100k settings (no per-task tuning).
    # The width arms (SAC-512, QSM-256) pair every algorithm with a SAC of its own width.
    "dmc100k": lambda: (
        _grid(("qsm", "sac", "td3"), DMC_TASKS, SEEDS, 100_000)
        + _grid(("qsm",), DMC_TASKS, SEEDS, 100_000, agent=VARIANT_MIRROR)
        + _grid(("sac",), DMC_TASKS, SEEDS, 100_000, agent=WIDTH_512)
        + _grid(("qsm",), DMC_TASKS, SEEDS, 100_000, agent=WIDTH_256)
    ),
    # Max-ent QSM with the automatic temperature (the two estimates of the entropy) beside the mirror
    # variant and SAC (the variants100k units).
    "maxent100k": lambda: (
        _grid(("qsm",), ("Walker2d-v4", "Hopper-v4"), SEEDS, 100_000, agent=VARIANT_MAXENT)
        + _grid(("qsm",), ("Walker2d-v4", "Hopper-v4"), SEEDS, 100_000, agent=VARIANT_MAXENT_SAMPLES)
        + _grid(("qsm",), ("Walker2d-v4", "Hopper-v4"), SEEDS, 100_000, agent=VARIANT_MIRROR)
        + _grid(("sac",), ("Walker2d-v4", "Hopper-v4"), SEEDS, 100_000)
    ),
    # Bigger action spaces (the review's question on scale): Ant-v4 (8 action dims) and Humanoid-v4 (17).
    "scale100k": lambda: (
        _grid(("qsm", "sac"), ("Ant-v4", "Humanoid-v4"), SEEDS, 100_000)
        + _grid(("qsm",), ("Ant-v4", "Humanoid-v4"), SEEDS, 100_000, agent=VARIANT_MIRROR)
    ),
    # A minute-long check of the whole pipeline (tiny networks; not evidence of anything).
    "smoke": lambda: _grid(
        ("qsm", "sac", "td3", "dql"),
        ("Pendulum-v1",),
        (0, 1),
        1_000,
        agent={"actor_hidden_dims": (32, 32), "critic_hidden_dims": (32, 32)},
        start_steps=300,
        eval_interval=500,
        eval_episodes=2,
        checkpoint_interval=500,
        buffer_size=10_000,
    ),
}


def suite_units(name: str) -> list[Unit]:
    """The units of a suite, or of every queue item for ``name == "queue"`` (in queue order, without
    the ``DROPPED`` ones)."""
    if name == QUEUE_NAME:
        return list({u.key: u for _, select in QUEUE for u in select() if dropped_reason(u) is None}.values())
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of {sorted(SUITES) + [QUEUE_NAME]}")
    return SUITES[name]()


def _labelled(suite: str, *labels: str) -> Callable[[], list[Unit]]:
    """The units of ``suite`` whose ``label`` is one of ``labels`` (a queue item)."""
    return lambda: [u for u in SUITES[suite]() if label(u.config) in labels]


# The evidence queue: the order in which pending units are run (``make bench``; ``make bench-list``
# shows it). Items run in this order; within an item, ``run_order`` (cheapest algorithm first, seeds
# round-robin over envs). Finished items stay listed after the open ones.
QUEUE_NAME = "queue"
QUEUE: tuple[tuple[str, Callable[[], list[Unit]]], ...] = (
    ("1. SAC at QSM's width (512x512) on DeepMind Control", _labelled("dmc100k", "SAC-512")),
    ("2. QSM at SAC's width (256x256) on DeepMind Control", _labelled("dmc100k", "QSM-256")),
    ("3. SAC at QSM's width (512x512) on gym MuJoCo", _labelled("core100k", "SAC-512")),
    ("4. Diffusion-QL on gym MuJoCo", _labelled("core100k", "DQL")),
    ("5. QSM, the mirror variant and SAC in bigger action spaces (Ant-v4, Humanoid-v4)", lambda: SUITES["scale100k"]()),
    (
        "6. max-ent QSM, the automatic temperature reading the entropy from samples (sees the walls)",
        _labelled("maxent100k", "QSM-maxent-samples"),
    ),
    (
        "7. the paper's comparison: QSM as published, SAC, TD3 on DeepMind Control",
        _labelled("dmc100k", "QSM", "SAC", "TD3"),
    ),
    ("8. the mirror variant on DeepMind Control", _labelled("dmc100k", "QSM-mirror")),
    (
        "9. QSM as published and the mirror variant on gym MuJoCo",
        lambda: _labelled("core100k", "QSM")() + _labelled("variants100k", "QSM-mirror")(),
    ),
    ("10. max-ent QSM with the automatic temperature on gym MuJoCo", _labelled("maxent100k", "QSM-maxent")),
)

# Units of the suites that left the queue because they no longer decide anything: (label, seeds) ->
# why. They stay in their suites (the report names them and the reason) and run only when named
# (``--units``); they are never queued.
DROPPED: dict[tuple[str, tuple[int, ...]], str] = {
    ("QSM-maxent", (2,)): (
        "the denoiser estimate's max-ent units collapse mechanically: in all 4 units its log pi estimate sat at "
        "its floor from the first updates and the temperature followed the same path to 3 digits (1 -> 2e-9), "
        "so a third seed cannot change the verdict; the sample estimate (QSM-maxent-samples) is queued instead"
    ),
    ("QSM-norm", SEEDS): (
        "the four-peak bandit settles it: with alpha 1 on the normalised gradient its samples stay spread like "
        "the uniform policy (reward 0.38 against the uniform 0.35, no optimum held; results/multimodal.md), "
        "while the mirror variant, also off the walls, holds an optimum (0.86) and has its units"
    ),
}


def dropped_reason(unit: Unit) -> str | None:
    """Why ``unit`` left the queue (``DROPPED``), or None if it is queued."""
    name = label(unit.config)
    return next((why for (lab, seeds), why in DROPPED.items() if lab == name and unit.config.seed in seeds), None)


def queue_order(units_dir: str = UNITS_DIR) -> list[tuple[str, list[Unit]]]:
    """Each queue item's name and its pending units in the order they run (see ``QUEUE``); a unit
    that two items name runs with the first."""
    seen: set[str] = set()
    out = []
    for name, select in QUEUE:
        units = [u for u in run_order(select(), units_dir) if u.key not in seen and dropped_reason(u) is None]
        seen.update(u.key for u in units)
        out.append((name, units))
    return out


def estimated_seconds(unit: Unit, units_dir: str = UNITS_DIR) -> float:
    """Expected wall-clock of ``unit`` on this kind of machine: its env steps over the measured steps/s
    of the finished units most like it (same agent settings and env, else same agent settings, else
    same algorithm and env), or ``PRIOR_STEPS_PER_S`` if none.

    Of those units, the ones measured on this CPU model set the estimate if any (machines of one kind
    differ by up to 2x), with the fastest one's rate: a unit that shared its core with other work only
    ever ran slower (up to 1.6x measured), and units alone on a core of one model agree within ~3%.
    Measured on other CPU models only: their mean, an estimate that errs either way."""
    like, _ = _units_like(unit, units_dir)
    cpu = cpu_model()
    here = [r["env_steps_per_s"] for r in like if r.get("machine", {}).get("cpu") == cpu]
    if here:
        rate = float(max(here))
    elif like:
        rate = float(np.mean([r["env_steps_per_s"] for r in like]))
    else:
        rate = PRIOR_STEPS_PER_S.get(unit.config.algo, 30.0)
    return unit.config.max_steps / rate


def _units_like(unit: Unit, units_dir: str) -> tuple[list[dict], bool]:
    """The finished units whose rate estimates ``unit``'s, and whether they ran its agent settings."""
    records = [r for r in load_units(units_dir) if r["algo"] == unit.config.algo and r.get("env_steps_per_s")]
    same_agent = [r for r in records if unit_of(r).config.agent == unit.config.agent]
    if same_agent:
        return [r for r in same_agent if r["env"] == unit.config.env] or same_agent, True
    return [r for r in records if r["env"] == unit.config.env], False


def estimate_is_rough(unit: Unit, units_dir: str = UNITS_DIR) -> bool:
    """Whether no finished unit ran ``unit``'s agent settings: its estimate then borrows the rate of
    other settings of the algorithm (or the prior), off by the ratio of their costs per step (max-ent
    QSM's update costs 1.5x the paper's, results/speed.md)."""
    return not _units_like(unit, units_dir)[1]


def checkpointed_step(unit: Unit, runs_dir: str = RUNS_DIR) -> int:
    """The env step of the newest checkpoint in ``unit``'s run folder (0 if none): where it resumes.

    Read from the step folders' names, so that listing costs no Orbax manager."""
    folder = os.path.join(runs_dir, unit.key, "checkpoints")
    steps = [int(n) for n in (os.listdir(folder) if os.path.isdir(folder) else []) if n.isdigit()]
    return max(steps, default=0)


def remaining_seconds(unit: Unit, units_dir: str = UNITS_DIR, runs_dir: str = RUNS_DIR) -> float:
    """``estimated_seconds`` of what is left of ``unit`` after its newest checkpoint."""
    left = max(unit.config.max_steps - checkpointed_step(unit, runs_dir), 0) / unit.config.max_steps
    return left * estimated_seconds(unit, units_dir)


def run_order(units: list[Unit], units_dir: str = UNITS_DIR, keys: list[str] | None = None) -> list[Unit]:
    """Pending units, cheapest algorithms first; within an algorithm, seeds round-robin over envs
    (seed 0 on every env, then seed 1, ...), so partial results cover every env early.

    With ``keys``: only the pending units named there, in that order (``--units``).

    Raises:
      ValueError: a key that is not one of ``units`` (one line).
    """
    pending = [u for u in units if not u.done(units_dir)]
    if keys is not None:
        unknown = [k for k in keys if k not in {u.key for u in units}]
        if unknown:
            raise ValueError(f"--units: {', '.join(unknown)} not in the suite (see --list)")
        by_key = {u.key: u for u in pending}
        return [by_key[k] for k in dict.fromkeys(keys) if k in by_key]
    cost = {}
    for u in pending:
        cost.setdefault(u.config.algo, estimated_seconds(u, units_dir))
    envs = list(dict.fromkeys(u.config.env for u in units))
    return sorted(pending, key=lambda u: (cost[u.config.algo], u.config.algo, u.config.seed, envs.index(u.config.env)))


def _git(*args: str) -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def code_version() -> dict[str, Any]:
    """The commit of the code that runs (the checkout holding this package) and whether tracked
    files differ from it. A copy with no git history (a lent accelerator machine's) takes the commit
    from ``QSM_JAX_COMMIT`` (suffixed "+dirty" for uncommitted changes), set by whoever made the copy
    (``experiments/device/command.sh``, the cluster launchers)."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        given = os.environ.get("QSM_JAX_COMMIT") or "unknown"
        return {"commit": given.removesuffix("+dirty"), "dirty": given.endswith("+dirty")}
    return {"commit": commit, "dirty": bool(_git("status", "--porcelain", "-uno"))}


def cpu_model() -> str:
    """This machine's CPU model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, usable cores and JAX devices of this process."""
    cpu = cpu_model()
    import jax

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "devices": [str(d.device_kind) for d in jax.devices()],
        "host": platform.node(),
    }


def versions() -> dict[str, str]:
    """Versions of the packages that decide a unit's numbers (the simulator above all)."""
    from importlib import metadata

    out = {}
    for name in ("jax", "jaxlib", "flax", "optax", "gymnasium", "mujoco", "dm-control", "shimmy", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def unit_record(
    unit: Unit,
    history: list[dict],
    wall_seconds: float,
    steps_per_s: float,
    resumed_from: int,
    code: dict[str, Any] | None = None,
    train_rows: list[dict] | None = None,
) -> dict:
    """The JSON content of a finished unit's file. ``code`` is ``code_version()`` taken when the
    unit started (default: now). With ``train_rows`` (the run's ``train`` metric rows) from an agent
    that learns its max-ent temperature, the record keeps its trajectory ("temperature")."""
    extra = {}
    if getattr(unit.config.agent, "auto_temperature", False):
        rows = [{"step": r["step"], "temperature": r["temperature"]} for r in train_rows or () if "temperature" in r]
        extra["temperature"] = rows[:: max(1, len(rows) // 100)]
    return {
        "schema": SCHEMA,
        "key": unit.key,
        "algo": unit.config.algo,
        "env": unit.config.env,
        "seed": unit.config.seed,
        "max_steps": unit.config.max_steps,
        "config_hash": unit.config_hash,
        "config": unit.config.to_dict(),
        # wall_share: units run before it was measured have none.
        "curve": [{k: h[k] for k in ("step", "returns", "wall_share") if k in h} for h in history],
        "final_return": float(np.mean(history[-1]["returns"])),
        **(code or code_version()),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "wall_seconds": round(wall_seconds, 1),
        "env_steps_per_s": round(steps_per_s, 2),
        "resumed_from_step": resumed_from,
        **extra,
    }


def run_unit(unit: Unit, units_dir: str = UNITS_DIR, runs_dir: str = RUNS_DIR, progress: bool = False) -> dict:
    """Trains ``unit`` (resuming its run folder if a previous process was interrupted) and writes
    its file; returns the record. A unit whose file exists is not run again (its record is returned).

    ``wall_seconds`` is the time of this process, and ``resumed_from_step`` the env step it started
    from (0 for an uninterrupted unit); ``env_steps_per_s`` is the median of the training loop's
    measured rates (its ``train`` metric rows), which does not depend on interruptions.
    """
    path = unit.path(units_dir)
    if os.path.exists(path):
        return load_unit(path)
    workdir = os.path.join(runs_dir, unit.key)
    resumed_from = 0
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        from qsm_jax.program.checkpoint import RunCheckpointer

        checkpointer = RunCheckpointer(os.path.join(workdir, "checkpoints"))
        resumed_from = checkpointer.latest_step() or 0
        checkpointer.close()
    # The code that runs is the checkout's state now: a runner committing other units' files into
    # the same checkout meanwhile (--git_commit) must not change the commit this unit names.
    code = code_version()
    segments = _code_segments(workdir, resumed_from, code)
    start = time.time()
    result = train_and_evaluate(unit.config, workdir, progress=progress)
    wall = time.time() - start
    train_rows = read_metrics(workdir, "train")
    rates = [r["env_steps_per_s"] for r in train_rows]
    # The first row after start includes compilation; the median ignores it.
    steps_per_s = float(np.median(rates)) if rates else unit.config.max_steps / wall
    record = unit_record(unit, result["history"], wall, steps_per_s, resumed_from, code, train_rows)
    if resumed_from:
        record["code_segments"] = segments
    write_unit(record, path)
    return record


SEGMENTS_FILE = "code_segments.jsonl"


def _code_segments(workdir: str, from_step: int, code: dict[str, Any]) -> list[dict]:
    """Which code ran which env steps of a unit, kept in its run folder across interruptions: the
    segments before ``from_step`` (later ones were rolled back to a checkpoint) and this one.

    A unit resumed under another commit than it ran before says so on stderr; its record lists the
    segments (``code_segments``), since ``commit`` names the code of the last one. Segments that
    ran before this file existed are unknown (the list then starts after step 0)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, SEGMENTS_FILE)
    earlier = []
    if os.path.exists(path):
        with open(path) as f:
            earlier = [json.loads(line) for line in f if line.strip()]
    segments = [s for s in earlier if s["from_step"] < from_step] + [{"from_step": from_step, **code}]
    write_text_atomically(path, "".join(json.dumps(s) + "\n" for s in segments))
    if len({(s["commit"], s["dirty"]) for s in segments}) > 1:
        before = segments[-2]
        print(
            f"warning: {os.path.basename(workdir)} resumes at env step {from_step} under commit {code['commit'][:12]} "
            f"after commit {before['commit'][:12]} ran it: its record lists both (code_segments)",
            file=sys.stderr,
            flush=True,
        )
    return segments


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

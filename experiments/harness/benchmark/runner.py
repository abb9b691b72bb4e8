"""Running units and estimating their cost: the order pending units run in, their expected time on
this machine (from the finished units' measured rates), and ``run_unit``, which trains one unit
(resuming its run folder) and writes its file with the code, machine and versions that made it.

Reason to change this file: how units are run and timed.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from typing import Any

import numpy as np

from harness.benchmark.units import SCHEMA, UNITS_DIR, Unit, label, load_unit, load_units, unit_of, write_unit
from harness.provenance import code_version, cpu_model, machine, versions
from qsm_jax.program.metrics import read_metrics
from qsm_jax.program.train import train_and_evaluate
from qsm_jax.program.workdir import write_text_atomically

RUNS_DIR = os.path.join("runs", "units")
# The speed benchmark's report: its section (j) ("goal") has the training loop's env steps/s per label,
# measured side by side, which scales a rate borrowed from units of other settings.
SPEED_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "results", "speed.json")

# Rough env steps/s of one unit pinned to one CPU core, used for time estimates until a unit of the
# same (algo, env) has been measured (then its measured rate is used).
PRIOR_STEPS_PER_S = {"qsm": 30.0, "sac": 80.0, "td3": 110.0, "dql": 15.0}


def estimated_seconds(unit: Unit, units_dir: str = UNITS_DIR, speed_path: str = SPEED_PATH) -> float:
    """Expected wall-clock of ``unit`` on this kind of machine: its env steps over the measured steps/s
    of the finished units most like it (same agent settings and env, else same agent settings, else
    same algorithm, env and network widths, else same algorithm and env), or ``PRIOR_STEPS_PER_S`` if
    none. A rate borrowed from other settings is scaled by the two labels' training-loop rates in
    ``speed_path``'s section (j) where both are measured there (a KL candidate's env step costs 1.8x
    QSM-mirror's), else by their 512x512 twins' (``_loop_ratio``).

    Of those units, the ones measured on this CPU model set the estimate if any (machines of one kind
    differ by up to 2x), with the fastest one's rate: a unit that shared its core with other work only
    ever ran slower (up to 1.6x measured), and units alone on a core of one model agree within ~3%.
    Measured on other CPU models only: their mean, an estimate that errs either way."""
    like, same = _units_like(unit, units_dir)
    goal = {} if same else _loop_rates(speed_path)

    def rate_of(r: dict) -> float:
        return r["env_steps_per_s"] * _loop_ratio(goal, label(unit.config), label(unit_of(r).config))

    cpu = cpu_model()
    here = [rate_of(r) for r in like if r.get("machine", {}).get("cpu") == cpu]
    if here:
        rate = float(max(here))
    elif like:
        rate = float(np.mean([rate_of(r) for r in like]))
    else:
        rate = PRIOR_STEPS_PER_S.get(unit.config.algo, 30.0)
    return unit.config.max_steps / rate


def _loop_ratio(goal: dict[str, float], mine: str, theirs: str) -> float:
    """Label ``mine``'s training-loop rate over label ``theirs``'s in section (j) (``goal``), or that of
    their 512x512 twins (``QSM-mirror-T10-KL`` for ``QSM-mirror-T10-KL-256``) when the 256x256 labels are
    not measured there; 1 when neither pair is."""
    for a, b in ((mine, theirs), (mine.removesuffix("-256"), theirs.removesuffix("-256"))):
        if a in goal and b in goal:
            return goal[a] / goal[b]
    return 1.0


def _loop_rates(speed_path: str) -> dict[str, float]:
    """Env steps/s of the training loop per label, measured side by side (``bench_speed.py
    --sections=goal``), or {} without that file or section."""
    if not os.path.exists(speed_path):
        return {}
    with open(speed_path) as f:
        return json.load(f).get("goal", {})


def _units_like(unit: Unit, units_dir: str) -> tuple[list[dict], bool]:
    """The finished units whose rate estimates ``unit``'s, and whether they ran its agent settings."""
    records = [r for r in load_units(units_dir) if r["algo"] == unit.config.algo and r.get("env_steps_per_s")]
    same_agent = [r for r in records if unit_of(r).config.agent == unit.config.agent]
    if same_agent:
        return [r for r in same_agent if r["env"] == unit.config.env] or same_agent, True
    same_env = [r for r in records if r["env"] == unit.config.env]
    return [r for r in same_env if _widths(unit_of(r)) == _widths(unit)] or same_env, False


def _widths(unit: Unit) -> tuple:
    """The hidden sizes of the unit's networks (what sets most of an update's cost)."""
    agent = unit.config.agent
    return tuple(getattr(agent, f"{net}_hidden_dims", ()) for net in ("actor", "critic"))


def estimate_is_rough(unit: Unit, units_dir: str = UNITS_DIR) -> bool:
    """Whether no finished unit ran ``unit``'s agent settings: its estimate then borrows the rate of
    other settings of the algorithm (or the prior), off by the ratio of their costs per step where the
    speed benchmark's section (j) does not measure both (max-ent QSM's update costs 1.5x the paper's,
    results/speed.md)."""
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
    that learns its max-ent temperature, the record keeps its trajectory ("temperature"); with any
    ``train_rows``, it keeps every training metric at most ``TRAIN_POINTS`` times ("train": the critic's
    Q and loss, |grad_a Q|, a learned lam...), so a unit can be diagnosed after its run folder is gone."""
    extra = {}
    if getattr(unit.config.agent, "auto_temperature", False):
        rows = [{"step": r["step"], "temperature": r["temperature"]} for r in train_rows or () if "temperature" in r]
        extra["temperature"] = rows[:: max(1, len(rows) // 100)]
    if train_rows:
        extra["train"] = [_train_point(r) for r in train_rows[:: -(-len(train_rows) // TRAIN_POINTS)]]
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


TRAIN_POINTS = 50  # training-metric rows a unit file keeps (evenly spaced over the run)
_NOT_METRICS = ("step", "kind", "seed", "env_steps_per_s")


def _train_point(row: dict) -> dict:
    """One training-metric row as a unit file keeps it: the step and each metric to 4 significant digits."""
    metrics = {k: float(f"{v:.4g}") for k, v in row.items() if k not in _NOT_METRICS and isinstance(v, (int, float))}
    return {"step": row["step"], **metrics}


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
    segments = record_code_segments(workdir, resumed_from, code)
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


def record_code_segments(workdir: str, from_step: int, code: dict[str, Any]) -> list[dict]:
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

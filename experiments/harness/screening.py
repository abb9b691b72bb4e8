"""The screening for one QSM configuration a user can trust, off the walls and at SAC's level
(docs/variants.md, "Screening"): each candidate's four-peak bandit reward (``scale_bandit.py``), its
seed-0 return and share of actions at the walls on the three tasks where today's configurations
disagree most (learning-benchmark units), and its update cost against the paper's (``bench_speed.py``,
section variants). ``screening_table`` writes the table from those files alone."""

from __future__ import annotations

import json
import os

import numpy as np

from harness import benchmark

# A candidate: the label of its units, its agent in scale_bandit.py's AGENTS and the diffusion depth T
# of its bandit runs, its update's rate in bench_speed.py's results with the paper's update measured
# in the same section (section, its update, the paper's update), and what it is. The first is the
# paper's QSM.
CANDIDATES = (
    (
        "QSM",
        ("QSM", 5),
        ("variants", "update: reference (score_target=qsm)", "update: reference (score_target=qsm)"),
        "the paper's target (bang-bang: the reference)",
    ),
    (
        "QSM-mirror",
        ("QSM-mirror", 5),
        ("variants", "update: mirror, normalize_grad", "update: reference (score_target=qsm)"),
        "mirror target, anchored on replay actions, best of 8",
    ),
    (
        "QSM-mirror-policy",
        ("QSM-mirror-policy", 5),
        ("variants", "update: mirror, normalize_grad, anchor=policy", "update: reference (score_target=qsm)"),
        "mirror target, anchored on the policy's own samples (`--anchor=policy`), best of 8",
    ),
    (
        "QSM-mirror-T10",
        ("QSM-mirror", 10),
        ("depth", "T=10 QSM-mirror", "T=5 QSM"),
        "the mirror target with a chain of T = 10 (`--diffusion_steps=10`), best of 8",
    ),
    (
        "QSM-mirror-T10-KL",
        ("QSM-mirror-KL", 10),
        ("variants", "update: mirror, kl_bound, anchor=policy, T=10", "update: reference (score_target=qsm)"),
        "MPO's step at T = 10: the mirror target anchored on the policy's samples, its lam set by a KL trust region "
        "(`--kl_bound=0.1` per action dimension, `--anchor=policy`, raw grad_a Q), best of 8",
    ),
    (
        "QSM-maxent-samples",
        ("QSM-maxent-samples", 5),
        ("entropy", "max-ent, fixed temp, sample estimate, 2 samples", "reference (the paper)"),
        "max-ent QSM: the mirror target's lam is the soft critic's temperature, set automatically (SAC's rule) "
        "from the entropy of 2 chain samples per state (the estimate that sees the walls), best of 8",
    ),
)
# The same screening at SAC's width (benchmark.SCREEN_256): its rows repeat the 512x512 candidate's bandit
# cells (the bandit runs 64x64 networks) and leave the update cost to the 512x512 row.
CANDIDATES_256 = tuple(
    (f"{name}-256", bandit, None, f"{what}; at 256x256")
    for name, bandit, _, what in CANDIDATES
    if f"{name}-256" in benchmark.SCREEN_256
) + (
    (
        "QSM-mirror-T10-KL-next-256",
        ("QSM-mirror-KL-next", 10),
        None,
        "the KL candidate without the anchor's own chain (`--anchor=next`: the critic target's chain samples at "
        "the next states, the actor's step taken there); at 256x256",
    ),
    (
        "QSM-mirror-T10-KL-dual8-256",
        ("QSM-mirror-KL-dual8", 10),
        None,
        "the KL candidate with its dual read at 8 of the batch's states instead of 32 (`--kl_states=8`: a chain "
        "of 64 rows instead of 256); at 256x256",
    ),
    (
        "QSM-tanh-T10-KL-ent-256",
        ("QSM-tanh-KL-ent", 10),
        None,
        "the KL candidate with a tanh-squashed chain (`--squash=tanh`: a = tanh(u), no atoms at the walls) and an "
        "entropy-regularised step whose weight tau holds the entropy at -A by SAC's rule (`--tilt_entropy=1`); "
        "at 256x256",
    ),
    (
        "QSM-tanh-T10-KL-ent-in-256",
        ("QSM-tanh-KL-ent-in", 10),
        None,
        "the walls candidate with the KL dual's lam as its step's whole temperature (`--tilt_within_bound`: "
        "pi^kappa exp((Q + tau J) / lam), kappa = max(0, 1 - tau / lam), the step the trust region sizes); at 256x256",
    ),
    (
        "QSM-tanh-T10-KL-ent-cap-256",
        ("QSM-tanh-KL-ent-cap", 10),
        None,
        "the step inside the trust region with its temperature max(lam, tau) (`--tilt_max_temperature`: J's weight "
        "at most 1, where the step at lam alone diverged; past lam the max-ent policy exp((Q + tau J) / tau)); "
        "at 256x256",
    ),
    (
        "QSM-tanh-T10-KL-ent-bounded-256",
        ("QSM-tanh-KL-ent-bounded", 10),
        None,
        "the step inside the trust region with J's weight alone bounded (`--tilt_bounded_entropy`: "
        "pi^kappa exp(Q / lam + min(1, tau / lam) J), Q's weight the trust region's 1 / lam); at 256x256",
    ),
)
REFERENCES = ("SAC", "SAC-512")  # their seed-0 returns head the table
# The rule (docs/variants.md, "Screening"): a candidate below the best existing configuration within the
# goal's wall limit (the mirror variant: QSM as published is at the walls on every task) on two of the three
# tasks is dropped; the goal's reference at QSM's width is SAC-512, at 256x256 SAC.
BEST_EXISTING, GOAL_REFERENCE = "QSM-mirror", "SAC-512"
WIDTH_REFERENCES = {"512": (BEST_EXISTING, GOAL_REFERENCE), "256": (f"{BEST_EXISTING}-256", "SAC")}


def _references(label: str) -> tuple[str, str]:
    """The comparator and the goal's reference at ``label``'s width (labels ending in -256: 256x256)."""
    return WIDTH_REFERENCES["256" if label.endswith("-256") else "512"]


TASKS = ("Hopper-v4", "Walker2d-v4", "dm_control/walker-run-v0")
BANDIT = os.path.join("results", "screening.json")  # scale_bandit.py --out=results/screening.md
SPEED = os.path.join("results", "speed.json")
BANDIT_DIMS = (2, 17)
MARKERS = ("<!-- screening: begin (written by bench_learning.py --report) -->", "<!-- screening: end -->")


def _bandit_cell(runs: list[dict], agent: str, depth: int, dim: int) -> str:
    """Mean reward over the seeds (learned critic) and the mean number of optima held."""
    done = [r for r in runs if (r["agent"], r["dim"], r.get("depth", 5), r["critic"]) == (agent, dim, depth, "learned")]
    if not done:
        return "pending"
    reward, held = np.mean([r["reward"] for r in done]), np.mean([r["modes_held"] for r in done])
    return f"{reward:.2f} ({held:.1f} held, {len(done)} seed{'s' * (len(done) > 1)})"


def _seed0_units(records: list[dict]) -> dict[tuple[str, str], dict]:
    """The unit records at seed 0 and 100k env steps, by (label, env) (the first in load order)."""
    out: dict[tuple[str, str], dict] = {}
    for r in records:
        if r["seed"] == 0 and r["max_steps"] == 100_000:
            out.setdefault((benchmark.label(benchmark.unit_of(r).config), r["env"]), r)
    return out


def _task_cell(seed0: dict, label: str, env: str) -> str:
    """The seed-0 unit's final return at 100k env steps, and its share of action dimensions at the walls."""
    r = seed0.get((label, env))
    if r is None:
        return "not run (dropped)" if benchmark.dropped_why(label, 0) else "pending"
    wall = r["curve"][-1].get("wall_share")
    return f"{r['final_return']:.0f}" + (f" ({100 * wall:.0f}% walls)" if wall is not None else "")


def _verdict(seed0: dict, label: str) -> str:
    """The screening rule on the seed-0 units: dropped when below ``BEST_EXISTING`` on two of the
    ``TASKS``; with each finished task's return as a fraction of ``GOAL_REFERENCE``'s. The comparator at
    256x256 (the mirror variant there) is itself judged against the mirror variant at 512x512."""
    best_label, goal_label = _references(label)
    if label == best_label:
        best_label = BEST_EXISTING
    done = {}
    for env in TASKS:
        mine, best, goal = (seed0.get((name, env)) for name in (label, best_label, goal_label))
        if mine is not None and best is not None:
            done[_short(env)] = (mine["final_return"], best["final_return"], goal and goal["final_return"])
    below = [env for env, (mine, best, _) in done.items() if mine < best]
    if len(below) >= 2:
        verdict = f"dropped: below {best_label} on {', '.join(below)}"
    elif len(done) - len(below) >= len(TASKS) - 1:  # above on two of the three: the rule cannot drop it
        left = f" ({len(TASKS) - len(done)} task pending)" if len(done) < len(TASKS) else ""
        verdict = f"kept: above {best_label} on {len(done) - len(below)} of {len(TASKS)}{left}"
    elif benchmark.dropped_why(label, 0):
        return f"not run: left the queue ({len(done)} of {len(TASKS)} tasks; results/learning/README.md says why)"
    else:
        return f"pending ({len(done)} of {len(TASKS)} tasks)"
    ratios = ", ".join(f"{env} {mine / goal:.2f}" for env, (mine, _, goal) in done.items() if goal)
    return verdict + (f"; of {goal_label}'s return: {ratios}" if ratios else "")


def _step_cost(seed0: dict, label: str, speed: dict) -> str:
    """Time per env step against the goal's reference at ``label``'s width (the goal's cost limit is
    3x): measured side by side (``bench_speed.py --sections=goal``: the training loop of each,
    alternating), then from the units: the reference's training rate over the candidate's, mean over
    the ``TASKS`` where both seed-0 units ran on the same CPU model (coarse: each unit shares the
    machine with another)."""
    goal, reference = speed.get("goal", {}), _references(label)[1]
    bench = f"{goal[reference] / goal[label]:.2f}x" if label in goal and reference in goal else "pending"
    return f"{bench} (units: {_units_step_cost(seed0, label, reference)})"


def _units_step_cost(seed0: dict, label: str, reference: str) -> str:
    """The units' figure of ``_step_cost``."""
    ratios = []
    for env in TASKS:
        mine, goal = seed0.get((label, env)), seed0.get((reference, env))
        if mine and goal and mine["machine"]["cpu"] == goal["machine"]["cpu"] and mine["env_steps_per_s"] > 0:
            ratios.append(goal["env_steps_per_s"] / mine["env_steps_per_s"])
    if not ratios:
        return "pending"
    return f"{np.mean(ratios):.1f}x ({len(ratios)} task{'s' * (len(ratios) > 1)})"


def _short(env: str) -> str:
    return env.removeprefix("dm_control/").removesuffix("-v0")


def _cost(speed: dict, section: str, update: str, reference: str) -> str:
    """The paper's update rate over the candidate's, both from one bench_speed.py section (side by side)."""
    rates = speed.get(section, {})
    if update not in rates or reference not in rates:
        return "pending"
    return f"{_updates_per_s(rates[reference]) / _updates_per_s(rates[update]):.2f}x"


def _updates_per_s(entry: float | dict) -> float:
    """A section's rate: a number (section variants) or a record with ``updates_per_s`` (sections depth, entropy)."""
    return entry["updates_per_s"] if isinstance(entry, dict) else entry


def screening_table(units_dir: str, bandit_path: str = BANDIT, speed_path: str = SPEED) -> str:
    """The screening table: one row per ``REFERENCES`` and ``CANDIDATES`` label (pending cells say so)."""
    seed0 = _seed0_units(benchmark.load_units(units_dir))
    runs = []
    if os.path.exists(bandit_path):
        with open(bandit_path) as f:
            runs = list(json.load(f)["runs"].values())
    speed = {}
    if os.path.exists(speed_path):
        with open(speed_path) as f:
            speed = json.load(f)
    tasks = " | ".join(f"{_short(t)} (seed 0)" for t in TASKS)
    bandit = " | ".join(f"bandit d = {d}" for d in BANDIT_DIMS)
    lines = [
        f"| candidate | what | {bandit} | {tasks} | update cost vs the paper's | time per env step vs "
        "SAC at its width (SAC-512; -256 rows: SAC) | verdict |",
        "|---" * (4 + len(TASKS) + 3) + "|",
    ]
    for label in REFERENCES:
        cells = " | ".join(_task_cell(seed0, label, t) for t in TASKS)
        lines.append(f"| {label} | the reference | {' | '.join('-' for _ in BANDIT_DIMS)} | {cells} | - | - | - |")
    for label, (agent, depth), cost, what in CANDIDATES + CANDIDATES_256:
        bandit_cells = " | ".join(_bandit_cell(runs, agent, depth, d) for d in BANDIT_DIMS)
        cells = " | ".join(_task_cell(seed0, label, t) for t in TASKS)
        comparators = ("QSM", BEST_EXISTING)
        verdict = "-" if label in comparators else _verdict(seed0, label)
        costs = f"{_cost(speed, *cost) if cost else '-'} | {_step_cost(seed0, label, speed)}"
        lines.append(f"| {label} | {what} | {bandit_cells} | {cells} | {costs} | {verdict} |")
    return "\n".join(lines)

"""How QSM scales with the action dimension: the d-dimensional four-peak bandit (harness.bandit.scaled).

    python experiments/scale_bandit.py       # writes results/scale.md, scale.json and scale.png

For each d, agent and seed: the same update budget through each agent's public train_step, once with
its learned critic and once with the exact reward gradient in place of the critic (Q = r on this
one-step task), which separates the critic's error from the policy's. Reported: reward of 4096 policy
samples as a fraction of the optimum (1), optima held (mass >= 0.1 within one width of a peak), the
share of action dimensions at the walls (|a| > 0.98), and the uniform policy's reward for scale.

Runs already in the JSON file (same settings) are kept, so an interrupted sweep resumes; the
markdown says how many of the planned runs are done. The depth study (T = diffusion steps) is the same
sweep at two dimensions:

    python experiments/scale_bandit.py --dims=2,17 --depths=5,10,20,50 --agents=QSM,QSM-mirror,DQL \
        --out=results/depth.md --reuse=results/scale.json      # its T = 5 runs are the d-sweep's

One process per core: the same command with --shard=0/2 and --shard=1/2 (they share the files).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from harness import (
    bandit,  # noqa: E402
    provenance,  # noqa: E402
)
from harness.benchmark import (  # noqa: E402
    VARIANT_MAXENT_SAMPLES,
    VARIANT_MIRROR,
    VARIANT_MIRROR_KL,
    VARIANT_NORM,
    VARIANT_TANH_KL_ENT,
    VARIANT_TANH_KL_ENT_BOUNDED,
    VARIANT_TANH_KL_ENT_CAP,
    VARIANT_TANH_KL_ENT_IN,
)
from harness.files import write_results  # noqa: E402
from qsm_jax import QSMConfig  # noqa: E402
from qsm_jax.baselines.dql import DQLConfig  # noqa: E402
from qsm_jax.baselines.sac import SACConfig  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "results/scale.md", "Markdown report (JSON and PNG beside it).")
flags.DEFINE_string(
    "title", "QSM as the action dimension grows: the d-dimensional four-peak bandit", "The report's title."
)
flags.DEFINE_list("dims", ["2", "6", "17", "38"], "Action dimensions d.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_integer("updates", 2000, "Updates per run (every agent, every d).", lower_bound=1)
flags.DEFINE_list("agents", [], "Agents to run (default: every one of AGENTS).")
flags.DEFINE_list("depths", ["5"], "Diffusion depths T of the diffusion agents (SAC has none; it runs once).")
flags.DEFINE_float("time_budget", 0.0, "Minutes; no run starts after this (0 = none). Rerun to resume.", lower_bound=0)
for _name, _low in (("dims", 2), ("seeds", 0), ("depths", 1)):  # checked before any file is written
    flags.register_validator(
        _name,
        lambda values, low=_low: bool(values) and all(v.isdigit() and int(v) >= low for v in values),
        f"--{_name} must be comma-separated integers >= {_low}",
    )
flags.DEFINE_string(
    "shard", "0/1", "i/n: run every n-th planned run from the i-th, so n processes (one per core) share one sweep."
)
flags.DEFINE_list(
    "reuse", [], "JSON files of other sweeps whose runs (same key, same updates) count here instead of rerunning."
)

SMALL = {"actor_hidden_dims": (64, 64), "critic_hidden_dims": (64, 64)}
# Reference settings for every agent; the variants exactly as the learning benchmark runs them.
AGENTS = {
    "QSM": ("qsm", QSMConfig(**SMALL)),
    "QSM-mirror": ("qsm", QSMConfig(**SMALL, **VARIANT_MIRROR)),
    # A screening candidate (docs/variants.md, "Screening"): the mirror target anchored on the current
    # policy's own samples instead of replay actions.
    "QSM-mirror-policy": ("qsm", QSMConfig(**SMALL, **VARIANT_MIRROR, anchor="policy")),
    # Another: MPO's step, the mirror target on the raw grad_a Q anchored on the policy's own samples, its
    # lam learned by a KL trust region (the E-step dual).
    "QSM-mirror-KL": ("qsm", QSMConfig(**SMALL, **VARIANT_MIRROR_KL)),
    # The same, its anchor the critic target's chain samples at the next states (here s' = s: the bandit checks
    # that reusing those samples for the actor's step costs nothing).
    "QSM-mirror-KL-next": ("qsm", QSMConfig(**SMALL, **{**VARIANT_MIRROR_KL, "anchor": "next"})),
    # The same, its KL dual read at 8 states instead of 32 (here every state is the same one: the bandit checks
    # that 64 chain samples per update still set lam).
    "QSM-mirror-KL-dual8": ("qsm", QSMConfig(**SMALL, **{**VARIANT_MIRROR_KL, "kl_states": 8})),
    # Another: the KL candidate with a tanh-squashed chain and an entropy-regularised step (tau by SAC's rule).
    "QSM-tanh-KL-ent": ("qsm", QSMConfig(**SMALL, **VARIANT_TANH_KL_ENT)),
    # The same with the KL dual's lam as the step's whole temperature (tau taken out of the anchor's share).
    "QSM-tanh-KL-ent-in": ("qsm", QSMConfig(**SMALL, **VARIANT_TANH_KL_ENT_IN)),
    # The same with the step's temperature max(lam, tau): J's weight at most 1 (the one above diverged on Hopper).
    "QSM-tanh-KL-ent-cap": ("qsm", QSMConfig(**SMALL, **VARIANT_TANH_KL_ENT_CAP)),
    # Or J's weight alone bounded at 1, Q's kept at the trust region's 1 / lam.
    "QSM-tanh-KL-ent-bounded": ("qsm", QSMConfig(**SMALL, **VARIANT_TANH_KL_ENT_BOUNDED)),
    # Another: max-ent QSM, its temperature (the mirror target's lam) set automatically from the entropy
    # read off chain samples (the estimate that sees the walls).
    "QSM-maxent-samples": ("qsm", QSMConfig(**SMALL, **VARIANT_MAXENT_SAMPLES)),
    "QSM-norm": ("qsm", QSMConfig(**SMALL, **VARIANT_NORM)),
    "DQL": ("dql", DQLConfig(**SMALL)),
    "SAC": ("sac", SACConfig(**SMALL)),
}
CRITICS = ("learned", "exact")


def run_key(agent: str, dim: int, depth: int, seed: int, critic: str) -> str:
    return f"{agent}|d{dim}|T{depth}|s{seed}|{critic}"


def one_run(agent: str, dim: int, depth: int, seed: int, critic: str, updates: int) -> dict:
    algo, config = AGENTS[agent]
    if hasattr(config, "diffusion_steps"):
        config = dataclasses.replace(config, diffusion_steps=depth)
    start = time.time()
    _, s = bandit.train_on_bandit(
        algo, config, updates=updates, seed=seed, bandit=bandit.scaled(dim), exact_gradient=critic == "exact"
    )
    return {
        "agent": agent,
        "dim": dim,
        "depth": depth,
        "seed": seed,
        "critic": critic,
        "reward": s["mean_reward"],
        "uniform_reward": s["uniform_reward"],
        "modes_held": s["modes_held"],
        "dims_at_walls": s["dims_at_walls"],
        "seconds": round(time.time() - start, 1),
    }


def _runs_of(report: dict, agent: str, dim: int, critic: str, depth: int = 5) -> list[dict]:
    return [
        r
        for r in report["runs"].values()
        if (r["agent"], r["dim"], r["critic"], r.get("depth", 5)) == (agent, dim, critic, depth)
    ]


def _stat(runs: list[dict], field: str, fmt: str = "{:.2f}", spread: bool = True) -> str:
    """Mean over the runs [min, max] (count), or "pending"."""
    if not runs:
        return "pending"
    v = [r[field] for r in runs]
    mean = fmt.format(np.mean(v))
    return f"{mean} [{fmt.format(min(v))}, {fmt.format(max(v))}] ({len(v)})" if spread else mean


def _row(report: dict, d: int, t: int, agent: str) -> str:
    cells = {c: _runs_of(report, agent, d, c, t) for c in CRITICS}
    t_text = "-" if agent == "SAC" else t
    if not any(cells.values()):
        return f"| {d} | {t_text} | {agent} | pending | pending | - | - | - |"
    uniform = np.mean([r["uniform_reward"] for c in CRITICS for r in cells[c]])
    held = " / ".join(_stat(cells[c], "modes_held", "{:.1f}", spread=False) for c in CRITICS)
    walls = " / ".join(_stat(cells[c], "dims_at_walls", spread=False) for c in CRITICS)
    return (
        f"| {d} | {t_text} | {agent} | {_stat(cells['learned'], 'reward')} | {_stat(cells['exact'], 'reward')} "
        f"| {held} | {walls} | {uniform:.3f} |"
    )


def _rows(report: dict) -> list[tuple[int, int, str]]:
    """(d, T, agent) of every table row: each d, each depth, each agent (SAC once per d)."""
    depths = report.get("depths", [5])
    return [
        (d, t, a)
        for d in sorted(report["dims"])
        for t in depths
        for a in report.get("agents", list(AGENTS))
        if a != "SAC" or t == depths[0]
    ]


def render(report: dict) -> str:
    runs = report["runs"]
    planned = len(report["plan"])
    depths = report.get("depths", [5])
    lines = [
        f"# {report.get('title', FLAGS.title)}",
        "",
        f"- command: `{report['command']}` (resumes; runs kept from commits: {', '.join(report['commits'])})",
        f"- {report['updates']} updates per run, 64x64 networks, batch 256, diffusion depth T in "
        f"{', '.join(map(str, depths))}; {len(runs)} of {planned} planned runs "
        f"done{'' if len(runs) == planned else ' (PARTIAL: the others are pending)'}",
        "- reward: mean reward of 4096 policy samples (the optimum is 1); held: optima with mass >= 0.1 within "
        "one width; walls: share of action dimensions with |a| > 0.98; exact: the critic replaced by the "
        "reward (exact grad_a Q)",
        "- cells: mean over the seeds done [min, max], then the seeds counted",
        "",
        "| d | T | agent | reward, learned critic | reward, exact gradient | held (learned / exact) "
        "| walls (learned / exact) | uniform policy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d, t, agent in _rows(report):
        lines.append(_row(report, d, t, agent))
    lines += ["", f"![reward vs d]({os.path.splitext(os.path.basename(FLAGS.out))[0]}.png)", ""]
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    """Reward vs d (one depth), or, for a depth study, reward vs T in one panel per d."""
    dims, depths = sorted({int(d) for d in report["dims"]}), report.get("depths", [5])
    if len(depths) > 1:
        fig, axes = plt.subplots(1, len(dims), figsize=(4.2 * len(dims), 4.2), squeeze=False)
        for ax, d in zip(axes[0], dims, strict=True):
            _curves(ax, report, depths, lambda t, d=d: (d, t))
            ax.set_xlabel("diffusion depth T")
            ax.set_title(f"d = {d}", fontsize=10)
        fig.suptitle("Four-peak bandit: policy quality vs diffusion depth", fontsize=10)
    else:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        axes = [[ax]]
        _curves(ax, report, dims, lambda d: (d, depths[0]))
        ax.set_xlabel("action dimension d")
        ax.set_title("Four-peak bandit: policy quality vs action dimension", fontsize=10)
    for ax in axes[0]:
        ax.set_ylabel("reward (optimum 1)")
        ax.set_ylim(-0.02, 1.02)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if len(axes[0]) > 1:  # every panel has the same lines; take the fullest one's
        handles, labels = max((ax.get_legend_handles_labels() for ax in axes[0]), key=lambda hl: len(hl[1]))
    fig.legend(handles, labels, fontsize=7, ncol=4, loc="lower center")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _curves(ax, report: dict, xs_all: list[int], cell) -> None:
    """One line per (agent, critic): mean reward at each x (``cell(x)`` = (d, T)) with runs done."""
    for i, agent in enumerate(AGENTS):
        for critic, style in zip(CRITICS, ("-", "--"), strict=True):
            xs, ys = [], []
            for x in xs_all:
                d, t = cell(x)
                v = [r["reward"] for r in _runs_of(report, agent, d, critic, t)]
                if v:
                    xs.append(x)
                    ys.append(np.mean(v))
            if xs:
                label = f"{agent} ({critic} critic)" if critic == "learned" else f"{agent} (exact gradient)"
                ax.plot(xs, ys, style, marker="o", color=f"C{i}", label=label)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(xs_all, [str(x) for x in xs_all])


def main(argv):
    del argv
    commit = provenance.commit_label()
    json_path = os.path.splitext(FLAGS.out)[0] + ".json"
    dims, seeds = [int(d) for d in FLAGS.dims], [int(s) for s in FLAGS.seeds]
    # Seed-major: a partial sweep covers every d and agent early.
    unknown = set(FLAGS.agents) - set(AGENTS)
    if unknown:
        sys.exit(f"scale_bandit.py: error: --agents: {', '.join(sorted(unknown))} not one of {', '.join(AGENTS)}")
    agents = FLAGS.agents or list(AGENTS)
    depths = [int(t) for t in FLAGS.depths]
    plan = [
        run_key(a, d, t, s, c)
        for s in seeds
        for d in dims
        for t in depths
        for a in agents
        for c in CRITICS
        if a != "SAC" or t == depths[0]
    ]
    shard, shards = _parse_shard(FLAGS.shard)
    runs = _kept_runs([*FLAGS.reuse, json_path], plan)
    report = {"command": _command(), "title": FLAGS.title, "updates": FLAGS.updates}
    report.update(dims=dims, depths=depths, agents=agents, plan=plan, runs=runs)
    deadline = time.time() + 60 * FLAGS.time_budget if FLAGS.time_budget > 0 else float("inf")
    _save(report, commit)  # pending rows first: the file always exists
    for key in plan[shard::shards]:
        if key in runs:
            continue
        if time.time() >= deadline:
            print("time budget spent; rerun to resume", flush=True)
            break
        agent, d, t, s, critic = key.split("|")
        runs[key] = {**one_run(agent, int(d[1:]), int(t[1:]), int(s[1:]), critic, FLAGS.updates), "commit": commit}
        print(key, f"reward {runs[key]['reward']:.3f}", f"({runs[key]['seconds']} s)", flush=True)
        _save(report, commit)


def _command() -> str:
    """The command that reproduces the whole file: this one without its --shard and --time_budget."""
    args = [a for a in sys.argv if not a.startswith(("--shard", "--time_budget"))]
    return "python " + " ".join(args)


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        sys.exit(f"scale_bandit.py: error: --shard must be i/n with 0 <= i < n (e.g. 1/2), got {text!r}")
    return i, n


def _kept_runs(json_paths: list[str], plan: list[str]) -> dict:
    """Planned runs already in ``json_paths`` at the same --updates (the others are dropped)."""
    runs = {}
    for path in json_paths:
        if not os.path.exists(path):
            continue
        with open(path) as f:
            kept = json.load(f)
        if kept.get("updates") == FLAGS.updates:
            runs.update({k: v for k, v in kept["runs"].items() if k in plan})
    return runs


def _save(report: dict, commit: str) -> None:
    """Writes the report, with the runs other shards wrote meanwhile (under a lock, so none is lost)."""
    json_path = os.path.splitext(FLAGS.out)[0] + ".json"
    os.makedirs(os.path.dirname(json_path) or ".", exist_ok=True)
    with open(json_path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        report["runs"].update(
            {k: v for k, v in _kept_runs([json_path], report["plan"]).items() if k not in report["runs"]}
        )
        report["commits"] = sorted({v["commit"] for v in report["runs"].values()} | {commit})
        plot(report, os.path.splitext(FLAGS.out)[0] + ".png")
        write_results(FLAGS.out, report, render(report))


if __name__ == "__main__":
    app.run(main)

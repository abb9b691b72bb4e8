"""The learning-benchmark report, rebuilt from unit files alone (``harness.benchmark``).

``write_report(units_dir, out_dir, suites)`` writes ``out_dir/README.md`` (one table per suite: per
env and algorithm the seeds done, the final return with a 95% t-interval over seeds, the IQM of the
final evaluation episodes, each seed's final return and area under the curve, public figures at the
same budget, and the pending units by name), one curve plot per (suite, env) with the mean over
seeds and a 95% bootstrap band, and, once every algorithm of a suite has >= 3 seeds on every env,
an aggregate figure: IQM of SAC-normalised final returns with stratified bootstrap 95% CIs and the
probability that QSM improves on SAC (``rliable``, Agarwal et al., NeurIPS 2021).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections import Counter, defaultdict

import matplotlib
import numpy as np
import scipy.stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rliable import library as rly  # noqa: E402

from harness import benchmark, screening  # noqa: E402

BOOTSTRAP_REPS = 5_000
MIN_SEEDS_AGGREGATE = 3

# Published mean returns at the same env-step budget (docs/algorithm.md, "Public reference numbers";
# the authors' raw result files): (env, label, max_steps) -> return.
PUBLIC = {("Walker2d-v4", "SAC", 100_000): 690.0}
REFERENCE = "SAC"  # the aggregate normalises by, and compares every other label with, this one
# What `make report` rebuilds: results/learning/README.md with these suites, and the generated blocks
# (between markers) of these files; tests/test_generated.py checks that the committed files equal it.
REPORTED_SUITES = ("core100k", "variants100k", "dmc100k", "maxent100k", "scale100k", "plus100k")
REPORTED_DOCS = ("README.md", "docs/variants.md")


# interval_estimates' results by (func, seed, reps, the scores' bytes): the report bootstraps the same
# scores in several tables (a third of its calls are new), and each result depends on these alone.
_BOOTSTRAPPED: dict[tuple, tuple] = {}


def _array_key(a: np.ndarray) -> tuple:
    a = np.asarray(a)
    return a.dtype.str, a.shape, a.tobytes()


def interval_estimates(scores: dict, func, seed: int = 0) -> tuple[dict, dict]:
    """``rliable``'s stratified bootstrap (95% percentile CIs), seeded for reproducible reports.

    rliable draws its resampling indices from NumPy's global generator (``np.random.choice``), not
    from the ``random_state`` it is handed, so that one is seeded here too (and restored after). Each
    entry of ``scores`` is resampled from the same seed on its own, so that an algorithm's interval
    does not depend on which other algorithms a suite holds; the same entry, function and seed
    again is the result already computed (``_BOOTSTRAPPED``)."""
    point, ci = {}, {}
    saved = np.random.get_state()
    try:
        for name, score in scores.items():
            key = (
                func,
                seed,
                BOOTSTRAP_REPS,
                *(_array_key(a) for a in (score if isinstance(score, tuple) else (score,))),
            )
            if key not in _BOOTSTRAPPED:
                np.random.seed(seed)
                with warnings.catch_warnings():  # rliable hands arch a RandomState, which arch calls deprecated
                    warnings.simplefilter("ignore", FutureWarning)
                    p, c = rly.get_interval_estimates(
                        {name: score}, func, reps=BOOTSTRAP_REPS, random_state=np.random.RandomState(seed)
                    )
                _BOOTSTRAPPED[key] = (p[name], c[name])
            point[name], ci[name] = copy.deepcopy(_BOOTSTRAPPED[key])
    finally:
        np.random.set_state(saved)
    return point, {
        k: np.reshape(v, (2, -1)).squeeze(-1) if np.ndim(v) == 2 and np.shape(v)[1] == 1 else v for k, v in ci.items()
    }


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """``rliable.metrics.probability_of_improvement`` without SciPy in the loop: same value, bit for bit.

    P(X > Y) averaged over tasks, per task the Mann-Whitney U of X over Y (pairs with x > y, plus
    half the ties) divided by the number of pairs. rliable calls ``scipy.stats.mannwhitneyu`` once
    per task per bootstrap resample, which made this statistic ~90% of the report's time; U is an
    integer or half-integer, so counting pairs here gives the same float.

    Args:
      scores_x: (runs_x, tasks); scores_y: (runs_y, tasks).
    """
    x, y = scores_x[:, None, :], scores_y[None, :, :]  # (runs_x, runs_y, tasks)
    u = np.sum(x > y, axis=(0, 1)) + 0.5 * np.sum(x == y, axis=(0, 1))
    return np.mean(u / (scores_x.shape[0] * scores_y.shape[0]))


def iqm(scores: np.ndarray) -> float:
    """``rliable.metrics.aggregate_iqm`` without SciPy's wrapper: the same value, bit for bit.

    The 25% trimmed mean over every entry, computed as ``scipy.stats.trim_mean(scores, 0.25, axis=None)``
    computes it (the same ``np.partition`` and mean); SciPy's argument handling around it took ~75%
    of the report's time, one call per bootstrap resample.

    Args:
      scores: (runs, tasks) float64, no NaN.
    """
    flat = np.ravel(scores)
    cut = int(0.25 * flat.shape[0])
    return np.mean(np.partition(flat, (cut, flat.shape[0] - cut - 1))[cut : flat.shape[0] - cut])


def seed_final(record: dict) -> float:
    """A unit's final return: the mean over the episodes of its last evaluation."""
    return float(np.mean(record["curve"][-1]["returns"]))


def seed_auc(record: dict) -> float:
    """Area under a unit's evaluation curve (episode means) divided by its step span: the mean
    evaluation return over training."""
    steps = np.array([c["step"] for c in record["curve"]], float)
    means = np.array([np.mean(c["returns"]) for c in record["curve"]])
    if len(steps) < 2:
        return float(means[-1])
    return float(np.trapezoid(means, steps) / (steps[-1] - steps[0]))


def cell_stats(records: list[dict]) -> dict:
    """Statistics of one (env, algo) cell over its seeds.

    Returns:
      ``n`` (seeds), ``seeds``, ``finals`` and ``aucs`` (per seed, in seed order), ``mean`` (of the
      finals), ``ci`` (95% Student-t interval of that mean over seeds; None with one seed), ``iqm``
      (interquartile mean of every final evaluation episode of every seed, as ``rliable`` computes
      it: the 25%-trimmed mean) and ``auc`` (mean over seeds).
    """
    records = sorted(records, key=lambda r: r["seed"])
    finals = np.array([seed_final(r) for r in records])
    aucs = np.array([seed_auc(r) for r in records])
    n = len(finals)
    ci = None
    if n >= 2:
        half = scipy.stats.t.ppf(0.975, n - 1) * finals.std(ddof=1) / np.sqrt(n)
        ci = (float(finals.mean() - half), float(finals.mean() + half))
    episodes = np.concatenate([r["curve"][-1]["returns"] for r in records])
    return {
        "n": n,
        "seeds": [r["seed"] for r in records],
        "finals": finals.tolist(),
        "aucs": aucs.tolist(),
        "mean": float(finals.mean()),
        "ci": ci,
        "iqm": float(iqm(episodes)),
        "auc": float(aucs.mean()),
    }


def _curves(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Common evaluation steps and per-seed episode-mean returns there, (seeds, steps)."""
    steps = sorted(set.intersection(*({c["step"] for c in r["curve"]} for r in records)))
    curves = np.array([[np.mean(c["returns"]) for c in r["curve"] if c["step"] in steps] for r in records])
    return np.array(steps), curves


def fit_title(fig, title: str, fontsize: float = 11.0) -> None:
    """Sets ``title`` as the figure's suptitle, shrinking its font until it fits the figure's width."""
    text = fig.suptitle(title, fontsize=fontsize)
    renderer = fig.canvas.get_renderer()
    while text.get_window_extent(renderer).width > 0.98 * fig.bbox.width and text.get_fontsize() > 6:
        text.set_fontsize(text.get_fontsize() - 0.5)


def _mean_over_runs(scores: np.ndarray) -> np.ndarray:
    """(runs, 1, steps) -> (steps,): the curve's mean over runs (a named function, so that a unit's curves
    in several suites are bootstrapped once: ``interval_estimates`` keys its results by function)."""
    return scores.mean(axis=(0, 1))


def _plot_env(path: str, env: str, cells: dict[str, list[dict]], title: str) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (algo, records) in enumerate(cells.items()):
        steps, curves = _curves(records)
        mean = curves.mean(0)
        ax.plot(steps, mean, color=f"C{i}", label=f"{algo} ({len(records)} seed{'s' * (len(records) > 1)})")
        if len(records) >= 2:  # 95% bootstrap band of the mean over seeds, per step
            _, band = interval_estimates({algo: curves[:, None, :]}, _mean_over_runs)
            ax.fill_between(steps, band[algo][0], band[algo][1], color=f"C{i}", alpha=0.2)
    fit_title(fig, title)
    ax.set_xlabel("env steps")
    ax.set_ylabel("evaluation return (mean over seeds, 95% bootstrap band)", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def aggregate(
    cells: dict[tuple[str, str], list[dict]], envs: list[str], algos: list[str], reference: str = REFERENCE
) -> dict | None:
    """IQM of SAC-normalised final returns over (seeds x envs) with stratified bootstrap CIs, and
    P(X > SAC) (``rliable``), over the algorithms with >= 3 seeds on every env (``algos`` of the
    result; the others are its ``pending``), once SAC and at least one other are among them; else None.

    Scores are normalised per env by the mean final return of SAC there, so SAC's IQM is near 1
    and a score of 1.2 means 20% above SAC's mean. Runs are matched by seed rank within each env.
    ``reference`` names the label that plays SAC's part (e.g. ``SAC-512`` at QSM's width).
    """
    complete = [a for a in algos if all(len(cells.get((e, a), [])) >= MIN_SEEDS_AGGREGATE for e in envs)]
    if reference not in complete or len(complete) < 2:
        return None
    pending, algos = [a for a in algos if a not in complete], complete
    runs = min(len(cells[(e, a)]) for e in envs for a in algos)
    scale = {e: abs(np.mean([seed_final(r) for r in cells[(e, reference)]])) for e in envs}
    scores = {
        a: np.array(
            [[seed_final(r) / scale[e] for r in sorted(cells[(e, a)], key=lambda r: r["seed"])[:runs]] for e in envs]
        ).T
        for a in algos
    }  # (runs, envs)
    iqm_point, iqm_ci = interval_estimates(scores, iqm)
    pairs = {a: (scores[a], scores[reference]) for a in algos if a != reference}
    poi, poi_ci = interval_estimates(pairs, probability_of_improvement, seed=1)
    return {
        "reference": reference,
        "algos": algos,
        "pending": pending,
        "runs": runs,
        "scores": scores,
        "iqm": iqm_point,
        "iqm_ci": iqm_ci,
        "poi": poi,
        "poi_ci": poi_ci,
    }


def _plot_aggregate(path: str, agg: dict, algos: list[str], title: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.6 * len(algos) + 1.6), squeeze=False)
    ax = axes[0, 0]
    for i, a in enumerate(algos):
        lo, hi = agg["iqm_ci"][a]
        ax.barh(i, hi - lo, left=lo, color=f"C{i}", alpha=0.6, height=0.6)
        ax.plot([agg["iqm"][a]] * 2, [i - 0.3, i + 0.3], color="k")
    ax.set_yticks(range(len(algos)), algos)
    ax.set_xlabel("IQM of SAC-normalised final return (95% CI)")
    ax.grid(axis="x", alpha=0.3)
    ax = axes[0, 1]
    names = list(agg["poi"])
    for i, n in enumerate(names):
        lo, hi = agg["poi_ci"][n]
        ax.barh(i, float(hi - lo), left=float(lo), color="C7", alpha=0.6, height=0.6)
        ax.plot([agg["poi"][n]] * 2, [i - 0.3, i + 0.3], color="k")
    ax.axvline(0.5, color="k", ls="--", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_yticks(range(len(names)), [f"P({n} > {REFERENCE})" for n in names])
    ax.set_xlabel("probability of improvement (95% CI)")
    fit_title(fig, title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(x: float) -> str:
    return f"{x:.0f}"


def _settings(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def main_cpu(records: list[dict]) -> str | None:
    """The CPU model most of ``records`` ran on (None without records): costs are compared on one model."""
    cpus = [r["machine"]["cpu"] for r in records]
    return max(dict.fromkeys(cpus), key=cpus.count) if cpus else None


def _rate(records: list[dict], cpu: str | None) -> str:
    """The fastest of ``records``' training rates (env steps/s) on ``cpu``: a unit alone on its core
    (others shared it at times and only ever ran slower), "-" if none ran there."""
    rates = [r["env_steps_per_s"] for r in records if r["machine"]["cpu"] == cpu and r.get("env_steps_per_s")]
    return f"{max(rates):.1f}" if rates else "-"


def _walls(records: list[dict]) -> str:
    """Per seed, the share of final-evaluation action dimensions with |a| > 0.99 ("-": not measured)."""
    shares = [r["curve"][-1].get("wall_share") for r in records]
    if all(w is None for w in shares):
        return "-"
    return ", ".join("-" if w is None else f"{100 * w:.0f}%" for w in shares)


def temperature_lines(cells: dict, envs: list[str], algos: list[str]) -> list[str]:
    """The automatic temperature's trajectory of the units that learn it: per seed, its value at a
    quarter, half and the end of training (from the unit's "temperature" record)."""
    lines = []
    for env in envs:
        for algo in algos:
            for r in cells.get((env, algo), []):
                path = r.get("temperature") if isinstance(r, dict) else None
                if not path:
                    continue
                marks = [path[min(len(path) - 1, int(f * len(path)))] for f in (0.0, 0.25, 0.5, 1.0)]
                text = " -> ".join(f"{m['temperature']:.3g} ({m['step'] // 1000}k)" for m in marks)
                lines.append(f"| {env} | {algo} | {r['seed']} | {text} |")
    if not lines:
        return []
    head = ["", "Automatic temperature over training (max-ent QSM):", "", "| env | algorithm | seed | temperature |"]
    return head + ["|---|---|---|---|"] + lines


def suite_cells(name: str, units_dir: str) -> tuple[list, list[str], list[str], dict, dict]:
    """Suite ``name``'s units, envs and labels (in suite order) and its unit files in ``units_dir``:
    ``cells`` maps (env, label) to the records done, ``pending`` to the units not run yet."""
    units = benchmark.suite_units(name)
    records = {r["key"]: r for r in benchmark.load_units(units_dir)}
    envs = list(dict.fromkeys(u.config.env for u in units))
    algos = list(dict.fromkeys(benchmark.label(u.config) for u in units))
    cells, pending = defaultdict(list), defaultdict(list)
    for u in units:
        (cells if u.key in records else pending)[(u.config.env, benchmark.label(u.config))].append(
            records.get(u.key, u)
        )
    return units, envs, algos, cells, pending


def suite_section(name: str, units_dir: str, out_dir: str) -> str:
    """The markdown section of one suite: its table, plots and aggregate; writes the plots into ``out_dir``."""
    units, envs, algos, cells, pending = suite_cells(name, units_dir)
    lines = _table_lines(name, units, cells, pending, envs, algos)
    lines += temperature_lines(cells, envs, algos)
    names = [
        f"{a} = {a.split('-')[0]} with {_settings(benchmark.VARIANTS[a])}" for a in algos if a in benchmark.VARIANTS
    ]
    if names:
        lines += ["", f"QSM = QSM as published (the reference settings); {'; '.join(names)}."]
    lines += _dropped_lines(pending)
    lines.append("")
    for env in envs:
        env_cells = {a: cells[(env, a)] for a in algos if cells.get((env, a))}
        if not env_cells:
            lines.append(f"{env}: no finished unit yet (plot pending).\n")
            continue
        png = f"{name}_{env.replace('/', '-')}.png"
        _plot_env(os.path.join(out_dir, png), env, env_cells, f"{name}: {env}")
        lines.append(f"![{env}]({png})\n")
    lines += _aggregate_lines(name, cells, envs, algos, out_dir)
    lines += _width_lines(width_pairs(units, cells, envs, algos))
    lines += _arm_lines(width_arms(units, cells, envs, algos))
    if name == GOAL_SUITE:
        lines += _goal_lines(goal_check(units, cells, envs, algos, benchmark.SPEED_PATH))
    return "\n".join(lines)


def _dropped_lines(pending: dict) -> list[str]:
    """One line per group of the suite's units that left the queue (``benchmark.DROPPED``), with why."""
    reasons = defaultdict(list)
    for (env, algo), units in pending.items():
        for u in units:
            if (why := benchmark.dropped_reason(u)) is not None:
                reasons[(algo, why)].append(f"{env} seed {u.config.seed}")
    return (
        [
            "",
            *(f"Not queued, {algo} ({', '.join(where)}): {why}." for (algo, why), where in reasons.items()),
        ]
        if reasons
        else []
    )


def _table_lines(name: str, units: list, cells: dict, pending: dict, envs: list, algos: list) -> list[str]:
    """The suite's heading and its table: one row per (env, algorithm), done seeds and pending ones."""
    steps = sorted({u.config.max_steps for u in units})
    done = sum(len(v) for v in cells.values())
    cpu = main_cpu([r for recs in cells.values() for r in recs])
    lines = [
        f"## Suite `{name}`: {len(units)} units, {done} done, {len(units) - done} pending",
        "",
        f"{', '.join(envs)} x {'; '.join(algos)} x seeds "
        f"{sorted({u.config.seed for u in units})} x {', '.join(str(s) for s in steps)} env steps, "
        "the same settings on every task. Final return = mean over the episodes of the last evaluation; "
        "95% CI = Student-t interval of the mean over seeds; IQM = interquartile mean of every final episode "
        "of every seed; AUC = mean evaluation return over training (area under the curve / steps); at the walls = "
        "share of the final evaluation's action dimensions with |a| > 0.99 (a bang-bang policy: ~100%; "
        "'-' for units run before it was measured); env steps/s = the cost: the fastest seed's training rate, "
        f"one unit per core, on the CPU most of the suite's units ran on ({cpu or 'none yet'}; '-': none of the "
        "cell's units ran there).",
        "",
        "| env | algorithm | seeds done | final return, mean [95% CI] | IQM | final return per seed | AUC per seed "
        "| env steps/s | at the walls, final | public, same budget | pending |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for env in envs:
        for algo in algos:
            recs, pend = cells.get((env, algo), []), pending.get((env, algo), [])
            budget = max(u.config.max_steps for u in units if (u.config.env, benchmark.label(u.config)) == (env, algo))
            public = PUBLIC.get((env, algo, budget))
            public = f"{public:.0f} ({algo}, docs/algorithm.md)" if public is not None else "-"
            queued = [u for u in pend if benchmark.dropped_reason(u) is None]
            pend_text = ", ".join(f"seed {u.config.seed}" for u in queued) or "-"
            if len(queued) < len(pend):
                dropped = ", ".join(f"{u.config.seed}" for u in pend if u not in queued)
                pend_text = (pend_text + "; " if queued else "") + f"seed {dropped} not queued (below)"
            if not recs:
                lines.append(f"| {env} | {algo} | 0 | pending | - | - | - | - | - | {public} | {pend_text} |")
                continue
            s = cell_stats(recs)
            ci = f"[{_fmt(s['ci'][0])}, {_fmt(s['ci'][1])}]" if s["ci"] else "[one seed: no CI]"
            per_seed = ", ".join(f"{_fmt(f)} (s{sd})" for f, sd in zip(s["finals"], s["seeds"], strict=True))
            aucs = ", ".join(_fmt(a) for a in s["aucs"])
            lines.append(
                f"| {env} | {algo} | {s['n']} | {_fmt(s['mean'])} {ci} | {_fmt(s['iqm'])} | {per_seed} "
                f"| {aucs} | {_rate(recs, cpu)} | {_walls(recs)} | {public} | {pend_text} |"
            )
    return lines


def widths(units: list) -> dict[str, str]:
    """Each label's network width (its actor's hidden sizes), e.g. ``{"QSM": "512x512", "SAC": "256x256"}``."""
    return {benchmark.label(u.config): "x".join(map(str, u.config.agent.actor_hidden_dims)) for u in units}


def width_pairs(units: list, cells: dict, envs: list, algos: list) -> list[dict]:
    """The suite's QSM configurations each against the SAC of its own network width, once the suite
    runs SAC at more than one width (the width arms, ``benchmark.WIDTH_512``/``WIDTH_256``).

    Returns:
      Per width (narrowest first): ``width``, ``reference`` (that SAC's label), ``algos`` (the QSM
      labels at that width), ``agg`` (``aggregate`` against the reference, None while pending) and
      ``done`` (label -> (units done, units in the suite)).
    """
    width = widths(units)
    algo_of = {benchmark.label(u.config): u.config.algo for u in units}
    sacs = {width[a]: a for a in algos if algo_of[a] == "sac"}
    if len(sacs) < 2:
        return []
    total = Counter(benchmark.label(u.config) for u in units)
    out = []
    for w, ref in sorted(sacs.items(), key=lambda item: int(item[0].split("x")[0])):
        qsms = [a for a in algos if width[a] == w and algo_of[a] == "qsm"]
        if not qsms:
            continue
        done = {a: (sum(len(cells.get((e, a), [])) for e in envs), total[a]) for a in [ref, *qsms]}
        out.append(
            {
                "width": w,
                "reference": ref,
                "algos": qsms,
                "agg": aggregate(cells, envs, [ref, *qsms], ref),
                "done": done,
            }
        )
    return out


def _iqm_poi(agg: dict, algo: str) -> str:
    """Two table cells: ``algo``'s IQM and P(``algo`` > the reference), each with its 95% CI."""
    (lo, hi), (plo, phi) = agg["iqm_ci"][algo], agg["poi_ci"][algo]
    iqm, poi = f"{agg['iqm'][algo]:.2f}", f"{float(agg['poi'][algo]):.2f}"
    return f"{iqm} [{lo:.2f}, {hi:.2f}] | {poi} [{float(plo):.2f}, {float(phi):.2f}]"


def _width_lines(pairs: list[dict]) -> list[str]:
    """The suite's table at equal width (``width_pairs``)."""
    if not pairs:
        return []
    lines = [
        "At equal width (each QSM configuration normalised by, and compared with, the SAC of its own network "
        f"width; {MIN_SEEDS_AGGREGATE} seeds on every env, rliable):\n",
        "| width | algorithm | against | IQM [95% stratified bootstrap CI] | P(algorithm > against) [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for pair in pairs:
        agg, ref = pair["agg"], pair["reference"]
        for a in pair["algos"]:
            if agg is None or a not in agg["algos"]:
                left = [f"{b} {d} of {n} units" for b, (d, n) in pair["done"].items() if b in (a, ref) and d < n]
                lines.append(f"| {pair['width']} | {a} | {ref} | pending ({', '.join(left)}) | - |")
                continue
            lines.append(f"| {pair['width']} | {a} | {ref} | {_iqm_poi(agg, a)} |")
    return [*lines, ""]


def _aggregate_lines(name: str, cells: dict, envs: list, algos: list, out_dir: str) -> list[str]:
    """The rliable aggregate over the suite's envs (and its plot), or why it is pending."""
    agg = aggregate(cells, envs, algos)
    if agg is None:
        return [
            f"Aggregate (IQM with stratified bootstrap CIs, P(QSM > SAC)): pending until SAC and another "
            f"algorithm have >= {MIN_SEEDS_AGGREGATE} seeds on every env.\n"
        ]
    png, algos = f"{name}_aggregate.png", agg["algos"]
    _plot_aggregate(os.path.join(out_dir, png), agg, algos, f"{name}: {agg['runs']} runs x {len(envs)} envs")
    lines = [
        f"Aggregate over {len(envs)} envs x {agg['runs']} seeds (SAC-normalised final return, rliable):\n",
        f"| algorithm | IQM [95% stratified bootstrap CI] | P(algorithm > {REFERENCE}) [95% CI] |",
        "|---|---|---|",
    ]
    for a in algos:
        lo, hi = agg["iqm_ci"][a]
        poi = "-"
        if a in agg["poi"]:
            plo, phi = agg["poi_ci"][a]
            poi = f"{float(agg['poi'][a]):.2f} [{float(plo):.2f}, {float(phi):.2f}]"
        lines.append(f"| {a} | {agg['iqm'][a]:.2f} [{lo:.2f}, {hi:.2f}] | {poi} |")
    if agg["pending"]:
        lines.append(
            f"\nNot in the aggregate yet (fewer than {MIN_SEEDS_AGGREGATE} seeds on some env): "
            f"{', '.join(agg['pending'])}; each joins when its units have run."
        )
    return [*lines, f"\n![aggregate]({png})\n"]


def write_report(
    units_dir: str, out_dir: str, suites: list[str], readme: str | list[str] | tuple[str, ...] = ()
) -> str:
    """Writes ``out_dir/README.md`` and its plots for ``suites`` from the unit files; returns its path.

    With ``readme`` (a file or several), each suite's table and plots also replace that suite's block
    in each file, the lines between ``begin_marker(suite)`` and ``end_marker(suite)`` (suites
    without a block there are skipped)."""
    os.makedirs(out_dir, exist_ok=True)
    records = benchmark.load_units(units_dir)
    commits = sorted({r["commit"][:7] + (" (dirty)" if r["dirty"] else "") for r in records})
    cpus = sorted({f"{r['machine']['cpu']} ({r['machine']['cores']} core)" for r in records})
    mujocos = sorted({r.get("versions", {}).get("mujoco", "4.0.0 (constraints.txt at its commit)") for r in records})
    header = [
        "# Learning benchmark",
        "",
        f"Built by `python experiments/bench_learning.py --report --suite={','.join(suites)}` from the "
        f"{len(records)} unit files in `{units_dir}` alone; never edited by hand. Each unit file names "
        "the commit that computed it, the machine, the date and the full config.",
        "",
        f"- commits of the units: {', '.join(commits) or 'none yet'}",
        f"- machines: {'; '.join(cpus) or 'none yet'}",
        f"- MuJoCo of the units: {', '.join(mujocos) or 'none yet'}",
        "- run the pending units: `python experiments/bench_learning.py --suite=<suite>` "
        "(`--list` shows them with time estimates)",
        "",
    ]
    body = [suite_section(name, units_dir, out_dir) for name in suites]
    path = os.path.join(out_dir, "README.md")
    with open(path, "w") as f:
        f.write("\n".join(header + body))
    docs = [readme] if isinstance(readme, str) else list(readme)
    for doc in docs:
        rel = os.path.relpath(out_dir, os.path.dirname(os.path.abspath(doc)) or ".")
        for name, section in zip(suites, body, strict=True):
            _update_readme_block(doc, name, section, rel)
    write_answer(units_dir, docs, suites)
    table, screened = configuration_table(units_dir, benchmark.SPEED_PATH), screening.screening_table(units_dir)
    for doc in docs:
        _replace_block(doc, *CONFIG_MARKERS, table)
        _replace_block(doc, *screening.MARKERS, screened)
    return path


# The README's configuration table: (what a user wants, how to run it, the label of its units). Figures
# (units done, cost) are generated from the unit files by ``configuration_table``.
CONFIGURATIONS = (
    (
        "QSM as published (the paper's reference settings, for comparisons)",
        "`--flagfile=configs/qsm_paper.flags` (the defaults)",
        "QSM",
    ),
    (
        "QSM as published at SAC's network width (256x256 instead of 512x512): about a third of the time per env "
        "step, level with QSM on gym MuJoCo and a little below it on DMC (results/learning/README.md, the width arms)",
        "`--flagfile=configs/qsm_256.flags`",
        "QSM-256",
    ),
    (
        "a QSM whose actions stay off the walls (the mirror target, best of 8 samples)",
        "`--flagfile=configs/qsm_mirror.flags`",
        "QSM-mirror",
    ),
    (
        "exploration that sets itself: max-ent QSM, automatic temperature (collapses: docs/algorithm.md)",
        "`--flagfile=configs/qsm_maxent.flags`",
        "QSM-maxent",
    ),
    (
        "the same, the entropy read from chain samples (sees the walls, but learns too slowly: dropped by the "
        'screening at 256x256, its units left the queue; docs/variants.md, "Screening")',
        "`--flagfile=configs/qsm_maxent_samples.flags`",
        "QSM-maxent-samples",
    ),
    (
        "a diffusion policy at SAC's level at its width, the screening's lead on returns: MPO's step (the mirror "
        "target on the policy's own samples, lam set by a KL trust region, T = 10) at 256x256; its anchor's own chain "
        'takes it over the goal\'s cost (docs/variants.md, "Screening")',
        "`--flagfile=configs/qsm_mirror_t10_kl_256.flags`",
        "QSM-mirror-T10-KL-256",
    ),
    (
        "the same screening's second candidate: the mirror variant at 256x256 (stalls on some tasks)",
        "`--flagfile=configs/qsm_mirror_256.flags`",
        "QSM-mirror-256",
    ),
    ("SAC, the reference of every comparison (256x256)", "`--algo=sac`", "SAC"),
    ("SAC at QSM's network width (512x512)", "`--flagfile=configs/sac_512.flags`", "SAC-512"),
    ("TD3", "`--algo=td3`", "TD3"),
    ("Diffusion-QL (back-propagates through the chain)", "`--algo=dql`", "DQL"),
)
CONFIG_MARKERS = (
    "<!-- configurations: begin (written by bench_learning.py --report) -->",
    "<!-- configurations: end -->",
)


def cpu_name(cpu: str) -> str:
    return cpu.replace("(R)", "").replace(" Processor", "").strip()


def _fastest_per_cpu(rates: dict[tuple[str, str], list[float]]) -> dict[str, float]:
    """The fastest of ``rates`` ((CPU model, env) -> env steps/s) per CPU model."""
    fastest: dict[str, float] = {}
    for (cpu, _), values in rates.items():
        fastest[cpu] = max(fastest.get(cpu, 0.0), *values)
    return fastest


def width_arms(units: list, cells: dict, envs: list, algos: list) -> list[dict]:
    """Each width arm of the suite (a label that differs from its algorithm's own label only in its
    network width, e.g. QSM-256 from QSM) against that label: does the width change what it learns,
    and what does it cost?

    Returns:
      Per arm: ``arm``, ``base`` (the label it is compared with), ``width`` and ``base_width``, ``agg``
      (``aggregate`` of the two normalised by ``base``, None while pending), ``done`` (label -> (units
      done, units in the suite)) and ``cost`` (``time_ratio`` of the arm against ``base`` on the suite's
      tasks, None without a shared CPU model).
    """
    width, total = widths(units), Counter(benchmark.label(u.config) for u in units)
    algo_of = {benchmark.label(u.config): u.config.algo for u in units}
    out = []
    for arm in algos:
        settings = benchmark.VARIANTS.get(arm)
        base = next((b for b in algos if algo_of[b] == algo_of[arm] and b not in benchmark.VARIANTS), None)
        if not settings or not set(settings) <= WIDTH_SETTINGS or base is None:
            continue
        recs = {a: [r for e in envs for r in cells.get((e, a), [])] for a in (base, arm)}
        out.append(
            {
                "arm": arm,
                "base": base,
                "width": width[arm],
                "base_width": width[base],
                "agg": aggregate(cells, envs, [base, arm], base),
                "done": {a: (len(recs[a]), total[a]) for a in (base, arm)},
                "cost": time_ratio(rates_of(recs[arm]), rates_of(recs[base])),
            }
        )
    return out


def _arm_lines(arms: list[dict]) -> list[str]:
    """The suite's table of its width arms (``width_arms``)."""
    if not arms:
        return []
    lines = [
        "Each width arm against its own algorithm at the other width (normalised by, and compared with, "
        "the latter; time per env step: the fastest units' training rates on the same CPU model and task, "
        "median over the tasks):\n",
        "| arm | against | IQM [95% stratified bootstrap CI] | P(arm > against) [95% CI] | time per env step "
        "vs against |",
        "|---|---|---|---|---|",
    ]
    for a in arms:
        cost = f"{a['cost'][0]:.2f}x ({a['cost'][1]})" if a["cost"] else "-"
        head = f"| {a['arm']} ({a['width']}) | {a['base']} ({a['base_width']}) |"
        if a["agg"] is None:
            left = [f"{b} {d} of {n} units" for b, (d, n) in a["done"].items() if d < n]
            lines.append(f"{head} pending ({', '.join(left)}) | - | {cost} |")
            continue
        lines.append(f"{head} {_iqm_poi(a['agg'], a['arm'])} | {cost} |")
    return [*lines, ""]


# The goal of the screening (docs/variants.md, "Screening"), checked on the suite that holds both benchmarks:
# against SAC at the configuration's own width, IQM of SAC-normalised return >= 1 and P(> SAC) > 0.5; at
# most half of the action dimensions at the walls at the final evaluation on every task (mean over seeds);
# at most 3x SAC's time per env step.
GOAL_SUITE = "plus100k"
GOAL = {"iqm": 1.0, "poi": 0.5, "walls": 0.5, "cost": 3.0}


def worst_walls(cells: dict, envs: list, algo: str) -> tuple[float, str, list[str]] | None:
    """``algo``'s highest wall share over ``envs`` (per env the mean over its seeds of the final
    evaluation's share of action dimensions with |a| > 0.99), that env, and the envs where none of its
    units measured it; None if no unit did."""
    shares, unmeasured = {}, []
    for env in envs:
        measured = [w for r in cells.get((env, algo), []) if (w := r["curve"][-1].get("wall_share")) is not None]
        if measured:
            shares[env] = float(np.mean(measured))
        else:
            unmeasured.append(env)
    if not shares:
        return None
    env = max(shares, key=shares.get)
    return shares[env], env, unmeasured


def goal_check(units: list, cells: dict, envs: list, algos: list, speed_path: str | None = None) -> list[dict]:
    """Each QSM configuration of the suite against ``GOAL`` at its own width (``width_pairs``).

    Returns:
      Per configuration: ``label``, ``width``, ``reference`` (SAC at that width), ``agg`` (``aggregate``
      against it, None while either has fewer than 3 seeds on a task), ``done`` (units done, in the suite),
      ``walls`` (``worst_walls``), ``cost`` (time per env step against the reference and what measured it:
      the training loop side by side in ``speed_path``'s section (j) where it has both labels, else
      ``time_ratio`` of the units' training rates on the same CPU model and task) and ``short`` (the
      goal's criteria it misses; None while pending).
    """
    loop, where = side_by_side_rates(speed_path)
    out = []
    for pair in width_pairs(units, cells, envs, algos):
        ref = pair["reference"]
        ref_rates = rates_of([r for e in envs for r in cells.get((e, ref), [])])
        for a in pair["algos"]:
            agg = pair["agg"] if pair["agg"] is not None and a in pair["agg"]["algos"] else None
            walls = worst_walls(cells, envs, a)
            if a in loop and ref in loop:
                cost = (loop[ref] / loop[a], f"side by side, {where}")
            else:
                cost = time_ratio(rates_of([r for e in envs for r in cells.get((e, a), [])]), ref_rates)
            row = {"label": a, "width": pair["width"], "reference": ref, "agg": agg, "done": pair["done"][a]}
            row.update(walls=walls, cost=cost, short=None if agg is None else _goal_misses(agg, a, walls, cost))
            out.append(row)
    return out


def side_by_side_rates(speed_path: str | None) -> tuple[dict[str, float], str]:
    """The training loop's env steps/s per label measured side by side (``bench_speed.py --sections=goal``,
    section (j) of ``speed_path``) and the CPU model it ran on; ({}, "") without that file or section."""
    if not speed_path or not os.path.exists(speed_path):
        return {}, ""
    with open(speed_path) as f:
        speed = json.load(f)
    machine = speed.get("provenance", {}).get("goal", speed).get("machine", "")
    return speed.get("goal", {}), machine.split(",")[0]


def _goal_misses(agg: dict, algo: str, walls: tuple | None, cost: tuple | None) -> list[str]:
    """The ``GOAL`` criteria ``algo`` misses (empty: it meets the goal)."""
    iqm, poi = float(agg["iqm"][algo]), float(agg["poi"][algo])
    misses = [f"IQM {iqm:.2f} < {GOAL['iqm']:g}"] if iqm < GOAL["iqm"] else []
    misses += [f"P(> {agg['reference']}) {poi:.2f} <= {GOAL['poi']:g}"] if poi <= GOAL["poi"] else []
    if walls is None:
        misses.append("walls not measured")
    elif walls[2]:
        misses.append(f"walls not measured on {', '.join(_task(e) for e in walls[2])}")
    if walls is not None and walls[0] > GOAL["walls"]:
        misses.append(f"{100 * walls[0]:.0f}% at the walls on {_task(walls[1])}")
    if cost is None or cost[0] > GOAL["cost"]:
        misses.append(f"{cost[0]:.1f}x {agg['reference']}'s time per env step" if cost else "cost not measured")
    return misses


def goal_words(row: dict) -> str:
    """A ``goal_check`` row's verdict: "meets the goal", "short: <criteria>" or what is pending."""
    if row["short"] is None:
        return f"pending ({row['done'][0]} of {row['done'][1]} units)"
    return "meets the goal" if not row["short"] else f"short: {'; '.join(row['short'])}"


def _goal_lines(rows: list[dict]) -> list[str]:
    """The suite's goal check (``goal_check``)."""
    if not rows:
        return []
    lines = [
        f'Against the goal (docs/variants.md, "Screening"): IQM >= {GOAL["iqm"]:g} and P(> SAC) > {GOAL["poi"]:g} '
        f"against SAC at the configuration's width, at most {100 * GOAL['walls']:.0f}% of the action dimensions at "
        f"the walls on every task (final evaluation, mean over seeds), at most {GOAL['cost']:g}x SAC's time per "
        "env step (the training loop measured side by side, `bench_speed.py --sections=goal`, results/speed.md (j); "
        "for labels not measured there the units' training rates, same CPU model and task, median over tasks):\n",
        "| configuration | against | IQM [95% CI] | P(> against) [95% CI] | at the walls, worst task | time per env "
        "step vs against | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        stats = _iqm_poi(row["agg"], row["label"]) if row["agg"] else "pending | -"
        walls = f"{100 * row['walls'][0]:.0f}% ({_task(row['walls'][1])})" if row["walls"] else "-"
        cost = f"{row['cost'][0]:.2f}x ({row['cost'][1]})" if row["cost"] else "-"
        head = f"| {row['label']} ({row['width']}) | {row['reference']} |"
        lines.append(f"{head} {stats} | {walls} | {cost} | {goal_words(row)} |")
    return [*lines, ""]


def rates_of(records: list[dict]) -> dict[tuple[str, str], list[float]]:
    """(CPU model, env) -> the training rates (env steps/s) of those of ``records`` that measured one."""
    rates = defaultdict(list)
    for r in records:
        if r.get("env_steps_per_s"):
            rates[(cpu_name(r["machine"]["cpu"]), r["env"])].append(r["env_steps_per_s"])
    return rates


def time_ratio(rates: dict, reference: dict) -> tuple[float, str] | None:
    """Time per env step of ``rates`` against ``reference`` (each (CPU model, env) -> env steps/s) and
    what it is measured on: the median over the (CPU model, env) pairs both ran of the reference's
    fastest rate over the other's ("2 tasks"); without a shared pair, the fastest units' ratio on one
    CPU model, said so; None without a shared CPU model."""
    pairs = [pair for pair in rates if pair in reference]
    if pairs:
        ratio = float(np.median([max(reference[pair]) / max(rates[pair]) for pair in pairs]))
        return ratio, f"{len(pairs)} task{'s' * (len(pairs) > 1)}"
    fastest, fastest_ref = _fastest_per_cpu(rates), _fastest_per_cpu(reference)
    shared = [cpu for cpu in fastest if cpu in fastest_ref]
    if not shared:
        return None
    return fastest_ref[shared[0]] / fastest[shared[0]], f"{shared[0]}, fastest units, other tasks"


def configuration_table(units_dir: str, speed_path: str | None = None) -> str:
    """The README's table of named configurations (``CONFIGURATIONS``) with, from the unit files, how
    many units each has, what it learns and what it costs: its IQM of SAC-normalised final return in
    each answered suite's aggregate ("-" until it has 3 seeds on every task there), the fastest unit's
    env steps/s on one core of each CPU model (units alone on a core; machines of one kind differ up
    to 2x, so costs compare within a model), and its time per env step against SAC's (``time_ratio``);
    the goal column's cost reads ``speed_path``'s side-by-side loop rates (``goal_check``)."""
    by_name = defaultdict(list)
    for record in benchmark.load_units(units_dir):
        by_name[benchmark.label(benchmark.unit_of(record).config)].append(record)
    rates = defaultdict(dict, {name: rates_of(records) for name, records in by_name.items()})
    iqms = {}
    for suite in ANSWERED:
        _, envs, algos, cells, _ = suite_cells(suite, units_dir)
        iqms[suite] = (aggregate(cells, envs, algos) or {}).get("iqm", {})
    goal = {row["label"]: row for row in goal_check(*_suite_parts(GOAL_SUITE, units_dir), speed_path)}
    cpus = sorted({cpu for by_pair in rates.values() for cpu, _ in by_pair})
    head = " | ".join(f"env steps/s per core, {cpu}" for cpu in cpus)
    lines = [
        f"| you want | use | units done | IQM vs SAC ({', '.join(ANSWERED)}) | the goal ({GOAL_SUITE}, against SAC "
        f"at its width): IQM; P(> SAC); walls, worst task | {head} | time per env step vs SAC (256x256) |",
        "|---|---|---|---|---|" + "---|" * len(cpus) + "---|",
    ]
    reference = rates[REFERENCE]
    for want, use, name in CONFIGURATIONS:
        fastest = _fastest_per_cpu(rates[name])
        ratio = time_ratio(rates[name], reference) if name != REFERENCE else None
        versus = f"{ratio[0]:.1f}x ({ratio[1]})" if ratio else "-"
        learns = "; ".join(f"{iqms[s][name]:.2f}" if name in iqms[s] else "-" for s in ANSWERED)
        cells = " | ".join(f"{fastest[cpu]:.1f}" if cpu in fastest else "-" for cpu in cpus)
        target = _goal_cell(goal[name]) if name in goal else "-"
        lines.append(f"| {want} | {use} | `{name}`: {len(by_name[name])} | {learns} | {target} | {cells} | {versus} |")
    return "\n".join(lines)


def _suite_parts(name: str, units_dir: str) -> tuple[list, dict, list, list]:
    """``suite_cells`` in the order ``goal_check`` takes: units, cells, envs, labels."""
    units, envs, algos, cells, _ = suite_cells(name, units_dir)
    return units, cells, envs, algos


def _goal_cell(row: dict) -> str:
    """A ``goal_check`` row in the configuration table: IQM; P; worst wall share, then the verdict."""
    walls = f"{100 * row['walls'][0]:.0f}% ({_task(row['walls'][1])})" if row["walls"] else "-"
    if row["agg"] is None:  # what is known already: the worst wall share so far and the cost
        known = [f"walls {walls}"] if row["walls"] else []
        known += [f"{row['cost'][0]:.2f}x {row['reference']}'s time per env step"] if row["cost"] else []
        return "; ".join([goal_words(row), *known])
    iqm, poi = float(row["agg"]["iqm"][row["label"]]), float(row["agg"]["poi"][row["label"]])
    return f"{iqm:.2f}; {poi:.2f}; {walls}: {goal_words(row)}"


def begin_marker(suite: str) -> str:
    """The line that opens the README block holding ``suite``'s table (see ``write_report``)."""
    return f"<!-- learning-report: begin {suite} (written by bench_learning.py --report) -->"


def end_marker(suite: str) -> str:
    return f"<!-- learning-report: end {suite} -->"


def _update_readme_block(readme: str, suite: str, section: str, rel: str) -> None:
    """Replaces the text between ``suite``'s markers in ``readme`` (if it has them) with the suite's
    table and plots; the plot links are made relative to the README."""
    lines = section.splitlines()
    lines = [lines[0].replace("## Suite", "Suite")] + lines[3:]  # without the paragraph defining the columns
    lines = [line.replace("](", f"]({rel}/") if line.startswith("![") else line for line in lines]
    _replace_block(readme, begin_marker(suite), end_marker(suite), "\n".join(lines))


def _replace_block(path: str, begin: str, end: str, content: str) -> None:
    """Replaces the lines between the marker lines ``begin`` and ``end`` of ``path`` (if it has both)."""
    with open(path) as f:
        text = f.read()
    if begin not in text or end not in text:
        return
    start, stop = text.index(begin), text.index(end) + len(end)
    with open(path, "w") as f:
        f.write(text[:start] + "\n".join([begin, content, end]) + text[stop:])


PAPER = "QSM"  # QSM as published
VARIANT = "QSM-mirror"
# The suites whose plain answer the README states, and how the answer opens.
ANSWERED = {"dmc100k": "On the paper's tasks at 100k env steps", "core100k": "On gym MuJoCo at 100k env steps"}
NAMES = {PAPER: "QSM as published", VARIANT: "the mirror variant", "DQL": "Diffusion-QL"}


def answer_markers(suite: str) -> tuple[str, str]:
    """The lines between which a README holds ``suite``'s plain answer (see ``write_answer``)."""
    return f"<!-- answer: begin {suite} -->", f"<!-- answer: end {suite} -->"


# versus_sac's words, weakest first ("{}": the reference's name); a verdict's index is its rank.
VERDICTS = ("trails {}", "is below {} (within the noise)", "matches {}", "beats {}")
WIDTH_SETTINGS = {"actor_hidden_dims", "critic_hidden_dims"}  # a QSM label with only these is QSM as published


def verdict_rank(p: float, lo: float, hi: float) -> int:
    """The index in ``VERDICTS`` of P(X > SAC) = ``p`` with 95% CI [``lo``, ``hi``]: "trails" or
    "beats" when the CI excludes 0.5; inside it, "matches" only from p >= 0.5, else "is below
    (within the noise)": a variant that loses 3 runs in 4 does not "match"."""
    if hi < 0.5:
        return 0
    if lo > 0.5:
        return 3
    return 2 if p >= 0.5 else 1


def versus_sac(p: float, lo: float, hi: float, reference: str = REFERENCE) -> str:
    """Words for P(X > ``reference``) = ``p`` with 95% CI [``lo``, ``hi``] (``verdict_rank``)."""
    return VERDICTS[verdict_rank(p, lo, hi)].format(reference)


def _verdict(agg: dict, algo: str) -> tuple[int, str, str]:
    """``algo``'s verdict against ``agg``'s reference: its rank, ``versus_sac``'s words, the statistics."""
    ref = agg["reference"]
    p, (lo, hi) = float(agg["poi"][algo]), (float(v) for v in agg["poi_ci"][algo])
    stats = f"P({algo} > {ref}) = {p:.2f} [{lo:.2f}, {hi:.2f}], IQM of {ref}-normalised return {agg['iqm'][algo]:.2f}"
    rank = verdict_rank(p, lo, hi)
    return rank, VERDICTS[rank].format(ref), stats


def equal_width(pairs: list[dict], before: int) -> str:
    """The answer's sentence on QSM as published at equal width (``width_pairs``), and whether its
    standing against SAC at SAC's width (``before``, a ``verdict_rank``) changes there."""
    if not pairs:
        return ""
    said, ranks, left = [], [], []
    for pair in pairs:
        agg, ref = pair["agg"], pair["reference"]
        qsm = next((a for a in pair["algos"] if set(benchmark.VARIANTS.get(a, {})) <= WIDTH_SETTINGS), None)
        if qsm is None:
            continue
        if agg is None or qsm not in agg["algos"]:
            left += [f"{b} {d} of {n}" for b, (d, n) in pair["done"].items() if b in (qsm, ref) and d < n]
            continue
        rank, words, stats = _verdict(agg, qsm)
        said.append(f"QSM at {pair['width']} ({qsm}) {words} ({stats})")
        ranks.append(rank)
    pending = f"pending ({', '.join(left)} units have run)" if left else ""
    if not said:
        return f" At equal network width the comparison is {pending}."
    if all(r == before for r in ranks):
        change = "QSM's standing against SAC does not change at equal width"
    elif max(ranks) < before and before >= 2 and max(ranks) < 2:
        standing = VERDICTS[before].format(REFERENCE)
        change = f"QSM's standing against SAC ({standing}) is its width: at equal width it no longer matches SAC"
    elif max(ranks) < before:
        change = "at equal width QSM stands lower against SAC than at twice SAC's width"
    else:
        change = "at equal width QSM stands higher against SAC than at twice SAC's width"
    rest = f"; the other width is {pending}" if pending else ""
    return f" At equal network width, {'; '.join(said)}: {change}{rest}."


def narrower_qsm(arms: list[dict]) -> str:
    """The answer's sentence on QSM as published at another width against itself (``width_arms``):
    what it learns there and at what time per env step."""
    said = []
    for a in arms:
        if a["base"] != PAPER or a["agg"] is None:
            continue
        _, _, stats = _verdict(a["agg"], a["arm"])
        cost = f", at {a['cost'][0]:.2f}x its time per env step ({a['cost'][1]})" if a["cost"] else ""
        said.append(f" Against QSM as published, {a['arm']} ({a['width']}) has {stats}{cost}.")
    return "".join(said)


def _task(env: str) -> str:
    return env.split("/")[-1][:-3]  # dm_control/walker-walk-v0 -> walker-walk, Hopper-v4 -> Hopper


def answer(suite: str, units_dir: str) -> str:
    """The plain answer, from the unit files alone, to whether QSM as published (and every other
    algorithm of ``suite``) matches SAC on the suite's tasks: per task the mean final return over
    the seeds done; once QSM and SAC have 3 seeds on every task, the rliable aggregate decides
    (P(X > SAC) with its 95% CI, ``versus_sac``); an algorithm with fewer seeds is named pending.
    ``suite`` is one of ``ANSWERED`` (``dmc100k``: the paper's own benchmark)."""
    units, envs, algos, cells, _ = suite_cells(suite, units_dir)
    done = sum(len(v) for v in cells.values())

    def cell(env: str, algo: str) -> str:
        finals = [seed_final(r) for r in cells.get((env, algo), [])]
        if not finals:
            return f"{algo} pending"
        return f"{algo} {np.mean(finals):.0f} ({len(finals)} seed{'s' * (len(finals) > 1)})"

    per_task = "; ".join(f"{_task(env)}: " + ", ".join(cell(env, a) for a in algos) for env in envs)
    agg = aggregate(cells, envs, algos)
    if agg is None or PAPER not in agg["algos"]:
        verdict = (
            f"**Not answered yet**: {done} of {len(units)} `{suite}` units have run (the rest are queued, "
            f"`make bench-list`); the answer comes from the rliable aggregate once QSM and SAC have "
            f"{MIN_SEEDS_AGGREGATE} seeds on every task. So far, final return at 100k env steps, mean over the "
            "seeds done"
        )
        return f"{verdict}: {per_task}."

    def says(algo: str) -> str:
        if algo not in agg["algos"]:
            runs = sum(len(cells.get((e, algo), [])) for e in envs)
            return f"is pending ({runs} of {MIN_SEEDS_AGGREGATE * len(envs)} units have run)"
        _, words, stats = _verdict(agg, algo)
        return f"{words} ({stats})"

    def mean(env: str, algo: str) -> float:
        return float(np.mean([seed_final(r) for r in cells[(env, algo)]]))

    def below(algo: str, other: str) -> str:
        tasks = [_task(env) for env in envs if mean(env, algo) < mean(env, other)]
        name = NAMES.get(algo, algo)
        return (
            f" {name[0].upper() + name[1:]} is below {NAMES.get(other, other)} on {', '.join(tasks)}." if tasks else ""
        )

    others = [a for a in algos if a not in (PAPER, REFERENCE)]
    where = below(PAPER, REFERENCE) + (below(VARIANT, PAPER) if VARIANT in agg["algos"] else "")
    seeds = "3 seeds" if not agg["pending"] else "the seeds done"
    verdicts = "; ".join(f"{NAMES.get(a, a)} {says(a)}" for a in [PAPER, *others])
    width = equal_width(width_pairs(units, cells, envs, algos), _verdict(agg, PAPER)[0])
    width += narrower_qsm(width_arms(units, cells, envs, algos))
    return (
        f"**{ANSWERED[suite]}** ({', '.join(_task(e) for e in envs)}, {MIN_SEEDS_AGGREGATE} seeds each), "
        f"{verdicts}.{where}{width} Final return, mean over {seeds}: {per_task}."
    )


def write_answer(units_dir: str, docs, suites=tuple(ANSWERED)) -> None:
    """Writes the ``answer`` of each of ``suites`` in ``ANSWERED`` between its markers in each of
    ``docs`` that has them."""
    for suite in [s for s in suites if s in ANSWERED]:
        begin, end = answer_markers(suite)
        text = answer(suite, units_dir)
        for doc in docs:
            _replace_block(doc, begin, end, text)

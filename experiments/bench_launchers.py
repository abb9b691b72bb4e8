"""Overhead of the cluster launchers, measured side by side on this machine.

    python experiments/bench_launchers.py          # writes results/launchers.md

(a) The `smoke` suite's units through the local runner and through Ray (a local instance with one CPU
    per core), one after the other from the same pinned commit: wall time of each, and whether every
    unit file is the same (same key, same curve).
(b) A simulated wide run: Ray with --fake_cpus logical CPUs on --fake_units stand-in units (each
    sleeps --fake_seconds and returns a small record): every record collected once, how the finishing
    order follows the submission order, and the wall time against the ideal
    ceil(units / cpus) * seconds.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

from absl import app, flags

from harness import benchmark, launchers, provenance
from harness.files import write_results

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "results/launchers.md", "Markdown report.")
flags.DEFINE_integer("fake_cpus", 16, "(b): logical CPUs of the Ray instance.", lower_bound=1)
flags.DEFINE_integer("fake_units", 64, "(b): stand-in units.", lower_bound=1)
flags.DEFINE_float("fake_seconds", 2.0, "(b): seconds each stand-in unit sleeps.", lower_bound=0)
flags.DEFINE_bool("smoke", True, "Run (a).")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _runner(launcher: str, tmp: str) -> float:
    """Wall seconds of ``bench_learning.py --suite=smoke`` with ``launcher`` into ``tmp``."""
    cmd = [
        sys.executable,
        os.path.join(ROOT, "experiments", "bench_learning.py"),
        "--suite=smoke",
        "--pin=",
        f"--units_dir={tmp}/units",
        f"--runs_dir={tmp}/runs",
        f"--launcher={launcher}",
    ]
    start = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{launcher} runner failed: {out.stderr[-2000:]}")
    return time.time() - start


def bench_smoke(tmp: str) -> dict:
    walls = {name: _runner(name, os.path.join(tmp, name)) for name in ("local", "ray")}
    same = {}
    for name in sorted(os.listdir(os.path.join(tmp, "local", "units"))):
        a = benchmark.load_unit(os.path.join(tmp, "local", "units", name))
        b = benchmark.load_unit(os.path.join(tmp, "ray", "units", name))
        same[a["key"]] = a["curve"] == b["curve"] and a["config_hash"] == b["config_hash"]
    return {"walls": walls, "same": same}


def _fake_task(config: dict, runs_dir: str | None, code_dir: str | None = None) -> dict:
    import time

    start = time.time()
    time.sleep(config["seconds"])
    return {"key": config["key"], "started": start, "finished": time.time()}


def bench_wide(cpus: int, count: int, seconds: float) -> dict:
    units = [
        SimpleNamespace(
            key=f"u{i:03d}", config=SimpleNamespace(to_dict=lambda i=i: {"key": f"u{i:03d}", "seconds": seconds})
        )
        for i in range(count)
    ]
    got: list[str] = []
    errors: list[str] = []
    start = time.time()
    launchers.run_ray(
        units,
        code_dir=tempfile.mkdtemp(),
        commit="fake",
        num_cpus=cpus,
        task=_fake_task,
        on_record=lambda u, r: got.append(r["key"]) if r["key"] == u.key else errors.append(u.key),
        on_error=lambda u, m: errors.append(f"{u.key}: {m}"),
    )
    wall = time.time() - start
    rank = {k: i for i, k in enumerate(u.key for u in units)}
    # Finishing order vs submission order: the largest number of positions a unit finished ahead of
    # or behind its place in the queue (units of one wave finish in any order among themselves).
    displacement = max(abs(i - rank[k]) for i, k in enumerate(got)) if got else 0
    return {
        "cpus": cpus,
        "units": count,
        "seconds": seconds,
        "collected": len(got),
        "unique": len(set(got)),
        "errors": errors,
        "wall": wall,
        "ideal": math.ceil(count / cpus) * seconds,
        "max_displacement": displacement,
    }


def render(r: dict) -> str:
    lines = [
        "# Cluster launchers: overhead on this machine",
        "",
        f"- command: `{r['command']}`",
        f"- commit: `{r['commit']}`",
        f"- machine: {r['machine']}; {r['date']}",
        "",
    ]
    if "smoke" in r:
        s = r["smoke"]
        local, ray = s["walls"]["local"], s["walls"]["ray"]
        lines += [
            "## (a) The smoke suite through the local runner and through Ray",
            "",
            f"{len(s['same'])} units (Pendulum-v1, 1k env steps, tiny networks), one after the other from the same",
            "checkout; Ray is a local instance with one CPU per core, started and stopped inside its run.",
            "",
            "| launcher | wall s | vs local |",
            "|---|---|---|",
            f"| local (one process per core) | {local:.0f} | 1.00x |",
            f"| ray | {ray:.0f} | {ray / local:.2f}x |",
            "",
            f"Unit files equal (key and curve): {sum(s['same'].values())} of {len(s['same'])}.",
            "",
        ]
    w = r["wide"]
    lines += [
        f"## (b) A simulated wide run: {w['units']} stand-in units on {w['cpus']} Ray CPUs",
        "",
        f"Each stand-in sleeps {w['seconds']:g} s and returns a record. Collected {w['collected']} records "
        f"({w['unique']} distinct), {len(w['errors'])} errors; wall {w['wall']:.1f} s against the ideal "
        f"{w['ideal']:.1f} s ({w['wall'] - w['ideal']:+.1f} s: starting {w['cpus']} worker processes on this "
        "machine's cores, and Ray's own start); the finishing order stays within "
        f"{w['max_displacement']} places of the submission order (units finish wave by wave).",
        "",
    ]
    return "\n".join(lines)


def main(argv):
    del argv
    report = provenance.stamp()
    tmp = tempfile.mkdtemp()
    try:
        if FLAGS.smoke:
            print("smoke suite: local, then ray ...", flush=True)
            report["smoke"] = bench_smoke(tmp)
        print("wide run ...", flush=True)
        report["wide"] = bench_wide(FLAGS.fake_cpus, FLAGS.fake_units, FLAGS.fake_seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_results(FLAGS.out, report, render(report))
    print(render(report))


if __name__ == "__main__":
    app.run(main)

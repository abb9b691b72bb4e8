"""Learning benchmark in units: list, run and report named suites (`harness.benchmark.SUITES`).

    python experiments/bench_learning.py --list                         # the evidence queue, in order
    python experiments/bench_learning.py                                # run it (make bench)
    python experiments/bench_learning.py --suite=core100k --list        # each unit: done or pending
    python experiments/bench_learning.py --suite=core100k              # run the pending units
    python experiments/bench_learning.py --suite=core100k --max_units=4 --time_budget=120
    python experiments/bench_learning.py --report                      # results/learning/README.md

One unit = one (algo, env, seed, max_steps, settings) run; a finished unit writes
`results/learning/units/<key>.json` and is skipped afterwards; an interrupted unit resumes from its
checkpoint in `runs/units/<key>/`. Pending units run `--workers` at a time, each in its own process
pinned to one CPU core (on a 2-core CPU two pinned processes do 1.2-1.6x the updates/s of one
process on both cores). `--git_commit` commits each unit file the moment it is written.
`kill -USR1 <runner pid>` drains the runner: no unit starts any more, the running ones finish.

Units run the committed code of `--pin` (default HEAD), never uncommitted edits: the runner checks
that commit out in a worktree under `runs/pinned/` and runs from there, writing unit files into this
checkout's `--units_dir` (each names the commit). `--pin=` runs this checkout as it is (a copy with
no git history, e.g. on a lent accelerator machine).
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time

os.environ.setdefault("MUJOCO_GL", "disable")

from absl import app, flags, logging  # noqa: E402

from harness import benchmark  # noqa: E402
from qsm_jax.program import cli  # noqa: E402
from qsm_jax.program.signals import Interrupted  # noqa: E402
from qsm_jax.program.workdir import workdir_in_use  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "suite", [benchmark.QUEUE_NAME], "Suite name(s) from harness.benchmark.SUITES, or 'queue': the evidence queue."
)
flags.DEFINE_string(
    "pin", "HEAD", "Run units from a worktree of this commit (default HEAD); '' = this checkout as it is."
)
flags.DEFINE_bool("list", False, "Print every unit of the suite as done or pending, with time estimates, and exit.")
flags.DEFINE_bool(
    "report",
    False,
    "Rebuild the report (tables, plots) from the unit files and exit; without --suite and --readme: every "
    "reported suite, and the generated blocks of README.md and docs/variants.md (what make report does).",
)
flags.DEFINE_integer("max_units", 0, "Run at most this many pending units (0 = all).")
flags.DEFINE_float("time_budget", 0.0, "Minutes; after this no unit starts and running ones stop (they resume later).")
flags.DEFINE_bool(
    "fit_budget",
    False,
    "With --time_budget: start only units whose estimated time left (x FIT_MARGIN) ends before the deadline, "
    "taking the next pending one that fits (for machines whose run folders do not outlive the budget).",
)
flags.DEFINE_integer("workers", 0, "Units run at once, each pinned to one core (0 = one per usable core).")
flags.DEFINE_list(
    "units", [], "Run only these unit keys of --suite, in this order (default: every pending unit, cheapest first)."
)
flags.DEFINE_string(
    "import_units",
    "",
    "Add the unit files of this folder or tar archive (e.g. from experiments/device/units.sh) to --units_dir.",
)
flags.DEFINE_enum(
    "launcher",
    "local",
    ["local", "ray", "slurm"],
    "Where pending units run: 'local' (one process per core here), 'ray' (a Ray cluster), 'slurm' (submitit).",
)
flags.DEFINE_string("ray_address", "", "--launcher=ray: a running cluster's address; '' starts a local one.")
flags.DEFINE_integer("ray_num_cpus", 0, "--launcher=ray without an address: CPUs of the local instance (0 = all).")
flags.DEFINE_float("gpus_per_unit", 0.0, "--launcher=ray/slurm: GPUs per unit (a fraction shares one GPU on Ray).")
flags.DEFINE_string(
    "cluster_runs_dir",
    "",
    "--launcher=ray/slurm: a run folder every worker can write, so a retried unit resumes from its checkpoint "
    "('' = private to each worker for Ray: a retried unit starts over; --runs_dir for Slurm).",
)
flags.DEFINE_string("slurm_partition", "", "--launcher=slurm: partition ('' = the cluster's default).")
flags.DEFINE_integer("slurm_time_min", 180, "--launcher=slurm: time limit per unit, minutes (a unit requeues past it).")
flags.DEFINE_float("slurm_mem_gb", 8.0, "--launcher=slurm: memory per unit, GB.")
flags.DEFINE_integer("slurm_array_parallelism", 64, "--launcher=slurm: array tasks running at once.")
flags.DEFINE_string(
    "slurm_cluster", "", "--launcher=slurm: '' (Slurm if srun exists), 'slurm', or 'local' (submitit's local jobs)."
)
flags.DEFINE_string("unit", "", "Run this one unit key of --suite in this process (used by the runner).")
flags.DEFINE_bool("git_commit", False, "git-commit each unit file as soon as it is written.")
flags.DEFINE_string("units_dir", benchmark.UNITS_DIR, "Where unit files are read and written.")
flags.DEFINE_string("runs_dir", benchmark.RUNS_DIR, "Where unit runs (checkpoints, logs) live.")
flags.DEFINE_string("out_dir", os.path.join("results", "learning"), "Where the report goes.")
flags.DEFINE_bool("progress", False, "Progress bar (only with --unit).")
flags.DEFINE_list(
    "readme",
    [],
    "With --report: refresh the generated blocks of these files (default: report.REPORTED_DOCS when the "
    "report reads the committed units into results/learning, none otherwise).",
)


def _default_docs(reported: tuple[str, ...]) -> list[str]:
    """The docs a flagless --report refreshes: the project's, but only from the committed units into the
    committed report (a report of other units, for example a test's, must not rewrite README.md)."""
    same = all(
        os.path.abspath(FLAGS[name].value) == os.path.abspath(FLAGS[name].default) for name in ("units_dir", "out_dir")
    )
    return list(reported) if same else []


def _units() -> list[benchmark.Unit]:
    units, seen = [], set()
    for name in FLAGS.suite:
        for u in benchmark.suite_units(name):
            if u.key not in seen:
                seen.add(u.key)
                units.append(u)
    return units


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _list(units: list[benchmark.Unit]) -> None:
    """Every unit, done, running or pending with the time it has left (less from a checkpoint); the
    queue item by item, in run order."""
    done = {r["key"]: r for r in benchmark.load_units(FLAGS.units_dir)}
    pending_s = 0.0
    if FLAGS.suite == [benchmark.QUEUE_NAME]:
        items = zip(benchmark.QUEUE, benchmark.queue_order(FLAGS.units_dir), strict=True)
        groups = [(name, [u for u in select() if u.key in done] + pending) for (name, select), (_, pending) in items]
        print("The evidence queue (make bench runs its pending units in this order):")
    else:
        groups = [("", units)]
    for name, group in groups:
        if name:
            print(f"{name}: {sum(u.key in done for u in group)}/{len(group)} done")
        for u in group:
            label = benchmark.label(u.config)
            if u.key in done:
                r = done[u.key]
                took = _minutes(r["wall_seconds"])
                print(f"done     {u.key}  final return {r['final_return']:8.1f}  ({took}, {r['date'][:10]})  {label}")
            else:
                est = benchmark.remaining_seconds(u, FLAGS.units_dir, FLAGS.runs_dir)
                pending_s += est
                print(f"{_unfinished_line(u, est)}  {label}")
    n_done = sum(u.key in done for u in units)
    print(f"{n_done}/{len(units)} done; pending: about {_minutes(pending_s)} of single-core time")


def _unfinished_line(unit: benchmark.Unit, seconds_left: float) -> str:
    """The line of a unit not done: running (a process holds its run folder) or pending, its time left,
    its checkpoint, and whether the estimate is rough."""
    state = "running" if workdir_in_use(os.path.join(FLAGS.runs_dir, unit.key)) else "pending"
    step = benchmark.checkpointed_step(unit, FLAGS.runs_dir)
    at = f" ({'last checkpoint' if state == 'running' else 'resumes'} at env step {step})" if step else ""
    rough = benchmark.estimate_is_rough(unit, FLAGS.units_dir)
    at += " (rough: no unit of these settings measured yet)" if rough else ""
    return f"{state}  {unit.key}  est. {_minutes(seconds_left)} on one core{at}"


def pinned_worktree(commit: str, runs_dir: str) -> str:
    """A worktree of ``commit`` in pinned/ beside ``runs_dir`` (made once, reused), for units to run from.

    Raises:
      ValueError: not a git checkout, or ``commit`` names no commit (one line).
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True)

    sha = git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    if sha.returncode != 0:
        raise ValueError(f"--pin={commit}: not a commit of {root} (pass --pin= to run this checkout as it is)")
    sha = sha.stdout.strip()
    pinned = os.path.join(os.path.dirname(os.path.abspath(runs_dir)), "pinned")
    path = os.path.join(pinned, sha[:12])
    os.makedirs(pinned, exist_ok=True)
    with open(os.path.join(pinned, ".lock"), "w") as lock:  # runners started together make it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isdir(os.path.join(path, "qsm_jax")):
            git("worktree", "prune")
            made = git("worktree", "add", "--detach", path, sha)
            if made.returncode != 0:
                raise ValueError(f"--pin={commit}: could not make a worktree in {path}: {made.stderr.strip()}")
    return path


def _run_pinned() -> None:
    """Re-executes this runner from the pinned worktree (same flags, unit files and runs here)."""
    path = pinned_worktree(FLAGS.pin, FLAGS.runs_dir)
    replaced = ("--pin", "--units_dir", "--runs_dir")
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:  # the value of a replaced flag given as `--flag value`
            skip = False
        elif arg.split("=")[0] in replaced:
            skip = "=" not in arg
        else:
            argv.append(arg)
    argv += [
        "--pin=",
        f"--units_dir={os.path.abspath(FLAGS.units_dir)}",
        f"--runs_dir={os.path.abspath(FLAGS.runs_dir)}",
    ]
    print(f"running units from {path} (commit {os.path.basename(path)})", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH")]))}
    os.chdir(path)
    script = os.path.join(path, "experiments", "bench_learning.py")
    os.execve(sys.executable, [sys.executable, script, *argv], env)


def _commit(path: str, message: str) -> None:
    repo = os.path.dirname(os.path.abspath(path))
    for _ in range(10):
        add = subprocess.run(["git", "-C", repo, "add", os.path.abspath(path)], capture_output=True, text=True)
        commit = subprocess.run(
            ["git", "-C", repo, "commit", "-q", "-m", message, "--", os.path.abspath(path)],
            capture_output=True,
            text=True,
        )
        if add.returncode == 0 and commit.returncode == 0:
            return
        time.sleep(3)  # another git process holds the index lock
    logging.warning("could not commit %s: %s", path, commit.stderr.strip())


def _pending_order(units: list[benchmark.Unit]) -> list[benchmark.Unit]:
    keys = FLAGS.units or None
    if keys is None and FLAGS.suite == [benchmark.QUEUE_NAME]:
        keys = [u.key for _, group in benchmark.queue_order(FLAGS.units_dir) for u in group]
    order = benchmark.run_order(units, FLAGS.units_dir, keys)
    return order[: FLAGS.max_units] if FLAGS.max_units else order


def _received(unit: benchmark.Unit, record: dict) -> None:
    """A record a cluster worker returned: written (and committed) unless a file of its key exists."""
    if record.get("key") != unit.key or benchmark.unit_of(record).key != unit.key:
        print(f"FAILED   {unit.key}: the worker returned a record of another unit or code", flush=True)
        return
    path = unit.path(FLAGS.units_dir)
    if os.path.exists(path):
        print(f"skipped  {unit.key}: already in {FLAGS.units_dir}", flush=True)
        return
    benchmark.write_unit(record, path)
    host = record.get("machine", {}).get("host", "?")
    print(f"done     {unit.key}: final return {record['final_return']:.1f} (on {host})", flush=True)
    if FLAGS.git_commit:
        _commit(path, f"Learning unit {unit.key}: final return {record['final_return']:.1f}")


def _run_on_cluster(order: list[benchmark.Unit]) -> None:
    """--launcher=ray or slurm: the units as tasks of the cluster, their records written here."""
    from harness import launchers

    code_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = benchmark.code_version()
    through = FLAGS.launcher
    if FLAGS.launcher == "slurm" and launchers.slurm_executor(FLAGS.slurm_cluster) == "local":
        why = "as asked" if FLAGS.slurm_cluster == "local" else "no Slurm on this machine"
        through = f"submitit's local executor ({why}: the units run as subprocesses here, not on Slurm)"
    print(f"{len(order)} unit(s) to run through {through} (commit {code['commit'][:12]})", flush=True)
    if not order:
        return

    def failed(unit, message):
        print(f"FAILED   {unit.key}: {message}", flush=True)

    commit = code["commit"] + ("+dirty" if code["dirty"] else "")  # workers' copies have no .git
    common = {"code_dir": code_dir, "commit": commit, "on_record": _received, "on_error": failed}
    if FLAGS.launcher == "ray":
        launchers.run_ray(
            order,
            address=FLAGS.ray_address,
            num_cpus=FLAGS.ray_num_cpus or None,
            gpus_per_unit=FLAGS.gpus_per_unit,
            runs_dir=FLAGS.cluster_runs_dir or None,
            **common,
        )
    else:
        launchers.run_slurm(
            order,
            folder=os.path.join(os.path.abspath(FLAGS.runs_dir), "submitit"),
            runs_dir=FLAGS.cluster_runs_dir or os.path.abspath(FLAGS.runs_dir),
            cluster=FLAGS.slurm_cluster,
            partition=FLAGS.slurm_partition,
            time_min=FLAGS.slurm_time_min,
            mem_gb=FLAGS.slurm_mem_gb,
            gpus_per_unit=FLAGS.gpus_per_unit,
            array_parallelism=FLAGS.slurm_array_parallelism,
            **common,
        )


# --fit_budget: a unit starts only if its estimate times this ends before the deadline (measured walls
# of finished units were within 0.75-1.4x of their estimate, the slow end on a loaded machine).
FIT_MARGIN = 1.15


def _drop_busy(order: list[benchmark.Unit]) -> None:
    """Removes from ``order`` the units another process is training (their run folder is locked)."""
    for unit in [u for u in order if workdir_in_use(os.path.join(FLAGS.runs_dir, u.key))]:
        print(f"skipped  {unit.key}: another process is training it", flush=True)
        order.remove(unit)


def _next_unit(order: list[benchmark.Unit], seconds_left: float, cost: dict) -> benchmark.Unit | None:
    """Takes the first unit of ``order`` to start now (``None``: none may start). ``cost`` caches
    each unit's estimated time left (it reads every unit file; clear it when a unit finishes)."""
    if not order or seconds_left <= 0:
        return None
    if not FLAGS.fit_budget or seconds_left == float("inf"):
        return order.pop(0)
    for i, unit in enumerate(order):
        if unit.key not in cost:
            cost[unit.key] = benchmark.remaining_seconds(unit, FLAGS.units_dir, FLAGS.runs_dir)
        if FIT_MARGIN * cost[unit.key] <= seconds_left:
            return order.pop(i)
    return None


def _run_pending(units: list[benchmark.Unit]) -> None:
    order = _pending_order(units)
    if FLAGS.launcher != "local":
        return _run_on_cluster(order)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    workers = FLAGS.workers or len(cores)
    deadline = time.time() + 60 * FLAGS.time_budget if FLAGS.time_budget > 0 else float("inf")
    os.makedirs(FLAGS.runs_dir, exist_ok=True)
    print(f"{len(order)} unit(s) to run, {workers} at a time", flush=True)
    running: dict[int, tuple[subprocess.Popen, benchmark.Unit, float]] = {}  # core slot -> process
    cost: dict[str, float] = {}  # --fit_budget: unit key -> estimated seconds left

    def stop_all(*_):
        for proc, _, _ in running.values():
            proc.terminate()
        for proc, _, _ in running.values():
            proc.wait()
        print("stopped; re-run the same command to resume the interrupted units from their checkpoints", flush=True)
        sys.exit(1)

    def drain(*_):  # SIGUSR1: start nothing more; the running units finish, past the deadline too
        nonlocal draining, deadline
        draining, deadline = True, float("inf")
        print(f"draining: no unit starts any more; the {len(running)} running finish", flush=True)

    draining = False
    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGUSR1, drain)
    while order or running:
        _drop_busy(order)
        for slot in range(workers):
            unit = None if slot in running else _next_unit(order, deadline - time.time(), cost)
            if unit is None or draining:  # draining: also when SIGUSR1 came while _next_unit ran
                continue
            core = cores[slot % len(cores)]
            running[slot] = (_start(unit, core), unit, time.time())
            print(f"start    {unit.key} on core {core}", flush=True)
        if time.time() >= deadline and running:
            print("time budget spent", flush=True)
            stop_all()
        time.sleep(2)
        for slot, (proc, unit, started) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[slot]
            cost.clear()  # a new unit file (or checkpoint) changes the estimates
            _finished(unit, proc.returncode, started)
        if draining:
            order.clear()
        if not running and (time.time() >= deadline or _next_unit(list(order), deadline - time.time(), cost) is None):
            if order:
                print(f"{len(order)} pending unit(s) do not fit in what is left of --time_budget", flush=True)
            break


def _start(unit: benchmark.Unit, core: int) -> subprocess.Popen:
    """Starts ``unit`` as a process of this script pinned to ``core``, its output in its run log."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        f"--suite={','.join(FLAGS.suite)}",
        f"--unit={unit.key}",
        f"--units_dir={FLAGS.units_dir}",
        f"--runs_dir={FLAGS.runs_dir}",
    ]
    log = open(os.path.join(FLAGS.runs_dir, unit.key + ".log"), "a")  # noqa: SIM115
    pin = (lambda: os.sched_setaffinity(0, {core})) if hasattr(os, "sched_setaffinity") else None
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin)


def _finished(unit: benchmark.Unit, returncode: int, started: float) -> None:
    """Reports (and with --git_commit commits) the unit file of a unit process that ended."""
    path = unit.path(FLAGS.units_dir)
    if returncode != 0 or not os.path.exists(path):
        print(f"FAILED   {unit.key} (exit {returncode}); see {FLAGS.runs_dir}/{unit.key}.log", flush=True)
        return
    record = benchmark.load_unit(path)
    took = _minutes(time.time() - started)
    print(f"done     {unit.key}: final return {record['final_return']:.1f} ({took})", flush=True)
    if FLAGS.git_commit:
        _commit(path, f"Learning unit {unit.key}: final return {record['final_return']:.1f}")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"bench_learning.py: error: {cli.stray_argument_error(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    try:
        if FLAGS.import_units:
            written, skipped = benchmark.import_units(FLAGS.import_units, FLAGS.units_dir)
            for path in written:
                record = benchmark.load_unit(path)
                print(f"added    {record['key']}: final return {record['final_return']:.1f}")
                if FLAGS.git_commit:
                    _commit(path, f"Learning unit {record['key']}: final return {record['final_return']:.1f}")
            for key in skipped:
                print(f"skipped  {key}: already in {FLAGS.units_dir}")
            return
        if FLAGS.report:
            from harness import report

            suites = FLAGS.suite if FLAGS["suite"].present else list(report.REPORTED_SUITES)
            docs = FLAGS.readme if FLAGS["readme"].present else _default_docs(report.REPORTED_DOCS)
            path = report.write_report(FLAGS.units_dir, FLAGS.out_dir, suites, docs)
            print(f"report written to {path}")
            return
        units = _units()
        if FLAGS.unit:
            match = [u for u in units if u.key == FLAGS.unit]
            if not match:
                raise ValueError(f"--unit={FLAGS.unit} is not a unit of --suite={','.join(FLAGS.suite)}")
            try:
                record = benchmark.run_unit(match[0], FLAGS.units_dir, FLAGS.runs_dir, progress=FLAGS.progress)
            except Interrupted as e:
                sys.exit(f"bench_learning.py: {e}")
            print(f"{record['key']}: final return {record['final_return']:.1f}")
            return
        if FLAGS.units:
            benchmark.run_order(units, FLAGS.units_dir, FLAGS.units)  # unknown keys: one line before anything runs
        if FLAGS.list:
            _list(units)
            return
        for name, value in (("max_units", FLAGS.max_units), ("workers", FLAGS.workers)):
            if value < 0:
                raise ValueError(f"--{name} must be >= 0, got {value}")
        if FLAGS.time_budget < 0:
            raise ValueError(f"--time_budget must be >= 0 minutes, got {FLAGS.time_budget}")
        if FLAGS.fit_budget and (not FLAGS.time_budget or FLAGS.launcher != "local"):
            raise ValueError("--fit_budget needs --time_budget=<minutes> and --launcher=local")
        if FLAGS.launcher == "slurm":
            from harness import launchers

            launchers.slurm_executor(FLAGS.slurm_cluster)  # no Slurm where it is asked for: one line, now
        if FLAGS.pin:
            _run_pinned()
        _run_pending(units)
    except ValueError as e:
        sys.exit(f"bench_learning.py: error: {e}")


if __name__ == "__main__":
    app.run(main)

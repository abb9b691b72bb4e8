"""Hand pending learning units to a Ray cluster or to Slurm (through submitit).

Units are independent, so no distributed code is needed: one task per unit, the unit's record (the
content of its file) comes back as the task's value, and the runner (``bench_learning.py``) writes and
commits each file as it arrives, exactly as the local runner does. Workers run the pinned commit's
code: Ray ships the pinned worktree to them (``runtime_env.working_dir``, no shared filesystem
needed); Slurm nodes import it from the worktree's path (submitit itself needs a shared filesystem).

Retries: a worker that dies (pre-emption, a lost node) is retried; with a run folder every worker can
write (``runs_dir``) the retry resumes from the unit's last checkpoint, otherwise it starts over. An
exception inside a unit is not retried: it is reported with the unit's key in one line, and the other
units go on. Ray and submitit are optional (``pip install -e ".[cluster]"``), imported only here.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

OnRecord = Callable[[Any, dict], None]
OnError = Callable[[Any, str], None]


def unit_task(config: dict, runs_dir: str | None, code_dir: str | None = None) -> dict:
    """What a worker runs: the unit that ``config`` (a ``RunConfig`` dict) describes, to the end.

    Args:
      config: the unit's ``RunConfig.to_dict()``.
      runs_dir: a folder every worker can write (the unit's checkpoints live there, so a retried
        unit resumes), or None: a private temporary folder (a retried unit starts over).
      code_dir: the checkout to import ``qsm_jax`` and ``harness`` from (default: the working
        directory, where Ray unpacks the shipped worktree).

    Returns:
      The unit's record; its key re-derives from ``config`` (checked by the runner).
    """
    code_dir = code_dir or os.getcwd()
    for path in (os.path.join(code_dir, "experiments"), code_dir):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ.setdefault("MUJOCO_GL", "disable")
    from harness import benchmark
    from qsm_jax.program.run_config import RunConfig

    unit = benchmark.Unit(RunConfig.from_dict(config))
    with tempfile.TemporaryDirectory() as tmp:
        return benchmark.run_unit(unit, os.path.join(tmp, "units"), runs_dir or os.path.join(tmp, "runs"))


def _by_value(cloudpickle: Any, task: Callable) -> None:
    """Pickle this module and ``task``'s by value: workers then need not import them (``harness`` is
    not installed, and a stand-in task may live in a test module)."""
    for name in {__name__, task.__module__}:
        if name in sys.modules and name != "__main__":
            cloudpickle.register_pickle_by_value(sys.modules[name])


def one_line(error: BaseException) -> str:
    """``Type: message`` of an exception, on one line (the cause a Ray task error wraps)."""
    cause = getattr(error, "cause", None) or error
    text = " ".join(str(cause).split()) or "(no message)"
    return f"{type(cause).__name__}: {text[:300]}"


def run_ray(
    units: Iterable[Any],
    *,
    code_dir: str,
    commit: str,
    on_record: OnRecord,
    on_error: OnError,
    address: str = "",
    num_cpus: int | None = None,
    gpus_per_unit: float = 0.0,
    runs_dir: str | None = None,
    max_retries: int = 3,
    task: Callable[..., dict] = unit_task,
) -> None:
    """Runs ``units`` as Ray tasks (1 CPU and ``gpus_per_unit`` GPU each), in the given order of
    submission; calls ``on_record(unit, record)`` or ``on_error(unit, one-line message)`` for each
    as it finishes.

    Args:
      address: a running cluster (``ray start --head`` prints it), or "" for a local instance of
        ``num_cpus`` CPUs (default: every core).
      code_dir, commit: the pinned worktree shipped to the workers, and the commit it holds (the
        copy has no .git; the records name this commit).
      runs_dir: see ``unit_task``.
      max_retries: retries of a unit whose worker died.
      task: the function a worker runs (``unit_task``; tests pass stand-ins).
    """
    import ray
    from ray import cloudpickle

    _by_value(cloudpickle, task)
    started = not ray.is_initialized()
    if started:
        ray.init(
            address=address or None,
            num_cpus=None if address else num_cpus,
            runtime_env={
                "working_dir": code_dir,
                "excludes": [".git", "runs/", "results/", "*.png", ".venv*", ".device/", ".*_cache/"],
                "env_vars": {"QSM_JAX_COMMIT": commit, "MUJOCO_GL": "disable"},
            },
            include_dashboard=False,
            log_to_driver=False,
            # Ray starts its workers at nice 15; a unit is the work here, not a background chore.
            **({} if address else {"_system_config": {"worker_niceness": 0}}),
        )
    remote = ray.remote(num_cpus=1, num_gpus=gpus_per_unit, max_retries=max_retries, retry_exceptions=False)(task)
    pending = {remote.remote(u.config.to_dict(), runs_dir): u for u in units}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(done[0])
            try:
                record = ray.get(done[0])
            except Exception as e:  # noqa: BLE001  (a unit's failure is reported, the others go on)
                on_error(unit, one_line(e))
                continue
            on_record(unit, record)
    finally:
        if started:
            ray.shutdown()


def _job_error(error: BaseException) -> str:
    """One line for a failed submitit job: the last line of the worker's traceback if it has one."""
    text = str(error)
    if "----------------------" in text:  # submitit's FailedJobError quotes the traceback between rules
        lines = [line.strip() for line in text.split("----------------------")[1].splitlines() if line.strip()]
        starts = [i for i, line in enumerate(lines) if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b", line)]
        if lines:
            return " ".join(lines[starts[-1] if starts else -1 :])[:300]
    return one_line(error)


class UnitJob:
    """A submitit job running one unit; on pre-emption or time-out submitit requeues it with the
    same arguments, and the unit resumes from its checkpoint in ``runs_dir`` (shared on Slurm)."""

    def __init__(self, code_dir: str, task: Callable[..., dict] = unit_task):
        self.code_dir, self.task = code_dir, task

    def __call__(self, config: dict, runs_dir: str | None) -> dict:
        return self.task(config, runs_dir, self.code_dir)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def slurm_executor(cluster: str) -> str:
    """The submitit executor that ``--slurm_cluster=cluster`` gives on this machine: "slurm" where
    Slurm is (its ``srun`` on PATH, submitit's own test), else "local" (submitit's local executor:
    jobs are subprocesses of this machine).

    Raises:
      ValueError: ``cluster == "slurm"`` where Slurm is absent, or an unknown ``cluster`` (one line).
    """
    if cluster not in ("", "slurm", "local"):
        raise ValueError(f"--slurm_cluster={cluster}: choose '' (Slurm if present), 'slurm' or 'local'")
    found = shutil.which("srun") is not None
    if cluster == "slurm" and not found:
        raise ValueError(
            "--slurm_cluster=slurm: Slurm is not on this machine (no srun on PATH); run from a Slurm login "
            "node, or use --slurm_cluster=local (submitit's local executor) or --launcher=local"
        )
    return "slurm" if found and cluster != "local" else "local"


def run_slurm(
    units: Iterable[Any],
    *,
    code_dir: str,
    commit: str,
    folder: str,
    on_record: OnRecord,
    on_error: OnError,
    runs_dir: str | None,
    cluster: str = "",
    partition: str = "",
    time_min: int = 180,
    mem_gb: float = 8.0,
    gpus_per_unit: float = 0.0,
    array_parallelism: int = 64,
    poll_s: float = 5.0,
    task: Callable[..., dict] = unit_task,
) -> None:
    """Runs ``units`` as one Slurm job array through submitit (1 CPU each); calls ``on_record`` or
    ``on_error`` for each as it finishes, polling every ``poll_s`` seconds.

    Args:
      cluster: "" (Slurm if present, else submitit's local executor), "slurm" (refused where Slurm is
        absent), or "local" (submitit's local executor: jobs are subprocesses of this machine);
        ``slurm_executor``.
      folder: submitit's job folder (logs, pickles); must be on a filesystem the nodes share.
      partition, time_min, mem_gb: Slurm's partition, time limit per unit and memory per unit.
      gpus_per_unit: GPUs per job (rounded up: Slurm allocates whole GPUs).
      runs_dir: see ``unit_task``; on Slurm pass a shared folder so requeued units resume.
    """
    import cloudpickle
    import submitit

    _by_value(cloudpickle, task)
    units = list(units)
    # The jobs inherit this environment: the pinned code first on their path (UnitJob is unpickled
    # there before it runs), and the commit that code holds.
    path = [os.path.join(code_dir, "experiments"), code_dir, os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, path))
    os.environ["QSM_JAX_COMMIT"] = commit
    os.environ.setdefault("MUJOCO_GL", "disable")
    executor = submitit.AutoExecutor(folder=folder, cluster=slurm_executor(cluster))
    params: dict[str, Any] = {"timeout_min": time_min, "cpus_per_task": 1, "mem_gb": mem_gb}
    if executor.cluster == "slurm":
        params["slurm_array_parallelism"] = array_parallelism
        if partition:
            params["slurm_partition"] = partition
        if gpus_per_unit:
            params["gpus_per_node"] = int(-(-gpus_per_unit // 1))
    executor.update_parameters(**params)
    jobs = executor.map_array(UnitJob(code_dir, task), [u.config.to_dict() for u in units], [runs_dir] * len(units))
    pending = dict(zip(jobs, units, strict=True))
    while pending:
        for job in [j for j in pending if j.done()]:
            unit = pending.pop(job)
            try:
                record = job.result()
            except Exception as e:  # noqa: BLE001
                on_error(unit, _job_error(e))
                continue
            on_record(unit, record)
        if pending:
            time.sleep(poll_s)

"""The cluster launchers (experiments/harness/launchers.py): Ray and submitit give the unit files the
local runner gives, skip finished units, and report a failing unit in one line while the others finish."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from harness import benchmark, launchers

from .helpers import ROOT

UNIT = next(u for u in benchmark.SUITES["smoke"]() if u.config.algo == "td3" and u.config.seed == 0)


def _bench(tmp: str, *flags: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        os.path.join(ROOT, "experiments", "bench_learning.py"),
        "--suite=smoke",
        f"--units={UNIT.key}",
        "--pin=",
        f"--units_dir={tmp}/units",
        f"--runs_dir={tmp}/runs",
        *flags,
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "disable", "RAY_AUTH_MODE": "disabled"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def _same_unit(path, reference: dict) -> None:
    record = json.loads(path.read_text())
    assert record["key"] == reference["key"] == UNIT.key
    assert record["curve"] == reference["curve"]  # deterministic on CPU: the same numbers
    assert record["machine"]["host"]  # the record names the machine it ran on


@pytest.mark.slow
def test_ray_and_submitit_give_the_local_runners_unit_and_never_run_it_twice(tmp_path):
    _bench(str(tmp_path / "local"))
    local = benchmark.load_unit(UNIT.path(str(tmp_path / "local" / "units")))
    out = _bench(str(tmp_path / "ray"), "--launcher=ray", "--ray_num_cpus=1")
    assert f"done     {UNIT.key}" in out.stdout
    _same_unit(tmp_path / "ray" / "units" / f"{UNIT.key}.json", local)
    again = _bench(str(tmp_path / "ray"), "--launcher=ray", "--ray_num_cpus=1")
    assert "0 unit(s) to run" in again.stdout
    out = _bench(str(tmp_path / "slurm"), "--launcher=slurm", "--slurm_cluster=local")
    assert f"done     {UNIT.key}" in out.stdout
    _same_unit(tmp_path / "slurm" / "units" / f"{UNIT.key}.json", local)


def _fake_units(n):
    return [SimpleNamespace(key=f"u{i}", config=SimpleNamespace(to_dict=lambda i=i: {"i": i})) for i in range(n)]


def _sometimes_raises(config, runs_dir, code_dir=None):
    if config["i"] == 1:
        raise ValueError("no such env 'Nope-v0'")
    return {"key": f"u{config['i']}"}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["ray", "slurm"])
def test_a_failing_unit_is_one_line_and_the_others_finish(launcher, tmp_path):
    got, errors = [], []
    common = dict(
        code_dir=str(tmp_path),
        commit="test",
        task=_sometimes_raises,
        on_record=lambda u, r: got.append((u.key, r["key"])),
        on_error=lambda u, m: errors.append((u.key, m)),
    )
    if launcher == "ray":
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        launchers.run_ray(_fake_units(3), num_cpus=1, max_retries=0, **common)
    else:
        launchers.run_slurm(
            _fake_units(3), folder=str(tmp_path / "jobs"), runs_dir=None, cluster="local", poll_s=0.2, **common
        )
    assert sorted(got) == [("u0", "u0"), ("u2", "u2")]
    assert len(errors) == 1 and errors[0][0] == "u1"
    assert "\n" not in errors[0][1] and "ValueError" in errors[0][1] and "Nope-v0" in errors[0][1], errors


def test_slurm_where_slurm_is_absent_is_refused_in_one_line_or_named_local(tmp_path, monkeypatch):
    """--slurm_cluster=slurm without Slurm: one line before anything runs; without --slurm_cluster the
    units go to submitit's local executor, and the runner says so instead of "through slurm"."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.path.dirname(sys.executable)}")
    assert launchers.slurm_executor("") == launchers.slurm_executor("local") == "local"
    with pytest.raises(ValueError, match=r"^--slurm_cluster=slurm: Slurm is not on this machine \(no srun on PATH\)"):
        launchers.slurm_executor("slurm")
    with pytest.raises(ValueError, match="--slurm_cluster=slurn: choose"):
        launchers.slurm_executor("slurn")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    assert launchers.slurm_executor("") == launchers.slurm_executor("slurm") == "slurm"
    assert launchers.slurm_executor("local") == "local"
    (bin_dir / "srun").unlink()
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "bench_learning.py"), "--suite=smoke", "--pin="]
    cmd += [f"--units_dir={tmp_path}/units", f"--runs_dir={tmp_path}/runs", "--launcher=slurm"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([*cmd, "--slurm_cluster=slurm"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode != 0 and out.stdout == "", out.stdout
    assert out.stderr.strip().startswith("bench_learning.py: error: --slurm_cluster=slurm: Slurm is not on this")
    assert "\n" not in out.stderr.strip() and not (tmp_path / "runs").exists()
    # Every smoke unit already done: the runner names the executor it would use, and runs nothing.
    for unit in benchmark.SUITES["smoke"]():
        record = benchmark.unit_record(unit, [{"step": 1, "returns": [0.0]}], 1.0, 1.0, 0)
        benchmark.write_unit(record, unit.path(str(tmp_path / "units")))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "0 unit(s) to run through submitit's local executor (no Slurm on this machine" in out.stdout

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

"""The lent-accelerator path, on CPU: experiments/device/units.sh runs pending units in a copy with
no git history and packs their files; bench_learning.py --import_units adds them, never twice."""

import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from harness import benchmark

from .helpers import ROOT

COMMIT = "c" * 40


@pytest.mark.slow
def test_device_script_runs_units_in_a_copy_and_they_import_once(tmp_path):
    copy, out, units_dir = tmp_path / "copy", tmp_path / "out", tmp_path / "units"
    ignore = shutil.ignore_patterns(".git", ".venv", ".device", "runs", "__pycache__", "*.egg-info", ".*cache")
    shutil.copytree(ROOT, copy, ignore=ignore)
    env = {
        **os.environ,
        "OUT": str(out),
        "SUITE": "smoke",
        "WORKERS": "2",
        "MINUTES": "8",
        "PYTHON": sys.executable,
        "QSM_JAX_COMMIT": COMMIT,
        "JAX_PLATFORMS": "cpu",
        "GIT_CEILING_DIRECTORIES": str(tmp_path),  # the copy is not inside any git checkout
    }
    run = subprocess.run(["bash", "experiments/device/units.sh"], cwd=copy, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "unit files in units.tar: 2" in run.stdout
    assert sorted(os.listdir(out)) == ["device.txt", "runner.log", "unit_logs.txt", "units.tar"]  # <= 8 files
    with tarfile.open(out / "units.tar") as tar:
        names = sorted(os.path.basename(m.name) for m in tar.getmembers() if m.isfile())
    assert len(names) == 2 and all(n.startswith("td3_Pendulum-v1") for n in names)

    script = os.path.join(ROOT, "experiments", "bench_learning.py")
    imported = subprocess.run(
        [sys.executable, script, f"--import_units={out / 'units.tar'}", f"--units_dir={units_dir}"],
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.count("added    td3_Pendulum-v1") == 2
    for name in names:
        record = benchmark.load_unit(str(units_dir / name))
        assert record["commit"] == COMMIT and record["dirty"] is False  # the commit the copy was made from
    again = benchmark.import_units(str(out / "units.tar"), str(units_dir))
    assert again == ([], [n[:-5] for n in names])  # never written twice


def test_import_refuses_files_that_are_not_units_of_this_code(tmp_path):
    unit = benchmark.make_unit("td3", "Pendulum-v1", 0, 1000)
    record = benchmark.unit_record(
        unit, [{"step": 1000, "returns": [1.0]}], 1.0, 1.0, 0, {"commit": COMMIT, "dirty": False}
    )
    src = tmp_path / "src"
    src.mkdir()
    (src / f"{unit.key}.json").write_text(json.dumps({**record, "config": {**record["config"], "seed": 1}}))
    with pytest.raises(ValueError, match=r"its key does not match its config"):
        benchmark.import_units(str(src), str(tmp_path / "units"))
    (src / f"{unit.key}.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"is not a unit record"):
        benchmark.import_units(str(src), str(tmp_path / "units"))
    with pytest.raises(ValueError, match=r"neither a folder nor a tar archive"):
        benchmark.import_units(str(tmp_path / "nope.tar"), str(tmp_path / "units"))
    assert not (tmp_path / "units").exists() or not os.listdir(tmp_path / "units")

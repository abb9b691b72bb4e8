"""The named configurations under configs/ resolve to the settings the benchmark units measured."""

import json
import os
import subprocess
import sys

import pytest

from qsm_jax import benchmark
from qsm_jax.train import RunConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _resolved(*flags: str) -> RunConfig:
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "run.py"), *flags, "--print_config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return RunConfig.from_dict(json.loads(out.stdout))


@pytest.mark.parametrize(("name", "label"), [("qsm_paper", "QSM"), ("qsm_mirror", "QSM-mirror")])
def test_flagfile_resolves_to_the_units_settings(name, label):
    config = _resolved(f"--flagfile=configs/{name}.flags", "--env=Hopper-v4")
    assert benchmark.label(config) == label  # the agent settings of the units labelled so
    unit = next(u for u in benchmark.suite_units("variants100k") if benchmark.label(u.config) == label)
    assert config.agent == unit.config.agent and config.env == "Hopper-v4"
    text = open(os.path.join(ROOT, "configs", f"{name}.flags")).read()
    assert f'labelled "{label}"' in text  # the comment names the units that measured it


def test_flags_after_the_flagfile_override_it():
    config = _resolved("--flagfile=configs/qsm_mirror.flags", "--lam=0.5", "--seed=3")
    assert (config.agent.lam, config.agent.score_target, config.seed) == (0.5, "mirror", 3)
    assert _resolved().agent == _resolved("--flagfile=configs/qsm_paper.flags").agent  # the defaults

"""The named configurations under configs/ resolve to the settings the benchmark units measured."""

import json
import os
import subprocess
import sys

import pytest

from harness import benchmark
from qsm_jax.program import cli
from qsm_jax.program.run_config import RunConfig

from .helpers import ROOT


def _resolved(*args: str) -> RunConfig:
    """The RunConfig run.py would train for ``args`` (its generated flags, parsed in-process; flagfile
    paths relative to the repository)."""
    from absl import flags

    values = flags.FlagValues()
    cli.define_flags(values)
    values(["run.py", *(a.replace("--flagfile=", f"--flagfile={ROOT}/") for a in args)])
    return cli.config_from_flags(values)


def test_print_config_prints_what_the_flags_resolve_to():
    """run.py --print_config (the command line itself) gives the in-process resolution's config."""
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "run.py"), "--flagfile=configs/qsm_mirror.flags"]
        + ["--lam=0.5", "--print_config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert RunConfig.from_dict(json.loads(out.stdout)) == _resolved("--flagfile=configs/qsm_mirror.flags", "--lam=0.5")


@pytest.mark.parametrize(
    ("name", "label", "suite"),
    [
        ("qsm_paper", "QSM", "variants100k"),
        ("qsm_mirror", "QSM-mirror", "variants100k"),
        ("qsm_maxent", "QSM-maxent", "maxent100k"),
        ("qsm_maxent_samples", "QSM-maxent-samples", "maxent100k"),
        ("qsm_256", "QSM-256", "dmc100k"),
        ("qsm_256", "QSM-256", "core100k"),
        ("sac_512", "SAC-512", "dmc100k"),
        ("sac_512", "SAC-512", "core100k"),
        ("qsm_mirror_256", "QSM-mirror-256", "plus100k"),
        ("qsm_mirror_t10_kl_256", "QSM-mirror-T10-KL-256", "plus100k"),
    ],
)
def test_flagfile_resolves_to_the_units_settings(name, label, suite):
    config = _resolved(f"--flagfile=configs/{name}.flags", "--env=Hopper-v4")
    assert benchmark.label(config) == label  # the agent settings of the units labelled so
    unit = next(u for u in benchmark.suite_units(suite) if benchmark.label(u.config) == label)
    assert config.agent == unit.config.agent and config.env == "Hopper-v4"
    text = open(os.path.join(ROOT, "configs", f"{name}.flags")).read()
    assert f'labelled "{label}"' in text  # the comment names the units that measured it


def test_flags_after_the_flagfile_override_it():
    config = _resolved("--flagfile=configs/qsm_mirror.flags", "--lam=0.5", "--seed=3")
    assert (config.agent.lam, config.agent.score_target, config.seed) == (0.5, "mirror", 3)
    assert _resolved().agent == _resolved("--flagfile=configs/qsm_paper.flags").agent  # the defaults


def test_every_config_field_has_a_generated_flag_with_help():
    import dataclasses

    from absl import flags

    from qsm_jax.algorithms import ALGORITHMS
    from qsm_jax.program import cli

    values = flags.FlagValues()
    cli.define_flags(values, module="run.py")
    names = {f.name for f in dataclasses.fields(RunConfig) if f.name != "agent"}
    for algorithm in ALGORITHMS.values():
        names |= {f.name for f in dataclasses.fields(algorithm.config_cls)}
    for name in names:
        assert name in values, f"no flag for {name}"
        assert len(values[name].help) > 10, f"--{name} has no help: document it in the dataclass docstring"
    texts = {}  # one text for two flags (a docstring entry naming both) would not say which does what
    for name in names:
        texts.setdefault(values[name].help.split(" [")[0], []).append(name)
    assert [sorted(n) for n in texts.values() if len(n) > 1] == []
    values(["run.py", "--algo=td3", "--policy_delay=3", "--actor_hidden_dims=8,8", "--max_steps=5000"])
    config = cli.config_from_flags(values)
    assert (config.agent.policy_delay, config.agent.actor_hidden_dims, config.max_steps) == (3, (8, 8), 5000)
    assert config.agent.critic_hidden_dims == (256, 256)  # TD3's own default, not QSM's
    values.unparse_flags()
    values(["run.py", "--algo=sac", "--alpha=3", "--eta=2"])
    with pytest.raises(ValueError, match=r"^--alpha, --eta: not settings of --algo=sac; drop them$"):
        cli.config_from_flags(values)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--algo=dql", "--eta=0"], "run.py: error: eta must be a finite number > 0, got 0.0"),
        (["--actor_hidden_dims=a,b"], "run.py: error: actor_hidden_dims must be comma-separated integers"),
        (["--algo=td3", "--score_target=mirror"], "run.py: error: --score_target: not settings of --algo=td3"),
        (["--nope"], "run.py: error: Unknown command line flag 'nope' (--help lists the flags)"),
        (["--batch_size=abc"], "run.py: error: flag --batch_size=abc: invalid literal"),
        (["--flagfile=configs/nope.flags"], "run.py: error: cannot open the flagfile configs/nope.flags: fix"),
    ],
)
def test_bad_generated_flags_are_one_line(flags, message):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "run.py"), *flags, "--print_config"],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert out.returncode != 0 and out.stderr.strip().startswith(message) and "\n" not in out.stderr.strip()


def test_a_flagfile_line_or_an_argument_that_is_no_flag_is_one_line_naming_it(tmp_path):
    """absl hands a flagfile's non-flag line to the program as an argument: the error names the file
    and the line (nested flagfiles too), or the stray argument, in one line instead of the help."""
    inner = tmp_path / "inner.flags"
    inner.write_text("# a comment\n--algo=qsm\n\nnot a flag\n")
    outer = tmp_path / "outer.flags"
    outer.write_text(f"--flagfile={inner}\n--seed=2\n")
    cases = [
        ([f"--flagfile={outer}"], f"run.py: error: {inner}, line 4: 'not a flag' is not a flag (flags read"),
        (["stray"], "run.py: error: unexpected argument 'stray': flags read --name=value (--help lists them)"),
    ]
    for args, message in cases:
        out = subprocess.run(
            [sys.executable, os.path.join(ROOT, "experiments", "run.py"), *args, "--print_config"],
            capture_output=True,
            text=True,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
        )
        assert out.returncode != 0 and out.stdout == ""
        assert out.stderr.strip().startswith(message) and "\n" not in out.stderr.strip(), out.stderr[-500:]

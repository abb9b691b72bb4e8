"""Learning-benchmark units (run, skip, resume, identity) and the report's statistics and outputs."""

import contextlib
import dataclasses
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.stats

from harness import benchmark, report
from harness.benchmark import runner
from qsm_jax.baselines.sac import SACConfig
from qsm_jax.config import QSMConfig
from qsm_jax.program.train import train_and_evaluate
from qsm_jax.program.workdir import lock_workdir

from .helpers import ROOT, TINY

TIMING = ("wall_seconds", "env_steps_per_s", "date", "resumed_from_step", "machine", "code_segments")


def _unit(seed=0, **run):
    settings = dict(
        start_steps=100, eval_interval=200, eval_episodes=2, checkpoint_interval=200, buffer_size=1000, batch_size=32
    )
    return benchmark.make_unit("qsm", "Pendulum-v1", seed, 400, agent=TINY, **{**settings, **run})


@pytest.mark.slow
def test_unit_writes_its_file_skips_when_done_and_new_settings_make_a_new_unit(tmp_path, monkeypatch):
    units_dir, runs_dir = str(tmp_path / "units"), str(tmp_path / "runs")
    unit = _unit()
    record = benchmark.run_unit(unit, units_dir, runs_dir)
    with open(unit.path(units_dir)) as f:
        assert json.load(f) == record
    assert record["key"] == unit.key and unit.key.startswith("qsm_Pendulum-v1_seed0_400_")
    assert (record["algo"], record["env"], record["seed"], record["max_steps"]) == ("qsm", "Pendulum-v1", 0, 400)
    assert record["config"] == unit.config.to_dict()
    assert [c["step"] for c in record["curve"]] == [200, 400]
    assert all(len(c["returns"]) == 2 for c in record["curve"])
    assert all(0.0 <= c["wall_share"] <= 1.0 for c in record["curve"])  # share of eval actions at |a| > 0.99
    assert record["final_return"] == pytest.approx(np.mean(record["curve"][-1]["returns"]))
    assert len(record["commit"]) == 40 and isinstance(record["dirty"], bool)
    assert record["machine"]["cpu"] and record["machine"]["cores"] >= 1 and record["date"].startswith("20")
    assert record["wall_seconds"] > 0 and record["env_steps_per_s"] > 0 and record["resumed_from_step"] == 0

    # Done: a second call does not train again.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished unit was run again")

    monkeypatch.setattr(runner, "train_and_evaluate", no_training)
    assert benchmark.run_unit(unit, units_dir, runs_dir) == record
    assert benchmark.run_order([unit], units_dir) == []

    # Any other setting is another unit (another key and file), never an overwrite.
    others = [_unit(seed=1), _unit(eval_episodes=3), benchmark.make_unit("qsm", "Pendulum-v1", 0, 400, agent=TINY)]
    others.append(benchmark.make_unit("qsm", "Pendulum-v1", 0, 400, agent={**TINY, "alpha": 10.0}))
    keys = {unit.key, *(u.key for u in others)}
    assert len(keys) == 5 and not any(u.done(units_dir) for u in others)
    assert _unit().key == unit.key  # stable


def test_unit_names_the_commit_it_started_from(tmp_path, monkeypatch):
    """A runner with --git_commit commits other units' files into the checkout while a unit trains;
    the unit must name the code it ran, the commit at its start."""
    head = {"commit": "a" * 40, "dirty": False}
    monkeypatch.setattr(runner, "code_version", lambda: dict(head))

    def fake_training(config, workdir, progress=False):
        head["commit"] = "b" * 40  # another unit's file committed meanwhile
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
            f.write(json.dumps({"kind": "train", "step": 400, "env_steps_per_s": 50.0}) + "\n")
        return {"history": [{"step": 400, "returns": [1.0, 3.0]}]}

    monkeypatch.setattr(runner, "train_and_evaluate", fake_training)
    record = benchmark.run_unit(_unit(seed=5), str(tmp_path / "units"), str(tmp_path / "runs"))
    assert record["commit"] == "a" * 40 and record["final_return"] == 2.0 and record["env_steps_per_s"] == 50.0


def test_interrupted_unit_resumes_and_equals_an_uninterrupted_one(tmp_path):
    unit = _unit(seed=2)
    full = benchmark.run_unit(unit, str(tmp_path / "a_units"), str(tmp_path / "a_runs"))
    # Interrupt: the same run stopped at its first checkpoint (step 200) in the unit's run folder.
    partial = unit.config.__class__(**{**unit.config.__dict__, "max_steps": 200})
    train_and_evaluate(partial, str(tmp_path / "b_runs" / unit.key), progress=False)
    resumed = benchmark.run_unit(unit, str(tmp_path / "b_units"), str(tmp_path / "b_runs"))
    assert resumed["resumed_from_step"] == 200
    assert resumed["code_segments"] == [{"from_step": 200, **benchmark.code_version()}] and "code_segments" not in full
    strip = lambda r: {k: v for k, v in r.items() if k not in TIMING}  # noqa: E731
    assert strip(resumed) == strip(full)


def test_a_unit_resumed_under_another_commit_lists_which_code_ran_which_steps(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    a, b = {"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": False}
    assert runner.record_code_segments(workdir, 0, a) == [{"from_step": 0, **a}]
    assert runner.record_code_segments(workdir, 0, a) == [{"from_step": 0, **a}]  # killed before a checkpoint
    assert capsys.readouterr().err == ""
    assert runner.record_code_segments(workdir, 30_000, b) == [{"from_step": 0, **a}, {"from_step": 30_000, **b}]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resumes at env step 30000 under commit bbbbbbbbbbbb after commit aaaa" in err
    # Rolled back to an earlier checkpoint (the newest was damaged): the later segment is dropped.
    assert runner.record_code_segments(workdir, 20_000, b) == [{"from_step": 0, **a}, {"from_step": 20_000, **b}]


def test_labels_name_the_settings_that_differ_from_the_defaults():
    assert benchmark.label(benchmark.make_unit("qsm", "Hopper-v4", 0, 1000).config) == "QSM"
    assert benchmark.label(benchmark.make_unit("sac", "Hopper-v4", 0, 1000).config) == "SAC"
    variant = benchmark.make_unit("qsm", "Hopper-v4", 0, 1000, agent={"score_target": "mirror", "lam": 0.1})
    assert benchmark.label(variant.config) == "QSM (score_target=mirror, lam=0.1)"


def test_suites_and_run_order():
    core = benchmark.suite_units("core100k")
    assert len(core) == 36 and len({u.key for u in core}) == 36
    reference = [u for u in core if benchmark.label(u.config) not in ("SAC-512", "QSM-256")]
    assert {(u.config.algo, u.config.env, u.config.seed, u.config.max_steps) for u in reference} == {
        (a, e, s, 100_000)
        for a in ("qsm", "sac", "td3", "dql")
        for e in ("Walker2d-v4", "Hopper-v4")
        for s in (0, 1, 2)
    }
    # Reference settings: the algorithms' default configs, no per-task tuning (the width arms: SAC at 512x512,
    # QSM at 256x256).
    for u in reference:
        assert u.config.agent == type(u.config.agent)()
    assert len(core) - len(reference) == 12
    order = benchmark.run_order(core, "/nonexistent")
    algos = [u.config.algo for u in order]
    assert algos.index("qsm") > max(i for i, a in enumerate(algos) if a in ("sac", "td3"))  # cheap ones first
    assert algos.index("dql") > max(i for i, a in enumerate(algos) if a == "qsm")
    qsm = [(u.config.seed, u.config.env) for u in order if benchmark.label(u.config) == "QSM"]
    assert qsm[:2] == [(0, "Walker2d-v4"), (0, "Hopper-v4")]  # seeds round-robin over envs
    # --units: the named pending units only, in the given order; a key outside the suite is one line.
    named = [order[5].key, order[0].key, order[5].key]
    assert [u.key for u in benchmark.run_order(core, "/nonexistent", named)] == [order[5].key, order[0].key]
    with pytest.raises(ValueError, match=r"^--units: nope not in the suite \(see --list\)$"):
        benchmark.run_order(core, "/nonexistent", ["nope"])
    with pytest.raises(ValueError, match="unknown suite"):
        benchmark.suite_units("nope")


def _fake_record(unit, finals_per_step, episodes=4, rng=None):
    """A unit record with a synthetic curve: at each eval step, ``episodes`` returns around the value."""
    curve = []
    for i, value in enumerate(finals_per_step):
        returns = value + rng.normal(0, 10, episodes)
        curve.append({"step": (i + 1) * 5000, "returns": returns.tolist()})
    return benchmark.unit_record(unit, curve, 1.0, 1.0, 0)


@pytest.fixture
def fixture_suite(tmp_path, monkeypatch):
    envs, algos, seeds = ("Walker2d-v4", "Hopper-v4"), ("qsm", "sac"), (0, 1, 2)
    units = [benchmark.make_unit(a, e, s, 20_000) for a in algos for e in envs for s in seeds]
    monkeypatch.setitem(benchmark.SUITES, "fixture", lambda: units)
    rng = np.random.default_rng(0)
    units_dir = tmp_path / "units"
    units_dir.mkdir()
    records = {}
    for u in units:
        base = {"qsm": 450.0, "sac": 500.0}[u.config.algo] * (2 if u.config.env == "Hopper-v4" else 1)
        rec = _fake_record(u, base * np.array([0.2, 0.5, 0.8, 1.0]) + 40 * u.config.seed, rng=rng)
        if u.config.algo == "qsm" and u.config.seed > 0:  # seed 0 stands for a unit run before it was measured
            rec["curve"][-1]["wall_share"] = 0.25 * u.config.seed
        records[u.key] = rec
        (units_dir / f"{u.key}.json").write_text(json.dumps(rec))
    return units, records, str(units_dir), tmp_path / "out"


def test_report_statistics_equal_numpy(fixture_suite):
    units, records, units_dir, out = fixture_suite
    path = report.write_report(units_dir, str(out), ["fixture"])
    text = open(path).read()
    for env in ("Walker2d-v4", "Hopper-v4"):
        for algo in ("qsm", "sac"):
            recs = [records[u.key] for u in units if (u.config.env, u.config.algo) == (env, algo)]
            finals = np.array([np.mean(r["curve"][-1]["returns"]) for r in recs])
            half = scipy.stats.t.ppf(0.975, 2) * finals.std(ddof=1) / np.sqrt(3)
            episodes = np.sort(np.concatenate([r["curve"][-1]["returns"] for r in recs]))
            iqm = episodes[3:9].mean()  # 12 episodes: the middle half
            aucs = [
                sum((m[i] + m[i + 1]) / 2 * 5000 for i in range(3)) / 15000
                for m in ([np.mean(c["returns"]) for c in r["curve"]] for r in recs)
            ]
            s = report.cell_stats(recs)
            assert s["n"] == 3 and s["seeds"] == [0, 1, 2]
            np.testing.assert_allclose(s["finals"], finals)
            np.testing.assert_allclose(s["mean"], finals.mean())
            np.testing.assert_allclose(s["ci"], (finals.mean() - half, finals.mean() + half))
            np.testing.assert_allclose(s["iqm"], iqm)
            np.testing.assert_allclose(s["aucs"], aucs)
            row = f"| {env} | {algo.upper()} | 3 | {finals.mean():.0f} [{finals.mean() - half:.0f}, "
            assert row in text
            walls = "-, 25%, 50%" if algo == "qsm" else "-"  # final-eval share at |a| > 0.99, per seed
            assert [line for line in text.splitlines() if line.startswith(row)][0].endswith(f"| {walls} | - | - |")
    # Aggregate: SAC-normalised final returns; IQM point estimate and P(QSM > SAC) against NumPy.
    cells = {}
    for u in units:
        cells.setdefault((u.config.env, u.config.algo), []).append(records[u.key])
    cells = {(e, a.upper()): v for (e, a), v in cells.items()}
    agg = report.aggregate(cells, ["Walker2d-v4", "Hopper-v4"], ["QSM", "SAC"])
    scale = {e: np.mean([report.seed_final(r) for r in cells[(e, "SAC")]]) for e in ("Walker2d-v4", "Hopper-v4")}
    scores = {
        a: np.array([[report.seed_final(r) / scale[e] for r in cells[(e, a)]] for e in scale]).T for a in ("QSM", "SAC")
    }
    for a in ("QSM", "SAC"):
        flat = np.sort(scores[a].ravel())  # 6 scores: trim 25% -> int(1.5) = 1 from each end
        np.testing.assert_allclose(agg["iqm"][a], flat[1:5].mean())
        lo, hi = agg["iqm_ci"][a]
        assert lo <= agg["iqm"][a] <= hi
    poi = np.mean(
        [
            np.mean([(x > y) + 0.5 * (x == y) for x in scores["QSM"][:, t] for y in scores["SAC"][:, t]])
            for t in range(2)
        ]
    )
    np.testing.assert_allclose(agg["poi"]["QSM"], poi)
    assert 0 < poi < 1 and any(
        line.startswith("| QSM | ") and f"| {poi:.2f} [" in line for line in text.splitlines()
    )  # the aggregate table's row: IQM, P(QSM > SAC)
    for png in ("fixture_Walker2d-v4.png", "fixture_Hopper-v4.png", "fixture_aggregate.png"):
        assert (out / png).stat().st_size > 1000


def test_report_marks_missing_units_pending(fixture_suite):
    units, records, units_dir, out = fixture_suite
    missing = [u for u in units if u.config.algo == "qsm" and u.config.env == "Hopper-v4"]
    os.remove(missing[2].path(units_dir))
    for u in (u for u in units if u.config.algo == "sac" and u.config.env == "Walker2d-v4"):
        os.remove(u.path(units_dir))
    readme = out.parent / "README.md"
    other = f"{report.begin_marker('other')}\nother table\n{report.end_marker('other')}\n"
    fixture = f"{report.begin_marker('fixture')}\nold table\n{report.end_marker('fixture')}\n"
    readme.write_text(f"intro\n{fixture}{other}rest\n")
    text = open(report.write_report(units_dir, str(out), ["fixture"], readme=str(readme))).read()
    assert "## Suite `fixture`: 12 units, 8 done, 4 pending" in text
    block = readme.read_text()
    assert block.startswith("intro\n") and block.endswith(f"{other}rest\n") and "old table" not in block
    assert "| Walker2d-v4 | SAC | 0 | pending |" in block and "](out/fixture_Hopper-v4.png)" in block
    assert "| Hopper-v4 | QSM | 2 |" in text and text.count("| seed 2 |") >= 1
    assert "| Walker2d-v4 | SAC | 0 | pending | - | - | - | - | - | - | seed 0, seed 1, seed 2 |" in text
    assert "Aggregate (IQM with stratified bootstrap CIs, P(QSM > SAC)): pending" in text
    assert (out / "fixture_Hopper-v4.png").exists() and not (out / "fixture_aggregate.png").exists()


def test_bench_learning_list_and_errors(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "disable"}
    script = os.path.join(ROOT, "experiments", "bench_learning.py")
    half_done, sibling = (benchmark.make_unit("qsm", "Walker2d-v4", seed, 100_000).key for seed in (0, 1))
    busy = benchmark.make_unit("sac", "Hopper-v4", 2, 100_000).key
    runs = tmp_path / "runs"
    os.makedirs(runs / half_done / "checkpoints" / "50000")
    os.makedirs(runs / busy)
    with contextlib.ExitStack() as training:
        lock_workdir(str(runs / busy), training)  # as a training process holds its run folder
        out = subprocess.run(
            [sys.executable, script, "--suite=core100k", "--list", f"--units_dir={tmp_path}", f"--runs_dir={runs}"],
            capture_output=True,
            text=True,
            env=env,
        )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert sum(line.startswith("pending  ") and "est." in line for line in lines) == 35
    assert [line.split()[:2] for line in lines if line.startswith("running  ")] == [["running", busy]]
    assert lines[-1].startswith("0/36 done")
    minutes = {}  # a unit with a checkpoint halfway lists half the time left of its twin
    for line in lines:
        if est := re.search(r"est\. ([\d.]+) (min|h)", line):
            minutes[line.split()[1]] = float(est[1]) * (60 if est[2] == "h" else 1)
    assert minutes[half_done] == pytest.approx(minutes[sibling] / 2, abs=0.5)
    resuming = [line for line in lines if "resumes" in line]
    assert len(resuming) == 1 and half_done in resuming[0] and "(resumes at env step 50000)" in resuming[0]
    bad = subprocess.run([sys.executable, script, "--suite=nope", "--list"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and "unknown suite 'nope'" in bad.stderr


def test_queue_runs_the_width_arms_first_then_screening_dql_scale_and_drops_what_no_longer_decides():
    items = benchmark.queue_order("/nonexistent")
    assert [len(units) for _, units in items] == [9, 9, 6, 6, 6, 18, 27, 9, 12, 4, 6, 12, 12, 12]
    labels = [{benchmark.label(u.config) for u in units} for _, units in items]
    assert labels == [
        {"SAC-512"},
        {"QSM-256"},
        {"SAC-512"},
        {"QSM-mirror-policy", "QSM-mirror-T10"},
        {"DQL"},
        # the KL candidate and max-ent QSM's sample estimate at 512x512 are dropped (below)
        {"QSM", "QSM-mirror", "SAC"},
        {"QSM", "SAC", "TD3"},
        {"QSM-mirror"},
        {"QSM", "QSM-mirror"},
        {"QSM-maxent"},
        {"QSM-256"},
        # QSM-maxent-samples-256, -dual8-256 and the tanh candidates -ent-in, -ent-cap, -ent-bounded are dropped
        {
            "QSM-mirror-256",
            "QSM-mirror-T10-KL-256",
            "QSM-mirror-T10-KL-next-256",
            "QSM-tanh-T10-KL-ent-256",
        },
        {"QSM-mirror-T10-KL-256"},
        {"QSM-mirror-256"},
    ]
    dmc, gym = set(benchmark.DMC_TASKS), set(benchmark.GYM_TASKS)
    assert all(u.config.env in dmc for i in (0, 1, 6, 7) for u in items[i][1])
    assert all(u.config.env in gym for i in (2, 4, 8, 9, 10) for u in items[i][1])
    assert {u.config.env for u in items[5][1]} == {"Ant-v4", "Humanoid-v4"}
    # Screening: seed 0 on the three tasks where today's configurations disagree most.
    assert {(u.config.env, u.config.seed) for u in items[3][1]} == {(t, 0) for t in benchmark.SCREEN_TASKS}
    assert {u.config.agent.diffusion_steps for u in items[3][1]} == {5, 10}
    # Screening at 256x256: seed 0 on the screening tasks, each setting as at 512x512 but the hidden sizes.
    assert {(u.config.env, u.config.seed) for u in items[11][1]} == {(t, 0) for t in benchmark.SCREEN_TASKS}
    # Each 256x256 candidate is a 512x512 one with only the widths changed, but the one screened at 256x256 alone.
    alone = {
        "QSM-mirror-T10-KL-next-256": benchmark.VARIANT_MIRROR_T10_KL_NEXT,
        "QSM-mirror-T10-KL-dual8-256": benchmark.VARIANT_MIRROR_T10_KL_DUAL8,
        "QSM-tanh-T10-KL-ent-256": benchmark.VARIANT_TANH_T10_KL_ENT,
        "QSM-tanh-T10-KL-ent-in-256": benchmark.VARIANT_TANH_T10_KL_ENT_IN,
        "QSM-tanh-T10-KL-ent-cap-256": benchmark.VARIANT_TANH_T10_KL_ENT_CAP,
        "QSM-tanh-T10-KL-ent-bounded-256": benchmark.VARIANT_TANH_T10_KL_ENT_BOUNDED,
    }
    for name, settings in benchmark.SCREEN_256.items():
        if name in alone:
            assert settings == {**alone[name], **benchmark.WIDTH_256}
            continue
        at_512 = benchmark.make_unit(
            "qsm", "Hopper-v4", 0, 100_000, agent=benchmark.VARIANTS[name.removesuffix("-256")]
        )
        assert settings == {**benchmark.VARIANTS[name.removesuffix("-256")], **benchmark.WIDTH_256}
        assert at_512.config.agent.actor_hidden_dims == (512, 512)
    # The leading candidates' full units: both benchmarks x 3 seeds (their seed-0 screening units run in item 12).
    for name in ("QSM-mirror-T10-KL-256", "QSM-mirror-256"):
        plus = {(u.config.env, u.config.seed) for _, us in items[11:] for u in us if benchmark.label(u.config) == name}
        assert plus == {(t, s) for t in benchmark.DMC_TASKS + benchmark.GYM_TASKS for s in benchmark.SEEDS}
    # plus100k pairs it with SAC at its width and holds every other label's units of dmc100k / core100k.
    others = {u.key for name in ("dmc100k", "core100k", "variants100k") for u in benchmark.suite_units(name)}
    candidates = ("QSM-mirror-256", "QSM-mirror-T10-KL-256")
    plus100k = [u for u in benchmark.suite_units("plus100k") if benchmark.label(u.config) not in candidates]
    assert len(plus100k) == 75 and {u.key for u in plus100k} <= others
    # The width arms change the hidden sizes only.
    sac512, qsm256 = items[0][1][0].config.agent, items[1][1][0].config.agent
    assert sac512 == dataclasses.replace(SACConfig(), actor_hidden_dims=(512, 512), critic_hidden_dims=(512, 512))
    assert qsm256 == dataclasses.replace(QSMConfig(), actor_hidden_dims=(256, 256), critic_hidden_dims=(256, 256))
    # The variant on DMC is the variants100k mirror unit config, only the env differs (no per-task tuning).
    mirror = benchmark.make_unit("qsm", "Walker2d-v4", 0, 100_000, agent=benchmark.VARIANT_MIRROR)
    assert {u.config.agent for u in items[7][1]} == {mirror.config.agent}
    assert mirror.key in {u.key for u in benchmark.suite_units("variants100k")}
    # Dropped units (the denoiser estimate's seed-2 max-ent units, QSM-norm) leave the queue, not the suites.
    queue = benchmark.suite_units("queue")
    assert len(queue) == len({u.key for u in queue}) == 148
    dropped = [u for u in benchmark.suite_units("maxent100k") + benchmark.suite_units("variants100k")]
    dropped = {u.key for u in dropped if benchmark.dropped_reason(u)}
    assert len(dropped) == 14 and not dropped & {u.key for u in queue}
    kl512 = [u for u in benchmark.suite_units("screen100k") if benchmark.label(u.config) == "QSM-mirror-T10-KL"]
    assert len(kl512) == 3 and all("256x256" in benchmark.dropped_reason(u) for u in kl512)
    assert {u.config.seed for u in items[9][1]} == {0, 1}
    # Settings added later keep the keys of the units measured before them (entropy_estimate here).
    assert "qsm_Walker2d-v4_seed1_100k_d8488df7e3" in {u.key for u in items[9][1]}
    # dmc100k kept the keys of its units that ran before the variant and the width arms joined it.
    dmc_keys = {u.key for u in benchmark.suite_units("dmc100k")}
    assert "td3_dm_control-walker-walk-v0_seed1_100k_509920146a" in dmc_keys and len(dmc_keys) == 54
    core_keys = {u.key for u in benchmark.suite_units("core100k")}
    assert "qsm_Hopper-v4_seed0_100k_971ca9767a" in core_keys and len(core_keys) == 36


def test_named_variants_have_short_labels_and_estimates_use_units_like_them(tmp_path):
    unit = benchmark.make_unit("qsm", "Hopper-v4", 0, 100_000, agent=benchmark.VARIANT_MIRROR)
    assert benchmark.label(unit.config) == "QSM-mirror"
    norm = benchmark.make_unit("qsm", "Hopper-v4", 0, 100_000, agent=benchmark.VARIANT_NORM)
    assert benchmark.label(norm.config) == "QSM-norm"
    # A measured mirror unit on another env sets the estimate, not the faithful QSM on this env.
    for u, rate in (
        (benchmark.make_unit("qsm", "Walker2d-v4", 0, 100_000, agent=benchmark.VARIANT_MIRROR), 10.0),
        (benchmark.make_unit("qsm", "Hopper-v4", 0, 100_000), 40.0),
    ):
        record = {**benchmark.unit_record(u, [{"step": 1, "returns": [0.0]}], 1.0, rate, 0), "env_steps_per_s": rate}
        (tmp_path / f"{u.key}.json").write_text(json.dumps(record))
    assert benchmark.estimated_seconds(unit, str(tmp_path)) == pytest.approx(100_000 / 10.0)
    assert not benchmark.estimate_is_rough(unit, str(tmp_path))
    maxent = benchmark.make_unit("qsm", "Hopper-v4", 0, 100_000, agent=benchmark.VARIANT_MAXENT)
    assert benchmark.estimate_is_rough(maxent, str(tmp_path))  # borrowed from the paper's QSM on Hopper
    assert benchmark.estimated_seconds(maxent, str(tmp_path)) == pytest.approx(100_000 / 40.0)
    assert benchmark.estimated_seconds(benchmark.make_unit("qsm", "Hopper-v4", 1, 100_000), str(tmp_path)) == (
        pytest.approx(100_000 / 40.0)
    )


def test_bench_learning_lists_the_queue_in_order(tmp_path):
    script = os.path.join(ROOT, "experiments", "bench_learning.py")
    out = subprocess.run(
        [sys.executable, script, "--list", f"--units_dir={tmp_path}", f"--runs_dir={tmp_path}/runs"],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    heads = [line for line in lines if re.match(r"\d+\. ", line)]
    expected = [9, 9, 6, 6, 6, 18, 27, 9, 12, 4, 6, 12, 12, 12]
    assert [h.split(":")[-1].strip() for h in heads] == [f"0/{n} done" for n in expected]
    pending = [line.split()[1] for line in lines if line.startswith("pending  ")]
    assert (
        len(pending) == 148
        and pending[0].startswith("sac_dm_control")
        and pending[-1] == "qsm_Hopper-v4_seed2_100k_49a7c8fabb"  # the last of the second candidate's units
    )


@pytest.mark.skipif(
    subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True).returncode != 0,
    reason="not a git checkout",
)
@pytest.mark.slow
def test_pinned_runner_runs_the_committed_code_from_a_worktree(tmp_path):
    """--pin (the default: HEAD) runs units from a worktree of the commit; the unit file lands in the
    given --units_dir and names that commit, clean. Note: it runs HEAD's code, so commit first."""
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    script = os.path.join(ROOT, "experiments", "bench_learning.py")
    key = next(u.key for u in benchmark.suite_units("smoke") if u.config.algo == "td3")
    units_dir, runs_dir = tmp_path / "units", tmp_path / "runs"
    try:
        out = subprocess.run(
            [
                sys.executable,
                script,
                "--suite=smoke",
                f"--units={key}",
                f"--units_dir={units_dir}",
                f"--runs_dir={runs_dir}",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "disable"},
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        assert f"running units from {tmp_path / 'pinned' / head[:12]}" in out.stdout
        record = benchmark.load_unit(str(units_dir / f"{key}.json"))
        assert record["commit"] == head and record["dirty"] is False
        bad = subprocess.run([sys.executable, script, "--pin=nope"], capture_output=True, text=True)
        assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and "--pin=nope: not a commit" in bad.stderr
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", str(tmp_path / "pinned" / head[:12])])


@pytest.mark.skipif(
    subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True).returncode != 0,
    reason="not a git checkout",
)
def test_runners_started_together_share_one_pinned_worktree(tmp_path):
    """Two runners pinning the same commit at the same moment (one per core) both get the worktree;
    before the lock, the second failed with "already exists"."""
    from concurrent.futures import ThreadPoolExecutor

    import bench_learning

    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    runs_dir = str(tmp_path / "runs")
    try:
        with ThreadPoolExecutor(4) as pool:
            paths = list(pool.map(lambda _: bench_learning.pinned_worktree("HEAD", runs_dir), range(4)))
        assert paths == [str(tmp_path / "pinned" / head[:12])] * 4
        assert os.path.isfile(os.path.join(paths[0], "qsm_jax", "learner.py"))
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", str(tmp_path / "pinned" / head[:12])])


def test_plot_titles_fit_the_figure():
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots(figsize=(6.4, 4.2))
    report.fit_title(fig, "variants100k: dm_control/walker-walk-v0 " * 3)
    title = fig._suptitle
    assert title.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width
    assert title.get_fontsize() < 11
    plt.close(fig)


def test_readme_block_carries_the_aggregate_and_the_variant_names(fixture_suite, monkeypatch):
    units, records, units_dir, out = fixture_suite
    mirror = [
        benchmark.make_unit("qsm", u.config.env, u.config.seed, 20_000, agent=benchmark.VARIANT_MIRROR)
        for u in units
        if u.config.algo == "sac"
    ]
    rng = np.random.default_rng(1)
    for u in mirror:
        rec = _fake_record(u, [100.0, 300.0, 600.0, 900.0], rng=rng)
        (out.parent / "units" / f"{u.key}.json").write_text(json.dumps(rec))
    monkeypatch.setitem(benchmark.SUITES, "fixture", lambda: units + mirror)
    readme = out.parent / "README.md"
    readme.write_text(f"intro\n{report.begin_marker('fixture')}\n{report.end_marker('fixture')}\n")
    report.write_report(units_dir, str(out), ["fixture"], readme=str(readme))
    block = readme.read_text()
    assert "QSM-mirror = QSM with score_target=mirror, lam=1.0, normalize_grad=True, num_action_samples=8" in block
    rows = {line.split(" | ")[0][2:]: line for line in block.splitlines() if line.count(" | ") == 2}
    assert set(rows) >= {"QSM", "SAC", "QSM-mirror"} and rows["SAC"].endswith("| - |")
    assert "](out/fixture_aggregate.png)" in block
    # The variant with a seed missing leaves the aggregate, which still compares QSM with SAC, and is named.
    os.remove(mirror[0].path(units_dir))
    report.write_report(units_dir, str(out), ["fixture"], readme=str(readme))
    block = readme.read_text()
    rows = {line.split(" | ")[0][2:]: line for line in block.splitlines() if line.count(" | ") == 2}
    assert set(rows) >= {"QSM", "SAC"} and "QSM-mirror" not in rows
    assert "Not in the aggregate yet (fewer than 3 seeds on some env): QSM-mirror" in block


def test_every_committed_unit_key_re_derives_from_its_stored_config():
    """A change to the key rule, or a new config field that entered the hash at its default, would
    orphan every committed unit (it would run again under a new key): every committed file's key must
    re-derive from the config it stores."""
    records = benchmark.load_units(os.path.join(ROOT, "results", "learning", "units"))
    assert records, "no committed unit files found"
    for record in records:
        unit = benchmark.unit_of(record)
        assert unit.key == record["key"], f"{record['key']}: re-derived as {unit.key}"


def test_a_new_option_at_its_default_leaves_every_key_and_off_it_makes_a_new_one(monkeypatch):
    """A contributor adds an agent option whose default reproduces today's update: no harness edit,
    the same keys; a unit that sets it is another unit."""
    from qsm_jax.algorithms import ALGORITHMS

    @dataclasses.dataclass(frozen=True)
    class WithNewOption(QSMConfig):
        new_option: float = 0.0

    before = benchmark.make_unit("qsm", "Hopper-v4", 1, 100_000, agent=benchmark.VARIANT_MIRROR).key
    monkeypatch.setitem(ALGORITHMS, "qsm", ALGORITHMS["qsm"]._replace(config_cls=WithNewOption))
    after = benchmark.make_unit("qsm", "Hopper-v4", 1, 100_000, agent=benchmark.VARIANT_MIRROR)
    assert "new_option" in after.config.to_dict()["agent"] and after.key == before
    changed = benchmark.make_unit("qsm", "Hopper-v4", 1, 100_000, agent={**benchmark.VARIANT_MIRROR, "new_option": 1.0})
    assert changed.key != before


def test_the_papers_question_is_answered_from_the_unit_files(tmp_path, monkeypatch):
    envs = ("dm_control/walker-walk-v0", "dm_control/cheetah-run-v0")
    kinds = {"QSM": ("qsm", None, 100.0), "SAC": ("sac", None, 500.0), "TD3": ("td3", None, 480.0)}
    kinds["QSM-mirror"] = ("qsm", benchmark.VARIANT_MIRROR, 900.0)
    units = [
        (label, benchmark.make_unit(algo, e, s, 20_000, agent=agent))
        for label, (algo, agent, _) in kinds.items()
        for e in envs
        for s in (0, 1, 2)
    ]
    monkeypatch.setitem(benchmark.SUITES, "dmc100k", lambda: [u for _, u in units])
    rng = np.random.default_rng(0)
    readme = tmp_path / "README.md"
    begin, end = report.answer_markers("dmc100k")
    readme.write_text(f"a\n{begin}\nold\n{end}\nb\n")
    for i, (label, u) in enumerate(units):
        if i == 0:
            continue  # one QSM unit missing: no answer yet
        rec = _fake_record(u, [kinds[label][2] + 5 * u.config.seed] * 2, rng=rng)
        (tmp_path / f"{u.key}.json").write_text(json.dumps(rec))
    report.write_answer(str(tmp_path), [str(readme)])
    text = readme.read_text()
    assert text.startswith(f"a\n{begin}\n**Not answered yet**: 23 of 24 `dmc100k` units") and "old" not in text
    assert re.search(r"walker-walk: QSM 1\d\d \(2 seeds\), SAC 5\d\d \(3 seeds\)", text)
    assert text.endswith(f"{end}\nb\n")
    rec = _fake_record(units[0][1], [100.0, 100.0], rng=rng)
    (tmp_path / f"{units[0][1].key}.json").write_text(json.dumps(rec))
    # QSM, SAC and TD3 complete answer the paper's question; the variant with a seed missing is pending.
    last_mirror = units[-1][1]
    os.rename(last_mirror.path(str(tmp_path)), tmp_path / "held_back")
    answer = report.answer("dmc100k", str(tmp_path))
    assert "QSM as published trails SAC (P(QSM > SAC) = 0.00" in answer and "TD3 " in answer
    assert "the mirror variant is pending (5 of 6 units have run)" in answer
    assert "mean over the seeds done: walker-walk" in answer
    assert "QSM as published is below SAC on walker-walk, cheetah-run." in answer  # 100 against 500 on both
    os.rename(tmp_path / "held_back", last_mirror.path(str(tmp_path)))
    answer = report.answer("dmc100k", str(tmp_path))
    assert "QSM as published trails SAC (P(QSM > SAC) = 0.00" in answer  # every QSM seed far below every SAC seed
    assert "the mirror variant beats SAC (P(QSM-mirror > SAC) = 1.00" in answer
    assert "TD3 trails SAC" in answer or "TD3 matches SAC" in answer
    assert "The mirror variant is below" not in answer  # 900 against 100 on both tasks
    for label, u in units:  # the variant drops under QSM as published on cheetah-run only
        if label == "QSM-mirror" and u.config.env == envs[1]:
            (tmp_path / f"{u.key}.json").write_text(json.dumps(_fake_record(u, [50.0, 50.0], rng=rng)))
    answer = report.answer("dmc100k", str(tmp_path))
    assert "The mirror variant is below QSM as published on cheetah-run. Final return" in answer


def test_equal_width_pairs_each_qsm_with_the_sac_of_its_width_in_the_report_and_the_answer(tmp_path, monkeypatch):
    """With SAC at two widths in a suite, QSM (512) is normalised by and compared with SAC-512, QSM-256
    with SAC; the answer says whether QSM's standing changes at equal width, and what is pending."""
    monkeypatch.setattr(report, "BOOTSTRAP_REPS", 200)  # the intervals' width is not what is checked here
    envs = ("dm_control/walker-walk-v0", "dm_control/cheetah-run-v0")
    kinds = {"QSM": ("qsm", None, 700.0), "SAC": ("sac", None, 500.0)}
    kinds["SAC-512"] = ("sac", benchmark.WIDTH_512, 900.0)
    kinds["QSM-256"] = ("qsm", benchmark.WIDTH_256, 400.0)
    units = {
        label: [benchmark.make_unit(algo, e, s, 20_000, agent=agent) for e in envs for s in (0, 1, 2)]
        for label, (algo, agent, _) in kinds.items()
    }
    monkeypatch.setitem(benchmark.SUITES, "dmc100k", lambda: [u for us in units.values() for u in us])
    rng = np.random.default_rng(0)
    records = {}
    for label, us in units.items():
        for u in us:
            assert benchmark.label(u.config) == label
            records[u.key] = _fake_record(u, [kinds[label][2] + 10 * u.config.seed] * 2, rng=rng)
            records[u.key]["env_steps_per_s"] = 2.5 if label == "QSM-256" else 1.0 + u.config.seed / 10
            (tmp_path / f"{u.key}.json").write_text(json.dumps(records[u.key]))
    answer = report.answer("dmc100k", str(tmp_path))
    assert "QSM as published beats SAC (P(QSM > SAC) = 1.00" in answer  # 700 against 500 at 256x256
    # QSM-256 against QSM itself: below on every seed, at 1.2 / 2.5 of its time per env step (its
    # fastest seed's rate against QSM's fastest, on each of the 2 tasks).
    assert "Against QSM as published, QSM-256 (256x256) has P(QSM-256 > QSM) = 0.00" in answer
    assert "at 0.48x its time per env step (2 tasks)." in answer
    # The configuration table's IQM column is the suite's aggregate (QSM's 6 scores over SAC's means: the middle 4).
    sac = {e: np.mean([report.seed_final(records[u.key]) for u in units["SAC"] if u.config.env == e]) for e in envs}
    over_sac = np.sort([report.seed_final(records[u.key]) / sac[u.config.env] for u in units["QSM"]])
    row = next(line for line in report.configuration_table(str(tmp_path)).splitlines() if "| `QSM`: 6 |" in line)
    assert f"| `QSM`: 6 | {over_sac[1:5].mean():.2f}; - |" in row
    assert "At equal network width, QSM at 256x256 (QSM-256) trails SAC (P(QSM-256 > SAC) = 0.00" in answer
    assert "QSM at 512x512 (QSM) trails SAC-512 (P(QSM > SAC-512) = 0.00" in answer
    assert "QSM's standing against SAC (beats SAC) is its width" in answer
    out = tmp_path / "out"
    text = open(report.write_report(str(tmp_path), str(out), ["dmc100k"])).read()
    rows = [line for line in text.splitlines() if line.startswith(("| 256x256 |", "| 512x512 |"))]
    # IQM of QSM's scores normalised per env by SAC-512's mean there (6 scores: the middle 4).
    scale = {
        e: np.mean([report.seed_final(records[u.key]) for u in units["SAC-512"] if u.config.env == e]) for e in envs
    }
    scores = np.sort([report.seed_final(records[u.key]) / scale[u.config.env] for u in units["QSM"]])
    assert rows[0].startswith("| 256x256 | QSM-256 | SAC | ") and rows[0].endswith("| 0.00 [0.00, 0.00] |")
    assert rows[1].startswith(f"| 512x512 | QSM | SAC-512 | {scores[1:5].mean():.2f} [")
    # A SAC-512 seed missing: the 512 pair is pending, the 256 one still answered.
    os.remove(units["SAC-512"][0].path(str(tmp_path)))
    answer = report.answer("dmc100k", str(tmp_path))
    assert "QSM at 256x256 (QSM-256) trails SAC" in answer and "the other width is pending (SAC-512 5 of 6" in answer
    text = open(report.write_report(str(tmp_path), str(out), ["dmc100k"])).read()
    assert "| 512x512 | QSM | SAC-512 | pending (SAC-512 5 of 6 units) | - |" in text
    # Each width arm against its own algorithm at the other width, with its cost.
    arm = re.search(
        r"\| QSM-256 \(256x256\) \| QSM \(512x512\) \| ([\d.]+) \[.*\| (0\.00) \[.*\| 0\.48x \(2 tasks\) \|", text
    )
    qsm = {e: np.mean([report.seed_final(records[u.key]) for u in units["QSM"] if u.config.env == e]) for e in envs}
    ratios = np.sort([report.seed_final(records[u.key]) / qsm[u.config.env] for u in units["QSM-256"]])
    assert arm and float(arm[1]) == pytest.approx(ratios[1:5].mean(), abs=0.005)
    assert "| SAC-512 (512x512) | SAC (256x256) | pending (SAC-512 5 of 6 units) | - | 1.00x (2 tasks) |" in text
    # The cost column: the fastest seed's env steps/s on the suite's CPU model.
    assert "| env steps/s |" in text and "| 1.2 |" in text  # seed 2, the fastest


def test_gym_mujoco_gets_its_own_answer_naming_diffusion_ql_pending(tmp_path, monkeypatch):
    """core100k is answered like the paper's suite, between its own markers: QSM as published
    against SAC per task and in the aggregate, Diffusion-QL named pending until its units run."""
    envs = ("Walker2d-v4", "Hopper-v4")
    finals = {"qsm": 200.0, "sac": 600.0, "dql": 0.0}
    units = [benchmark.make_unit(a, e, s, 20_000) for a in finals for e in envs for s in (0, 1, 2)]
    monkeypatch.setitem(benchmark.SUITES, "core100k", lambda: units)
    rng = np.random.default_rng(0)
    for u in units:
        if u.config.algo != "dql":
            rec = _fake_record(u, [finals[u.config.algo] + 5 * u.config.seed] * 2, rng=rng)
            (tmp_path / f"{u.key}.json").write_text(json.dumps(rec))
    readme = tmp_path / "README.md"
    (gym_begin, gym_end), (paper_begin, paper_end) = report.answer_markers("core100k"), report.answer_markers("dmc100k")
    readme.write_text(f"{paper_begin}\nkept\n{paper_end}\n{gym_begin}\nold\n{gym_end}\n")
    report.write_answer(str(tmp_path), [str(readme)], suites=("core100k",))
    text = readme.read_text()
    assert "kept" in text and "old" not in text
    assert "**On gym MuJoCo at 100k env steps** (Walker2d, Hopper, 3 seeds each), QSM as published trails SAC" in text
    assert "Diffusion-QL is pending (0 of 6 units have run)" in text
    assert "QSM as published is below SAC on Walker2d, Hopper." in text
    assert re.search(r"Walker2d: QSM 20\d \(3 seeds\), SAC 60\d \(3 seeds\), DQL pending", text)


def test_the_answer_says_below_sac_when_the_interval_holds_one_half_but_p_does_not():
    from harness import report

    assert report.versus_sac(0.22, 0.0, 0.44) == "trails SAC"
    assert report.versus_sac(0.8, 0.6, 1.0) == "beats SAC"
    assert report.versus_sac(0.59, 0.37, 0.78) == "matches SAC"
    assert report.versus_sac(0.26, 0.0, 0.56) == "is below SAC (within the noise)"


def test_learned_temperature_is_recorded_and_reported(tmp_path):
    """A QSM-maxent unit keeps its temperature trajectory (from the train metric rows); the report
    shows it per seed. Other units record none."""
    from harness import report

    unit = next(u for u in benchmark.suite_units("maxent100k") if benchmark.label(u.config) == "QSM-maxent")
    rows = [
        {"step": s, "temperature": 1.0 / (1 + s / 10_000), "env_steps_per_s": 30.0} for s in range(1000, 100_001, 1000)
    ]
    record = benchmark.unit_record(unit, [{"step": 100_000, "returns": [1.0]}], 1.0, 1.0, 0, train_rows=rows)
    assert len(record["temperature"]) == 100 and record["temperature"][0] == {
        "step": 1000,
        "temperature": rows[0]["temperature"],
    }
    sac = next(u for u in benchmark.suite_units("maxent100k") if u.config.algo == "sac")
    assert "temperature" not in benchmark.unit_record(
        sac, [{"step": 1, "returns": [0.0]}], 1.0, 1.0, 0, train_rows=rows
    )
    # Every unit keeps its training metrics at 50 evenly spaced steps (4 significant digits).
    assert len(record["train"]) == 50 and record["train"][1] == {"step": 3000, "temperature": 0.7692}
    cells = {(unit.config.env, "QSM-maxent"): [record]}
    lines = report.temperature_lines(cells, [unit.config.env], ["QSM-maxent"])
    assert any(f"| {unit.config.env} | QSM-maxent | {unit.config.seed} | 0.909 (1k)" in line for line in lines)
    assert lines[-1].endswith("0.0909 (100k) |")


def test_fit_budget_starts_only_units_whose_time_left_fits(tmp_path):
    """--fit_budget: what is left of a unit after its newest checkpoint is what must fit; a run that
    nothing fits in starts nothing and says so in one line; the flag needs --time_budget."""
    unit = benchmark.make_unit("qsm", "Hopper-v4", 0, 100_000)
    runs_dir, units_dir = str(tmp_path / "runs"), str(tmp_path / "units")
    full = benchmark.estimated_seconds(unit, units_dir)
    assert full == pytest.approx(100_000 / benchmark.PRIOR_STEPS_PER_S["qsm"])
    assert benchmark.checkpointed_step(unit, runs_dir) == 0
    for step in ("20000", "60000", "tmp_x"):
        os.makedirs(os.path.join(runs_dir, unit.key, "checkpoints", step))
    assert benchmark.checkpointed_step(unit, runs_dir) == 60_000
    assert benchmark.remaining_seconds(unit, units_dir, runs_dir) == pytest.approx(0.4 * full)

    script = os.path.join(ROOT, "experiments", "bench_learning.py")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "disable"}
    common = [sys.executable, script, "--suite=smoke", "--pin=", f"--units_dir={units_dir}", f"--runs_dir={runs_dir}"]
    out = subprocess.run([*common, "--fit_budget", "--time_budget=0.01"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "start " not in out.stdout and "do not fit in what is left of --time_budget" in out.stdout
    assert not os.path.exists(units_dir) or not os.listdir(units_dir)
    bad = subprocess.run([*common, "--fit_budget"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and "--fit_budget needs" in bad.stderr


@pytest.mark.slow
def test_sigusr1_drains_the_runner_running_units_finish_past_the_deadline_and_none_starts(tmp_path):
    """`kill -USR1 <runner>`: no unit starts any more, and the running one finishes (its file is
    written) even if --time_budget runs out meanwhile, instead of being stopped."""
    first, second = [u.key for u in benchmark.suite_units("smoke") if u.config.algo == "td3"]
    units_dir, runs_dir = tmp_path / "units", tmp_path / "runs"
    script = os.path.join(ROOT, "experiments", "bench_learning.py")
    cmd = [sys.executable, script, "--suite=smoke", "--pin=", f"--units={first},{second}", "--workers=1"]
    proc = subprocess.Popen(
        [*cmd, "--time_budget=0.02", f"--units_dir={units_dir}", f"--runs_dir={runs_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "disable"},
    )
    lines = []
    while not any(line.startswith("start ") for line in lines):
        lines.append(proc.stdout.readline())
        assert lines[-1], proc.stderr.read()[-2000:]  # the runner ended before it started a unit
    started = time.time()  # the 1.2 s deadline was set before this start
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=600)
    assert time.time() - started > 0.02 * 60  # the unit outlived the deadline
    out = "".join(lines) + out
    assert proc.returncode == 0, err[-2000:]
    assert "draining: no unit starts any more; the 1 running finish" in out
    assert f"done     {first}" in out and "time budget spent" not in out and second not in out
    assert os.listdir(units_dir) == [f"{first}.json"]


def test_borrowed_estimates_keep_the_network_width_and_scale_by_the_loop_benchmark(tmp_path):
    """A unit whose settings never ran borrows the rate of units of its algorithm, env and network widths,
    scaled by the two labels' training-loop rates of bench_speed.py's section (j) where both are measured."""
    units_dir = tmp_path / "units"
    units_dir.mkdir()
    for agent, rate in ((benchmark.WIDTH_256, 100.0), (None, 40.0)):
        u = benchmark.make_unit("qsm", "Hopper-v4", 0, 100_000, agent=agent)
        record = {**benchmark.unit_record(u, [{"step": 1, "returns": [0.0]}], 1.0, rate, 0), "env_steps_per_s": rate}
        (units_dir / f"{u.key}.json").write_text(json.dumps(record))
    kl = benchmark.make_unit("qsm", "Hopper-v4", 0, 100_000, agent=benchmark.VARIANT_MIRROR_T10_KL)
    no_speed = str(tmp_path / "none.json")
    # From the QSM unit of its own width (512x512), not from the 2.5x faster QSM-256 one.
    assert benchmark.estimated_seconds(kl, str(units_dir), no_speed) == pytest.approx(100_000 / 40.0)
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({"goal": {"SAC-512": 30.0, "QSM": 20.0, "QSM-mirror-T10-KL": 8.0}}))
    assert benchmark.estimated_seconds(kl, str(units_dir), str(speed)) == pytest.approx(100_000 / 16.0)
    # At 256x256, unmeasured in (j): scaled by its 512x512 twin against QSM-256's (QSM), from the QSM-256 unit.
    kl256 = benchmark.make_unit("qsm", "Hopper-v4", 0, 100_000, agent=benchmark.SCREEN_256["QSM-mirror-T10-KL-256"])
    assert benchmark.estimated_seconds(kl256, str(units_dir), str(speed)) == pytest.approx(100_000 / 40.0)
    # Units of its own settings need no scaling.
    qsm = benchmark.make_unit("qsm", "Hopper-v4", 1, 100_000)
    assert benchmark.estimated_seconds(qsm, str(units_dir), str(speed)) == pytest.approx(100_000 / 40.0)


def _write_hopper_unit(units_dir, seed: int, cpu: str, rate: float) -> None:
    """A finished QSM Hopper-v4 unit file measured at ``rate`` env steps/s on ``cpu``."""
    u = benchmark.make_unit("qsm", "Hopper-v4", seed, 100_000)
    record = benchmark.unit_record(u, [{"step": 1, "returns": [0.0]}], 1.0, rate, 0)
    record = {**record, "env_steps_per_s": rate, "machine": {**record.get("machine", {}), "cpu": cpu}}
    (units_dir / f"{u.key}.json").write_text(json.dumps(record))


def test_estimates_prefer_units_measured_on_this_cpu_model(tmp_path):
    """Machines of one kind differ by up to 2x: a unit measured on this CPU model sets the estimate."""
    unit = benchmark.make_unit("qsm", "Hopper-v4", 2, 100_000)
    for seed, cpu, rate in ((0, "Some Other CPU", 10.0), (1, benchmark.cpu_model(), 40.0)):
        _write_hopper_unit(tmp_path, seed, cpu, rate)
        expected = 100_000 / (10.0 if seed == 0 else 40.0)  # only another CPU's unit: that one
        assert benchmark.estimated_seconds(unit, str(tmp_path)) == pytest.approx(expected)


def test_estimates_on_this_cpu_model_take_the_fastest_unit_and_elsewhere_the_mean(tmp_path):
    """A unit that shared its core ran slower, never faster: of the units measured on this CPU model
    the fastest sets the estimate; units measured on other models only are averaged."""
    unit = benchmark.make_unit("qsm", "Hopper-v4", 3, 100_000)
    write = functools.partial(_write_hopper_unit, tmp_path)
    write(0, "Some Other CPU", 10.0)
    write(1, "Some Other CPU", 30.0)
    assert benchmark.estimated_seconds(unit, str(tmp_path)) == pytest.approx(100_000 / 20.0)
    write(2, benchmark.cpu_model(), 14.0)  # time-shared
    assert benchmark.estimated_seconds(unit, str(tmp_path)) == pytest.approx(100_000 / 14.0)
    write(4, benchmark.cpu_model(), 22.0)  # alone on its core
    assert benchmark.estimated_seconds(unit, str(tmp_path)) == pytest.approx(100_000 / 22.0)


def test_the_runner_skips_a_unit_another_process_is_training(tmp_path):
    """Two runners on one machine never train one unit twice: a unit whose run folder is locked is skipped."""

    key = next(u.key for u in benchmark.suite_units("smoke") if u.config.algo == "td3")
    runs_dir, units_dir = tmp_path / "runs", tmp_path / "units"
    (runs_dir / key).mkdir(parents=True)
    script = os.path.join(ROOT, "experiments", "bench_learning.py")
    cmd = [sys.executable, script, "--suite=smoke", "--pin=", f"--units={key}", f"--units_dir={units_dir}"]
    with contextlib.ExitStack() as other_runner:
        lock_workdir(str(runs_dir / key), other_runner)
        out = subprocess.run(
            [*cmd, f"--runs_dir={runs_dir}"],
            capture_output=True,
            text=True,
            env={**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "disable"},
        )
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"skipped  {key}: another process is training it" in out.stdout and "start " not in out.stdout


def test_probability_of_improvement_equals_rliables_bit_for_bit(monkeypatch):
    """The report's pair-counting P(X > Y) is rliable's (SciPy's Mann-Whitney U), ties and equal runs
    included, and so are the bootstrap CIs built on it."""
    from rliable import metrics as rly_metrics

    rng = np.random.default_rng(0)
    cases = [(rng.normal(size=(nx, t)), rng.normal(size=(ny, t))) for nx, ny, t in ((3, 3, 3), (5, 2, 1), (4, 6, 7))]
    ties = rng.integers(0, 3, size=(4, 5)).astype(float)
    cases += [(ties, rng.integers(0, 3, size=(3, 5)).astype(float)), (ties, ties.copy())]
    for x, y in cases:
        assert report.probability_of_improvement(x, y) == rly_metrics.probability_of_improvement(x, y)
    monkeypatch.setattr(report, "BOOTSTRAP_REPS", 200)
    pairs = {"A": cases[0], "B": cases[3]}
    ours = report.interval_estimates(pairs, report.probability_of_improvement, seed=1)
    theirs = report.interval_estimates(pairs, rly_metrics.probability_of_improvement, seed=1)
    for k in pairs:
        assert ours[0][k] == theirs[0][k]
        np.testing.assert_array_equal(ours[1][k], theirs[1][k])


def test_iqm_equals_rliables_bit_for_bit(monkeypatch):
    """The report's IQM is rliable's (SciPy's 25% trimmed mean over every entry), for sizes whose
    quarter is and is not whole, ties included, and so are the bootstrap CIs built on it."""
    from rliable import metrics as rly_metrics

    rng = np.random.default_rng(0)
    cases = [rng.normal(size=shape) for shape in ((1, 1), (3, 1), (3, 2), (3, 5), (4, 4), (7, 3), (10, 15))]
    cases += [rng.integers(0, 3, size=(5, 3)).astype(float), np.ones((3, 3)), rng.normal(size=9) * 1e6]
    for scores in cases:
        assert report.iqm(scores) == rly_metrics.aggregate_iqm(scores)
    # By hand: 8 entries, a quarter (2) cut at each end, the mean of the middle four.
    assert report.iqm(np.array([[9.0, 1.0, 4.0, 2.0], [7.0, 100.0, -5.0, 3.0]])) == (2.0 + 3.0 + 4.0 + 7.0) / 4
    monkeypatch.setattr(report, "BOOTSTRAP_REPS", 200)
    scores = {"A": cases[3], "B": cases[6]}
    ours, theirs = (report.interval_estimates(scores, f) for f in (report.iqm, rly_metrics.aggregate_iqm))
    for k in scores:
        assert ours[0][k] == theirs[0][k]
        np.testing.assert_array_equal(ours[1][k], theirs[1][k])


def test_bootstrap_intervals_are_reproducible():
    """The same scores give the same CIs on every call (rliable resamples from NumPy's global generator)."""
    from rliable import metrics as rly_metrics

    scores = {"A": np.random.default_rng(0).normal(size=(3, 3)), "B": np.random.default_rng(1).normal(size=(3, 3))}
    first = report.interval_estimates(scores, rly_metrics.aggregate_iqm)[1]
    np.random.rand(7)  # whatever the global generator did in between
    second = report.interval_estimates(scores, rly_metrics.aggregate_iqm)[1]
    for k in scores:
        np.testing.assert_array_equal(first[k], second[k])
    # The same scores again (under any name) are the result already computed; a caller that changes
    # what it got changes nothing for the next one; computed afresh, the same numbers.
    cached = len(report._BOOTSTRAPPED)
    first["A"][:] = np.nan
    again = report.interval_estimates({"C": scores["B"].copy(), "A": scores["A"]}, rly_metrics.aggregate_iqm)[1]
    assert len(report._BOOTSTRAPPED) == cached
    report._BOOTSTRAPPED.clear()
    afresh = report.interval_estimates(scores, rly_metrics.aggregate_iqm)[1]
    for k, k_again in (("A", "A"), ("B", "C")):
        np.testing.assert_array_equal(again[k_again], second[k])
        np.testing.assert_array_equal(afresh[k], second[k])


def test_an_algorithms_interval_does_not_depend_on_the_others_in_the_suite(monkeypatch):
    """SAC's IQM interval is the same in every suite whatever algorithms it sits beside."""
    from rliable import metrics as rly_metrics

    monkeypatch.setattr(report, "BOOTSTRAP_REPS", 200)
    rng = np.random.default_rng(0)
    sac, qsm, td3 = (rng.normal(size=(3, 2)) for _ in range(3))
    alone = report.interval_estimates({"SAC": sac}, rly_metrics.aggregate_iqm)[1]["SAC"]
    for others in ({"QSM": qsm}, {"QSM": qsm, "TD3": td3}, {"A": td3, "B": qsm}):
        beside = report.interval_estimates({**others, "SAC": sac}, rly_metrics.aggregate_iqm)[1]["SAC"]
        np.testing.assert_array_equal(beside, alone)


def test_the_configuration_table_puts_each_configurations_cost_beside_its_units(tmp_path):
    """Cost per configuration from the unit files: the fastest unit's env steps/s per CPU model, and
    the time per env step against SAC's, the median over the tasks both ran on one CPU model (else
    the fastest units' ratio, said so)."""
    made = [
        ("qsm", None, "Walker2d-v4", 25.0),
        ("qsm", None, "Hopper-v4", 20.0),
        ("sac", None, "Walker2d-v4", 100.0),
        ("sac", None, "Hopper-v4", 100.0),
        ("sac", benchmark.WIDTH_512, "Ant-v4", 30.0),
    ]
    for algo, agent, env, rate in made:
        unit = benchmark.make_unit(algo, env, 0, 20_000, agent=agent)
        record = benchmark.unit_record(unit, [{"step": 1, "returns": [0.0]}], 1.0, rate, 0)
        benchmark.write_unit(record, unit.path(str(tmp_path)))
    cpu = report.cpu_name(benchmark.cpu_model())
    table = report.configuration_table(str(tmp_path)).splitlines()[2:]
    rows = {re.search(r"\| `([\w-]+)`: \d+ \|", line)[1]: line for line in table}
    median = np.median([100 / 25, 100 / 20])
    assert rows["QSM"].endswith(f"| `QSM`: 2 | -; - | pending (0 of 15 units) | 25.0 | {median:.1f}x (2 tasks) |")
    assert rows["SAC-512"].endswith(f"| `SAC-512`: 1 | -; - | - | 30.0 | 3.3x ({cpu}, fastest units, other tasks) |")
    assert rows["SAC"].endswith("| `SAC`: 2 | -; - | - | 100.0 | - |")
    assert rows["DQL"].endswith("| `DQL`: 0 | -; - | - | - | - |")
    assert f"env steps/s per core, {cpu}" in report.configuration_table(str(tmp_path))


def test_the_goal_check_names_each_criterion_a_configuration_misses(tmp_path):
    """plus100k's goal check, on unit files made up for it: QSM-mirror-256 at 1.2x SAC's return on
    every task and seed (IQM 1.2, P(> SAC) = 1) off the walls meets the goal; QSM-256, below SAC on
    every run, at the walls on Hopper-v4 and 4x SAC's time per env step misses each criterion."""
    returns = {"SAC": 100.0, "QSM-mirror-256": 120.0, "QSM-256": 80.0}
    walls = {"SAC": 0.0, "QSM-mirror-256": 0.1, "QSM-256": 0.3}
    rates = {"SAC": 100.0, "QSM-mirror-256": 50.0, "QSM-256": 25.0}
    for unit in benchmark.suite_units("plus100k"):
        name = benchmark.label(unit.config)
        if name not in returns:
            continue
        share = 0.9 if (name, unit.config.env) == ("QSM-256", "Hopper-v4") else walls[name]
        history = [{"step": 100_000, "returns": [returns[name] + unit.config.seed], "wall_share": share}]
        benchmark.write_unit(benchmark.unit_record(unit, history, 1.0, rates[name], 0), unit.path(str(tmp_path)))
    rows = {r["label"]: r for r in report.goal_check(*report._suite_parts("plus100k", str(tmp_path)))}
    mirror, qsm256 = rows["QSM-mirror-256"], rows["QSM-256"]
    assert mirror["reference"] == qsm256["reference"] == "SAC" and mirror["width"] == "256x256"
    assert float(mirror["agg"]["iqm"]["QSM-mirror-256"]) == pytest.approx(
        np.mean([(120 + s) / 101 for s in benchmark.SEEDS])
    )
    assert mirror["short"] == [] and report.goal_words(mirror) == "meets the goal"
    assert mirror["walls"][0] == pytest.approx(0.1) and mirror["cost"] == (2.0, "5 tasks")
    assert qsm256["walls"][:2] == (pytest.approx(0.9), "Hopper-v4")
    assert qsm256["short"] == [
        f"IQM {float(qsm256['agg']['iqm']['QSM-256']):.2f} < 1",
        "P(> SAC) 0.00 <= 0.5",
        "90% at the walls on Hopper",
        "4.0x SAC's time per env step",
    ]
    # A configuration without 3 seeds on every task is pending, with its count.
    assert rows["QSM"]["agg"] is None and report.goal_words(rows["QSM"]) == "pending (0 of 15 units)"
    # The training loop measured side by side (bench_speed.py's section (j)) sets the cost where it has both
    # labels, whatever the units' rates say.
    speed = tmp_path.parent / f"{tmp_path.name}-speed.json"  # not in the units' folder
    loop = {"SAC": 120.0, "QSM-mirror-256": 30.0, "QSM-256": 60.0}
    speed.write_text(json.dumps({"goal": loop, "provenance": {"goal": {"machine": "Some CPU, 1 cores, Linux"}}}))
    side = {r["label"]: r for r in report.goal_check(*report._suite_parts("plus100k", str(tmp_path)), str(speed))}
    assert side["QSM-mirror-256"]["cost"] == (4.0, "side by side, Some CPU")
    assert side["QSM-mirror-256"]["short"] == ["4.0x SAC's time per env step"]
    assert side["QSM-256"]["cost"] == (2.0, "side by side, Some CPU") and len(side["QSM-256"]["short"]) == 3
    # A pending configuration's cell in the README's table says what is known already.
    pending = {**side["QSM-mirror-256"], "agg": None, "short": None, "done": (3, 15)}
    cell = report._goal_cell({**pending, "walls": (0.51, "dm_control/walker-run-v0", [])})
    assert cell == "pending (3 of 15 units); walls 51% (walker-run); 4.00x SAC's time per env step"
    table = report.configuration_table(str(tmp_path))
    iqm = float(mirror["agg"]["iqm"]["QSM-mirror-256"])
    assert f"| {iqm:.2f}; 1.00; 10% (walker-walk): meets the goal |" in table

"""The screening table (docs/variants.md, "Screening") against hand-written files."""

import json

from harness import benchmark, screening

RUN = "dm_control/walker-run-v0"


def _unit_file(units_dir, label_settings, algo, env, final, wall, rate=10.0, cpu=None):
    unit = benchmark.make_unit(algo, env, 0, 100_000, agent=label_settings)
    history = [{"step": 100_000, "returns": [final - 1.0, final + 1.0], "wall_share": wall}]
    record = benchmark.unit_record(unit, history, 1.0, rate, 0)
    record["machine"]["cpu"] = cpu or record["machine"]["cpu"]
    benchmark.write_unit(record, unit.path(str(units_dir)))


def test_the_screening_table_reads_each_cell_from_its_file(tmp_path):
    units = tmp_path / "units"
    _unit_file(units, benchmark.VARIANT_MIRROR_POLICY, "qsm", "Hopper-v4", 1500.0, 0.25, rate=12.5)
    _unit_file(units, None, "sac", "Hopper-v4", 1700.0, 0.0)
    _unit_file(units, None, "qsm", RUN, 500.0, 0.9)
    _unit_file(units, benchmark.VARIANT_MIRROR_T10_KL, "qsm", "Walker2d-v4", 600.0, 0.1)
    _unit_file(units, benchmark.VARIANT_MIRROR_T10_KL, "qsm", "Hopper-v4", 900.0, 0.1)
    for env, mirror, deeper in (("Hopper-v4", 1000.0, 1100.0), ("Walker2d-v4", 700.0, 800.0), (RUN, 300.0, 200.0)):
        _unit_file(units, benchmark.VARIANT_MIRROR, "qsm", env, mirror, 0.0)
        _unit_file(units, benchmark.VARIANT_MIRROR_T10, "qsm", env, deeper, 0.0)
    _unit_file(units, benchmark.WIDTH_512, "sac", "Hopper-v4", 1200.0, 0.0, rate=25.0)
    at_256 = benchmark.SCREEN_256
    for env, mirror, kl in (("Hopper-v4", 800.0, 900.0), ("Walker2d-v4", 500.0, 400.0), (RUN, 300.0, 250.0)):
        _unit_file(units, at_256["QSM-mirror-256"], "qsm", env, mirror, 0.0)
        _unit_file(units, at_256["QSM-mirror-T10-KL-256"], "qsm", env, kl, 0.0, rate=5.0)
    _unit_file(units, benchmark.WIDTH_512, "sac", RUN, 400.0, 0.0, rate=30.0, cpu="another CPU")
    runs = {
        f"k{i}": {"agent": "QSM-mirror-policy", "dim": 2, "depth": 5, "critic": "learned", "reward": r, "modes_held": m}
        for i, (r, m) in enumerate([(0.8, 1), (0.6, 1), (0.7, 2)])
    }
    runs["other depth"] = {**runs["k0"], "depth": 10, "reward": 0.0}
    runs["exact"] = {**runs["k0"], "critic": "exact", "reward": 0.0}
    runs["deeper"] = {**runs["k0"], "agent": "QSM-mirror", "depth": 10, "reward": 0.9}
    runs["kl"] = {**runs["k0"], "agent": "QSM-mirror-KL", "depth": 10, "dim": 17, "reward": 0.5, "modes_held": 1}
    (tmp_path / "bandit.json").write_text(json.dumps({"runs": runs}))
    rates = {
        "update: reference (score_target=qsm)": 30.0,
        "update: mirror, normalize_grad, anchor=policy": 20.0,
        "update: mirror, kl_bound, anchor=policy, T=10": 12.0,
    }
    rates_entropy = {"reference (the paper)": {"updates_per_s": 18.0}}
    rates_entropy["max-ent, fixed temp, sample estimate, 2 samples"] = {"updates_per_s": 12.0}
    depth = {"T=5 QSM": {"updates_per_s": 14.0}, "T=10 QSM-mirror": {"updates_per_s": 10.0}}
    (tmp_path / "speed.json").write_text(
        json.dumps(
            {
                "variants": rates,
                "depth": depth,
                "entropy": rates_entropy,
                "goal": {"SAC-512": 30.0, "QSM-mirror-policy": 12.0},
            }
        )
    )

    table = screening.screening_table(str(units), str(tmp_path / "bandit.json"), str(tmp_path / "speed.json"))
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table.splitlines()[2:]}
    assert list(rows) == [
        "SAC",
        "SAC-512",
        "QSM",
        "QSM-mirror",
        "QSM-mirror-policy",
        "QSM-mirror-T10",
        "QSM-mirror-T10-KL",
        "QSM-maxent-samples",
        "QSM-mirror-256",
        "QSM-mirror-T10-KL-256",
        "QSM-maxent-samples-256",
        "QSM-mirror-T10-KL-next-256",
        "QSM-mirror-T10-KL-dual8-256",
        "QSM-tanh-T10-KL-ent-256",
        "QSM-tanh-T10-KL-ent-in-256",
        "QSM-tanh-T10-KL-ent-cap-256",
        "QSM-tanh-T10-KL-ent-bounded-256",
    ]
    policy = rows["QSM-mirror-policy"]
    # bandit d = 2: mean reward 0.70 over the 3 seeds at T = 5 with the learned critic, 1.3 optima held
    assert policy[2:4] == ["0.70 (1.3 held, 3 seeds)", "pending"]
    assert policy[4:7] == ["1500 (25% walls)", "pending", "pending"] and policy[7] == "1.50x"
    # Time per env step: SAC-512's rate over the candidate's, measured side by side (bench_speed.py's loop), then
    # from the units on the tasks both ran on one CPU model (Hopper).
    assert policy[8] == "2.50x (units: 2.0x (1 task))" and policy[9] == "pending (1 of 3 tasks) |"
    assert rows["SAC"][4] == "1700 (0% walls)" and rows["QSM"][6] == "500 (90% walls)"
    assert rows["QSM-mirror"][7:] == ["pending", "pending (units: 2.5x (1 task))", "- |"] and rows["SAC-512"][4:7] == [
        "1200 (0% walls)",
        "pending",
        "400 (0% walls)",
    ]
    # The deeper chain: its bandit runs at T = 10, its cost from the depth section (against T = 5 QSM there).
    assert (
        rows["QSM-mirror-T10"][2:4] == ["0.90 (1.0 held, 1 seed)", "pending"] and rows["QSM-mirror-T10"][7] == "1.40x"
    )
    # The rule: above the mirror variant on Hopper and Walker2d, below on walker-run: kept (SAC-512 ran two tasks).
    assert (
        rows["QSM-mirror-T10"][9]
        == "kept: above QSM-mirror on 2 of 3; of SAC-512's return: Hopper-v4 0.92, walker-run 0.50 |"
    )
    # The KL trust region: its bandit runs under its own agent at T = 10, its cost from the variants section.
    # Max-ent QSM's cost from the entropy section (its sample estimate at 2 samples against the paper's update).
    # Its 512x512 units left the queue (benchmark.DROPPED): the row says so instead of "pending".
    assert rows["QSM-maxent-samples"][4:] == [
        *["not run (dropped)"] * 3,
        "1.50x",
        "pending (units: pending)",
        "not run: left the queue (0 of 3 tasks; results/learning/README.md says why) |",
    ]
    # At 256x256: compared with the mirror variant at 256x256, the goal's reference is SAC (ran on Hopper only);
    # the bandit cells are the 512x512 candidate's (64x64 on the bandit), the update cost is left to that row.
    kl_256 = rows["QSM-mirror-T10-KL-256"]
    assert kl_256[2:4] == ["pending", "0.50 (1.0 held, 1 seed)"] and kl_256[7] == "-"
    assert kl_256[8] == "pending (units: 2.0x (1 task))"  # SAC's 10 env steps/s over its 5 on Hopper
    assert kl_256[9] == "dropped: below QSM-mirror-256 on Walker2d-v4, walker-run; of SAC's return: Hopper-v4 0.53 |"
    # The comparator at 256x256 is judged itself against the mirror variant at 512x512.
    assert rows["QSM-mirror-256"][9] == (
        "dropped: below QSM-mirror on Hopper-v4, Walker2d-v4; of SAC's return: Hopper-v4 0.47 |"
    )
    # The candidate screened at 256x256 alone: its bandit cells under its own agent, all else pending.
    assert rows["QSM-mirror-T10-KL-next-256"][2:] == [
        *["pending"] * 5,
        "-",
        "pending (units: pending)",
        "pending (0 of 3 tasks) |",
    ]
    # One whose seed-0 units left the queue (benchmark.DROPPED) before any ran: its task cells say so.
    assert rows["QSM-mirror-T10-KL-dual8-256"][2:] == [
        *["pending"] * 2,
        *["not run (dropped)"] * 3,
        "-",
        "pending (units: pending)",
        "not run: left the queue (0 of 3 tasks; results/learning/README.md says why) |",
    ]
    # The walls candidate, screened at 256x256 alone (its bandit agent has no run in this fixture).
    assert rows["QSM-tanh-T10-KL-ent-256"][2:] == [
        *["pending"] * 5,
        "-",
        "pending (units: pending)",
        "pending (0 of 3 tasks) |",
    ]
    kl = rows["QSM-mirror-T10-KL"]
    assert kl[2:4] == ["pending", "0.50 (1.0 held, 1 seed)"]
    assert kl[4:7] == ["900 (10% walls)", "600 (10% walls)", "not run (dropped)"] and kl[7] == "2.50x"
    # Below the mirror variant on two tasks: dropped, whatever the third says.
    assert kl[9] == "dropped: below QSM-mirror on Hopper-v4, Walker2d-v4; of SAC-512's return: Hopper-v4 0.75 |"


def test_the_speed_benchmark_times_each_candidate_with_its_units_settings_against_sac_512():
    import bench_speed

    agents = bench_speed.goal_agents("Walker2d-v4")
    at_512, at_256 = ([c[0] for c in group] for group in (screening.CANDIDATES, screening.CANDIDATES_256))
    assert list(agents) == ["SAC-512", *at_512, "SAC", "QSM-256", *at_256]
    for label, (algo, agent) in agents.items():
        units = [u for suite in ("queue", "core100k", "screen100k", "screen256") for u in benchmark.suite_units(suite)]
        units = [u for u in units if u.config.algo == algo]
        assert agent in {u.config.agent for u in units if benchmark.label(u.config) == label}, label
    rates = {"SAC-512": 30.0, "QSM": 20.0, "QSM-mirror-T10-KL": 8.0, "SAC": 90.0, "QSM-mirror-T10-KL-256": 30.0}
    report = {"goal": rates, "goal_env": "Walker2d-v4"}
    report.update(command="c", commit="abc", machine="m", date="d")
    lines = bench_speed._render_goal(report)
    assert "| QSM | 20.0 | 1.50x |" in lines and "| QSM-mirror-T10-KL | 8.0 | 3.75x |" in lines
    assert "| QSM-mirror-T10-KL-256 | 30.0 | 3.00x |" in lines  # against SAC at 256x256

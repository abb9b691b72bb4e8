"""Named suites of units (``SUITES``) and the evidence queue (``QUEUE``): which units exist and in
which order the pending ones run; ``DROPPED``: units that left the queue, and why.

Reason to change this file: which runs the benchmark holds.
"""

from __future__ import annotations

from collections.abc import Callable

from harness.benchmark import units
from harness.benchmark.runner import run_order
from harness.benchmark.units import UNITS_DIR, Unit, _grid, label

DMC_TASKS = ("dm_control/walker-walk-v0", "dm_control/walker-run-v0", "dm_control/cheetah-run-v0")
GYM_TASKS = ("Walker2d-v4", "Hopper-v4")
SEEDS = (0, 1, 2)
SCREEN_TASKS = ("Hopper-v4", "Walker2d-v4", "dm_control/walker-run-v0")
BOTH_TASKS = DMC_TASKS + GYM_TASKS  # the goal's benchmark: dmc100k's and core100k's tasks

# Named suites. Reference settings everywhere, no per-task tuning.
SUITES: dict[str, Callable[[], list[Unit]]] = {
    "core100k": lambda: (
        _grid(("qsm", "sac", "td3", "dql"), GYM_TASKS, SEEDS, 100_000)
        + _grid(("sac",), GYM_TASKS, SEEDS, 100_000, agent=units.WIDTH_512)
        + _grid(("qsm",), GYM_TASKS, SEEDS, 100_000, agent=units.WIDTH_256)
    ),
    # QSM variants (README, "QSM variants"), chosen on the four-peak bandit (results/multimodal.md): the
    # reference target with grad_a Q normalised (alpha 1: no samples at the walls), and the mirror target
    # with best-of-8 acting; beside the faithful QSM and SAC units (the same units as in core100k).
    "variants100k": lambda: (
        _grid(("qsm",), ("Walker2d-v4", "Hopper-v4"), (0, 1, 2), 100_000, agent=units.VARIANT_NORM)
        + _grid(("qsm",), ("Walker2d-v4", "Hopper-v4"), (0, 1, 2), 100_000, agent=units.VARIANT_MIRROR)
        + _grid(("qsm", "sac"), ("Walker2d-v4", "Hopper-v4"), (0, 1, 2), 100_000)
    ),
    # The paper's own benchmark (DeepMind Control Suite through shimmy), tasks its reviewers name: QSM as
    # published, SAC and TD3, and the mirror variant with the variants100k settings (no per-task tuning).
    # The width arms (SAC-512, QSM-256) pair every algorithm with a SAC of its own width.
    "dmc100k": lambda: (
        _grid(("qsm", "sac", "td3"), DMC_TASKS, SEEDS, 100_000)
        + _grid(("qsm",), DMC_TASKS, SEEDS, 100_000, agent=units.VARIANT_MIRROR)
        + _grid(("sac",), DMC_TASKS, SEEDS, 100_000, agent=units.WIDTH_512)
        + _grid(("qsm",), DMC_TASKS, SEEDS, 100_000, agent=units.WIDTH_256)
    ),
    # Max-ent QSM with the automatic temperature (the two estimates of the entropy) beside the mirror
    # variant and SAC (the variants100k units).
    "maxent100k": lambda: (
        _grid(("qsm",), ("Walker2d-v4", "Hopper-v4"), SEEDS, 100_000, agent=units.VARIANT_MAXENT)
        + _grid(("qsm",), ("Walker2d-v4", "Hopper-v4"), SEEDS, 100_000, agent=units.VARIANT_MAXENT_SAMPLES)
        + _grid(("qsm",), ("Walker2d-v4", "Hopper-v4"), SEEDS, 100_000, agent=units.VARIANT_MIRROR)
        + _grid(("sac",), ("Walker2d-v4", "Hopper-v4"), SEEDS, 100_000)
    ),
    # Bigger action spaces (the review's question on scale): Ant-v4 (8 action dims) and Humanoid-v4 (17).
    "scale100k": lambda: (
        _grid(("qsm", "sac"), ("Ant-v4", "Humanoid-v4"), SEEDS, 100_000)
        + _grid(("qsm",), ("Ant-v4", "Humanoid-v4"), SEEDS, 100_000, agent=units.VARIANT_MIRROR)
    ),
    # Screening for one QSM a user can trust (docs/variants.md, "Screening"): each candidate at seed 0 on
    # the three tasks where today's configurations disagree most, before any full units.
    "screen100k": lambda: [
        unit
        for agent in (
            units.VARIANT_MIRROR_POLICY,
            units.VARIANT_MIRROR_T10,
            units.VARIANT_MIRROR_T10_KL,
            units.VARIANT_MAXENT_SAMPLES,
        )
        for unit in _grid(("qsm",), SCREEN_TASKS, (0,), 100_000, agent=agent)
    ],
    # The same screening at SAC's width (256x256): the mirror variant (the comparator) and the open candidates.
    "screen256": lambda: [
        unit
        for agent in units.SCREEN_256.values()
        for unit in _grid(("qsm",), SCREEN_TASKS, (0,), 100_000, agent=agent)
    ],
    # The goal of the screening (docs/variants.md, "Screening"): both benchmarks together (5 tasks x 3
    # seeds), each QSM configuration beside the SAC of its own width, so the report's "At equal width"
    # table and its goal check read every configuration against the goal. All units but the leading
    # candidates' (QSM-mirror-256, QSM-mirror-T10-KL-256) are the dmc100k / core100k / variants100k ones.
    "plus100k": lambda: (
        _grid(("qsm",), BOTH_TASKS, SEEDS, 100_000)
        + _grid(("qsm",), BOTH_TASKS, SEEDS, 100_000, agent=units.VARIANT_MIRROR)
        + _grid(("sac",), BOTH_TASKS, SEEDS, 100_000, agent=units.WIDTH_512)
        + _grid(("qsm",), BOTH_TASKS, SEEDS, 100_000, agent=units.WIDTH_256)
        + _grid(("qsm",), BOTH_TASKS, SEEDS, 100_000, agent=units.SCREEN_256["QSM-mirror-256"])
        + _grid(("qsm",), BOTH_TASKS, SEEDS, 100_000, agent=units.SCREEN_256["QSM-mirror-T10-KL-256"])
        + _grid(("sac",), BOTH_TASKS, SEEDS, 100_000)
    ),
    # A minute-long check of the whole pipeline (tiny networks; not evidence of anything).
    "smoke": lambda: _grid(
        ("qsm", "sac", "td3", "dql"),
        ("Pendulum-v1",),
        (0, 1),
        1_000,
        agent={"actor_hidden_dims": (32, 32), "critic_hidden_dims": (32, 32)},
        start_steps=300,
        eval_interval=500,
        eval_episodes=2,
        checkpoint_interval=500,
        buffer_size=10_000,
    ),
}


def suite_units(name: str) -> list[Unit]:
    """The units of a suite, or of every queue item for ``name == "queue"`` (in queue order, without
    the ``DROPPED`` ones)."""
    if name == QUEUE_NAME:
        return list({u.key: u for _, select in QUEUE for u in select() if dropped_reason(u) is None}.values())
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of {sorted(SUITES) + [QUEUE_NAME]}")
    return SUITES[name]()


def _labelled(suite: str, *labels: str) -> Callable[[], list[Unit]]:
    """The units of ``suite`` whose ``label`` is one of ``labels`` (a queue item)."""
    return lambda: [u for u in SUITES[suite]() if label(u.config) in labels]


# The evidence queue: the order in which pending units are run (``make bench``; ``make bench-list``
# shows it). Items run in this order; within an item, ``run_order`` (cheapest algorithm first, seeds
# round-robin over envs). Finished items stay listed after the open ones.
QUEUE_NAME = "queue"
QUEUE: tuple[tuple[str, Callable[[], list[Unit]]], ...] = (
    ("1. SAC at QSM's width (512x512) on DeepMind Control", _labelled("dmc100k", "SAC-512")),
    ("2. QSM at SAC's width (256x256) on DeepMind Control", _labelled("dmc100k", "QSM-256")),
    ("3. SAC at QSM's width (512x512) on gym MuJoCo", _labelled("core100k", "SAC-512")),
    (
        "4. screening: the mirror target anchored on the policy, and with T = 10, seed 0 on Hopper, Walker2d, "
        "walker-run",
        _labelled("screen100k", "QSM-mirror-policy", "QSM-mirror-T10"),
    ),
    ("5. Diffusion-QL on gym MuJoCo", _labelled("core100k", "DQL")),
    ("6. QSM, the mirror variant and SAC in bigger action spaces (Ant-v4, Humanoid-v4)", lambda: SUITES["scale100k"]()),
    (
        "7. the paper's comparison: QSM as published, SAC, TD3 on DeepMind Control",
        _labelled("dmc100k", "QSM", "SAC", "TD3"),
    ),
    ("8. the mirror variant on DeepMind Control", _labelled("dmc100k", "QSM-mirror")),
    (
        "9. QSM as published and the mirror variant on gym MuJoCo",
        lambda: _labelled("core100k", "QSM")() + _labelled("variants100k", "QSM-mirror")(),
    ),
    ("10. max-ent QSM with the automatic temperature on gym MuJoCo", _labelled("maxent100k", "QSM-maxent")),
    # Cheap (a QSM-256 unit takes about a third of a QSM-512 one): run where a session's last hour fits
    # nothing longer. It says whether the screening could run at 256x256 (docs/variants.md, "Screening").
    ("11. QSM at SAC's width (256x256) on gym MuJoCo", _labelled("core100k", "QSM-256")),
    (
        "12. screening at SAC's width (256x256): the mirror variant, the KL candidate, max-ent QSM, the KL "
        "candidate without the anchor's own chain or with its dual on 8 states (its cost), and with a tanh chain "
        "and an entropy target (the walls), with its step inside the trust region, and with that step's "
        "temperature max(lam, tau) or its entropy weight bounded, seed 0 on Hopper, Walker2d, walker-run",
        lambda: SUITES["screen256"](),
    ),
    (
        "13. the leading candidate's full units: the KL candidate at SAC's width on both benchmarks (plus100k)",
        _labelled("plus100k", "QSM-mirror-T10-KL-256"),
    ),
    (
        "14. the second candidate's full units: the mirror variant at SAC's width on both benchmarks (plus100k)",
        _labelled("plus100k", "QSM-mirror-256"),
    ),
)


def _below_on_gym(hopper: int, walker: int) -> str:
    """Why a 256x256 candidate's walker-run screening unit left the queue: its seed-0 returns on the two gym
    screening tasks (already below QSM-mirror-256's 1341 and 851) dropped it by the rule."""
    return (
        "the screening rule has dropped it already: below QSM-mirror-256 on both gym screening tasks (Hopper-v4 "
        f"{hopper} against 1341, Walker2d-v4 {walker} against 851), so its walker-run unit cannot change the verdict"
    )


# Units of the suites that left the queue because they no longer decide anything: (label, seeds) ->
# why. They stay in their suites (the report names them and the reason) and run only when named
# (``--units``); they are never queued.
DROPPED: dict[tuple[str, tuple[int, ...]], str] = {
    ("QSM-maxent", (2,)): (
        "the denoiser estimate's max-ent units collapse mechanically: in all 4 units its log pi estimate sat at "
        "its floor from the first updates and the temperature followed the same path to 3 digits (1 -> 2e-9), "
        "so a third seed cannot change the verdict; the sample estimate (QSM-maxent-samples) is queued instead"
    ),
    ("QSM-maxent-samples-256", (0,)): _below_on_gym(hopper=207, walker=271),
    ("QSM-mirror-T10-KL-dual8-256", (0,)): _below_on_gym(hopper=637, walker=385),
    ("QSM-tanh-T10-KL-ent-cap-256", (0,)): _below_on_gym(hopper=411, walker=395),
    ("QSM-tanh-T10-KL-ent-bounded-256", (0,)): (
        "it diverges: past tau = lam its step no longer depends on tau, so SAC's rule ran tau from 0.08 to 3e17 "
        "within 2000 updates (the policy's entropy at -50 against the target -3 on Hopper-v4) and both its Hopper-v4 "
        "and Walker2d-v4 runs stopped at 20k env steps with a non-finite parameter (docs/variants.md)"
    ),
    ("QSM-tanh-T10-KL-ent-in-256", (0,)): (
        "it diverges: on Hopper-v4 (seed 0) tau ran from 2.3 (5x lam) to 2e6 between 40k and 42k env steps, every "
        "action went to the walls (return 5 at 45k) and the run stopped at 50k with a non-finite parameter "
        "(docs/variants.md); a configuration that can diverge is no candidate whatever its Walker2d-v4 return"
    ),
    ("QSM-mirror-T10-KL", (0,)): (
        "the screening moved to SAC's width, where QSM is level with QSM-512 on DeepMind Control at a third of "
        "the cost: the same settings at 256x256 (QSM-mirror-T10-KL-256) were kept by the rule on all three "
        "screening tasks and have their full units queued, so 512x512 units (about 2 h each) decide nothing"
    ),
    ("QSM-maxent-samples", SEEDS): (
        "at 256x256 the screening rule dropped it (Hopper-v4 207 and Walker2d-v4 271 against SAC's 1364 and "
        "714); units at twice the width (about 1.7 h each) cannot make it a candidate"
    ),
    ("QSM-norm", SEEDS): (
        "the four-peak bandit settles it: with alpha 1 on the normalised gradient its samples stay spread like "
        "the uniform policy (reward 0.38 against the uniform 0.35, no optimum held; results/multimodal.md), "
        "while the mirror variant, also off the walls, holds an optimum (0.86) and has its units"
    ),
}


def dropped_reason(unit: Unit) -> str | None:
    """Why ``unit`` left the queue (``DROPPED``), or None if it is queued."""
    return dropped_why(label(unit.config), unit.config.seed)


def dropped_why(name: str, seed: int) -> str | None:
    """Why the units labelled ``name`` at ``seed`` left the queue (``DROPPED``), or None."""
    return next((why for (lab, seeds), why in DROPPED.items() if lab == name and seed in seeds), None)


def queue_order(units_dir: str = UNITS_DIR) -> list[tuple[str, list[Unit]]]:
    """Each queue item's name and its pending units in the order they run (see ``QUEUE``); a unit
    that two items name runs with the first."""
    seen: set[str] = set()
    out = []
    for name, select in QUEUE:
        units = [u for u in run_order(select(), units_dir) if u.key not in seen and dropped_reason(u) is None]
        seen.update(u.key for u in units)
        out.append((name, units))
    return out

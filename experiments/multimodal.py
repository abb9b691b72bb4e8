"""Multi-modality of QSM vs SAC on a 2-D bandit with four equally good peaks.

    python experiments/multimodal.py     # writes results/multimodal.png and results/multimodal.md

Trains each agent through its public train_step on `harness.bandit` (reward in [0, 1], four
Gaussian peaks of height 1) and plots 4096 samples of each policy over the reward landscape:
QSM and SAC at their reference settings, then at settings matched to this reward scale.
"""

from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from harness import provenance  # noqa: E402
from harness.bandit import PEAKS, reward, train_on_bandit  # noqa: E402
from qsm_jax import QSMConfig  # noqa: E402
from qsm_jax.baselines.dql import DQLConfig  # noqa: E402
from qsm_jax.baselines.sac import SACConfig  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "results", "Where the PNG and the markdown table go.")
flags.DEFINE_integer("updates", 3000, "Updates per agent.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed.", lower_bound=0)

SMALL = {"actor_hidden_dims": (64, 64), "critic_hidden_dims": (64, 64)}
# (title, algo, config): reference settings first, then settings matched to Q in [0, 1].
AGENTS = [
    ("QSM, reference (alpha 50, T 5)", "qsm", QSMConfig(**SMALL)),
    ("QSM, alpha 3, T 20, temperature 0.7", "qsm", QSMConfig(**SMALL, alpha=3.0, diffusion_steps=20, temperature=0.7)),
    # The variants at the reference T = 5, with grad_a Q normalised by its running RMS, so that alpha / lam
    # are set without knowing Q's scale (not tuned on this bandit: alpha 1, lam 1 and 0.1 chosen a priori).
    ("QSM, normalised grad, alpha 1", "qsm", QSMConfig(**SMALL, alpha=1.0, normalize_grad=True)),
    *[
        (
            f"{target}, normalised grad, lam {lam:g}" + (f", best of {n}" if n > 1 else ""),
            "qsm",
            QSMConfig(**SMALL, score_target=target, lam=lam, normalize_grad=True, num_action_samples=n),
        )
        for target, lam, n in (
            ("tilted", 1.0, 1),
            ("tilted", 0.1, 1),
            ("mirror", 1.0, 1),
            ("mirror", 0.1, 1),
            ("mirror", 1.0, 8),
            ("mirror", 0.1, 8),
        )
    ],
    # Max-ent QSM (docs/algorithm.md, "Maximum-entropy QSM") and the adaptive noise, settings chosen a
    # priori: MaxEntDP's tilted target at two temperatures a decade apart (Q is in [0, 1]), the automatic
    # temperature from 0.1 toward SAC's target entropy -A = -2, and the adaptive noise on the paper's QSM.
    # The bandit's transitions are terminal, so the soft critic target has no next state to act on here.
    *[
        (f"max-ent tilted, temp {t:g}", "qsm", QSMConfig(**SMALL, score_target="tilted", entropy_temperature=t))
        for t in (0.1, 0.01)
    ],
    *[
        (
            f"max-ent {target}, automatic temp (from 0.1)",
            "qsm",
            QSMConfig(**SMALL, score_target=target, entropy_temperature=0.1, auto_temperature=True),
        )
        for target in ("tilted", "mirror")
    ],
    ("QSM, reference + adaptive noise", "qsm", QSMConfig(**SMALL, exploration="adaptive")),
    # The same automatic rules reading the entropy from 8 chain samples per state (``losses.sample_entropy``),
    # the estimate that sees the walls; settings otherwise identical to the rows above.
    *[
        (
            f"max-ent {target}, automatic temp (from 0.1), sample estimate",
            "qsm",
            QSMConfig(
                **SMALL, score_target=target, entropy_temperature=0.1, auto_temperature=True, entropy_estimate="samples"
            ),
        )
        for target in ("tilted", "mirror")
    ],
    (
        "QSM, reference + adaptive noise, sample estimate",
        "qsm",
        QSMConfig(**SMALL, exploration="adaptive", entropy_estimate="samples"),
    ),
    ("Diffusion-QL (eta 1, T 5)", "dql", DQLConfig(**SMALL)),
    ("SAC, reference (initial temperature 1)", "sac", SACConfig(**SMALL)),
    ("SAC, initial temperature 0.1", "sac", SACConfig(**SMALL, initial_temperature=0.1)),
]


def _entropy_cell(metrics: dict) -> str:
    if "log_prob" not in metrics:
        return ""
    return f"{metrics['temperature']:.3g} / {metrics['exploration_std']:.3g} / {-metrics['log_prob']:.2f}"


def main(argv):
    del argv
    commit = provenance.commit_label()
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    grid = np.linspace(-1, 1, 201)
    landscape = reward(np.stack(np.meshgrid(grid, grid), -1))
    cols = 4
    rows_n = -(-len(AGENTS) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 4.4 * rows_n), squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(AGENTS) :]:
        ax.axis("off")
    rows = []
    for ax, (title, algo, config) in zip(axes, AGENTS, strict=False):
        _, s = train_on_bandit(algo, config, updates=FLAGS.updates, seed=FLAGS.seed)
        ax.contourf(grid, grid, landscape, levels=20, cmap="viridis")
        ax.scatter(*s["samples"][:1500].T, s=2, c="white", alpha=0.6)
        ax.scatter(*PEAKS.T, marker="x", c="red", s=40)
        ax.set_title(f"{title}\nreward {s['mean_reward']:.2f}, optima held {s['modes_held']}", fontsize=9)
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ax.set_aspect("equal")
        mass = " / ".join(f"{m:.2f}" for m in s["mode_mass"])
        rows.append(
            f"| {title} | {s['mean_reward']:.3f} | {s['uniform_reward']:.3f} | {mass} | {s['modes_held']} | "
            f"{s['at_walls']:.2f} | {_entropy_cell(s['metrics'])} |"
        )
        print(rows[-1], flush=True)
    fig.tight_layout()
    fig.savefig(os.path.join(FLAGS.out_dir, "multimodal.png"), dpi=90)
    with open(os.path.join(FLAGS.out_dir, "multimodal.md"), "w") as f:
        f.write(
            "# Multi-modality on a 2-D bandit with four equal peaks\n\n"
            f"- command: `python {' '.join(sys.argv)}`\n- commit: `{commit}`\n"
            f"- {FLAGS.updates} updates per agent, 64x64 networks, seed {FLAGS.seed}; 4096 policy samples "
            "(QSM: the reverse chain, best-of-N where set; SAC: its tanh-Gaussian sample)\n"
            "- mass: fraction of samples within 0.25 of each peak; an optimum is held with mass >= 0.1; "
            "walls: fraction with a coordinate beyond 0.98\n\n"
            "- last column (max-ent and adaptive-noise agents): at the last update, the temperature, the std "
            "of the exploration noise, and the estimated entropy of the chain (-mean log pi of "
            "`losses.log_prob_estimate`, or `losses.sample_entropy` in the rows marked 'sample estimate'; "
            "either capped at the box's 2 log 2 = 1.39)\n\n"
            "| agent | mean reward | uniform policy | mass per peak | optima held | at walls "
            "| temp / noise std / entropy |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
        )


if __name__ == "__main__":
    app.run(main)

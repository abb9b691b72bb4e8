"""Learning benchmark: algorithms x envs x seeds at a step budget, with curves, a plot and a table.

    python experiments/bench_learning.py --envs=Walker2d-v4,Hopper-v4 --algos=qsm,sac,td3 \
        --num_seeds=3 --max_steps=100000

Each (algo, env) pair is one `train_and_evaluate` run with its seeds trained together
(`num_seeds`, vmapped), reference settings everywhere (no per-task tuning). Runs live in
`--runs_dir/<algo>_<env>`; re-running the same command resumes every unfinished run from its last
checkpoint and skips finished ones. Outputs in `--out_dir` (default results/learning/):
  <env>_<algo>.csv   evaluation curve of every seed (step, seed, return_mean, return_std)
  <env>.png          mean +- std over seeds per algorithm
  table.md           final return (mean +- std over seeds) and area under the curve, with the command
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time

os.environ.setdefault("MUJOCO_GL", "disable")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from qsm_jax.algorithms import get_algorithm  # noqa: E402
from qsm_jax.train import RunConfig, train_and_evaluate  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("envs", ["Walker2d-v4", "Hopper-v4"], "Gymnasium env ids.")
flags.DEFINE_list("algos", ["qsm", "sac", "td3"], "Algorithms.")
flags.DEFINE_integer("num_seeds", 3, "Seeds per (algo, env), trained together.")
flags.DEFINE_integer("seed", 0, "First seed.")
flags.DEFINE_integer("max_steps", 100_000, "Env steps per seed.")
flags.DEFINE_integer("start_steps", 10_000, "Random warm-up steps.")
flags.DEFINE_integer("eval_interval", 5_000, "Env steps between evaluations.")
flags.DEFINE_integer("eval_episodes", 10, "Episodes per evaluation.")
flags.DEFINE_integer("checkpoint_interval", 10_000, "Env steps between checkpoints.")
flags.DEFINE_list("hidden_dims", [], "Override every network's hidden sizes (for smoke tests only).")
flags.DEFINE_string("runs_dir", "runs/bench_learning", "Where the runs (and their checkpoints) live.")
flags.DEFINE_string("out_dir", "results/learning", "Where curves, plots and the table go.")
flags.DEFINE_bool("progress", True, "Progress bars.")


def auc(steps: list[int], returns: list[float]) -> float:
    """Area under the evaluation curve divided by the step span (a mean return over training)."""
    if len(steps) < 2:
        return float(returns[-1]) if returns else float("nan")
    return float(np.trapezoid(returns, steps) / (steps[-1] - steps[0]))


def run_config(algo: str, env: str) -> RunConfig:
    agent_kwargs = {}
    if FLAGS.hidden_dims:
        dims = tuple(int(d) for d in FLAGS.hidden_dims)
        agent_kwargs = {"actor_hidden_dims": dims, "critic_hidden_dims": dims}
    return RunConfig(
        env=env,
        algo=algo,
        seed=FLAGS.seed,
        num_seeds=FLAGS.num_seeds,
        max_steps=FLAGS.max_steps,
        start_steps=FLAGS.start_steps,
        eval_interval=FLAGS.eval_interval,
        eval_episodes=FLAGS.eval_episodes,
        checkpoint_interval=FLAGS.checkpoint_interval,
        agent=get_algorithm(algo).config_cls(**agent_kwargs),
    )


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    results = {}
    for env in FLAGS.envs:
        for algo in FLAGS.algos:
            start = time.time()
            result = train_and_evaluate(
                run_config(algo, env), os.path.join(FLAGS.runs_dir, f"{algo}_{env}"), progress=FLAGS.progress
            )
            results[(env, algo)] = result["history"]
            with open(os.path.join(FLAGS.out_dir, f"{env}_{algo}.csv"), "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["step", "seed", "return_mean", "return_std"])
                writer.writeheader()
                writer.writerows(result["history"])
            print(f"{algo} on {env}: {result['return_mean']:.1f} after {time.time() - start:.0f}s", flush=True)

    lines = []
    for env in FLAGS.envs:
        fig, ax = plt.subplots(figsize=(6, 4))
        for algo in FLAGS.algos:
            history = results[(env, algo)]
            steps = sorted({h["step"] for h in history})
            per_seed = {s: [h["return_mean"] for h in history if h["seed"] == s] for s in {h["seed"] for h in history}}
            curves = np.array(list(per_seed.values()))  # (seeds, evals)
            mean, std = curves.mean(0), curves.std(0)
            ax.plot(steps, mean, label=algo.upper())
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
            finals, aucs = curves[:, -1], [auc(steps, list(c)) for c in curves]
            lines.append(
                f"| {env} | {algo.upper()} | {steps[-1]} | {finals.mean():.0f} +- {finals.std():.0f} | "
                f"{np.mean(aucs):.0f} +- {np.std(aucs):.0f} | {len(curves)} |"
            )
        ax.set_title(f"{env}: mean +- std over {FLAGS.num_seeds} seeds")
        ax.set_xlabel("env steps")
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(FLAGS.out_dir, f"{env}.png"), dpi=100)
        plt.close(fig)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    table = (
        "# Learning benchmark\n\n"
        f"- command: `python {' '.join(sys.argv)}`\n- commit: `{commit}`\n- machine: {os.cpu_count()} CPU cores\n\n"
        "| env | algorithm | env steps | final return (mean +- std over seeds) | AUC (mean return) | seeds |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n"
    )
    with open(os.path.join(FLAGS.out_dir, "table.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    app.run(main)

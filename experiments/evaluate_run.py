"""Evaluate a run's checkpoint: return and share of actions at the walls, per seed.

    python experiments/evaluate_run.py --workdir=runs/Walker2d-v4_seed0 --episodes=10

Loads the newest intact checkpoint of ``--workdir`` (or ``--step``), plays ``--episodes`` evaluation
episodes per seed with the evaluation policy of training (``policy_sample(..., explore=False)``) and
prints, per seed, the mean return and the share of action dimensions with ``|a| > 0.99`` (docs/algorithm.md:
the reference QSM on gym MuJoCo is a bang-bang controller, ~99% at the walls). For runs made before
evaluation recorded that share, and for any checkpoint. ``--out`` also writes the rows as JSON.

``--spread=M`` (diffusion policies) also looks at what the policy does at the last M states of the run's
replay buffer, the states it visited most recently (``evaluation.policy_spread``): how wide its chain samples are
and whether the critic can tell them apart. A run whose return stalls with a wide policy and a flat
critic there has no direction left to improve in; a narrow one has stopped exploring. It also says why the
samples at the walls are there: how many of their wall dimensions the critic pushes further out, and how
much Q backing them off to +-0.9 costs (to read beside Q's spread over the samples).
"""

import json
import os
import sys

from absl import app, flags, logging

os.environ.setdefault("MUJOCO_GL", "disable")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from qsm_jax.program import cli  # noqa: E402
from qsm_jax.program.envs import make_env  # noqa: E402
from qsm_jax.program.evaluation import WALL, evaluate, policy_spread  # noqa: E402
from qsm_jax.program.restore import restore_run  # noqa: E402
from qsm_jax.program.run_config import RunConfig  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A run folder (holding config.json and checkpoints/).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest intact one).")
flags.DEFINE_integer("episodes", 10, "Evaluation episodes per seed.")
flags.DEFINE_integer("seed", 12345, "Seed of the episodes' resets and of the policy's noise.")
flags.DEFINE_string("out", "", "Also write the rows to this JSON file.")
flags.DEFINE_integer(
    "spread", 0, "Also measure the diffusion policy at the last N replay states (0 = off).", lower_bound=0
)
flags.DEFINE_integer("spread_samples", 32, "Chain samples per state of --spread.", lower_bound=2)
flags.mark_flag_as_required("workdir")


def _recent_observations(buffers, k: int, count: int) -> jax.Array:
    """The last ``count`` observations that seed ``k``'s replay buffer received, (count, S)."""
    size, pointer = int(buffers.size[k]), int(buffers.pointer[k])
    index = (pointer - 1 - np.arange(min(count, size))) % buffers.capacity
    return jnp.asarray(np.asarray(buffers.data.observations[k])[index])


def main(argv):
    if len(argv) > 1:
        sys.exit(f"evaluate_run.py: error: {cli.stray_argument_error(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    if FLAGS.episodes < 1:
        sys.exit("evaluate_run.py: --episodes must be >= 1")
    try:
        states, buffers, meta = restore_run(FLAGS.workdir, FLAGS.step)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"evaluate_run.py: {e}")
    config = RunConfig.from_dict(meta["config"])
    if FLAGS.spread and not hasattr(states.config, "diffusion_steps"):
        sys.exit(f"evaluate_run.py: --spread measures a diffusion policy; this run trains {config.algo}: drop --spread")
    num_seeds = config.num_seeds
    envs = [make_env(config.env) for _ in range(num_seeds * FLAGS.episodes)]
    reset_seeds = FLAGS.seed + np.arange(num_seeds * FLAGS.episodes).reshape(num_seeds, FLAGS.episodes)
    keys = jax.random.key_data(jax.random.split(jax.random.key(FLAGS.seed), num_seeds))
    returns, walls = evaluate(states, envs, reset_seeds, keys)
    rows = []
    for k in range(num_seeds):
        rows.append(
            {
                "workdir": FLAGS.workdir,
                "env": config.env,
                "algo": config.algo,
                "seed": config.seed + k,
                "step": meta["env_step"],
                "episodes": FLAGS.episodes,
                "return_mean": float(returns[k].mean()),
                "return_std": float(returns[k].std()),
                "wall_share": float(walls[k]),
            }
        )
        print(
            f"{config.algo} {config.env} seed {config.seed + k} step {meta['env_step']}: return "
            f"{returns[k].mean():.1f} +- {returns[k].std():.1f} over {FLAGS.episodes} episodes; "
            f"{100 * walls[k]:.1f}% of action dimensions at |a| > {WALL}"
        )
        if FLAGS.spread:
            state = jax.tree.map(lambda x, k=k: x[k], states)
            obs = _recent_observations(buffers, k, FLAGS.spread)
            rows[-1]["spread"] = policy_spread(state, obs, jax.random.key(FLAGS.seed), FLAGS.spread_samples)
            print(
                f"  at the last {obs.shape[0]} replay states: "
                + ", ".join(f"{name} {value:.4g}" for name, value in rows[-1]["spread"].items())
            )
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    app.run(main)

"""Train QSM on a gymnasium task: `python experiments/run.py --env=Walker2d-v4`.

Flags set `qsm_jax.train.RunConfig` and `qsm_jax.QSMConfig`; defaults are the reference settings.
Named configurations are absl flagfiles: `--flagfile=configs/qsm_mirror.flags` (any flag after it
overrides it); `--print_config` shows the resolved settings without training.
Re-running the same command on the same --workdir resumes from its last checkpoint.
"""

import json
import os
import sys

from absl import app, flags, logging

_GL_DEFAULTED = "MUJOCO_GL" not in os.environ
os.environ.setdefault("MUJOCO_GL", "disable")

from qsm_jax.algorithms import ALGORITHMS, get_algorithm  # noqa: E402
from qsm_jax.config import QSMConfig  # noqa: E402
from qsm_jax.train import Interrupted, RunConfig, train_and_evaluate  # noqa: E402

DIFFUSION = ("diffusion_steps", "beta_schedule", "temperature", "num_action_samples")  # QSM and DQL
ONLY = {
    "qsm": ("alpha", "score_target", "lam", "normalize_grad", *DIFFUSION),
    "dql": ("eta", *DIFFUSION),
}

_RUN, _AGENT = RunConfig(), QSMConfig()
FLAGS = flags.FLAGS
flags.DEFINE_enum("algo", "qsm", sorted(ALGORITHMS), "Algorithm: qsm, or the baselines sac, td3 and dql.")
flags.DEFINE_string("env", _RUN.env, "Gymnasium env id with a bounded Box action space.")
flags.DEFINE_integer("seed", _RUN.seed, "Random seed.")
flags.DEFINE_integer("max_steps", _RUN.max_steps, "Env steps in all.")
flags.DEFINE_integer("start_steps", _RUN.start_steps, "Uniform random env steps before the first update.")
flags.DEFINE_integer("batch_size", _RUN.batch_size, "Transitions per update.")
flags.DEFINE_integer("buffer_size", _RUN.buffer_size, "Replay capacity in transitions.")
flags.DEFINE_integer("eval_interval", _RUN.eval_interval, "Env steps between evaluations.")
flags.DEFINE_integer("eval_episodes", _RUN.eval_episodes, "Episodes per evaluation.")
flags.DEFINE_integer("checkpoint_interval", _RUN.checkpoint_interval, "Env steps between checkpoints.")
flags.DEFINE_bool(
    "checkpoint_env_state",
    _RUN.checkpoint_env_state,
    "Save the envs' state with checkpoints, so they need not end episodes (README, 'Resume').",
)
flags.DEFINE_float(
    "checkpoint_every_minutes", _RUN.checkpoint_every_minutes, "Also checkpoint every this many minutes (0 = never)."
)
flags.DEFINE_integer(
    "video_interval", _RUN.video_interval, "Record an evaluation episode to workdir/videos every N env steps (0 = no)."
)
flags.DEFINE_integer("log_interval", _RUN.log_interval, "Env steps between rows of training metrics.")
flags.DEFINE_integer("utd", _RUN.utd, "Updates per env step (each on its own batch).")
flags.DEFINE_integer("num_envs", _RUN.num_envs, "Envs per agent, stepped together.")
flags.DEFINE_integer("num_seeds", _RUN.num_seeds, "Independent agents (seeds seed..seed+K-1) trained at once.")
flags.DEFINE_float("alpha", _AGENT.alpha, "Score scale M_q: the denoiser is regressed onto -alpha * grad_a Q.")
flags.DEFINE_integer("diffusion_steps", _AGENT.diffusion_steps, "Number of diffusion levels T.")
flags.DEFINE_enum("beta_schedule", _AGENT.beta_schedule, ["vp", "linear", "cosine"], "Noise schedule.")
flags.DEFINE_float("temperature", _AGENT.temperature, "Scale of the noise injected in the reverse chain.")
flags.DEFINE_enum(
    "score_target",
    _AGENT.score_target,
    ["qsm", "tilted", "mirror"],
    "Denoiser target: qsm (reference, -alpha grad Q), tilted or mirror (README, 'QSM variants').",
)
flags.DEFINE_float("lam", _AGENT.lam, "Temperature of the tilted / mirror targets (smaller = greedier).")
flags.DEFINE_bool("normalize_grad", _AGENT.normalize_grad, "Divide grad_a Q by its running RMS (scale-free alpha/lam).")
flags.DEFINE_integer(
    "num_action_samples", _AGENT.num_action_samples, "Act with the best (highest Q) of N chain samples."
)
flags.DEFINE_float("eta", 1.0, "DQL: weight of the Q term of the Diffusion-QL actor loss.")
flags.DEFINE_list(
    "actor_hidden_dims", [], "Actor hidden sizes; default the algorithm's (QSM 512,512; SAC, TD3 256,256)."
)
flags.DEFINE_list(
    "critic_hidden_dims", [], "Critic hidden sizes; default the algorithm's (QSM 512,512; SAC, TD3 256,256)."
)
flags.DEFINE_float("actor_lr", _AGENT.actor_lr, "Actor learning rate (QSM: cosine decay over 2e6 updates).")
flags.DEFINE_float("critic_lr", _AGENT.critic_lr, "Critic learning rate.")
flags.DEFINE_float("gamma", _AGENT.gamma, "Discount.")
flags.DEFINE_float("tau", _AGENT.tau, "Polyak rate of the target critics.")
flags.DEFINE_string("workdir", "", "Output folder; default runs/<algo>_<env>_seed<seed>.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_bool("print_config", False, "Print the resolved run settings as JSON and exit without training.")


def _int_list(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in getattr(FLAGS, name))
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {','.join(getattr(FLAGS, name))!r}") from None


def config_from_flags() -> RunConfig:
    """The run's settings from the parsed flags.

    Raises:
      ValueError: a bad value, or a setting of another algorithm (one line).
    """
    common = {"actor_lr": FLAGS.actor_lr, "critic_lr": FLAGS.critic_lr, "gamma": FLAGS.gamma, "tau": FLAGS.tau}
    for name in ("actor_hidden_dims", "critic_hidden_dims"):
        if getattr(FLAGS, name):
            common[name] = _int_list(name)
    own = ONLY.get(FLAGS.algo, ())
    given = sorted({n for names in ONLY.values() for n in names if n not in own and FLAGS[n].present})
    if given:
        flags_text = ", ".join(f"--{n}" for n in given)
        raise ValueError(f"{flags_text}: not settings of --algo={FLAGS.algo}; drop them")
    agent = get_algorithm(FLAGS.algo).config_cls(**common, **{n: getattr(FLAGS, n) for n in own})
    run = ("env", "seed", "max_steps", "start_steps", "batch_size", "buffer_size", "eval_interval", "eval_episodes")
    run += ("checkpoint_interval", "checkpoint_env_state", "checkpoint_every_minutes", "video_interval")
    run += ("log_interval", "utd", "num_envs", "num_seeds", "algo")
    return RunConfig(**{n: getattr(FLAGS, n) for n in run}, agent=agent)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    if FLAGS.video_interval > 0 and os.environ.get("MUJOCO_GL") == "disable" and _GL_DEFAULTED:
        os.environ["MUJOCO_GL"] = "egl"  # headless offscreen rendering (MuJoCo is imported later)
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    try:
        config = config_from_flags()
        if FLAGS.print_config:
            print(json.dumps(config.to_dict(), indent=1))
            return
        seeds = f"{config.seed}" if config.num_seeds == 1 else f"{config.seed}-{config.seed + config.num_seeds - 1}"
        workdir = FLAGS.workdir or os.path.join("runs", f"{config.algo}_{config.env}_seed{seeds}")
        result = train_and_evaluate(config, workdir, progress=FLAGS.progress)
    except ValueError as e:
        sys.exit(f"run.py: error: {e}")
    except Interrupted as e:
        print(f"run.py: {e}", file=sys.stderr)
        sys.exit(130)
    for row in result["per_seed"]:
        print(f"seed {row['seed']}: final evaluation return {row['return_mean']:.1f} +- {row['return_std']:.1f}")
    print(f"final evaluation at step {result['step']}: {result['return_mean']:.1f} (mean over seeds)")
    print(f"outputs in {workdir}")


if __name__ == "__main__":
    app.run(main)

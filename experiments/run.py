"""Train QSM on a gymnasium task: `python experiments/run.py --env=Walker2d-v4`.

Flags set `qsm_jax.program.train.RunConfig` and the algorithm's config (`qsm_jax.QSMConfig` for QSM); they
are generated from those dataclasses (`qsm_jax/program/cli.py`); defaults are the reference settings.
Named configurations are absl flagfiles: `--flagfile=configs/qsm_mirror.flags` (any flag after it
overrides it); `--print_config` shows the resolved settings without training.
Re-running the same command on the same --workdir resumes from its last checkpoint.
"""

import json
import os
import signal
import sys


def _interrupted_at_start(*_):  # Ctrl-C while the libraries load: one line, nothing was written
    print("run.py: interrupted during start-up; nothing was changed", file=sys.stderr)
    os._exit(130)


signal.signal(signal.SIGINT, _interrupted_at_start)

from absl import app, flags, logging  # noqa: E402

_GL_DEFAULTED = "MUJOCO_GL" not in os.environ
os.environ.setdefault("MUJOCO_GL", "disable")

from qsm_jax.program import checkpoint, cli  # noqa: E402
from qsm_jax.program.metrics import WandbOutput  # noqa: E402
from qsm_jax.program.train import Interrupted, train_and_evaluate  # noqa: E402

FLAGS = flags.FLAGS
cli.define_flags(FLAGS)  # one flag per RunConfig and agent-config field (names, defaults, help)
flags.DEFINE_string("workdir", "", "Output folder; default runs/<algo>_<env>_seed<seed>.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_string(
    "wandb_project",
    "",
    "Also log to this Weights & Biases project (needs the [wandb] extra; WANDB_MODE=offline works).",
)
flags.DEFINE_bool(
    "restart", False, "Train again from step 0 a run whose every checkpoint was found damaged (metrics kept aside)."
)
flags.DEFINE_bool("verbose", False, "Show the libraries' own log lines (Orbax, absl) instead of only the program's.")
flags.DEFINE_bool("print_config", False, "Print the resolved run settings as JSON and exit without training.")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"run.py: error: {cli.stray_argument_error(argv[1:])}")
    logging.set_verbosity(logging.INFO if FLAGS.verbose else logging.WARNING)  # Orbax logs every save at INFO
    checkpoint.VERBOSE = FLAGS.verbose
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here: KeyboardInterrupt, caught below
    if FLAGS.video_interval > 0 and os.environ.get("MUJOCO_GL") == "disable" and _GL_DEFAULTED:
        os.environ["MUJOCO_GL"] = "egl"  # headless offscreen rendering (MuJoCo is imported later)
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    try:
        config = cli.config_from_flags(FLAGS)
        if FLAGS.print_config:
            print(json.dumps(config.to_dict(), indent=1))
            return
        seeds = f"{config.seed}" if config.num_seeds == 1 else f"{config.seed}-{config.seed + config.num_seeds - 1}"
        workdir = FLAGS.workdir or os.path.join("runs", f"{config.algo}_{config.env}_seed{seeds}")
        extra = [WandbOutput(FLAGS.wandb_project, workdir, config.to_dict())] if FLAGS.wandb_project else []
        result = train_and_evaluate(
            config, workdir, progress=FLAGS.progress, extra_outputs=extra, restart=FLAGS.restart
        )
    except ValueError as e:
        sys.exit(f"run.py: error: {e}")
    except Interrupted as e:
        print(f"run.py: {e}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:  # before the handlers are installed (start-up, compile) or a second Ctrl-C
        print(
            "run.py: interrupted; the last checkpoint (if any) is the resume point: re-run the same command",
            file=sys.stderr,
        )
        sys.exit(130)
    except OSError as e:  # a read-only or full disk, or a folder that vanished
        where = f" ({e.filename})" if e.filename else ""
        resume = "the last checkpoint (if any) is the resume point"
        if hasattr(e, "resume_step"):  # it failed while training
            step = e.resume_step
            resume = f"it resumes from env step {step}" if step else "it starts over (no checkpoint yet)"
        print(
            f"run.py: error: {e.strerror or e}{where}; once fixed, re-run the same command: {resume}",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)  # skip exit handlers that would retry writing to the failed disk (tracebacks)
    for row in result["per_seed"]:
        print(f"seed {row['seed']}: final evaluation return {row['return_mean']:.1f} +- {row['return_std']:.1f}")
    print(f"final evaluation at step {result['step']}: {result['return_mean']:.1f} (mean over seeds)")
    print(f"outputs in {workdir}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

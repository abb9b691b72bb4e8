"""The training loop: `train_and_evaluate(config, workdir)` steps, logs, evaluates and checkpoints a
run to ``max_steps``, resuming where its checkpoints left off.

Where the rest lives: opening a run (checks, envs, agents, outputs): `opening`; restoring checkpoints
(`restore_run` for your own analysis): `restore`; the compiled env step and the agents' initialisation:
`fused`; SIGINT/SIGTERM (`Interrupted`): `signals`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qsm_jax.program import fused
from qsm_jax.program.envs import derived_seed
from qsm_jax.program.evaluation import evaluate
from qsm_jax.program.metrics import Output
from qsm_jax.program.opening import Run, open_run, start_segment
from qsm_jax.program.run_config import RunConfig
from qsm_jax.program.signals import Interrupted, stop_requests

__all__ = ["Interrupted", "RunConfig", "train_and_evaluate"]


def _all_finite(tree) -> jax.Array:
    return jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)])
    )


def _divergence_message(env_step: int, what: str, config: RunConfig, last_checkpoint: int | None) -> str:
    agent = config.agent
    suspects = [f"--actor_lr={agent.actor_lr:g}", f"--critic_lr={agent.critic_lr:g}"]
    if hasattr(agent, "alpha"):
        suspects.append(f"--alpha={agent.alpha:g}")
    kept = f"the checkpoint at step {last_checkpoint} is intact" if last_checkpoint else "no checkpoint was saved"
    return (
        f"training diverged at env step {env_step}: {what} is not finite; {kept}; "
        f"try lower learning rates or score scale ({', '.join(suspects)}) or check the env's rewards"
    )


def _check_finite_metrics(host: dict, seeds: list[int], env_step: int, config: RunConfig, last: int | None) -> None:
    for name, values in host.items():
        bad = [s for s, v in zip(seeds, np.atleast_1d(values), strict=True) if not np.isfinite(v)]
        if bad:
            raise ValueError(_divergence_message(env_step, f"{name} (seed {bad[0]})", config, last))


def _step(run: Run) -> dict:
    """One env step of every env, then one compiled call: store, ``utd`` updates each, next actions.
    Writes a row per finished episode; returns the updates' metrics (empty during warm-up)."""
    c = run.config
    flat_actions = np.asarray(run.actions).reshape(c.num_seeds * c.num_envs, -1)
    transitions, next_obs, finished = run.pool.step(run.obs.reshape(c.num_seeds * c.num_envs, -1), flat_actions)
    run.env_step += c.num_envs
    run.obs = next_obs.reshape(c.num_seeds, c.num_envs, -1)
    run.states, run.buffers, run.actions, metrics = fused.act_and_learn_seeds(
        run.states,
        run.buffers,
        jax.tree.map(lambda x: x.reshape(c.num_seeds, c.num_envs, *x.shape[1:]), transitions),
        run.obs,
        run.loop_keys,
        np.int32(run.env_step),
        utd=c.utd,
        batch_size=c.batch_size,
        learn=run.learning,
    )
    for i, episode_return, length in finished:
        run.outputs.row(
            run.env_step, "episode", {"seed": run.seeds[i // c.num_envs], "return": episode_return, "length": length}
        )
    return metrics


def _log_training(run: Run, metrics: dict, env_steps_per_s: float) -> None:
    """One train row per seed; stops the run (one line) if a metric is not finite."""
    host = jax.device_get(metrics)
    _check_finite_metrics(host, run.seeds, run.env_step, run.config, run.checkpointer.latest_step())
    for k, s in enumerate(run.seeds):
        values = {"seed": s, **{n: v[k] for n, v in host.items()}, "env_steps_per_s": env_steps_per_s}
        run.outputs.row(run.env_step, "train", values)


def _evaluate(run: Run) -> None:
    """``eval_episodes`` episodes per agent on seeds derived from the evaluation's index; eval rows,
    the curve, and the video of the first episode when one is due."""
    c = run.config
    index = len({h["step"] for h in run.history})
    eval_seeds = np.array([[derived_seed(s, 1, index, i) for i in range(c.eval_episodes)] for s in run.seeds])
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(run.loop_keys, run.env_step)
    frames = [] if c.video_interval > 0 and run.env_step % c.video_interval == 0 else None
    returns, wall_share = evaluate(run.states, run.eval_envs, eval_seeds, keys, frames)
    if frames:
        run.outputs.row(run.env_step, "video", {"seed": run.seeds[0], "frames": len(frames)})
    for k, s in enumerate(run.seeds):
        row = {
            "step": run.env_step,
            "seed": s,
            "return_mean": float(returns[k].mean()),
            "return_std": float(returns[k].std()),
            "returns": [float(r) for r in returns[k]],
            "wall_share": float(wall_share[k]),
        }
        run.history.append(row)
        run.outputs.row(run.env_step, "eval", {n: v for n, v in row.items() if n not in ("step", "returns")})
    run.outputs.evaluated(run.env_step, run.history, frames)


def _checkpoint(run: Run) -> None:
    """Saves states, buffers, counters and history (and the envs' state, or ends the episodes)."""
    if run.learning and not bool(_all_finite(run.states)):  # never save a diverged state
        latest = run.checkpointer.latest_step()
        raise ValueError(_divergence_message(run.env_step, "a parameter", run.config, latest))
    meta = {"env_step": run.env_step, "segment": run.segment, "history": run.history, "config": run.config.to_dict()}
    if run.saves_env_state:
        meta.update(
            env_state=run.pool.get_state(),
            obs=np.asarray(run.obs).ravel().tolist(),
            actions=np.asarray(run.actions).ravel().tolist(),
        )
        run.checkpointer.save(run.env_step, run.states, run.buffers, meta)
    else:
        run.segment += 1
        meta["segment"] = run.segment
        run.checkpointer.save(run.env_step, run.states, run.buffers, meta)
        start_segment(run)
    run.last_save_time = time.time()


def _checkpoint_due(run: Run) -> bool:
    c = run.config
    due = run.env_step % c.checkpoint_interval == 0 or run.env_step == c.max_steps
    minutes = c.checkpoint_every_minutes
    return due or (run.saves_env_state and minutes > 0 and time.time() - run.last_save_time >= 60 * minutes)


def _result(run: Run) -> dict[str, Any]:
    final = [h for h in run.history if h["step"] == run.env_step]
    return {
        "step": run.env_step,
        "return_mean": float(np.mean([h["return_mean"] for h in final])),
        "return_std": float(np.mean([h["return_std"] for h in final])),
        "per_seed": final,
        "history": run.history,
    }


def train_and_evaluate(
    config: RunConfig,
    workdir: str,
    progress: bool = True,
    extra_outputs: Sequence[Output] = (),
    restart: bool = False,
) -> dict[str, Any]:
    """Trains ``config.algo`` (QSM by default) on ``config.env``, writes everything to ``workdir``, resumes.

    Each env step is one compiled call (``fused.act_and_learn_seeds``): it stores the new
    transitions in the device-resident replay buffers, runs ``utd`` updates per transition and
    returns the next actions, for all ``num_seeds`` agents at once.

    Outputs: ``config.json`` (the run's settings), ``metrics.jsonl`` (train, episode, eval and
    video rows, each with its ``seed``), ``tensorboard/``, ``learning_curve.png`` (at each
    evaluation), ``videos/`` (with ``video_interval``), ``checkpoints/``, and ``extra_outputs``
    (e.g. ``metrics.WandbOutput``).

    Resume: the latest checkpoint holds the train states, the replay buffers with their pointer,
    the env-step and segment counters and the evaluation history; every other random draw is
    derived from (seed, step), so a resumed run is identical to an uninterrupted one. Checkpoints
    hold the envs' state where it can be saved (``checkpoint_env_state``); elsewhere the training
    episodes in progress end at each checkpoint as time-limit truncations (bootstrapped, never
    treated as terminations) and new ones start.

    Returns:
      ``{"step", "return_mean", "return_std"}`` of the final evaluation (means over seeds),
      ``"per_seed"`` (its rows, one per seed) and ``"history"`` (every evaluation row:
      ``step``, ``seed``, ``return_mean``, ``return_std``, every episode's return, ``returns``, and
      ``wall_share``, the share of evaluation action dimensions at the walls, ``|a| > WALL``).
    ``restart``: train again from step 0 a run whose every checkpoint was found damaged (its
    metrics.jsonl is kept aside as ``metrics.jsonl.before-restart-<time>``); without it such a
    workdir is refused.

    Raises:
      ValueError: a bad setting or workdir, or divergence (one line; the last checkpoint is intact).
      Interrupted: SIGINT or SIGTERM (it says whether a checkpoint was saved).
      OSError: a write failed while training (a full disk), naming the path; its ``resume_step`` is
        the newest checkpoint's env step (None: none yet), where the same command resumes.
    """
    c = config
    with contextlib.ExitStack() as stack:
        run = open_run(c, workdir, stack, progress, extra_outputs, restart)
        interrupted = stack.enter_context(stop_requests())
        try:
            return _loop(run, interrupted)
        except OSError as e:  # a full disk: where the same command resumes once it is fixed (None: nowhere)
            e.resume_step = run.checkpointer.latest_step()
            raise


def _loop(run: Run, interrupted: list) -> dict[str, Any]:
    """Steps, logs, evaluates and checkpoints ``run`` to ``max_steps``; returns ``_result``.
    ``interrupted``: the signals asking to stop (``signals.stop_requests``)."""
    c = run.config
    last_log_time, last_log_step = time.time(), run.env_step
    while run.env_step < c.max_steps:
        metrics = _step(run)
        if run.env_step % c.log_interval == 0 and metrics:
            now = time.time()
            _log_training(run, metrics, (run.env_step - last_log_step) / max(now - last_log_time, 1e-9))
            last_log_time, last_log_step = now, run.env_step
        if run.env_step % c.eval_interval == 0 or run.env_step == c.max_steps:
            _evaluate(run)
        due = _checkpoint_due(run)
        if due or (interrupted and run.saves_env_state):
            _checkpoint(run)
        run.outputs.advanced(c.num_envs)
        if interrupted:
            raise Interrupted(run.env_step, run.checkpointer.latest_step(), run.saves_env_state or due)
    if not run.history or run.history[-1]["step"] != run.env_step:
        _evaluate(run)
    return _result(run)

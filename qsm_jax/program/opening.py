"""Opening a training run: the checks that need no env, the envs, the agents (fresh or restored), the
run folder's files and the outputs, in that order; and `Run`, everything the loop (`train`) changes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qsm_jax.program import fused
from qsm_jax.program.checkpoint import RunCheckpointer
from qsm_jax.program.envs import EnvPool, check_rendering, derived_seed, env_dims, make_env
from qsm_jax.program.fused import init_agents, seed_sharding
from qsm_jax.program.metrics import CurveOutput, JsonlOutput, Outputs, ProgressOutput, TensorBoardOutput, VideoOutput
from qsm_jax.program.replay import ReplayBuffer, replay_init
from qsm_jax.program.restore import resume_or_start
from qsm_jax.program.run_config import RunConfig
from qsm_jax.program.workdir import check_memory, check_resume, check_workdir, lock_workdir, write_json_atomically


@dataclasses.dataclass
class Run:
    """A training run in progress: its settings, resources and everything the loop changes.

    Attributes:
      config, workdir: what runs, and where its files go.
      pool, eval_envs: the training envs (``num_seeds * num_envs``) and the evaluation envs
        (``num_seeds * eval_episodes``).
      checkpointer, outputs: checkpoints; metrics rows, TensorBoard, plots, progress, videos.
      states, buffers, loop_keys: K stacked agents, their replay buffers and loop keys (K, 2).
      obs, actions: the observations being acted on, (K, N, S), and the actions chosen, (K, N, A).
      env_step, segment: env steps per agent so far; episodes-restart counter (reset seeds).
      history: every evaluation row so far.
      saves_env_state: checkpoints hold the envs' state (else each one ends the episodes).
      last_save_time: wall-clock time of the last checkpoint.
    """

    config: RunConfig
    workdir: str
    pool: EnvPool
    eval_envs: list
    checkpointer: RunCheckpointer
    outputs: Outputs
    states: Any
    buffers: ReplayBuffer
    loop_keys: jax.Array
    obs: Any = None
    actions: Any = None
    env_step: int = 0
    segment: int = 0
    history: list = dataclasses.field(default_factory=list)
    saves_env_state: bool = False
    last_save_time: float = 0.0

    @property
    def seeds(self) -> list[int]:
        return [self.config.seed + k for k in range(self.config.num_seeds)]

    @property
    def learning(self) -> bool:
        return self.env_step >= self.config.start_steps


def open_run(
    config: RunConfig, workdir: str, stack: contextlib.ExitStack, progress: bool, extra_outputs, restart: bool
) -> Run:
    """Opens a run: checks ``workdir`` and ``config`` before anything is opened or compiled, opens the
    envs, builds the agents and restores the newest intact checkpoint (if any), then writes
    ``config.json`` (atomically) and opens the outputs. A start refused on the way changes no file of
    the run (damaged checkpoints excepted: they are set aside). ``stack`` closes what was opened."""
    start_over = check_workdir(config, workdir, restart)
    locked = os.path.isdir(workdir)
    if locked:  # before anything is read: a run another process trains is refused at once
        lock_workdir(workdir, stack)
    check_resume(config, workdir)
    pool, eval_envs = open_envs(config, stack)
    obs_dim, action_dim = env_dims(eval_envs[0])
    check_memory(config, obs_dim, action_dim)
    if config.start_steps >= config.max_steps:
        print(f"note: --start_steps={config.start_steps} >= --max_steps: no update will run", file=sys.stderr)

    states, loop_keys = init_agents(config, obs_dim, action_dim)
    empty = replay_init(config.buffer_size, obs_dim, action_dim, num_seeds=config.num_seeds)
    os.makedirs(workdir, exist_ok=True)
    if not locked:
        lock_workdir(workdir, stack)
    checkpointer = RunCheckpointer(os.path.join(workdir, "checkpoints"))
    stack.callback(checkpointer.close)  # an open manager would print asyncio tracebacks at exit
    states, buffers, meta = resume_or_start(config, checkpointer, states, empty, restart)
    states, buffers, loop_keys = jax.device_put((states, buffers, loop_keys), seed_sharding(config.num_seeds))
    if (restart or start_over) and not meta:
        _set_metrics_aside(workdir, start_over)
    write_json_atomically(os.path.join(workdir, "config.json"), config.to_dict())

    run = Run(config, workdir, pool, eval_envs, checkpointer, None, states, buffers, loop_keys)
    run.env_step, run.segment, run.history = meta.get("env_step", 0), meta.get("segment", 0), meta.get("history", [])
    run.outputs = open_outputs(run, progress, extra_outputs)
    stack.callback(run.outputs.close)
    _continue_episodes(run, meta)
    run.last_save_time = time.time()
    return run


def open_envs(config: RunConfig, stack: contextlib.ExitStack) -> tuple[EnvPool, list]:
    """The training envs (one pool) and the evaluation envs (the first renders with videos on)."""
    pool = EnvPool(config.env, config.num_seeds * config.num_envs)
    stack.callback(pool.close)
    eval_envs = []
    stack.callback(lambda: [e.close() for e in eval_envs])
    for i in range(config.num_seeds * config.eval_episodes):
        eval_envs.append(make_env(config.env, render=i == 0 and config.video_interval > 0))
    if config.video_interval > 0:
        check_rendering(eval_envs[0], config.env)
    return pool, eval_envs


def open_outputs(run: Run, progress: bool, extra_outputs) -> Outputs:
    """metrics.jsonl, TensorBoard, the learning curve, videos, the progress bar and ``extra_outputs``."""
    c = run.config
    return Outputs(
        [
            JsonlOutput(run.workdir, resume_step=run.env_step),
            TensorBoardOutput(run.workdir, resume_step=run.env_step),
            CurveOutput(run.workdir, f"{c.algo.upper()} on {c.env}"),
            VideoOutput(run.workdir),
            ProgressOutput(c.max_steps, run.env_step, run.history, enabled=progress),
            *extra_outputs,
        ]
    )


def _set_metrics_aside(workdir: str, start_over: bool) -> None:
    """A run that starts again from step 0 keeps its earlier metrics.jsonl under another name."""
    if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
        return
    aside = os.path.join(workdir, f"metrics.jsonl.before-restart-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(os.path.join(workdir, "metrics.jsonl"), aside)
    why = "the earlier start with other flags saved no checkpoint; " if start_over else ""
    print(f"note: {why}starting from step 0; the earlier metrics are kept in {aside}", file=sys.stderr)


def _continue_episodes(run: Run, meta: dict) -> None:
    """Continues the episodes a checkpoint saved mid-way, or starts new ones; decides whether this
    run's checkpoints can hold the envs' state."""
    c = run.config
    if meta.get("env_state") is not None:
        run.pool.set_state(meta["env_state"])
        run.obs = np.asarray(meta["obs"], np.float32).reshape(c.num_seeds, c.num_envs, -1)
        run.actions = jnp.asarray(np.asarray(meta["actions"], np.float32).reshape(c.num_seeds, c.num_envs, -1))
    else:
        start_segment(run)
    run.saves_env_state = c.checkpoint_env_state and run.pool.get_state() is not None  # once the envs are reset
    if c.checkpoint_env_state and not run.saves_env_state:
        print(
            f"note: the state of {c.env} cannot be saved, so each checkpoint ends the episodes in progress "
            "(as time-limit truncations) and comes only every --checkpoint_interval env steps",
            file=sys.stderr,
        )


def start_segment(run: Run) -> None:
    """Resets the training envs (seeds from the run seed and ``segment``) and picks the first actions."""
    c = run.config
    reset_seeds = [derived_seed(s, 0, run.segment, i) for s in run.seeds for i in range(c.num_envs)]
    run.obs = run.pool.reset(reset_seeds).reshape(c.num_seeds, c.num_envs, -1)
    run.actions = fused.act_seeds(
        run.states, run.obs, run.loop_keys, np.int32(run.env_step), learn=run.learning, explore=True
    )

"""The training program: `train_and_evaluate(config, workdir)` runs, evaluates, logs and resumes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qsm_jax.algorithms import ALGORITHMS
from qsm_jax.program import fused
from qsm_jax.program.checkpoint import NoIntactCheckpoint, RunCheckpointer
from qsm_jax.program.envs import EnvPool, env_dims, make_env
from qsm_jax.program.evaluation import WALL, evaluate
from qsm_jax.program.metrics import (
    CurveOutput,
    JsonlOutput,
    Output,
    Outputs,
    ProgressOutput,
    TensorBoardOutput,
    VideoOutput,
)
from qsm_jax.program.replay import ReplayBuffer, replay_init
from qsm_jax.program.run_config import RunConfig, check_same_experiment
from qsm_jax.program.workdir import (
    check_memory,
    check_resume,
    check_workdir,
    lock_workdir,
    past_max_steps,
    read_config_json,
    write_json_atomically,
)
from qsm_jax.types import Batch

__all__ = [
    "WALL",
    "Interrupted",
    "RunConfig",
    "evaluate",
    "init_agents",
    "restore_run",
    "seed_sharding",
    "train_and_evaluate",
]


def _check_rendering(env, env_id: str) -> None:
    try:
        import mujoco

        context = mujoco.GLContext(16, 16)  # fails cleanly where no offscreen backend is set up
        context.make_current()
        context.free()
        env.reset(seed=0)
        frame = env.render()
        assert frame is not None and frame.ndim == 3
    except Exception as e:  # noqa: BLE001 (any failure means no usable offscreen backend)
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"--video_interval needs offscreen rendering of {env_id}, which failed ({reason}); install EGL "
            "(e.g. apt install libegl1) or OSMesa (libosmesa6) and set MUJOCO_GL=egl or MUJOCO_GL=osmesa"
        ) from None


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run; ``str()`` says whether a checkpoint was saved and how to resume."""

    def __init__(self, env_step: int, last_checkpoint: int | None, saved: bool):
        self.env_step, self.last_checkpoint, self.saved = env_step, last_checkpoint, saved
        if saved:
            text = f"interrupted at env step {env_step}; checkpoint saved there: re-run the same command to resume"
        else:
            where = f"step {last_checkpoint}" if last_checkpoint else "the start"
            text = (
                f"interrupted at env step {env_step}; no checkpoint saved (the env state is not saved with "
                f"checkpoints here): re-run the same command to resume from {where}"
            )
        super().__init__(text)


def _install_signal_handlers(flag: list) -> dict:
    """SIGINT and SIGTERM set ``flag`` (the loop then checkpoints and stops); a second one kills."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        if flag:
            raise KeyboardInterrupt
        flag.append(signum)

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(handlers: dict) -> None:
    for sig, old in handlers.items():
        signal.signal(sig, old)


@jax.jit
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


def _seed_int(*entropy: int) -> int:
    """A 31-bit seed derived from ``entropy`` (e.g. run seed, purpose, index)."""
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


def seed_sharding(num_seeds: int) -> jax.sharding.Sharding:
    """Shards a leading seed axis over as many devices as divide ``num_seeds``."""
    devices = jax.devices()
    count = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
    mesh = jax.sharding.Mesh(np.array(devices[:count]), ("seed",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seed"))


def _stack(trees: list) -> Any:
    """Stacks same-shaped pytrees (equal static fields: ``qsm_jax.common``) on a new leading axis."""
    leaves = [jnp.stack(xs) for xs in zip(*map(jax.tree.leaves, trees), strict=True)]
    return jax.tree.unflatten(jax.tree.structure(trees[0]), leaves)


def init_agents(config: RunConfig, obs_dim: int, action_dim: int) -> tuple[Any, jax.Array]:
    """K agents stacked on a leading axis, each exactly as ``create_train_state`` makes it for its
    seed, and their loop keys (K, 2) (batch sampling, acting, evaluation)."""
    states, loop_keys = [], []
    for k in range(config.num_seeds):
        init_key, loop_key = jax.random.split(jax.random.key(config.seed + k))
        states.append(ALGORITHMS[config.algo].create_train_state(init_key, obs_dim, action_dim, config.agent))
        loop_keys.append(jax.random.key_data(loop_key))
    return _stack(states), jnp.stack(loop_keys)


def _buffer_from_host(arrays: dict, meta: dict, empty: ReplayBuffer) -> ReplayBuffer:
    size = meta["buffer_size"]
    data = {name: np.zeros(value.shape, value.dtype) for name, value in empty.data._asdict().items()}
    for name in data:
        data[name][:, :size] = arrays[name]
    k = data["rewards"].shape[0]
    return ReplayBuffer(
        data=Batch(**data),
        pointer=jnp.full((k,), meta["buffer_pointer"], jnp.int32),
        size=jnp.full((k,), size, jnp.int32),
    )


def restore_run(workdir: str, step: int | None = None) -> tuple[Any, ReplayBuffer, dict[str, Any]]:
    """Loads a run's checkpoint (the newest intact one if ``step`` is None): ``(states, buffers, meta)``.

    States and buffers carry a leading seed axis K (``num_seeds``). Use it to act with a trained
    policy or to inspect what a run stored. A damaged checkpoint is skipped with one warning line
    and left where it is (the run may still be training); a damaged or missing ``step`` is a
    one-line ValueError.
    """
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise ValueError(f"{workdir!r} holds no run (no config.json); pass the --workdir of a training run")
    config = RunConfig.from_dict(read_config_json(os.path.join(workdir, "config.json")))
    env = make_env(config.env)
    obs_dim, action_dim = env_dims(env)
    env.close()
    checkpointer = RunCheckpointer(os.path.join(workdir, "checkpoints"))
    template, _ = init_agents(config, obs_dim, action_dim)
    empty = replay_init(config.buffer_size, obs_dim, action_dim, num_seeds=config.num_seeds)
    try:
        if step is None:
            found = checkpointer.restore_newest_intact(template, empty, set_aside=False)
            if found is None:
                raise ValueError(f"no checkpoint in {workdir!r}")
            _, states, arrays, meta = found
        else:
            states, arrays, meta = checkpointer.restore_checked(step, template, empty)
    finally:
        checkpointer.close()
    return states, _buffer_from_host(arrays, meta, empty), meta


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


METRICS_KINDS = ("train", "episode", "eval", "video")


def _restore(config: RunConfig, checkpointer: RunCheckpointer, states, empty: ReplayBuffer, restart: bool):
    """The newest intact checkpoint as ``(states, buffers, meta)``, or the fresh ones and ``{}`` (no
    checkpoint, or none intact and ``restart``)."""
    try:
        restored = checkpointer.restore_newest_intact(
            states,
            empty,
            check_meta=lambda meta, step: check_same_experiment(meta["config"], config.to_dict(), f"checkpoint {step}"),
        )
    except NoIntactCheckpoint as e:
        if not restart:
            raise ValueError(
                f"{e}; pass --restart to train this run again from step 0 (its metrics.jsonl is kept aside), "
                "or use another --workdir"
            ) from None
        restored = None
    if restored is None:
        return states, empty, {}
    step, states, arrays, meta = restored
    if restart:
        raise ValueError(
            f"--restart trains again from step 0 only a run whose every checkpoint is damaged, and checkpoint "
            f"{step} in {checkpointer.directory} is intact: re-run without --restart to resume from it, or pass "
            "another --workdir"
        )
    if meta["env_step"] > config.max_steps:
        raise ValueError(past_max_steps(meta["env_step"], config.max_steps))
    when = time.strftime(
        "%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(os.path.join(checkpointer.directory, str(step))))
    )
    print(f"resuming from env step {meta['env_step']} (checkpoint of {when})", file=sys.stderr, flush=True)
    return states, _buffer_from_host(arrays, meta, empty), meta


def _open_run(
    config: RunConfig, workdir: str, stack: contextlib.ExitStack, progress: bool, extra_outputs, restart: bool
) -> Run:
    """Opens a run: checks ``workdir`` and ``config`` before writing anything, opens the envs,
    restores the newest intact checkpoint (if any), then writes ``config.json`` (atomically) and
    opens the outputs. A start refused on the way changes no file of the run (damaged checkpoints
    excepted: they are set aside). Every resource opened is closed by ``stack``."""
    start_over = check_workdir(config, workdir, restart)
    locked = os.path.isdir(workdir)
    if locked:  # before anything is read: a run another process trains is refused at once
        lock_workdir(workdir, stack)
    check_resume(config, workdir)
    pool = EnvPool(config.env, config.num_seeds * config.num_envs)
    stack.callback(pool.close)
    eval_envs = []
    stack.callback(lambda: [e.close() for e in eval_envs])
    for i in range(config.num_seeds * config.eval_episodes):
        eval_envs.append(make_env(config.env, render=i == 0 and config.video_interval > 0))
    if config.video_interval > 0:
        _check_rendering(eval_envs[0], config.env)
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
    states, buffers, meta = _restore(config, checkpointer, states, empty, restart)
    states, buffers, loop_keys = jax.device_put((states, buffers, loop_keys), seed_sharding(config.num_seeds))
    if (restart or start_over) and not meta and os.path.exists(os.path.join(workdir, "metrics.jsonl")):
        aside = os.path.join(workdir, f"metrics.jsonl.before-restart-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(os.path.join(workdir, "metrics.jsonl"), aside)
        why = "the earlier start with other flags saved no checkpoint; " if start_over else ""
        print(f"note: {why}starting from step 0; the earlier metrics are kept in {aside}", file=sys.stderr)
    write_json_atomically(os.path.join(workdir, "config.json"), config.to_dict())
    run = Run(config, workdir, pool, eval_envs, checkpointer, None, states, buffers, loop_keys)
    run.env_step, run.segment, run.history = meta.get("env_step", 0), meta.get("segment", 0), meta.get("history", [])
    run.outputs = _open_outputs(run, progress, extra_outputs)
    stack.callback(run.outputs.close)
    if meta.get("env_state") is not None:  # the checkpoint came mid-episode: continue the episodes
        pool.set_state(meta["env_state"])
        run.obs = np.asarray(meta["obs"], np.float32).reshape(config.num_seeds, config.num_envs, obs_dim)
        run.actions = jnp.asarray(
            np.asarray(meta["actions"], np.float32).reshape(config.num_seeds, config.num_envs, action_dim)
        )
    else:
        _start_segment(run)
    run.saves_env_state = config.checkpoint_env_state and pool.get_state() is not None  # once the envs are reset
    if config.checkpoint_env_state and not run.saves_env_state:
        print(
            f"note: the state of {config.env} cannot be saved, so each checkpoint ends the episodes in progress "
            "(as time-limit truncations) and comes only every --checkpoint_interval env steps",
            file=sys.stderr,
        )
    run.last_save_time = time.time()
    return run


def _open_outputs(run: Run, progress: bool, extra_outputs) -> Outputs:
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


def _start_segment(run: Run) -> None:
    """Resets the training envs (seeds from the run seed and ``segment``) and picks the first actions."""
    c = run.config
    reset_seeds = [_seed_int(s, 0, run.segment, i) for s in run.seeds for i in range(c.num_envs)]
    run.obs = run.pool.reset(reset_seeds).reshape(c.num_seeds, c.num_envs, -1)
    run.actions = fused.act_seeds(
        run.states, run.obs, run.loop_keys, np.int32(run.env_step), learn=run.learning, explore=True
    )


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
    eval_seeds = np.array([[_seed_int(s, 1, index, i) for i in range(c.eval_episodes)] for s in run.seeds])
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
        _start_segment(run)
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
        run = _open_run(c, workdir, stack, progress, extra_outputs, restart)
        interrupted: list = []
        stack.callback(_restore_signal_handlers, _install_signal_handlers(interrupted))
        try:
            return _loop(run, interrupted)
        except OSError as e:  # a full disk: where the same command resumes once it is fixed (None: nowhere)
            e.resume_step = run.checkpointer.latest_step()
            raise


def _loop(run: Run, interrupted: list) -> dict[str, Any]:
    """Steps, logs, evaluates and checkpoints ``run`` to ``max_steps``; returns ``_result``.
    ``interrupted`` is the signal handlers' flag (see ``_install_signal_handlers``)."""
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

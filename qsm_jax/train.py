"""The training program: `train_and_evaluate(config, workdir)` runs, evaluates, logs and resumes."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import numpy as np
import tqdm

from qsm_jax import learner
from qsm_jax.checkpoint import RunCheckpointer
from qsm_jax.config import QSMConfig
from qsm_jax.envs import env_dims, make_env
from qsm_jax.metrics import MetricsWriter, plot_learning_curve
from qsm_jax.replay import ReplayBuffer

# Settings a resumed run may change; every other difference means another experiment.
RESUMABLE_CHANGES = ("max_steps",)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Settings of a training run. Field names are the flag names of ``experiments/run.py``.

    Attributes:
      env: gymnasium id of a task with a bounded Box action space.
      seed: seeds the networks, the envs and every random draw of the loop.
      max_steps: env steps in all.
      start_steps: env steps of uniform random actions before the first update.
      batch_size: transitions per update.
      buffer_size: replay capacity (transitions).
      eval_interval: env steps between evaluations (one more runs at the end).
      eval_episodes: episodes per evaluation, on a separate env with its own seeds.
      checkpoint_interval: env steps between checkpoints (one more at the end).
      log_interval: env steps between rows of training metrics.
      agent: the QSM settings.
    """

    env: str = "Walker2d-v4"
    seed: int = 0
    max_steps: int = 1_000_000
    start_steps: int = 10_000
    batch_size: int = 256
    buffer_size: int = 1_000_000
    eval_interval: int = 10_000
    eval_episodes: int = 10
    checkpoint_interval: int = 50_000
    log_interval: int = 1_000
    agent: QSMConfig = dataclasses.field(default_factory=QSMConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.env, str) or not self.env:
            raise ValueError(f"env must be a gymnasium env id, got {self.env!r}")
        checks = {
            "seed": 0,
            "max_steps": 1,
            "start_steps": 0,
            "batch_size": 1,
            "buffer_size": 1,
            "eval_interval": 1,
            "eval_episodes": 1,
            "checkpoint_interval": 1,
            "log_interval": 1,
        }
        for name, low in checks.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "agent"}
        return {**d, "agent": self.agent.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        agent = d.get("agent", {})
        agent = QSMConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in agent.items()})
        return cls(**{**{k: v for k, v in d.items() if k != "agent"}, "agent": agent})


def _check_same_experiment(saved: dict, current: dict, where: str) -> None:
    def flat(d):
        out = {k: v for k, v in d.items() if k != "agent" and k not in RESUMABLE_CHANGES}
        return {**out, **{f"{k}": v for k, v in d.get("agent", {}).items()}}

    saved_flat, current_flat = flat(saved), flat(current)
    diffs = [
        f"{k}={saved_flat.get(k)!r} there, {current_flat.get(k)!r} now"
        for k in sorted(set(saved_flat) | set(current_flat))
        if saved_flat.get(k) != current_flat.get(k)
    ]
    if diffs:
        raise ValueError(
            f"{where} was written by a different configuration ({'; '.join(diffs)}); "
            "re-run with the same flags to resume, or pass a new --workdir"
        )


def _seed_int(*entropy: int) -> int:
    """A 31-bit seed derived from ``entropy`` (e.g. run seed, purpose, index)."""
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


def evaluate(state: learner.QSMState, envs: list, seeds: list[int], key: jax.Array) -> np.ndarray:
    """Runs one episode per env, all in lockstep with one batched action call per time step.

    Evaluation actions are single stochastic samples of the chain, without exploration noise.

    Returns:
      Undiscounted returns, (len(envs),).
    """
    obs = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)]).astype(np.float32)
    returns = np.zeros(len(envs))
    done = np.zeros(len(envs), bool)
    t = 0
    while not done.all():
        actions = np.asarray(learner.sample_actions(state, obs, jax.random.fold_in(key, t)))
        for i, env in enumerate(envs):
            if done[i]:
                continue
            o, r, terminated, truncated, _ = env.step(actions[i])
            obs[i] = o
            returns[i] += r
            done[i] = terminated or truncated
        t += 1
    return returns


def restore_run(workdir: str, step: int | None = None) -> tuple[learner.QSMState, ReplayBuffer, dict[str, Any]]:
    """Loads a run's checkpoint (the latest if ``step`` is None): ``(state, buffer, meta)``.

    Use it to act with a trained policy or to inspect what a run stored.
    """
    with open(os.path.join(workdir, "config.json")) as f:
        config = RunConfig.from_dict(json.load(f))
    env = make_env(config.env)
    obs_dim, action_dim = env_dims(env)
    env.close()
    template = learner.create_train_state(jax.random.key(0), obs_dim, action_dim, config.agent)
    buffer = ReplayBuffer(config.buffer_size, obs_dim, action_dim)
    checkpointer = RunCheckpointer(os.path.join(workdir, "checkpoints"))
    step = checkpointer.latest_step() if step is None else step
    if step is None:
        raise ValueError(f"no checkpoint in {workdir!r}")
    state, meta = checkpointer.restore(step, template, buffer)
    checkpointer.close()
    return state, buffer, meta


def train_and_evaluate(config: RunConfig, workdir: str, progress: bool = True) -> dict[str, Any]:
    """Trains QSM on ``config.env`` and writes everything to ``workdir``; resumes if it can.

    Outputs: ``config.json`` (the run's settings), ``metrics.jsonl`` (train, episode and eval
    rows), ``tensorboard/``, ``learning_curve.png`` (at each evaluation) and ``checkpoints/``.

    Resume: the latest checkpoint holds the train state, the replay buffer with its pointer, the
    env-step and episode counters and the evaluation history; every other random draw is derived
    from (seed, step), so a resumed run is identical to an uninterrupted one. To make that hold,
    the training episode in progress ends at each checkpoint as a time-limit truncation
    (bootstrapped, never treated as termination) and a new one starts.

    Returns:
      ``{"step", "return_mean", "return_std", "history"}`` of the final evaluation.
    """
    os.makedirs(workdir, exist_ok=True)
    config_path = os.path.join(workdir, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            _check_same_experiment(json.load(f), config.to_dict(), f"workdir {workdir!r}")
    with open(config_path, "w") as f:
        json.dump(config.to_dict(), f, indent=2)

    env = make_env(config.env)
    eval_envs = [make_env(config.env) for _ in range(config.eval_episodes)]
    obs_dim, action_dim = env_dims(env)
    init_key, act_key, eval_key = jax.random.split(jax.random.key(config.seed), 3)
    state = learner.create_train_state(init_key, obs_dim, action_dim, config.agent)
    buffer = ReplayBuffer(config.buffer_size, obs_dim, action_dim)
    checkpointer = RunCheckpointer(os.path.join(workdir, "checkpoints"))

    env_step, episode, history = 0, 0, []
    latest = checkpointer.latest_step()
    if latest is not None:
        _check_same_experiment(checkpointer.restore_meta(latest)["config"], config.to_dict(), f"checkpoint {latest}")
        state, meta = checkpointer.restore(latest, state, buffer)
        env_step, episode, history = meta["env_step"], meta["episode"], meta["history"]
    writer = MetricsWriter(workdir, resume_step=env_step)
    plot_path = os.path.join(workdir, "learning_curve.png")

    def run_evaluation() -> None:
        seeds = [_seed_int(config.seed, 1, len(history), i) for i in range(config.eval_episodes)]
        returns = evaluate(state, eval_envs, seeds, jax.random.fold_in(eval_key, env_step))
        row = {"step": env_step, "return_mean": float(returns.mean()), "return_std": float(returns.std())}
        history.append(row)
        writer.write(env_step, "eval", {k: v for k, v in row.items() if k != "step"})
        plot_learning_curve(history, plot_path, f"QSM on {config.env}, seed {config.seed}")

    def start_episode() -> np.ndarray:
        return env.reset(seed=_seed_int(config.seed, 0, episode))[0]

    obs = start_episode()
    episode_return, episode_length, metrics = 0.0, 0, None
    bar = tqdm.tqdm(total=config.max_steps, initial=env_step, unit="step", disable=not progress, dynamic_ncols=True)
    if history:
        bar.set_postfix(eval_return=f"{history[-1]['return_mean']:.1f}")
    last_log_time, last_log_step = time.time(), env_step
    while env_step < config.max_steps:
        if env_step < config.start_steps:
            action = np.random.default_rng((config.seed, env_step)).uniform(-1, 1, action_dim).astype(np.float32)
        else:
            action = np.asarray(learner.sample_actions(state, obs, jax.random.fold_in(act_key, env_step), explore=True))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated)
        env_step += 1
        episode_return += float(reward)
        episode_length += 1
        obs = next_obs
        if terminated or truncated:
            writer.write(env_step, "episode", {"return": episode_return, "length": episode_length})
            episode += 1
            obs, episode_return, episode_length = start_episode(), 0.0, 0

        if env_step >= config.start_steps:
            batch = buffer.sample(np.random.default_rng((config.seed, env_step, 1)), config.batch_size)
            state, metrics = learner.train_step(state, batch)

        if env_step % config.log_interval == 0 and metrics is not None:
            now = time.time()
            sps = (env_step - last_log_step) / max(now - last_log_time, 1e-9)
            last_log_time, last_log_step = now, env_step
            writer.write(env_step, "train", {**jax.device_get(metrics), "env_steps_per_s": sps})
        if env_step % config.eval_interval == 0 or env_step == config.max_steps:
            run_evaluation()
            bar.set_postfix(eval_return=f"{history[-1]['return_mean']:.1f}")
        if env_step % config.checkpoint_interval == 0 or env_step == config.max_steps:
            if episode_length > 0:  # end the episode in progress as a truncation (see docstring)
                episode += 1
                obs, episode_return, episode_length = start_episode(), 0.0, 0
            meta = {"env_step": env_step, "episode": episode, "history": history, "config": config.to_dict()}
            checkpointer.save(env_step, state, buffer, meta)
        bar.update(1)
    bar.close()
    if not history or history[-1]["step"] != env_step:
        run_evaluation()
    writer.close()
    checkpointer.close()
    for e in [env, *eval_envs]:
        e.close()
    return {**history[-1], "history": history}

"""`RunConfig`, the settings of a training run, and the rule for which of them a resumed run may change."""

from __future__ import annotations

import dataclasses
from typing import Any

from qsm_jax.algorithms import get_algorithm
from qsm_jax.config import QSMConfig

# Settings a resumed run may change; every other difference means another experiment.
RESUMABLE_CHANGES = ("max_steps", "checkpoint_every_minutes", "video_interval")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Settings of a training run. Field names are the flag names of ``experiments/run.py``.

    Attributes:
      env: gymnasium id of a task with a bounded Box action space.
      seed: seed of the first agent; agent k uses ``seed + k``. Seeds the networks, the envs and
        every random draw of the loop.
      max_steps: env steps per agent.
      start_steps: env steps of uniform random actions before the first update.
      batch_size: transitions per update.
      buffer_size: replay capacity per agent (transitions).
      eval_interval: env steps between evaluations (one more runs at the end).
      eval_episodes: episodes per evaluation, on separate envs with their own seeds.
      checkpoint_interval: env steps between checkpoints (one more at the end).
      checkpoint_env_state: save the training envs' state with each checkpoint (MuJoCo /
        dm_control simulator state, time-limit counters, env RNGs, episode returns), so that a
        checkpoint does not end the episodes in progress and may come at any step. False (or an
        env whose state cannot be saved, ``envs.env_state``): each checkpoint ends the episodes as
        time-limit truncations (the earlier rule), checkpoints only every ``checkpoint_interval``.
      video_interval: record the first evaluation episode (seed ``seed``) every this many env steps
        to ``workdir/videos/<step>.mp4`` (0 = never); a multiple of ``eval_interval``.
      checkpoint_every_minutes: also checkpoint after this many minutes of wall-clock time (0 =
        never); only with the env state saved, so that it changes nothing in the results.
      log_interval: env steps between rows of training metrics.
      utd: updates per env step (a real update-to-data ratio: ``utd * num_envs`` updates, each on
        its own batch, per vector step).
      num_envs: envs per agent, stepped together; env-step counts include all of them.
      num_seeds: independent agents trained at once (vmapped, sharded over the devices).
      algo: "qsm" (default), or the baselines "sac", "td3" and "dql".
      agent: the algorithm's settings (``QSMConfig``, ``SACConfig``, ``TD3Config`` or ``DQLConfig``, matching ``algo``).
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
    checkpoint_env_state: bool = True
    checkpoint_every_minutes: float = 10.0
    video_interval: int = 0
    log_interval: int = 1_000
    utd: int = 1
    num_envs: int = 1
    num_seeds: int = 1
    algo: str = "qsm"
    agent: Any = dataclasses.field(default_factory=QSMConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.env, str) or not self.env:
            raise ValueError(f"env must be a gymnasium env id, got {self.env!r}")
        algorithm = get_algorithm(self.algo)
        if not isinstance(self.agent, algorithm.config_cls):
            raise ValueError(
                f"agent must be a {algorithm.config_cls.__name__} for algo={self.algo!r}, "
                f"got {type(self.agent).__name__}"
            )
        lows = {
            "seed": 0,
            "max_steps": 1,
            "start_steps": 0,
            "batch_size": 1,
            "buffer_size": 1,
            "eval_interval": 1,
            "eval_episodes": 1,
            "checkpoint_interval": 1,
            "log_interval": 1,
            "utd": 1,
            "num_envs": 1,
            "num_seeds": 1,
        }
        for name, low in lows.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.checkpoint_env_state, bool):
            raise ValueError(f"checkpoint_env_state must be a bool, got {self.checkpoint_env_state!r}")
        minutes = self.checkpoint_every_minutes
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not (0 <= minutes < float("inf")):
            raise ValueError(f"checkpoint_every_minutes must be a number >= 0 (0 = never), got {minutes!r}")
        if not isinstance(self.video_interval, int) or isinstance(self.video_interval, bool) or self.video_interval < 0:
            raise ValueError(f"video_interval must be an integer >= 0 (0 = no videos), got {self.video_interval!r}")
        if self.video_interval % self.eval_interval:
            raise ValueError(
                f"video_interval ({self.video_interval}) must be a multiple of eval_interval ({self.eval_interval})"
            )
        if self.buffer_size < max(self.num_envs, self.batch_size):
            raise ValueError(
                f"buffer_size ({self.buffer_size}) must be at least batch_size ({self.batch_size}) and "
                f"num_envs ({self.num_envs})"
            )
        for name in ("max_steps", "start_steps", "eval_interval", "checkpoint_interval", "log_interval"):
            if getattr(self, name) % self.num_envs:
                raise ValueError(f"{name} ({getattr(self, name)}) must be a multiple of num_envs ({self.num_envs})")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "agent"}
        return {**d, "agent": self.agent.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        agent = d.get("agent", {})
        config_cls = get_algorithm(d.get("algo", "qsm")).config_cls
        agent = config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in agent.items()})
        return cls(**{**{k: v for k, v in d.items() if k != "agent"}, "agent": agent})


def _flat_defaults(d: dict) -> dict:
    """The default of every field of ``d``'s run and agent configs (those that have one), flat."""
    run = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING}
    agent = get_algorithm(d.get("algo", "qsm")).config_cls().to_dict()
    return {**run, **agent}


def check_same_experiment(saved: dict, current: dict, where: str) -> None:
    """Raises unless ``saved`` and ``current`` describe the same run (resumable fields aside).

    A field ``saved`` lacks was added to the library after it was written; it reads as its default, since
    every new option defaults to the earlier behaviour (so runs started before an upgrade resume after it).
    """

    def flat(d):
        out = {k: v for k, v in d.items() if k != "agent" and k not in RESUMABLE_CHANGES}
        return {**out, **d.get("agent", {})}

    saved_flat, current_flat = flat(saved), flat(current)
    saved_flat = {**{k: v for k, v in _flat_defaults(saved).items() if k in current_flat}, **saved_flat}
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

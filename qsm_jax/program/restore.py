"""Restoring a run from its checkpoints: to resume training (`resume_or_start`) or to inspect and act
with a trained policy (`restore_run`). The checkpoint files themselves: `checkpoint.RunCheckpointer`."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import jax.numpy as jnp
import numpy as np

from qsm_jax.program.checkpoint import NoIntactCheckpoint, RunCheckpointer
from qsm_jax.program.envs import env_dims, make_env
from qsm_jax.program.fused import init_agents
from qsm_jax.program.replay import ReplayBuffer, replay_init
from qsm_jax.program.run_config import RunConfig, check_same_experiment
from qsm_jax.program.workdir import past_max_steps, read_config_json
from qsm_jax.types import Batch


def buffer_from_host(arrays: dict, meta: dict, empty: ReplayBuffer) -> ReplayBuffer:
    """The replay buffers a checkpoint stored (``arrays``: the filled part, (K, size, ...) per field)
    placed into ``empty`` (K buffers of the run's capacity), with the stored pointer and size."""
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
    return states, buffer_from_host(arrays, meta, empty), meta


def resume_or_start(config: RunConfig, checkpointer: RunCheckpointer, states, empty: ReplayBuffer, restart: bool):
    """The newest intact checkpoint of a run being opened for training as ``(states, buffers, meta)``
    (after one line saying where it resumes), or the fresh ``states``, ``empty`` and ``{}`` (no
    checkpoint, or none intact and ``restart``). One-line ValueErrors: none intact without
    ``restart``, ``restart`` with an intact one, a checkpoint past ``max_steps`` or of another
    experiment."""
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
    return states, buffer_from_host(arrays, meta, empty), meta

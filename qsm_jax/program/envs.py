"""Gymnasium environments for the training loop: creation, validation and action rescaling."""

from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np

from qsm_jax.types import Batch

DMC_PREFIX = "dm_control/"


def _is_settotalmass_notice(record: logging.LogRecord) -> bool:
    """False for MuJoCo's notice that dm_control's own model files use the deprecated ``settotalmass``.

    MuJoCo prints it once per env made (12 lines before a unit's first step); no flag of ours or the
    user's can act on it. Every other warning passes.
    """
    return "'settotalmass' is deprecated" not in record.getMessage()


def _register_dm_control() -> None:
    """Registers the ``dm_control/<domain>-<task>-v0`` ids (Farama's shimmy) on first use."""
    try:
        import shimmy  # noqa: F401  (registers the dm_control namespace with gymnasium)
    except ImportError:
        raise ValueError(
            "dm_control tasks need the packages dm-control and shimmy[dm-control] (pip install -e . installs them)"
        ) from None
    # dm_control logs MuJoCo's warnings through absl; adding the same filter again is a no-op.
    logging.getLogger("absl").addFilter(_is_settotalmass_notice)


def _unknown_id_message(env_id: str, error: Exception) -> str:
    if env_id.startswith(DMC_PREFIX):
        known = sorted(k for k in gym.registry if k.startswith(DMC_PREFIX))
        examples = ", ".join(k for k in known if any(t in k for t in ("walker-walk", "cheetah-run", "hopper-hop")))
        return (
            f"unknown env id {env_id!r}: not one of the {len(known)} dm_control tasks shimmy registers "
            f"(e.g. {examples or ', '.join(known[:3])}); ids are dm_control/<domain>-<task>-v0"
        )
    return f"unknown env id {env_id!r} ({error}); pass a registered gymnasium id such as Walker2d-v4"


def _flatten_dict_observations(env: gym.Env, env_id: str) -> gym.Env:
    """Dict observations (dm_control's) -> one flat float32 vector.

    The entries are concatenated in the order of the observation space's keys, which gymnasium's
    ``Dict`` space sorts alphabetically (walker: height (1), orientations (14), velocity (9)), each
    entry flattened in C order (``gymnasium.spaces.flatten``).
    """
    space = env.observation_space
    leaves = list(space.spaces.items())
    bad = [k for k, v in leaves if not isinstance(v, gym.spaces.Box)]
    if bad:
        env.close()
        raise ValueError(
            f"env {env_id!r} has observation entries {bad} that are not Box arrays; QSM needs observations "
            "that flatten to one vector"
        )
    env = gym.wrappers.FlattenObservation(env)
    flat = gym.spaces.Box(-np.inf, np.inf, env.observation_space.shape, np.float32)
    return gym.wrappers.TransformObservation(env, lambda o: np.asarray(o, np.float32), flat)


def make_env(env_id: str, render: bool = False) -> gym.Env:
    """Makes ``env_id`` with its actions rescaled so that the agent acts in [-1, 1].

    Gymnasium ids (``Walker2d-v4``) and DeepMind Control Suite tasks through shimmy
    (``dm_control/walker-walk-v0``) both work. dm_control's dict observations are flattened to one
    float32 vector (``_flatten_dict_observations``); its episodes end at 1000 steps as truncations
    (shimmy reports ``truncated`` when the final discount is > 0), so the critic bootstraps there.

    With ``render``, the env renders RGB frames (``env.render()``, MuJoCo's offscreen renderer).

    Raises:
      ValueError: unknown id, a non-Box or unbounded action space, or observations that are not
        one flat vector (or a dict of arrays); the message says what is wrong.
    """
    if env_id.startswith(DMC_PREFIX):
        _register_dm_control()
    try:
        env = gym.make(env_id, render_mode="rgb_array") if render else gym.make(env_id)
    except gym.error.Error as e:
        raise ValueError(_unknown_id_message(env_id, e)) from None
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        env.close()
        raise ValueError(
            f"env {env_id!r} has a {type(space).__name__} action space; QSM needs continuous (Box) actions"
        )
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        env.close()
        raise ValueError(f"env {env_id!r} has an unbounded action space {space}; QSM needs finite bounds")
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = _flatten_dict_observations(env, env_id)
    obs_space = env.observation_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        env.close()
        raise ValueError(f"env {env_id!r} has observation space {obs_space}; QSM needs flat Box observations")
    ones = np.ones(space.shape, space.dtype)  # dm_control's actions are float64: float32 bounds warn
    return gym.wrappers.RescaleAction(env, min_action=-ones, max_action=ones)


def env_dims(env: gym.Env) -> tuple[int, int]:
    """(obs_dim, action_dim) of a flat-Box env."""
    return int(env.observation_space.shape[0]), int(env.action_space.shape[0])


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return {"__array__": x.tolist(), "dtype": str(x.dtype)}
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _from_jsonable(x):
    if isinstance(x, dict):
        if "__array__" in x:
            return np.asarray(x["__array__"], dtype=x["dtype"])
        return {k: _from_jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_jsonable(v) for v in x]
    return x


def _random_state(rng) -> dict:
    if isinstance(rng, np.random.RandomState):
        kind, keys, pos, has_gauss, gauss = rng.get_state()
        return {"legacy": [kind, keys, pos, has_gauss, gauss]}
    return {"generator": rng.bit_generator.state}


def _set_random_state(rng, state: dict) -> None:
    if "legacy" in state:
        kind, keys, pos, has_gauss, gauss = state["legacy"]
        rng.set_state((kind, np.asarray(keys, np.uint32), pos, has_gauss, gauss))
    else:
        rng.bit_generator.state = state["generator"]


def _mj_state(model, data) -> np.ndarray:
    """MuJoCo's full integration state (time, qpos, qvel, act, warm start, controls, applied forces)."""
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(model, spec), np.float64)
    mujoco.mj_getState(model, data, state, spec)
    return state


def env_state(env: gym.Env) -> dict | None:
    """Everything that makes ``env``'s next steps what they would have been, as JSON-able data, or
    None if this kind of env is not supported (then checkpoints end episodes instead).

    Supported: gymnasium MuJoCo envs (MuJoCo's full integration state), DeepMind Control tasks
    through shimmy (physics state, step counter, task RNG) and classic-control envs whose state is
    plain arrays (e.g. Pendulum). Wrapper state kept: ``TimeLimit``'s elapsed steps.
    """
    import mujoco

    wrappers, w = {}, env
    while isinstance(w, gym.Wrapper):
        if isinstance(w, gym.wrappers.TimeLimit):
            wrappers["elapsed_steps"] = w._elapsed_steps
        w = w.env
    base = env.unwrapped
    out = {"wrappers": wrappers}
    model, data = getattr(base, "model", None), getattr(base, "data", None)
    if isinstance(data, mujoco.MjData):
        out.update(kind="mujoco", mj=_mj_state(model, data), rng=_random_state(base.np_random))
    elif type(base).__name__ == "DmControlCompatibilityV0":
        dm = base._env
        out.update(
            kind="dm_control",
            physics=_mj_state(dm.physics.model.ptr, dm.physics.data.ptr),
            step_count=dm._step_count,
            reset_next_step=dm._reset_next_step,
            rng=_random_state(dm.task.random),
        )
    elif type(base).__module__.startswith("gymnasium.envs.classic_control") and hasattr(base, "state"):
        plain = {k: v for k, v in vars(base).items() if k in ("state", "last_u", "steps_beyond_terminated")}
        out.update(kind="classic", attrs=plain, rng=_random_state(base.np_random))
    else:
        return None
    return _jsonable(out)


def set_env_state(env: gym.Env, state: dict) -> None:
    """Puts ``env`` back into a state recorded by ``env_state``."""
    import mujoco

    state = _from_jsonable(state)
    w = env
    while isinstance(w, gym.Wrapper):
        if isinstance(w, gym.wrappers.TimeLimit):
            w._elapsed_steps = state["wrappers"]["elapsed_steps"]
        if hasattr(w, "_has_reset"):
            w._has_reset = True
        if isinstance(w, gym.wrappers.PassiveEnvChecker):  # its one-time checks ran before the save
            w.checked_reset = w.checked_step = w.checked_data_reuse = True
        w = w.env
    base = env.unwrapped
    if state["kind"] == "mujoco":
        mujoco.mj_setState(base.model, base.data, state["mj"], mujoco.mjtState.mjSTATE_INTEGRATION)
        _set_random_state(base.np_random, state["rng"])
    elif state["kind"] == "dm_control":
        dm = base._env
        mujoco.mj_setState(
            dm.physics.model.ptr, dm.physics.data.ptr, state["physics"], mujoco.mjtState.mjSTATE_INTEGRATION
        )
        dm.physics.forward()  # dm_control steps as mj_step2 + mj_step1: derived quantities must be current
        dm._step_count = state["step_count"]
        dm._reset_next_step = state["reset_next_step"]
        _set_random_state(dm.task.random, state["rng"])
    else:
        for k, v in state["attrs"].items():
            setattr(base, k, v)
        _set_random_state(base.np_random, state["rng"])


class EnvPool:
    """``num`` copies of an env stepped together, auto-resetting in the same step (gymnasium 1.x).

    ``step`` returns the transitions exactly as single envs would produce them: where an episode
    ended, ``next_observations`` holds the true final observation (not the reset one) and the
    returned observations already hold the reset one, so no reset transition is ever stored.
    """

    def __init__(self, env_id: str, num: int):
        make_env(env_id).close()  # validates the id and the spaces with a clear message
        self.envs = gym.vector.SyncVectorEnv(
            [lambda: make_env(env_id)] * num, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
        )
        self.num = num
        self.returns = np.zeros(num)
        self.lengths = np.zeros(num, np.int64)

    def reset(self, seeds: list[int]) -> np.ndarray:
        """Starts new episodes in every env; observations (num, S) float32."""
        self.returns[:] = 0.0
        self.lengths[:] = 0
        return self.envs.reset(seed=list(seeds))[0].astype(np.float32)

    def step(self, observations: np.ndarray, actions: np.ndarray):
        """Steps every env with ``actions`` (num, A) in [-1, 1].

        Returns:
          (transitions, next observations (num, S), finished episodes as (env index, return, length)).
        """
        next_obs, rewards, terminated, truncated, info = self.envs.step(actions)
        final_next = next_obs.copy()
        if "final_obs" in info:
            for i in np.flatnonzero(info["_final_obs"]):
                final_next[i] = info["final_obs"][i]
        transitions = Batch(
            observations=observations,
            actions=np.asarray(actions, np.float32),
            rewards=rewards.astype(np.float32),
            next_observations=final_next.astype(np.float32),
            terminals=terminated.astype(np.float32),
        )
        for name, value in transitions._asdict().items():
            if not np.all(np.isfinite(value)):
                raise ValueError(f"the env returned non-finite {name}; the environment is unstable")
        self.returns += rewards
        self.lengths += 1
        done = np.flatnonzero(terminated | truncated)
        finished = [(int(i), float(self.returns[i]), int(self.lengths[i])) for i in done]
        self.returns[done] = 0.0
        self.lengths[done] = 0
        return transitions, next_obs.astype(np.float32), finished

    def get_state(self) -> dict | None:
        """The state of every env and of the episode bookkeeping (JSON-able), or None if some env's
        state cannot be saved (``env_state``)."""
        states = [env_state(e) for e in self.envs.envs]
        if any(s is None for s in states):
            return None
        return {"envs": states, "returns": self.returns.tolist(), "lengths": self.lengths.tolist()}

    def set_state(self, state: dict) -> None:
        """Restores a ``get_state`` record: the next ``step`` continues the episodes in progress."""
        for e, s in zip(self.envs.envs, state["envs"], strict=True):
            set_env_state(e, s)
        self.returns[:] = state["returns"]
        self.lengths[:] = state["lengths"]

    def close(self) -> None:
        self.envs.close()


def derived_seed(*entropy: int) -> int:
    """A 31-bit seed derived from ``entropy`` (e.g. run seed, purpose, index): env resets, evaluations."""
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


def check_rendering(env, env_id: str) -> None:
    """One-line ValueError naming what to install where ``env`` (made with ``render=True``) cannot
    render offscreen (``--video_interval``)."""
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

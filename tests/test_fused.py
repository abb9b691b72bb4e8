"""The fused training path: same numbers as plain `train_step` calls, seeds, vector envs, sharding."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qsm_jax
from qsm_jax.algorithms import algorithm_of, get_algorithm
from qsm_jax.baselines.dql import DQLConfig
from qsm_jax.program import fused
from qsm_jax.program.envs import EnvPool
from qsm_jax.program.replay import replay_add, replay_init, replay_sample, replay_sample_after_add
from qsm_jax.program.restore import restore_run
from qsm_jax.program.train import train_and_evaluate

from .helpers import TINY, TINY_AGENT, TINY_NETS, tiny_run  # noqa: F401  (helpers registers QSMTestEpisodes-v0)

OBS, ACT = 4, 2


def _transitions(seed, n):
    rng = np.random.default_rng(seed)
    return qsm_jax.Batch(
        observations=rng.normal(size=(n, OBS)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=rng.normal(size=(n, OBS)).astype(np.float32),
        terminals=(rng.uniform(size=n) < 0.2).astype(np.float32),
    )


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_replay_ring_buffer():
    buffer = replay_init(5, OBS, ACT)
    data = _transitions(0, 7)
    buffer = replay_add(buffer, jax.tree.map(lambda x: x[:3], data))
    assert int(buffer.size) == 3 and int(buffer.pointer) == 3
    buffer = replay_add(buffer, jax.tree.map(lambda x: x[3:], data))
    assert int(buffer.size) == 5 and int(buffer.pointer) == 2
    # Slots 0, 1 were overwritten by transitions 5, 6; slots 2..4 hold 2..4.
    np.testing.assert_array_equal(buffer.data.rewards, data.rewards[[5, 6, 2, 3, 4]])
    batch = replay_sample(buffer, jax.random.key(0), 1000)
    assert set(np.asarray(batch.rewards).tolist()) == set(data.rewards[2:].tolist())


@pytest.mark.parametrize("stored", [0, 3, 4, 9])
def test_sample_after_add_equals_sample_of_added(stored):
    """Sampling before the store draws exactly what sampling after it would, wrap-around included."""
    buffer = replay_init(5, OBS, ACT)
    if stored:
        buffer = replay_add(buffer, _transitions(0, stored))
    new = _transitions(1, 3)
    key = jax.random.key(stored)
    _assert_trees_close(
        replay_sample_after_add(buffer, new, key, 500), replay_sample(replay_add(buffer, new), key, 500), rtol=0, atol=0
    )


VARIANT_AGENT = dataclasses.replace(TINY_AGENT, score_target="mirror", normalize_grad=True, num_action_samples=4)
DQL_AGENT = DQLConfig(**TINY)


@pytest.mark.parametrize(
    "agent", [TINY_AGENT, VARIANT_AGENT, DQL_AGENT], ids=["reference", "mirror-normalized-best-of-4", "dql"]
)
def test_fused_step_equals_repeated_train_step(agent):
    key = jax.random.key(0)
    algorithm = get_algorithm("dql" if isinstance(agent, DQLConfig) else "qsm")
    state = algorithm.create_train_state(key, OBS, ACT, agent)
    assert algorithm_of(state) is algorithm
    buffer = replay_add(replay_init(64, OBS, ACT), _transitions(1, 40))
    new = _transitions(2, 2)
    next_obs = jnp.asarray(_transitions(3, 2).observations)
    step_key = jax.random.key_data(jax.random.key(5))
    utd, batch_size = 3, 16

    fused_state, fused_buffer, actions, metrics = jax.jit(
        lambda s, b: fused.act_and_learn(s, b, new, next_obs, step_key, utd=utd, batch_size=batch_size, learn=True)
    )(state, buffer)

    # The same by hand: store, then utd * N plain train_step calls on batches drawn with the same keys.
    ref_buffer = replay_add(buffer, new)
    update_key, act_key = jax.random.split(step_key)
    ref_state, ref_metrics = state, []
    for batch_key in jax.random.split(update_key, utd * 2):
        ref_state, m = algorithm.train_step(ref_state, replay_sample(ref_buffer, batch_key, batch_size))
        ref_metrics.append(m)
    assert int(fused_state.step) == int(ref_state.step) == utd * 2
    _assert_trees_close(fused_state, ref_state)
    _assert_trees_close(fused_buffer, ref_buffer)
    _assert_trees_close(actions, algorithm.policy_sample(ref_state, next_obs, act_key, explore=True))
    np.testing.assert_allclose(metrics["critic_loss"], np.mean([m["critic_loss"] for m in ref_metrics]), rtol=1e-5)

    # Warm-up: store only, uniform actions, no update.
    warm_state, warm_buffer, warm_actions, warm_metrics = fused.act_and_learn(
        state, buffer, new, next_obs, step_key, utd=utd, batch_size=batch_size, learn=False
    )
    assert warm_metrics == {} and int(warm_state.step) == 0 and int(warm_buffer.size) == 42
    assert warm_actions.shape == (2, ACT) and float(jnp.abs(warm_actions).max()) <= 1


def _tiny_run(**overrides):
    return tiny_run(**{"max_steps": 300, "eval_interval": 150, "checkpoint_interval": 300, **overrides})


@pytest.mark.slow
def test_vmapped_seeds_equal_separately_trained_seeds(tmp_path):
    together = train_and_evaluate(_tiny_run(num_seeds=2, utd=2), str(tmp_path / "k2"), progress=False)
    apart = [train_and_evaluate(_tiny_run(seed=s, utd=2), str(tmp_path / f"s{s}"), progress=False) for s in (3, 4)]
    states_k, buffers_k, _ = restore_run(str(tmp_path / "k2"))
    for k, s in enumerate((3, 4)):
        states_s, buffers_s, _ = restore_run(str(tmp_path / f"s{s}"))
        # Batched (vmapped) kernels round differently from unbatched ones; over 200 updates that drift
        # stays at the 1e-5 level, far below any difference between seeds (checked below).
        slice_k = jax.tree.map(lambda x, k=k: x[k], (states_k, buffers_k))
        slice_s = jax.tree.map(lambda x: x[0], (states_s, buffers_s))
        _assert_trees_close(slice_k, slice_s, rtol=1e-3, atol=1e-4)
        rows_k = [h for h in together["history"] if h["seed"] == s]
        rows_s = apart[k]["history"]
        assert [h["step"] for h in rows_k] == [h["step"] for h in rows_s] == [150, 300]
        np.testing.assert_allclose([h["return_mean"] for h in rows_k], [h["return_mean"] for h in rows_s], rtol=1e-3)
    # The two seeds really are different agents.
    assert not np.allclose(np.asarray(buffers_k.data.actions[0]), np.asarray(buffers_k.data.actions[1]), atol=1e-2)


def test_vector_envs_store_exactly_the_single_env_transitions():
    steps, num = 23, 3
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(steps, num, 1)).astype(np.float32)
    seeds = [11, 12, 13]

    def collect(pool, env_ids):
        obs = pool.reset([seeds[i] for i in env_ids])
        rows = []
        for t in range(steps):
            transitions, obs, _ = pool.step(obs, actions[t, env_ids])
            rows.append(transitions)
        return jax.tree.map(lambda *xs: np.stack(xs, axis=1), *rows)  # (envs, steps, ...)

    vector = collect(EnvPool("QSMTestEpisodes-v0", num), [0, 1, 2])
    for i in range(num):
        single = collect(EnvPool("QSMTestEpisodes-v0", 1), [i])
        for name in qsm_jax.Batch._fields:
            np.testing.assert_array_equal(getattr(vector, name)[i], getattr(single, name)[0], err_msg=name)
    # No reset transition is stored: every stored step advances t by one, episodes end at t = 3 or 5.
    t, t_next = vector.observations[..., 0], vector.next_observations[..., 0]
    np.testing.assert_array_equal(t_next, t + 1)
    ended = (t_next == 5) | (vector.terminals == 1)
    assert ended.sum() >= 3 and np.all(t[:, 1:][ended[:, :-1]] == 0)


def test_vector_envs_and_utd_in_the_training_program(tmp_path):
    result = train_and_evaluate(
        _tiny_run(num_envs=2, utd=2, max_steps=200, log_interval=50), str(tmp_path), progress=False
    )
    states, buffers, meta = restore_run(str(tmp_path))
    # 200 env steps over 2 envs = 100 vector steps; updates once env_step >= 100 (after the vector
    # steps ending at 100, 102, ..., 200): 51 vector steps x 2 transitions x utd 2.
    assert meta["env_step"] == 200 and int(buffers.size[0]) == 200
    assert int(states.step[0]) == 51 * 2 * 2
    assert result["step"] == 200
    with pytest.raises(ValueError, match=r"eval_interval \(150\) must be a multiple of num_envs \(4\)"):
        _tiny_run(num_envs=4, max_steps=400, start_steps=100, log_interval=100, checkpoint_interval=400)


SHARDED = r"""
import json, sys
import jax
from qsm_jax.program import fused
from qsm_jax.program.train import train_and_evaluate
from tests.test_fused import _tiny_run
seen = []
compiled = fused.act_and_learn_seeds


def recording(states, buffers, *args, **kwargs):  # the run's own step: reads where its outputs live
    out = compiled(states, buffers, *args, **kwargs)
    seen.append((len(out[0].step.sharding.device_set), len(out[1].size.sharding.device_set)))
    return out


fused.act_and_learn_seeds = recording
result = train_and_evaluate(_tiny_run(num_seeds=4), sys.argv[1], progress=False)
print(json.dumps({"devices": jax.device_count(), "state_devices": min(s for s, _ in seen),
                  "buffer_devices": min(b for _, b in seen), "history": result["history"]}))
"""


@pytest.mark.slow
def test_seed_axis_sharded_over_four_cpu_devices(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", SHARDED, str(tmp_path / "sharded")], capture_output=True, text=True, env=env, cwd=root
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4 and report["state_devices"] == 4 and report["buffer_devices"] == 4
    # Same numbers as the same four seeds on one device.
    single = train_and_evaluate(_tiny_run(num_seeds=4), str(tmp_path / "single"), progress=False)
    assert [(h["step"], h["seed"]) for h in report["history"]] == [(h["step"], h["seed"]) for h in single["history"]]
    np.testing.assert_allclose(
        [h["return_mean"] for h in report["history"]], [h["return_mean"] for h in single["history"]], rtol=1e-3
    )


@pytest.mark.parametrize("algo", ["qsm", "sac", "td3"])
def test_fresh_states_can_be_donated(algo):
    """Target networks start as copies with their own buffers, so a fresh state can be donated."""
    from qsm_jax.algorithms import ALGORITHMS

    algorithm = ALGORITHMS[algo]
    config = TINY_AGENT if algo == "qsm" else algorithm.config_cls(**TINY_NETS)
    state = algorithm.create_train_state(jax.random.key(0), OBS, ACT, config)
    buffer = replay_add(replay_init(64, OBS, ACT), _transitions(1, 40))
    step = jax.jit(
        lambda s, b: fused.act_and_learn(
            s,
            b,
            _transitions(2, 1),
            jnp.zeros((1, OBS)),
            jax.random.key_data(jax.random.key(1)),
            utd=1,
            batch_size=8,
            learn=True,
        ),
        donate_argnums=(0, 1),
    )
    state, buffer, actions, _ = step(state, buffer)
    assert int(state.step) == 1 and int(buffer.size) == 41 and actions.shape == (1, ACT)


@pytest.mark.parametrize("algo", ["qsm", "sac", "td3"])
def test_learn_step_updates_the_buffer_in_place(algo):
    """The compiled env step copies no buffer-sized array (a copy per env step made 1M buffers 15x slower)."""
    from qsm_jax.algorithms import ALGORITHMS
    from qsm_jax.program.fused import init_agents
    from qsm_jax.program.train import RunConfig

    capacity, num_seeds, num_envs = 100_003, 1, 1
    algorithm = ALGORITHMS[algo]
    agent = TINY_AGENT if algo == "qsm" else algorithm.config_cls(**TINY_NETS)
    config = RunConfig(env="Pendulum-v1", algo=algo, agent=agent, num_seeds=num_seeds, num_envs=num_envs)
    states, keys = init_agents(config, OBS, ACT)
    buffers = replay_init(capacity, OBS, ACT, num_seeds=num_seeds)
    transitions = jax.tree.map(lambda *x: np.stack(x), *[_transitions(k, num_envs) for k in range(num_seeds)])
    observations = np.zeros((num_seeds, num_envs, OBS), np.float32)
    hlo = (
        fused.act_and_learn_seeds.lower(
            states, buffers, transitions, observations, keys, np.int32(0), utd=1, batch_size=32, learn=True
        )
        .compile()
        .as_text()
    )
    copied = [m for m in re.findall(r"= \w+\[([\d,]+)\]\S* copy\(", hlo) if str(capacity) in m.split(",")]
    assert not copied, f"buffer arrays copied: {copied}"

"""Dynamics parameters change what they claim, are restored per task, and switch mid-episode."""

import numpy as np
import pytest

from suites.tasks import get_distribution
from suites.tasks.ant import AntCrippledLegEnv
from suites.tasks.halfcheetah import DT, HalfCheetahCrippledJointEnv, HalfCheetahMassDampingEnv
from suites.tasks.pendulum import PendulumMassLengthEnv


def _pendulum_step(mass: float, length: float, th: float, thdot: float, u: float) -> np.ndarray:
    env = PendulumMassLengthEnv(mass=mass, length=length)
    env.reset(seed=0)
    env.state = np.array([th, thdot])
    return env.step(np.array([u], dtype=np.float32))[0]


def test_pendulum_torque_response_scales_with_one_over_m_l2() -> None:
    # Upright and at rest, sin(th) = 0: the step's thdot is 3 u dt / (m l^2) (Pendulum-v1).
    light = _pendulum_step(1.0, 1.0, 0.0, 0.0, 2.0)[2]
    heavy = _pendulum_step(2.0, 1.0, 0.0, 0.0, 2.0)[2]
    long = _pendulum_step(1.0, 2.0, 0.0, 0.0, 2.0)[2]
    np.testing.assert_allclose(light, 3 * 2.0 * 0.05, rtol=1e-6)
    np.testing.assert_allclose(heavy, light / 2, rtol=1e-6)
    np.testing.assert_allclose(long, light / 4, rtol=1e-6)


def test_pendulum_gravity_term_scales_with_one_over_length() -> None:
    # Without torque the mass drops out and gravity gives thdot = 3 g / (2 l) sin(th) dt.
    short = _pendulum_step(1.7, 0.5, np.pi / 2, 0.0, 0.0)[2]
    long = _pendulum_step(0.6, 2.0, np.pi / 2, 0.0, 0.0)[2]
    np.testing.assert_allclose(short, 3 * 10.0 / (2 * 0.5) * 0.05, rtol=1e-6)
    np.testing.assert_allclose(long, short / 4, rtol=1e-6)


def test_heavier_pendulum_swings_differently_under_the_same_actions() -> None:
    actions = np.random.default_rng(0).uniform(-2, 2, size=(50, 1)).astype(np.float32)
    trajectories = []
    for mass in (0.6, 1.8):
        env = get_distribution("pendulum-mass-length").make_env({"mass": mass, "length": 1.0})
        env.reset(seed=3)
        trajectories.append(np.array([env.step(a)[0] for a in actions]))
    gap = np.abs(trajectories[0] - trajectories[1]).max(axis=1)
    assert gap[0] > 0 and gap[-1] > 0.1


def _cheetah_run(env, actions: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    env.reset(seed=1)
    return np.array([env.step(a)[0] for a in actions])


@pytest.mark.parametrize("joint", range(6))
def test_crippled_cheetah_joint_ignores_its_action(joint: int) -> None:
    env = HalfCheetahCrippledJointEnv(crippled_joint=joint)
    zero = np.zeros((30, 6), dtype=np.float32)
    only_this = zero.copy()
    only_this[:, joint] = 1.0
    np.testing.assert_array_equal(_cheetah_run(env, only_this), _cheetah_run(env, zero))
    other = (joint + 1) % 6  # a working actuator still moves the cheetah
    env.set_task({"crippled_joint": other})
    assert np.abs(_cheetah_run(env, only_this) - _cheetah_run(env, zero)).max() > 1e-2


@pytest.mark.parametrize("leg", range(4))
def test_crippled_ant_leg_ignores_its_actions(leg: int) -> None:
    env = AntCrippledLegEnv(crippled_leg=leg)
    model = env.model
    zero = np.zeros((20, 8), dtype=np.float32)
    only_leg = zero.copy()
    for a in range(model.nu):
        joint = model.joint(int(model.actuator_trnid[a, 0])).name
        if joint in (f"hip_{leg + 1}", f"ankle_{leg + 1}"):
            only_leg[:, a] = 1.0
    assert only_leg.sum(axis=1)[0] == 2  # both actuators of the leg
    np.testing.assert_array_equal(_cheetah_run(env, only_leg), _cheetah_run(env, zero))
    env.set_task({"crippled_leg": (leg + 1) % 4})
    assert np.abs(_cheetah_run(env, only_leg) - _cheetah_run(env, zero)).max() > 1e-2


def test_mass_damping_scales_the_model_and_restores_it_per_task() -> None:
    env = HalfCheetahMassDampingEnv()
    base_mass, base_damping = env.model.body_mass.copy(), env.model.dof_damping.copy()
    env.set_task({"mass_scale": 1.5, "damping_scale": 0.5})
    np.testing.assert_allclose(env.model.body_mass, 1.5 * base_mass)
    np.testing.assert_allclose(env.model.dof_damping, 0.5 * base_damping)
    env.set_task({"mass_scale": 0.8, "damping_scale": 1.2})  # from the original, not compounded
    np.testing.assert_allclose(env.model.body_mass, 0.8 * base_mass)
    np.testing.assert_allclose(env.model.dof_damping, 1.2 * base_damping)
    assert env.dt == pytest.approx(DT)


def _torque_response(mass_scale: float, damping_scale: float) -> np.ndarray:
    """Joint-velocity change one step after a torque, relative to no torque, from one state."""
    env = HalfCheetahMassDampingEnv(mass_scale=mass_scale, damping_scale=damping_scale)
    push = np.full(6, 0.5, dtype=np.float32)
    out = [_cheetah_run(env, a[None])[0, 12:] for a in (push, np.zeros(6, dtype=np.float32))]
    return out[0] - out[1]


def test_heavier_cheetah_responds_less_to_the_same_torque() -> None:
    light, mid, heavy = (_torque_response(m, 1.0) for m in (0.5, 1.0, 1.5))
    assert np.all(np.sign(light) == np.sign(heavy))
    # More body inertia, less acceleration for the same torque (not 3x less: the joints'
    # armature, which the scale leaves alone, adds inertia of its own).
    assert np.abs(light).sum() > np.abs(mid).sum() > np.abs(heavy).sum()
    assert np.abs(light).sum() > 1.2 * np.abs(heavy).sum()
    # More damping also changes the response.
    assert np.abs(_torque_response(0.5, 1.5) - light).max() > 1e-3


@pytest.mark.parametrize("name", ["pendulum-mass-length", "halfcheetah-crippled-joint"])
def test_set_task_mid_episode_changes_the_next_step_only(name: str) -> None:
    dist = get_distribution(name)
    a, b = dist.test_tasks(1)[0], dist.sample(1, np.random.default_rng(0))[0]
    env_a, env_b = dist.make_raw_env(a), dist.make_raw_env(b)
    switched = dist.make_raw_env(a)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(12, *env_a.action_space.shape))
    actions = actions.astype(np.float32)
    for env in (env_a, switched):
        env.reset(seed=5)
        for act in actions[:6]:
            obs = env.step(act)[0]
    switched.set_task(b)
    assert switched.task == b
    # From the same state, the switched env now follows task b's dynamics.
    if name.startswith("pendulum"):
        env_b.reset(seed=0)
        env_b.state = switched.state.copy()
        expect = env_b.step(actions[6])[0]
    else:
        env_b.reset(seed=0)
        env_b.set_state(switched.data.qpos.copy(), switched.data.qvel.copy())
        # MuJoCo's constraint solver starts from the last step's accelerations: copy them too, or
        # the two envs differ in the last bits (1e-13) for some pairs of tasks
        env_b.data.qacc_warmstart[:] = switched.data.qacc_warmstart
        expect = env_b.step(actions[6])[0]
    np.testing.assert_array_equal(switched.step(actions[6])[0], expect)
    assert obs is not None


@pytest.mark.parametrize(
    ("changes_model", "plain"),
    [("halfcheetah-mass-damping", "halfcheetah-vel"), ("ant-crippled-leg", "ant-dir")],
)
def test_cached_compiled_model_matches_gymnasium_and_stays_pristine(changes_model: str, plain: str) -> None:
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

    # An env whose task edits its copy of the compiled model, then one that leaves it alone.
    first = get_distribution(changes_model).make_raw_env(get_distribution(changes_model).test_tasks(1)[0])
    ours = get_distribution(plain).make_raw_env(get_distribution(plain).test_tasks(1)[0])
    fresh = (HalfCheetahEnv if "cheetah" in plain else AntEnv)(exclude_current_positions_from_observation=False)
    assert first.model is not ours.model
    for field in ("body_mass", "dof_damping", "actuator_gear"):
        np.testing.assert_array_equal(getattr(ours.model, field), getattr(fresh.model, field))
    actions = np.random.default_rng(0).uniform(-1, 1, size=(25, fresh.action_space.shape[0]))
    fresh.reset(seed=4)
    ours.reset(seed=4)
    for a in actions:
        np.testing.assert_array_equal(ours.step(a)[0], fresh.step(a)[0])

"""FrankaPickEnv, ScriptedExpert and the trajectory follower (real MuJoCo, headless)."""

from __future__ import annotations

import numpy as np
import pytest

from ver_core.sim import SEG_CLASSES, FrankaPickEnv, ScriptedExpert, SimConfig
from ver_core.sim.scene import PANDA_LIMITS


@pytest.fixture(scope="module")
def env():
    e = FrankaPickEnv(SimConfig(width=224, height=224))
    yield e
    e.close()


def test_reset_is_deterministic_per_seed(env):
    a, b, c = env.reset(7), env.reset(7), env.reset(8)
    np.testing.assert_allclose(a.cube_pos, b.cube_pos)
    np.testing.assert_allclose(a.arm_q, b.arm_q)
    assert np.linalg.norm(a.cube_pos - c.cube_pos) > 1e-3
    cfg = env.config
    assert (
        cfg.cube_x[0] <= a.cube_pos[0] <= cfg.cube_x[1]
        and cfg.cube_y[0] <= a.cube_pos[1] <= cfg.cube_y[1]
    )
    assert a.arm_q.shape == (7,) and 0.075 < a.gripper_width <= 0.08


def test_renders_rgb_depth_segmentation(env):
    env.reset(3)
    rgb, depth, seg = env.render(), env.render_depth(), env.render_segmentation()
    assert rgb.shape == (224, 224, 3) and rgb.dtype == np.uint8 and rgb.std() > 5
    assert depth.shape == (224, 224) and depth.dtype == np.float32
    assert seg.shape == (224, 224) and seg.dtype == np.int32
    classes = set(np.unique(seg).tolist())
    assert {SEG_CLASSES[k] for k in ("table", "robot", "gripper", "cube")} <= classes
    assert classes <= set(SEG_CLASSES.values())
    cam = np.array(env.config.camera_pos)
    cube_dist = np.linalg.norm(env.observation().cube_pos - cam)
    cube_depth = np.median(depth[seg == SEG_CLASSES["cube"]])
    assert 0.6 * cube_dist < cube_depth < cube_dist  # depth along the axis <= euclidean distance
    # the table is nearer than the floor behind it
    assert np.median(depth[seg == SEG_CLASSES["table"]]) < np.median(
        depth[seg == SEG_CLASSES["background"]]
    )


def test_camera_pose_is_configurable(env):
    """A camera moved closer to the workspace sees the cube bigger and nearer, and bad poses fail."""
    near = FrankaPickEnv(
        SimConfig(width=224, height=224, camera_pos=(1.0, 0.1, 0.6), camera_target=(0.5, 0, 0.1))
    )
    try:
        env.reset(5)
        near.reset(5)
        cube = SEG_CLASSES["cube"]
        far_px = (env.render_segmentation() == cube).sum()
        near_seg, near_depth = near.render_segmentation(), near.render_depth()
        assert (near_seg == cube).sum() > 1.5 * far_px > 0
        dist = np.linalg.norm(near.observation().cube_pos - np.array([1.0, 0.1, 0.6]))
        assert 0.6 * dist < np.median(near_depth[near_seg == cube]) < dist
    finally:
        near.close()
    for bad, match in [
        ({"camera_pos": (1.0, 0.0)}, "3 finite"),
        ({"camera_target": (0.3, 0.0, float("inf"))}, "3 finite"),
        ({"camera_pos": (0.3, 0.0, 0.3), "camera_target": (0.3, 0.0, 0.28)}, "5 cm apart"),
    ]:
        with pytest.raises(ValueError, match=match):
            SimConfig(**bad)


def test_realsense_intrinsics_at_640x480():
    e = FrankaPickEnv(SimConfig(randomize=False))
    info = e.camera_info()
    k = np.array(info["K"])
    assert (info["width"], info["height"]) == (640, 480)
    np.testing.assert_allclose(
        [k[0, 0], k[1, 1], k[0, 2], k[1, 2]], [615, 615, 320, 240], atol=0.01
    )
    assert e.render().shape == (480, 640, 3)
    e.close()


def test_domain_randomization_changes_appearance_only_when_enabled():
    on, off = (
        FrankaPickEnv(SimConfig(width=64, height=64)),
        FrankaPickEnv(SimConfig(width=64, height=64, randomize=False)),
    )
    cube = on.model.geom("cube").id
    on.reset(1)
    c1 = on.model.geom_rgba[cube].copy()
    on.reset(2)
    assert not np.allclose(c1, on.model.geom_rgba[cube])
    off.reset(1)
    c1 = off.model.geom_rgba[cube].copy()
    off.reset(2)
    np.testing.assert_allclose(c1, off.model.geom_rgba[cube])


def _placed_distractors(env: FrankaPickEnv) -> int:
    return sum(int(env.data.mocap_pos[m][2] > 0) for m in env._distractor_mocap)


def test_min_distractors_raises_the_count_and_leaves_the_default_scenes_alone():
    small = {"width": 32, "height": 32, "wrist_width": 32, "wrist_height": 32}
    default, more = (
        FrankaPickEnv(SimConfig(**small)),
        FrankaPickEnv(SimConfig(**small, min_distractors=3)),
    )
    counts = []
    for seed in range(12):
        default.reset(seed)
        more.reset(seed)
        counts.append(_placed_distractors(default))
        assert _placed_distractors(more) == 3
        # the cube is drawn before the distractors: the same cube among more clutter
        np.testing.assert_allclose(
            default.observation().cube_pos, more.observation().cube_pos, atol=1e-9
        )
    assert min(counts) == 0 and max(counts) == 3  # the default still draws 0 .. 3
    with pytest.raises(ValueError, match="min_distractors"):
        SimConfig(min_distractors=4)


def test_bad_commands_are_rejected_and_limits_clip(env):
    env.reset(0)
    before = env.data.ctrl.copy()
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.full(7, np.nan), 0.04)
    with pytest.raises(ValueError, match="7 joint"):
        env.step(np.zeros(6), 0.04)
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.zeros(7), float("inf"))
    np.testing.assert_array_equal(env.data.ctrl, before)  # previous command still in place
    env.set_command(np.full(7, 10.0), 1.0)
    obs = env.observation()
    assert env.data.ctrl[7] == pytest.approx(0.04)  # 0.08 m width -> 0.04 per finger
    for _ in range(30):
        obs = env.step(np.full(7, 10.0), 1.0)
    assert np.all(obs.arm_q <= PANDA_LIMITS[:, 1] + 0.02)


@pytest.mark.parametrize("seed", [0, 11, 42])
def test_expert_solves_with_smooth_actions(env, seed):
    expert = ScriptedExpert(model=env.model)
    obs = env.reset(seed)
    expert.reset(obs.arm_q)
    prev, success = obs.arm_q, False
    for _ in range(150):
        q, w = expert.act(obs.arm_q, obs.gripper_width, obs.cube_pos, obs.cube_quat)
        assert q.shape == (7,) and np.all(np.isfinite(q)) and 0.0 <= w <= 0.08
        assert np.all(q >= PANDA_LIMITS[:, 0]) and np.all(q <= PANDA_LIMITS[:, 1])
        assert (
            np.max(np.abs(q - prev))
            <= expert.config.max_joint_speed / expert.config.control_hz + 1e-9
        )
        prev = q
        obs = env.step(q, w)
        if env.success():
            success = True
            break
    assert success, f"seed {seed}: expert ended in phase {expert.phase_name}"


def test_wrist_camera_rides_on_the_hand():
    """The in-hand camera: its image changes when only the arm moves (the scene camera's view of
    the table does not), and the cube grows in it as the expert brings the hand to the cube."""
    e = FrankaPickEnv(SimConfig(width=96, height=96, wrist_width=96, wrist_height=72))
    try:
        obs = e.reset(5)
        cube = SEG_CLASSES["cube"]
        wrist0, scene0 = e.render("wrist_camera"), e.render("camera")
        assert wrist0.shape == (72, 96, 3) and wrist0.std() > 5
        # move only the arm (shoulder +0.4 rad, elbow +0.3 rad), cube untouched: most of the
        # wrist view changes, while the scene camera sees only the arm move
        q = obs.arm_q.copy()
        q[0] += 0.4
        q[3] += 0.3
        for _ in range(20):
            obs = e.step(q, obs.gripper_width)

        def changed(a, b):  # fraction of pixels that changed by more than 20 levels
            return (np.abs(a.astype(int) - b.astype(int)).max(-1) > 20).mean()

        wrist_change = changed(e.render("wrist_camera"), wrist0)
        scene_change = changed(e.render("camera"), scene0)
        assert wrist_change > 0.25 and wrist_change > 2 * scene_change, (
            wrist_change,
            scene_change,
        )
        # approach with the scripted expert: the cube's pixel area in the wrist view grows
        obs = e.reset(5)
        expert = ScriptedExpert(model=e.model)
        expert.reset(obs.arm_q)
        area_far = (e.render_segmentation("wrist_camera") == cube).sum()
        dist_far = np.linalg.norm(obs.tcp_pos - obs.cube_pos)
        for _ in range(150):
            q, w = expert.act(obs.arm_q, obs.gripper_width, obs.cube_pos, obs.cube_quat)
            obs = e.step(q, w)
            if np.linalg.norm(obs.tcp_pos - obs.cube_pos) < 0.12:
                break
        area_near = (e.render_segmentation("wrist_camera") == cube).sum()
        assert np.linalg.norm(obs.tcp_pos - obs.cube_pos) < 0.5 * dist_far
        assert area_near > 2 * max(area_far, 1), (area_far, area_near)
        # the scene camera renders the same scene at its own size, unchanged by the wrist camera
        assert e.render("camera").shape == (96, 96, 3)
    finally:
        e.close()


@pytest.mark.parametrize("seed", [3, 21])
def test_detour_hovers_over_a_distractor_while_the_label_goes_to_the_cube(seed):
    """A detour episode (Detour, prob 1): the executed arm hovers over one of the scene's
    distractors, the expert's command (the recorded label) never goes there and waits above the
    cube, the executed command steps no faster than the expert's, and the pick still succeeds."""
    from ver_core.sim import Detour

    e = FrankaPickEnv(SimConfig(width=64, height=64, min_distractors=3))
    try:
        expert = ScriptedExpert(model=e.model)
        detour = Detour(1.0, seed=seed, config=expert.config, model=e.model)
        obs = e.reset(seed)
        decoys = e.distractor_positions()
        assert decoys.shape == (3, 3)
        expert.reset(obs.arm_q)
        detour.reset(obs.arm_q, decoys)
        assert detour.active and any(np.allclose(detour.decoy, d) for d in decoys)
        hover = label_near_decoy = 9.0
        prev, success, was_active = obs.arm_q, False, []
        step = expert.config.max_joint_speed / expert.config.control_hz
        for _ in range(250):
            was_active.append(detour.active)
            label, w = expert.act(
                obs.arm_q, obs.gripper_width, obs.cube_pos, obs.cube_quat, detouring=detour.active
            )
            q = detour(label, obs.arm_q)
            assert np.max(np.abs(q - prev)) <= step + 1e-9
            prev = q
            label_tcp = expert._fk(label)[0]
            label_near_decoy = min(
                label_near_decoy, np.linalg.norm(label_tcp[:2] - detour.decoy[:2])
            )
            obs = e.step(q, w)
            hover = min(hover, np.linalg.norm(obs.tcp_pos[:2] - detour.decoy[:2]))
            if e.success():
                success = True
                break
        assert hover < 0.03, f"the arm never hovered over the decoy (closest {hover:.3f} m)"
        assert label_near_decoy > 0.10, "the label went to the decoy"
        assert was_active[0] and not was_active[-1]
        assert success, f"seed {seed}: the detour episode failed in phase {expert.phase_name}"
    finally:
        e.close()


@pytest.mark.parametrize("seed", [3, 21])
def test_miss_closes_beside_the_cube_while_the_label_reopens_and_picks(seed):
    """A missed-grasp episode (Miss, prob 1): the executed gripper shuts on nothing with the hand 4.5-6 cm
    beside the cube and lifts empty; the expert's gripper command (the label) stays open the whole
    time and its arm never descends to the miss; the executed arm steps no faster than the
    expert's; and the episode ends with the expert's own pick."""
    from ver_core.sim import Miss

    e = FrankaPickEnv(SimConfig(width=64, height=64))
    try:
        expert = ScriptedExpert(model=e.model)
        miss = Miss(1.0, seed=seed, config=expert.config, model=e.model)
        obs = e.reset(seed)
        expert.reset(obs.arm_q)
        miss.reset(obs.arm_q, obs.cube_pos, obs.cube_quat)
        assert miss.active
        assert 0.045 - 1e-9 <= np.linalg.norm(miss.decoy[:2] - obs.cube_pos[:2]) <= 0.06 + 1e-9
        prev, success = obs.arm_q, False
        empty_close_off = None  # how far from the cube the hand closed empty
        step = expert.config.max_joint_speed / expert.config.control_hz
        label_widths, label_low_during_miss = [], False
        for _ in range(300):
            active = miss.active
            label, w = expert.act(
                obs.arm_q, obs.gripper_width, obs.cube_pos, obs.cube_quat, detouring=active
            )
            q = miss(label, obs.arm_q, obs.gripper_width)
            width = w if miss.width is None else miss.width
            assert np.max(np.abs(q - prev)) <= step + 1e-9
            prev = q
            if active:
                label_widths.append(w)
                label_tcp = expert._fk(label)[0]
                label_low_during_miss |= bool(label_tcp[2] < obs.cube_pos[2] + 0.05)
            obs = e.step(q, width)
            if active and obs.gripper_width < 0.02 and empty_close_off is None:
                empty_close_off = np.linalg.norm(obs.tcp_pos[:2] - obs.cube_pos[:2])
            if e.success():
                success = True
                break
        assert empty_close_off is not None, "the executed gripper never closed empty"
        assert 0.02 < empty_close_off < 0.07, empty_close_off
        assert min(label_widths) == pytest.approx(0.08), "the label closed during the miss"
        assert not label_low_during_miss, "the label descended during the miss"
        assert not miss.active
        assert success, f"seed {seed}: the miss episode failed in phase {expert.phase_name}"
    finally:
        e.close()


def test_miss_draws_per_episode_and_checks_its_settings():
    from ver_core.sim import Miss

    m = Miss(0.3, seed=1)
    drawn = []
    for _ in range(200):
        m.reset(np.zeros(7), np.array([0.5, 0.0, 0.025]), np.array([1.0, 0, 0, 0]))
        drawn.append(m.active)
    assert 0.18 < np.mean(drawn) < 0.42
    m.cancel()
    assert not m.active and m.width is None
    assert np.array_equal(m(np.ones(7), np.zeros(7), 0.08), np.ones(7))  # off: the expert's
    for bad in (dict(prob=-0.1), dict(prob=0.5, offset=(0.05, 0.03)), dict(prob=0.5, lift_s=-1)):
        with pytest.raises(ValueError):
            Miss(**bad)


@pytest.mark.parametrize("seed", [4, 17])
def test_twist_grasps_across_the_corners_and_lifts_while_the_label_stays_aligned(seed):
    """A twisted episode (Twist, prob 1): the executed hand stays turned by the drawn angle about
    joint 7 against the label, which the expert plans as if the arm followed it; the fingers shut
    on the cube wider than an aligned grasp (5 cm) and the episode still ends with a lift."""
    from ver_core.sim import Twist

    e = FrankaPickEnv(SimConfig(width=64, height=64))
    try:
        expert = ScriptedExpert(model=e.model)
        twist = Twist(1.0, seed=seed, degrees=(30.0, 40.0))
        twist.reset()
        angle = twist.offset[Twist.JOINT]
        assert twist.active and np.radians(30) - 1e-9 <= abs(angle) <= np.radians(40) + 1e-9
        assert np.count_nonzero(twist.offset) == 1
        obs = e.reset(seed)
        expert.reset(twist.plan_q(obs.arm_q))
        held, success = [], False
        for _ in range(300):
            label, w = expert.act(
                twist.plan_q(obs.arm_q), obs.gripper_width, obs.cube_pos, obs.cube_quat
            )
            q = twist(label)
            np.testing.assert_allclose(q - label, twist.offset, atol=1e-12)
            obs = e.step(q, w)
            if expert.phase_name in ("lift", "hold"):
                held.append(obs.gripper_width)
            if e.success():
                success = True
                break
        assert success, f"seed {seed}: the twisted episode failed in phase {expert.phase_name}"
        assert expert.retries == 0
        # 30-40 degrees off a face: the fingers rest on the cube's edges, 5.8-7.1 cm apart
        assert 0.056 < np.median(held) < 0.072, np.median(held)
    finally:
        e.close()


def test_twist_draws_per_episode_and_checks_its_settings():
    from ver_core.sim import Twist

    t = Twist(0.3, seed=1)
    drawn = []
    for _ in range(300):
        t.reset()
        drawn.append(t.active)
        if t.active:
            assert np.radians(15) - 1e-9 <= abs(t.offset[Twist.JOINT]) <= np.radians(40) + 1e-9
    assert 0.2 < np.mean(drawn) < 0.4
    again = Twist(0.3, seed=1)
    again.reset()
    first = Twist(0.3, seed=1)
    first.reset()
    np.testing.assert_array_equal(again.offset, first.offset)  # reproducible per seed
    off = Twist(0.0, seed=1)
    off.reset()
    q = np.array([0.1, -0.3, 0.2, -2.0, 0.1, 1.9, 0.7])
    assert not off.active and np.array_equal(off(q), q) and np.array_equal(off.plan_q(q), q)
    near_limit = np.array([0, 0, 0, -1.0, 0, 1.0, PANDA_LIMITS[6, 1]])
    on = Twist(1.0, seed=0, degrees=(40.0, 40.0))
    on.reset()
    assert np.all(on(near_limit) <= PANDA_LIMITS[:, 1])  # never past a joint limit
    for bad in (
        dict(prob=1.5),
        dict(prob=0.5, degrees=(30.0, 20.0)),
        dict(prob=0.5, degrees=(0, 50)),
    ):
        with pytest.raises(ValueError):
            Twist(**bad)


def test_detour_draws_per_episode_and_needs_a_decoy():
    from ver_core.sim import Detour

    d = Detour(0.5, seed=0)
    drawn = []
    for _ in range(200):
        d.reset(np.zeros(7), np.array([[0.5, 0.2, 0.06]]))
        drawn.append(d.active)
    assert 0.35 < np.mean(drawn) < 0.65
    d.reset(np.zeros(7), np.zeros((0, 3)))
    assert not d.active
    assert np.array_equal(d(np.ones(7), np.zeros(7)), np.ones(7))  # off: the expert's command
    with pytest.raises(ValueError):
        Detour(1.5)


def _first_close(env, seed: int, settle_s: float) -> tuple[float, int, bool]:
    """One DART-noised expert episode: the measured TCP's distance from the grasp as the close
    label starts, the settle phase's length in steps, and whether the cube was lifted."""
    from ver_core.sim import ExecutionNoise, ExpertConfig
    from ver_core.sim.expert import CLOSE, SETTLE

    expert = ScriptedExpert(ExpertConfig(settle_s=settle_s), model=env.model)
    noise = ExecutionNoise(0.03, 0.5, 10.0, seed)
    obs = env.reset(seed)
    expert.reset(obs.arm_q)
    noise.reset()
    gap, settle_steps = None, 0
    for _ in range(150):
        q, w = expert.act(obs.arm_q, obs.gripper_width, obs.cube_pos, obs.cube_quat)
        if expert.phase == SETTLE:
            settle_steps += 1
            assert w == pytest.approx(0.08)  # the label keeps the gripper open while settling
        if expert.phase == CLOSE and gap is None:
            gap = float(np.linalg.norm(expert._fk(obs.arm_q)[0] - expert._grasp_pos))
        obs = env.step(noise(q, expert.phase), w)
        if env.success():
            return gap, settle_steps, True
    return gap, settle_steps, False


def test_settle_waits_for_the_measured_hand_before_the_close_label(env):
    """Under DART noise the close label starts with the hand centimetres off the grasp (the
    command has arrived, the noised arm has not); with ``settle_s`` the label waits for it."""
    plain = [_first_close(env, s, 0.0) for s in (1, 2)]
    settled = [_first_close(env, s, 1.0) for s in (1, 2)]
    assert max(g for g, _, _ in plain) > 0.035, plain  # the failure the option removes
    assert all(n == 0 for _, n, _ in plain)
    for gap, steps, lifted in settled:
        assert gap < 0.025 and lifted, settled
        assert 1 <= steps <= 11  # at most settle_s (10 steps at 10 Hz) + the transition step


def test_settle_settings_are_checked():
    from ver_core.sim import ExpertConfig

    with pytest.raises(ValueError, match="settle"):
        ExpertConfig(settle_s=-1.0)
    with pytest.raises(ValueError, match="settle"):
        ExpertConfig(settle_tol=0.0)


@pytest.mark.parametrize("far", [0.03, float("inf")])
def test_settle_never_starts_the_close_label_with_the_hand_off_the_grasp(far):
    """Invariant over generated measured-arm sequences: once the command has reached the grasp,
    the expert turns to closing only with the measured hand within ``settle_tol`` of the grasp,
    or stopped, or after ``settle_s``; with a finite ``settle_far`` never with the hand farther
    off (it goes back up instead), and without one it never goes back up. No settle phase
    outlasts ``settle_s``."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from ver_core.sim import ExpertConfig
    from ver_core.sim.expert import APPROACH, CLOSE, SETTLE

    cfg = ExpertConfig(settle_s=1.0, settle_far=far)
    expert = ScriptedExpert(cfg)
    cube, quat = np.array([0.5, 0.05, 0.025]), np.array([1.0, 0.0, 0.0, 0.0])

    def to_settle() -> None:  # a perfectly tracking arm reaches the settle phase
        from ver_core.sim.env import HOME_Q

        expert.reset(HOME_Q)
        q = HOME_Q.copy()
        for _ in range(200):
            q, _ = expert.act(q, 0.08, cube, quat)
            if expert.phase == SETTLE:
                return
        raise AssertionError(f"never reached the settle phase ({expert.phase_name})")

    joints = st.lists(st.floats(-1.0, 1.0), min_size=7, max_size=7)
    # a measured arm held at one offset from the command (a hand resting on the cube, a sagging
    # arm) with a per-step wobble of a chosen size (0: stopped)
    held = st.tuples(
        st.floats(0.0, 0.15),
        joints,
        st.sampled_from([0.0, 0.002, 0.05]),
        st.lists(joints, max_size=15),
    )

    @settings(max_examples=60, deadline=None)
    @given(held)
    def check(case):
        size, direction, wobble, steps = case
        to_settle()
        grasp = expert._grasp_pos.copy()
        ticks, prev = 0, None
        for step in [direction] + steps:
            q_meas = expert._q_cmd + size * np.asarray(direction) + wobble * np.asarray(step)
            hand = expert._fk(q_meas)[0]
            q, w = expert.act(q_meas, 0.08, cube, quat)
            ticks += 1
            if expert.phase == CLOSE:  # decided on this hand; the label closes from the next step
                off = np.linalg.norm(hand - grasp)
                stopped = prev is not None and np.linalg.norm(hand - prev) < cfg.settle_still
                timed_out = ticks >= cfg.settle_s * cfg.control_hz
                assert off < cfg.settle_tol or stopped or timed_out
                assert off < cfg.settle_far
                assert expert.act(q, 0.08, cube, quat)[1] == 0.0
                return
            if expert.phase == APPROACH:
                assert np.isfinite(far) and expert.retries == 1 and w == pytest.approx(0.08)
                return
            assert expert.phase == SETTLE and w == pytest.approx(0.08)
            assert ticks < cfg.settle_s * cfg.control_hz
            prev = hand

    check()


def test_yaw_noise_turns_the_hand_while_it_approaches_and_never_while_it_grasps(env):
    """``ExecutionNoise(yaw_std=...)``: joint 7's executed command strays ~20 degrees from the
    expert's while it approaches (the wrist camera sees the cube at many yaws), the other joints
    keep the arm's std, and from the descent on joint 7 executes the expert's command exactly."""
    from ver_core.sim import ExecutionNoise, ExpertConfig
    from ver_core.sim.expert import APPROACH

    expert = ScriptedExpert(ExpertConfig(settle_s=1.0), model=env.model)
    for seed in (1, 2):
        noise = ExecutionNoise(0.03, 0.5, 10.0, seed, yaw_std=0.35)
        obs = env.reset(seed)
        expert.reset(obs.arm_q)
        noise.reset()
        turned, others = [], []
        for _ in range(150):
            q, w = expert.act(obs.arm_q, obs.gripper_width, obs.cube_pos, obs.cube_quat)
            executed = noise(q, expert.phase)
            if expert.phase == APPROACH:
                turned.append(abs(executed[6] - q[6]))
                others.append(np.abs(executed[:6] - q[:6]).max())
            else:
                assert executed[6] == q[6]
            obs = env.step(executed, w)
            if env.success():
                break
        assert env.success(), seed
        assert max(turned) > np.radians(10) and max(others) < np.radians(10)
    with pytest.raises(ValueError, match="yaw_std"):
        ExecutionNoise(0.03, yaw_std=-0.1)


def test_a_hover_sweep_turns_the_hand_above_the_cube_and_the_grasp_still_lifts(env):
    """``Sweep``: once the expert's command reaches its hover point, the executed joint 7 runs one
    period of +-amplitude while the expert holds the hover (the label stays aligned); then the
    expert descends and lifts. With probability 0 nothing changes."""
    from ver_core.sim import ExpertConfig, Sweep
    from ver_core.sim.expert import APPROACH

    cfg = ExpertConfig(settle_s=1.0)
    expert = ScriptedExpert(cfg, model=env.model)
    for prob in (1.0, 0.0):
        sweep = Sweep(prob, seed=0, steps=20)
        obs = env.reset(3)
        expert.reset(obs.arm_q)
        sweep.reset()
        offsets, held = [], []
        for _ in range(150):
            sweep.check(expert, obs.cube_pos)
            q, w = expert.act(
                obs.arm_q, obs.gripper_width, obs.cube_pos, obs.cube_quat, detouring=sweep.active
            )
            if sweep.active:
                held.append(expert.phase == APPROACH)
            executed = sweep(q)
            offsets.append(executed[6] - q[6])
            assert np.array_equal(executed[:6], q[:6])
            obs = env.step(executed, w)
            if env.success():
                break
        assert env.success(), prob
        if prob:
            assert len(held) == 21 and all(held)  # the expert waits above the cube throughout
            assert max(offsets) > np.radians(35) and min(offsets) < -np.radians(35)
        else:
            assert not held and not any(offsets)
    with pytest.raises(ValueError):
        Sweep(1.5)

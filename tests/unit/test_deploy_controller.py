"""The deployed controller without ROS: view sets, the encoder and policy stages, the in-process
closed loop on the simulator's clockwork, and one joint-state rule for every reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ver_core.deploy import SmoothingConfig, StalenessBudget
from ver_core.deploy.controller import Controller, EncoderStage, PolicyStage, build_controller
from ver_core.deploy.pipeline import ChunkPredictor, Perception
from ver_core.deploy.settings import DeploySettings
from ver_core.deploy.views import ViewSet
from ver_core.robot import JointStateError, camera_name, camera_names, read_joint_state

SCENE = "/camera/camera/color/image_raw"
WRIST = "/wrist_camera/camera/color/image_raw"
JOINTS = [f"fr3_joint{i}" for i in range(1, 8)]
FINGERS = ["fr3_finger_joint1", "fr3_finger_joint2"]
HOME = np.array([0.0, -0.35, 0.0, -2.3, 0.0, 1.95, 0.785])


# ---------------------------------------------------------------- joint states and camera names
def test_read_joint_state_by_name_in_any_order_with_extra_joints():
    names = ["extra", *reversed(JOINTS), *FINGERS]
    pos = [9.0, *reversed(HOME.tolist()), 0.02, 0.03]
    r = read_joint_state(names, pos, JOINTS, FINGERS)
    np.testing.assert_array_equal(r.q, HOME)
    assert r.gripper == pytest.approx(0.05)
    one = read_joint_state([*JOINTS, FINGERS[0]], [*HOME, 0.02], JOINTS, FINGERS)
    assert one.gripper == pytest.approx(0.04)  # a symmetric hand: mean x count
    assert read_joint_state(JOINTS, HOME, JOINTS, FINGERS).gripper is None


@pytest.mark.parametrize(
    "names,pos,match",
    [
        (JOINTS[:6], HOME[:6], "lacks joints"),
        (JOINTS, HOME[:6], "7 names but 6 positions"),
        ([*JOINTS[:6], JOINTS[0]], HOME, "twice"),
        (JOINTS, [*HOME[:6], np.nan], "non-finite"),
    ],
)
def test_read_joint_state_names_the_problem(names, pos, match):
    with pytest.raises(JointStateError, match=match):
        read_joint_state(names, pos, JOINTS, FINGERS)


def test_camera_names_follow_realsense_namespaces():
    assert camera_name(SCENE) == "camera" and camera_name(WRIST) == "wrist_camera"
    with pytest.raises(ValueError, match="duplicate"):
        camera_names([SCENE, "/camera/other"])


# ---------------------------------------------------------------- view sets
def test_view_set_pairs_frames_of_one_moment_once():
    vs = ViewSet(["camera", "wrist_camera"], budget_s=0.25, tolerance_s=0.05)
    assert vs.status(0.0) == "missing_view:camera"
    assert vs.add("camera", 1.00, "c1") is None  # the wrist view is missing
    assert vs.status(1.0) == "missing_view:wrist_camera"
    got = vs.add("wrist_camera", 1.02, "w1")
    assert got.items == ("c1", "w1") and got.stamp == 1.00 and got.stamps == (1.00, 1.02)
    assert vs.add("wrist_camera", 1.03, "w2") is None  # the primary frame was used already
    assert vs.add("camera", 1.20, "c2") is None  # newest wrist frame 170 ms away: no set
    assert vs.add("wrist_camera", 0.5, "old") is None  # older frames never replace newer ones
    assert vs.add("wrist_camera", 1.21, "w3").items == ("c2", "w3")
    assert vs.status(1.3) is None
    assert vs.status(1.5) == "stale_view:camera"


# ---------------------------------------------------------------- stages
@pytest.fixture(scope="module")
def two_camera_policy():
    from ver_core.policy import TaskConfig, TaskPolicy

    torch.manual_seed(0)
    cfg = TaskConfig(
        image_topics=[SCENE, WRIST],
        model_overrides={"depth": 3, "img_size": 64},
        neck_dim=32,
        hidden_dim=64,
        chunk_len=6,
    )
    return TaskPolicy.build(cfg).eval()


def _stages(policy, budget=StalenessBudget(0.25, 0.25)):
    perception = Perception(policy, "torch")
    predictor = ChunkPredictor(policy, SmoothingConfig(mode="latest"), perception.stats)
    return (
        EncoderStage(perception, budget),
        PolicyStage(predictor, policy.config.cameras, budget=budget),
        perception,
    )


def test_encoder_and_policy_stages_act_only_on_a_complete_fresh_set(two_camera_policy):
    enc, pol, perception = _stages(two_camera_policy)
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    wrist = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)  # another size: resized on its own
    assert enc.on_image("camera", scene, 10.0, 10.01) is None
    encoded = enc.on_image("wrist_camera", wrist, 10.0, 10.02)
    assert encoded.tokens.shape == (2, 17, 192) and encoded.cameras == ("camera", "wrist_camera")
    ref = two_camera_policy.encode(perception.preprocess([scene, wrist])[None]).tokens[0]
    np.testing.assert_allclose(encoded.tokens, ref.numpy(), atol=1e-5)
    # no joint state yet: no chunk, and the status says why
    assert pol.on_features("camera", encoded.tokens[0], 10.0, 10.03) is None
    assert pol.on_features("wrist_camera", encoded.tokens[1], 10.0, 10.03) is None
    assert pol.status(10.03) == "hold: no_joint_state"
    pol.on_joint_state([*JOINTS, *FINGERS], [*HOME, 0.04, 0.04], 10.03)
    pol.views.reset()
    pol.on_features("camera", encoded.tokens[0], 10.0, 10.04)
    chunk = pol.on_features("wrist_camera", encoded.tokens[1], 10.0, 10.04)
    assert chunk is not None and chunk.stamp == 10.0 and chunk.actions.shape == (6, 8)
    # a frame older than the budget is dropped at the encoder
    assert enc.on_image("camera", scene, 10.5, 10.8) is None and enc.dropped["too_old"] == 1
    # only the scene camera keeps coming: the policy names the wrist view
    assert pol.status(10.4) == "hold: stale_view:camera"
    pol.on_features("camera", encoded.tokens[0], 10.4, 10.4)
    assert pol.status(10.4) == "hold: stale_view:wrist_camera"


def test_controller_passes_a_missing_view_to_the_gate_as_a_named_hold(two_camera_policy):
    enc, pol, _ = _stages(two_camera_policy)
    from ver_core.safety import SafetyConfig, SafetyGate, limits_for

    ctrl = Controller(enc, pol, SafetyGate(SafetyConfig(), limits_for("fr3")))
    ctrl.on_joint_state([*JOINTS, *FINGERS], [*HOME, 0.04, 0.04], 1.0)
    rng = np.random.default_rng(1)
    for cam in ("camera", "wrist_camera"):
        encoded = enc.on_image(cam, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), 1.0, 1.0)
    chunk = ctrl.on_features(encoded, 1.01)
    ctrl.on_chunk(chunk, 1.01)
    assert ctrl.sync_status(1.01) == "ok" and not ctrl.gate.step(1.02).holding
    # the wrist camera stops; the scene camera goes on
    ctrl.on_joint_state([*JOINTS, *FINGERS], [*HOME, 0.04, 0.04], 1.3)
    pol.on_features("camera", encoded.tokens[0], 1.3, 1.3)
    assert ctrl.sync_status(1.31) == "hold: stale_view:wrist_camera"
    out = ctrl.gate.step(1.31)
    assert out.holding and "upstream:stale_view:wrist_camera" in out.status


def test_deploy_settings_read_the_shipped_graph_config():
    from ver_ros.graph import default_config_path

    s = DeploySettings.from_yaml(default_config_path())
    assert s.budget.observation_s <= 0.25  # the budget: motion stops within 250 ms
    assert s.safety.observation_budget_s == s.budget.observation_s
    assert s.robot_type in ("fr3", "panda") and s.smoothing.mode == "ensemble"
    assert s.smoothing.gripper == "vote"
    slow = s.with_observation_budget(0.4)
    assert slow.budget.observation_s == slow.safety.observation_budget_s == 0.4
    assert s.budget.observation_s <= 0.25  # the original is untouched


# ---------------------------------------------------------------- the in-process closed loop
def test_policy_node_without_a_config_smooths_as_the_in_process_controller():
    """The policy node builds its smoother from its own parameters; in-process evaluation from
    DeploySettings. With no parameter file both must give the same smoother (session 12 moved
    the gripper default to ``vote`` in both; this fails if one moves alone)."""
    from ver_ros.policy_node import PolicyParams

    p, s = PolicyParams(checkpoint="runs/task"), DeploySettings.from_params({}).smoothing
    node = SmoothingConfig(
        mode=p.smoothing,
        decay=p.ensemble_decay,
        blend_time_s=p.blend_time_s,
        gripper=p.gripper,
        align=p.chunk_align,
    )
    assert node == s == SmoothingConfig()
    assert (p.observation_budget_s, p.joint_state_budget_s) == (
        StalenessBudget().observation_s,
        StalenessBudget().joint_state_s,
    )


def test_closed_loop_runs_the_deployed_controller_on_the_sim_clock(two_camera_policy):
    """A short episode of an untrained two-camera policy: the loop delivers joint states and both
    views on schedule, the gate commands the arm inside the limits, nothing is non-finite."""
    from ver_core.eval.closed_loop import LoopTiming, run_controller_episode
    from ver_core.sim import FrankaPickEnv, SimConfig
    from ver_core.sim.stepper import SimStepper

    ctrl = build_controller(two_camera_policy, DeploySettings(robot_type="panda"))
    env = FrankaPickEnv(SimConfig(width=64, height=64, wrist_width=48, wrist_height=48))
    stepper = SimStepper(env)
    timing = LoopTiming(encoder_s=0.05, policy_s=0.01, settle_s=0.5)
    ep, compute = run_controller_episode(stepper, ctrl, seed=3, max_steps=12, timing=timing)
    assert ep.steps == 12 and not ep.success
    assert len(compute["encoder"]) >= 10 and all(v == 0.05 for v in compute["encoder"])
    assert len(ep.distances) == 13 and np.all(np.isfinite(ep.distances))
    assert ctrl.gate.status in ("ok", "ramping", "grasping")  # passing commands, not holding
    env.close()


def test_open_loop_evaluation_renders_every_camera_of_the_policy(two_camera_policy):
    """The open-loop diagnostic (ver-eval --open-loop, the e2e reach check) feeds a two-camera
    policy both views of one instant, and the media strip shows them side by side."""
    from ver_core.eval import ChunkController, EvalConfig, evaluate, policy_predictor

    predictor = policy_predictor(two_camera_policy)
    assert predictor.cameras == ("camera", "wrist_camera")
    controller = ChunkController(predictor, execute_steps=3)
    config = EvalConfig(episodes=1, max_steps=4, width=64, height=48, media=False)
    report = evaluate(controller, config, progress=None)
    assert report["episodes"] == 1 and controller.chunks == 2
    from ver_core.eval.rollout import run_episode
    from ver_core.sim import FrankaPickEnv, SimConfig

    env = FrankaPickEnv(SimConfig(width=64, height=48, wrist_width=64, wrist_height=48))
    ep = run_episode(env, controller, seed=1, max_steps=2, capture_frames=True)
    assert ep.frames[0].shape == (48, 128, 3)  # scene | wrist
    env.close()


# ---------------------------------------------------------------- the arm's pose at a frame's time
@settings(max_examples=100, deadline=None)
@given(
    gaps=st.lists(st.floats(0.001, 0.05), min_size=1, max_size=30),
    ask=st.floats(0.8, 2.8),
)
def test_state_at_is_the_measured_motion_at_the_frames_time(two_camera_policy, gaps, ask):
    """Invariant: for joint states stamped in time order, the state at time t is the linear
    interpolation of the two measurements around t (the first / last beyond them): with the arm
    moving at a constant rate it is exactly that motion at t, clamped to the measured span."""
    _, pol, _ = _stages(two_camera_policy)
    assert pol.state_at(1.0) is None
    rate = np.linspace(0.1, 0.7, 7)
    times = 1.0 + np.cumsum([0.0, *gaps])  # (a stamp of 0 means unstamped: taken as received)
    for t in times:
        pol.on_joint_state([*JOINTS, *FINGERS], [*(HOME + rate * t), 0.02, 0.02], t + 0.3, t)
    got = pol.state_at(ask)
    t = float(np.clip(ask, times[0], times[-1]))
    np.testing.assert_allclose(got[:7], HOME + rate * t, atol=1e-9)
    assert got[7] == pytest.approx(0.04)
    pol.reset()
    assert pol.state_at(ask) is None


def test_policy_stage_gives_the_policy_the_joints_of_the_frames_time(two_camera_policy):
    _, pol, _ = _stages(two_camera_policy)
    seen = {}

    def predictor(tokens, state, stamp, now=None, image_state=None, state_stamp=None):
        seen.update(state=state, image_state=image_state, state_stamp=state_stamp)
        return "chunk"

    pol.predictor = predictor
    for t in (9.9, 10.0, 10.1, 10.2):  # the arm moves; the policy acts at 10.2 on a 10.0 frame
        q = HOME + (t - 10.0)
        pol.on_joint_state([*JOINTS, *FINGERS], [*q, 0.02, 0.02], t, t)
    tokens = np.zeros((17, 192), np.float32)
    pol.on_features("camera", tokens, 10.05, 10.2)
    assert pol.on_features("wrist_camera", tokens, 10.05, 10.2) == "chunk"
    np.testing.assert_allclose(seen["state"][:7], HOME + 0.2, atol=1e-6)  # acts on the newest
    np.testing.assert_allclose(seen["image_state"][:7], HOME + 0.05, atol=1e-6)  # saw from here
    assert seen["state_stamp"] == 10.2  # when the newest joints were measured

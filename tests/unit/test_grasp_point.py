"""Grasp-point detection: camera geometry against MuJoCo's own renders, labels, IK, the policy."""

from __future__ import annotations

import copy

import mujoco
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ver_core.data import TopicConfig, load_demos
from ver_core.data.synthetic import write_synthetic_episode
from ver_core.policy import TaskConfig, TaskPolicy
from ver_core.policy.grasp_point import (
    ARM_VIEW_WEIGHT,
    CLOSING_WIDTH,
    COMMIT_DZ,
    EMPTY_WIDTH,
    FUSE_FLOOR,
    HOLD_MARGIN,
    MAX_CORRECTION,
    OPEN_WIDTH,
    REACH_Z,
    REJECT_M,
    SEARCH_MIN_PROB,
    SEARCH_TOP,
    CameraRig,
    GraspPointHead,
    GraspPointTracker,
    PatchMap,
    Sighting,
    fused_mass,
    grasp_point_labels,
    grasp_point_loss,
    grasp_yaw,
    head_outputs,
    neighbour_patches,
    patch_maps,
    sightings,
    sim_calibration,
    top_down,
    world_yaw_vec,
)
from ver_core.router import RouterConfig
from ver_core.sim import HOME_Q
from ver_core.sim.scene import JOINT_OFFSET, build_model
from ver_core.train import RouterTrainer, TrainConfig

CAMS = ["camera", "wrist_camera"]
SIZE = 224


@pytest.fixture(scope="module")
def rig() -> CameraRig:
    return CameraRig(sim_calibration(CAMS), CAMS)


def cube_pixels(q: np.ndarray, cube_xy) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Render both sim cameras (segmentation) with the arm at q and the cube at cube_xy: the
    cube's centre (world) and the centroid of its pixels per view in [0, 1] (None: not seen)."""
    model = build_model()
    data = mujoco.MjData(model)
    data.qpos[[model.jnt_qposadr[j] for j in range(7)]] = q - JOINT_OFFSET
    adr = model.jnt_qposadr[model.joint("cube_joint").id]
    half = float(model.geom("cube").size[0])
    data.qpos[adr : adr + 7] = [cube_xy[0], cube_xy[1], half, 1, 0, 0, 0]
    mujoco.mj_forward(model, data)
    renderer = mujoco.Renderer(model, SIZE, SIZE)
    renderer.enable_segmentation_rendering()
    out = []
    for cam in ("realsense", "wrist_realsense"):
        renderer.update_scene(data, camera=cam)
        seg = renderer.render()
        ys, xs = np.nonzero((seg[..., 0] == model.geom("cube").id) & (seg[..., 1] == 5))
        out.append(None if len(xs) < 4 else np.array([xs.mean() + 0.5, ys.mean() + 0.5]) / SIZE)
    renderer.close()
    return data.geom_xpos[model.geom("cube").id].copy(), out


@pytest.mark.parametrize("cube_xy", [(0.5, 0.0), (0.45, 0.08), (0.58, -0.1)])
def test_projection_lands_on_the_rendered_cube(rig, cube_xy):
    q = HOME_Q.copy()
    centre, rendered = cube_pixels(q, cube_xy)
    projected = rig.project(centre, q)
    assert rendered[0] is not None, "the scene camera sees the workspace"
    for v, pix in enumerate(rendered):
        if pix is None:
            continue
        assert np.all(np.isfinite(projected[v])), f"view {v} renders the cube, projection misses"
        # the centroid of a cube's visible faces sits within a few pixels of its centre's image
        assert np.abs(projected[v] - pix).max() * SIZE < 4.0, (v, projected[v] * SIZE, pix * SIZE)
    assert any(p is not None for p in rendered[1:]), "the wrist camera sees the cube below it"


def test_ray_to_plane_inverts_projection(rig):
    q = HOME_Q + np.array([0.1, 0.05, -0.1, 0.1, 0.0, -0.05, 0.2])
    for point in ([0.5, 0.0, 0.05], [0.42, 0.12, 0.03], [0.6, -0.1, 0.1]):
        uv = rig.project(np.array(point), q)
        for v in range(2):
            if np.isnan(uv[v, 0]):
                continue
            back = rig.ray_to_plane(v, uv[v], q, point[2])
            np.testing.assert_allclose(back, point, atol=1e-6)


def test_reach_puts_the_tcp_on_the_target(rig):
    q0 = HOME_Q.copy()
    start = rig.kin.tcp(q0)
    target = start + np.array([0.04, -0.03, -0.15])
    q = rig.reach(q0, target)
    assert np.linalg.norm(rig.kin.tcp(q) - target) < 1e-3
    assert np.abs(q - q0).max() < 0.8  # a nearby solution, not a flip
    np.testing.assert_array_equal(rig.reach(q0, np.full(3, np.nan)), q0)
    far = rig.reach(q0, start + np.array([0.3, 0.0, 0.0]), max_move=0.05)
    np.testing.assert_allclose(rig.kin.tcp(far), start + [0.05, 0.0, 0.0], atol=1e-3)
    # position and a top-down rotation at a turned yaw (what a detected grasp asks for)
    want = top_down(rig.tcp_yaw(q0) + 0.4)
    q = rig.reach(q0, target, iters=60, rotation=want)
    assert np.linalg.norm(rig.kin.tcp(q) - target) < 1e-3
    got = rig.kin.data.site_xmat[rig.kin._site].reshape(3, 3)
    assert np.degrees(np.arccos(np.clip((np.trace(want.T @ got) - 1) / 2, -1, 1))) < 0.5


def test_grasp_yaw_takes_the_equivalent_yaw_nearest_the_hand():
    for order in (2, 4):
        for psi in (-1.2, -0.3, 0.0, 0.5, 1.4):
            vec = np.array([np.cos(order * psi), np.sin(order * psi)])
            for near in (-2.0, 0.0, 0.7, 3.0):
                got = grasp_yaw(vec, order, near)
                step = 2 * np.pi / order
                assert abs(got - near) <= step / 2 + 1e-9  # the nearest of the equivalents
                k = (got - psi) / step
                assert abs(k - round(k)) < 1e-9  # one of psi's equivalents
    r = top_down(0.3)
    np.testing.assert_allclose(r[:, 2], [0, 0, -1], atol=1e-12)  # TCP z points down
    assert np.arctan2(r[1, 0], r[0, 0]) == pytest.approx(0.3)


def test_labels_mark_the_patch_and_the_frames_without_a_keypose(rig):
    q = np.stack([HOME_Q, HOME_Q, HOME_Q])
    keyposes = q.astype(np.float32).copy()
    keyposes[1, 3] += 0.3  # a lower keypose
    valid = np.array([True, True, False])
    cls, offset, yaw, points = grasp_point_labels(rig, keyposes, valid, q, grid=14)
    assert cls.shape == (3, 2) and offset.shape == (3, 2, 2) and yaw.shape == (3, 2, 2)
    psi = rig.tcp_yaw(keyposes[0].astype(np.float64))
    for v, head in enumerate(rig.headings(q[0])):  # each view reads the yaw less its heading
        seen = psi - head
        np.testing.assert_allclose(yaw[0, v], [np.cos(4 * seen), np.sin(4 * seen)], atol=1e-6)
        back = world_yaw_vec(yaw[0, v], head, 4, "camera")  # and deployment turns it back
        np.testing.assert_allclose(back, [np.cos(4 * psi), np.sin(4 * psi)], atol=1e-6)
    world = grasp_point_labels(rig, keyposes, valid, q, grid=14, yaw_frame="world")[2]
    np.testing.assert_allclose(world[0, 1], [np.cos(4 * psi), np.sin(4 * psi)], atol=1e-6)
    assert np.all(cls[2] == -1) and np.isnan(points[2]).all()
    uv = rig.project(points[0], q[0])
    assert cls[0, 0] == int(uv[0, 1] * 14) * 14 + int(uv[0, 0] * 14)
    np.testing.assert_allclose(offset[0, 0], uv[0] * 14 - np.floor(uv[0] * 14), atol=1e-6)
    assert np.all((offset >= 0) & (offset < 1))


def test_malformed_calibration_is_a_clear_error():
    good = sim_calibration(CAMS)
    with pytest.raises(ValueError, match="no entry for camera 'wrist_camera'"):
        CameraRig({"camera": good["camera"]}, CAMS)
    bad = {**good, "camera": {**good["camera"], "rot": [1, 0, 0, 0, 1, 0, 0, 0, 2]}}
    with pytest.raises(ValueError, match="not a rotation"):
        CameraRig(bad, CAMS)
    bad = {**good, "wrist_camera": {**good["wrist_camera"], "mount": "no_such_link"}}
    with pytest.raises(ValueError, match="not a body of the arm"):
        CameraRig(bad, CAMS)
    with pytest.raises(ValueError, match="needs keypose"):
        TaskConfig(grasp_point=True)


def test_grasp_point_policy_trains_saves_reloads_and_corrects_the_keypose(tmp_path, monkeypatch):
    for i in range(3):
        write_synthetic_episode(tmp_path / "bags" / f"episode_{i:03d}", seed=i, seconds=4.5)
    demos = load_demos(
        tmp_path / "bags", TopicConfig(), chunk_len=4, control_rate_hz=10.0, image_size=32
    )
    torch.manual_seed(0)
    cfg = TaskConfig(
        model_overrides={"depth": 3, "moe_blocks": 2, "img_size": 32},
        neck_dim=32,
        hidden_dim=64,
        chunk_len=4,
        keypose=True,
        grasp_point=True,
        action_mode="keypose",  # make demo's recipe: arm targets relative to the keypose
        router=RouterConfig(anneal_steps=4),
    )
    policy = TaskPolicy.build(cfg)
    heads = {id(p) for p in policy.grasp_heads.parameters()}
    assert heads <= {id(p) for p in policy.trainable_parameters()}
    train = TrainConfig(
        steps=6, head_steps=30, batch_size=8, lr=3e-3, warmup_steps=2, val_every=6,
        checkpoint_every=100, progress=False, plots=False,
    )  # fmt: skip
    trainer = RouterTrainer(policy, demos, tmp_path / "out", train)
    assert trainer.grasp is not None and (trainer.grasp[0] >= 0).all()
    trainer.fit()
    first, last = trainer.history["train"][0][1], trainer.history["train"][-1][1]
    assert np.isfinite(last) and last < first
    reloaded = TaskPolicy.from_pretrained(tmp_path / "out")
    assert reloaded.config.camera_calibration == sim_calibration(["camera"])
    assert reloaded.config.grasp_height == pytest.approx(policy.config.grasp_height)
    policy.eval()
    tokens = policy.encode(torch.rand(2, 3, 32, 32)).tokens
    state = torch.as_tensor(demos.states[:2])
    torch.testing.assert_close(
        policy.predict_chunk(tokens, state), reloaded.predict_chunk(tokens, state)
    )
    regressed = policy.estimate_keypose(tokens, state).detach().numpy()
    for absent_logit, seen in ((-30.0, True), (30.0, False)):  # sure it sees it / sure it does not
        for head in policy.grasp_heads:
            torch.nn.init.constant_(head.absent.bias, absent_logit)
            torch.nn.init.zeros_(head.absent.weight)
        points, yaws, view = policy.grasp_point(tokens, state)
        corrected = policy.corrected_keypose(tokens, state).numpy()
        assert np.all((view >= 0) == seen)
        for b in range(2):  # where a point is detected the keypose's TCP is moved onto it
            if seen:
                assert points[b, 2] == pytest.approx(policy.config.grasp_height)
                tcp = policy.rig.kin.tcp
                before, after = tcp(regressed[b]), tcp(corrected[b])
                want = np.linalg.norm(points[b] - before)
                assert np.linalg.norm(after - before) <= MAX_CORRECTION + 2e-3
                assert np.linalg.norm(points[b] - after) < want  # moved toward the point
                near = policy.rig.tcp_yaw(state[b, :7].double().numpy())
                assert abs(yaws[b] - near) <= np.pi / 4 + 1e-9  # the face nearest the hand
            else:
                np.testing.assert_allclose(corrected[b], regressed[b], atol=1e-6)
    with pytest.raises(ValueError, match="grasp-point labels"):
        policy.loss_from_tokens(tokens, state, torch.zeros(2, 4, 8), torch.zeros(2, 7))
    # with a tracker (the deployed controller's): one robot, the estimate kept across frames
    tracker = policy.grasp_tracker()
    chunk = policy.predict_chunk(tokens[:1], state[:1], tracker=tracker)
    assert chunk.shape == (1, 4, 8) and tracker.point is None  # sure it sees nothing (above)
    for head in policy.grasp_heads:
        torch.nn.init.constant_(head.absent.bias, -30.0)
    points, _, view = policy.grasp_point(tokens[:1], state[:1], tracker)
    assert view[0] >= 0 and tracker.point is not None
    np.testing.assert_allclose(points[0], tracker.point)
    with pytest.raises(ValueError, match="batch 1"):
        policy.predict_chunk(tokens, state, tracker=tracker)
    # after an empty close the hand opens before it tries elsewhere: only the gripper changes
    unnormalize = policy.unnormalize_actions

    def shut(*a, **kw):  # the head asks for a closed hand
        actions = unnormalize(*a, **kw)
        actions[..., 7] = 0.0
        return actions

    monkeypatch.setattr(policy, "unnormalize_actions", shut)
    told, free = copy.deepcopy(tracker), copy.deepcopy(tracker)
    told.reopening, free.reopening = True, False
    half = state[:1].clone()
    half[:, 7] = 0.05  # the hand half open: neither an empty close nor open again
    opened = policy.predict_chunk(tokens[:1], half, tracker=told)[0]
    own = policy.predict_chunk(tokens[:1], half, tracker=free)[0]
    assert torch.all(opened[:, 7] == OPEN_WIDTH) and torch.all(own[:, 7] == 0.0)
    torch.testing.assert_close(opened[:, :7], own[:, :7])
    monkeypatch.undo()
    # a tracker that searches asks sightings for fainter peaks; otherwise the defaults
    import ver_core.policy.task_policy as tp

    asked, real = [], tp.sightings
    monkeypatch.setattr(tp, "sightings", lambda *a, **kw: asked.append(kw) or real(*a, **kw))
    searching = policy.grasp_tracker()
    searching.rejected.append(np.array([9.0, 9.0]))  # a place ruled out far away, no estimate
    for t in (policy.grasp_tracker(), searching):
        policy.predict_chunk(tokens[:1], state[:1], tracker=t)
    assert "top" not in asked[0] and "min_prob" not in asked[0]
    assert (asked[1]["top"], asked[1]["min_prob"]) == (SEARCH_TOP, SEARCH_MIN_PROB)


# ------------------------------------------------------------------ the tracker across frames
GATE = 0.04


def _sight(point, prob=0.5, on_arm=True, view=1) -> Sighting:
    p = np.array([point[0], point[1], 0.045])
    return Sighting(view, np.zeros(2), prob, np.array([1.0, 0.0]), on_arm, p, 0.3)


xy = st.tuples(st.floats(0.3, 0.7), st.floats(-0.2, 0.2))
noise = st.tuples(st.floats(-GATE / 4, GATE / 4), st.floats(-GATE / 4, GATE / 4))


@settings(max_examples=150, deadline=None)
@given(
    obj=xy,
    frames=st.lists(
        st.tuples(
            st.booleans(),  # the object is sighted this frame
            noise,
            st.lists(st.tuples(xy, st.floats(0.05, 1.0)), max_size=3),  # distractors, prob
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_tracker_keeps_the_object_while_it_is_sighted_whatever_else_is(obj, frames):
    """Invariant: once on the object, the estimate stays within its sightings' noise (GATE/4 per
    axis) of it while the object is
    sighted at least once every ``switch_after`` frames, whatever outscores it elsewhere."""
    tracker = GraspPointTracker(gate_m=GATE)
    obj = np.array(obj)
    tracker.update([_sight(obj, 0.3)])
    missed = 0
    for seen, (dx, dy), distractors in frames:
        far = [(p, pr) for p, pr in distractors if np.linalg.norm(np.array(p) - obj) > 2 * GATE]
        missed = 0 if seen else missed + 1
        if missed >= tracker.switch_after:
            seen, missed = True, 0  # this property is about an object seen often enough
        sights = [_sight(p, pr) for p, pr in far]
        if seen:
            sights.append(_sight(obj + [dx, dy], 0.05))
        point, yaw_vec, view = tracker.update(sights)
        assert np.linalg.norm(point[:2] - obj) <= GATE / 4 * np.sqrt(2) + 1e-9


@settings(max_examples=100, deadline=None)
@given(start=xy, moved=xy, frames=st.lists(noise, min_size=4, max_size=12))
def test_tracker_follows_an_object_that_moved(start, moved, frames):
    """Invariant: sightings at one new place (and nowhere near the estimate) for
    ``switch_after`` frames running move the estimate there; no sightings move nothing."""
    start, moved = np.array(start), np.array(moved)
    assume(np.linalg.norm(start - moved) > 2 * GATE)
    tracker = GraspPointTracker(gate_m=GATE)
    before = tracker.update([_sight(start)])[0]
    np.testing.assert_array_equal(tracker.update([])[0], before)  # nothing seen: held
    for k, (dx, dy) in enumerate(frames):
        point = tracker.update([_sight(moved + [dx, dy])])[0]
        if k + 1 < tracker.switch_after:
            np.testing.assert_array_equal(point, before)  # not yet: one frame is not a move
    assert np.linalg.norm(point[:2] - moved) <= GATE / 4 * np.sqrt(2) + 1e-9
    tracker.reset()
    assert tracker.update([]) is None


@settings(max_examples=100, deadline=None)
@given(
    start=xy,
    frames=st.lists(
        st.tuples(xy, st.floats(0.0, 0.08)),  # a sighting anywhere, the hand's opening
        min_size=1,
        max_size=30,
    ),
)
def test_tracker_holds_the_grasp_while_the_hand_is_closed(start, frames):
    """Invariant: while the hand's opening is ``HOLD_MARGIN`` below the widest seen since reset,
    whatever is sighted wherever, the estimate does not move; with the hand open, the tracker
    does what it does without a width."""
    tracker = GraspPointTracker(gate_m=GATE, hold_margin=HOLD_MARGIN)
    tracker.update([_sight(start)], gripper_width=0.08)
    for place, width in frames:
        before, plain = tracker.point.copy(), copy.deepcopy(tracker)
        plain.hold_margin, plain.holding = None, False  # the same state, no hold
        point = tracker.update([_sight(place)], gripper_width=width)[0]
        closed = width < 0.08 - HOLD_MARGIN
        assert tracker.holding == closed
        if closed:
            np.testing.assert_array_equal(point, before)
        else:
            np.testing.assert_array_equal(point, plain.update([_sight(place)])[0])


def test_tracker_holds_a_lifted_cube_s_grasp_and_resumes_after_an_empty_close():
    """The chase it prevents (docs/RESULTS.md session 21): a held cube's sightings walk away
    with the hand; the estimate stays at the grasp. After the hand opens again (a drop, or a
    retry after an empty close) the sightings move it as before."""
    tracker = GraspPointTracker(gate_m=GATE, hold_margin=HOLD_MARGIN)
    grasp = np.array([0.5, 0.0])
    tracker.update([_sight(grasp)], gripper_width=0.0795)
    for k in range(1, 20):  # closing on the cube across its corners, then carried along +x
        width = max(0.0795 - 0.004 * k, 0.0707)
        point = tracker.update([_sight(grasp + [0.006 * k, 0.0])], gripper_width=width)[0]
    np.testing.assert_allclose(point[:2], grasp, atol=0.005)  # the first close frames joined
    assert tracker.holding
    for width in (0.0, 0.0, 0.079, 0.079, 0.079):  # dropped: shut empty, then open again
        point = tracker.update([_sight(grasp + [0.03, 0.0])], gripper_width=width)[0]
    assert not tracker.holding and point[0] > grasp[0] + 0.01  # following again
    tracker.reset()
    assert not tracker.holding and tracker.update([], gripper_width=0.03) is None
    off = GraspPointTracker(gate_m=GATE)  # the default: no hold, the width is ignored
    off.update([_sight(grasp)], gripper_width=0.08)
    point = off.update([_sight(grasp + [0.02, 0.0])], gripper_width=0.0)[0]
    assert not off.holding and point[0] > grasp[0] + 0.005
    with pytest.raises(ValueError, match="hold_margin"):
        GraspPointTracker(hold_margin=0.0)


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(
        st.tuples(
            st.lists(st.tuples(xy, st.floats(0.05, 1.0)), max_size=3),  # sightings, prob
            st.sampled_from([0.0, 0.005, 0.03, 0.051, 0.08]),  # the hand's opening
            xy,  # the hand's TCP xy
            st.floats(0.045, 0.2),  # and its height
        ),
        min_size=1,
        max_size=40,
    )
)
def test_tracker_never_starts_or_moves_on_a_sighting_where_a_close_came_up_empty(frames):
    """Invariant: once an empty close at the grasp plane ruled a place out, the estimate never
    lies within ``reject_m`` of it and no sighting there starts or moves the estimate; a place is
    ruled out only by a close below EMPTY_WIDTH with the TCP within REACH_Z of the estimate's
    plane, one per close (the hand opens past half its opening in between), and never after
    the fingers stopped on something during that close (a drop, not a miss)."""
    tracker = GraspPointTracker(gate_m=GATE, reject_m=REJECT_M)
    low = None  # where the close began: the hand's lowest since it was last open
    for sights, width, hand_xy, hand_z in frames:
        hand = np.array([*hand_xy, hand_z])
        if low is None or width >= CLOSING_WIDTH or hand_z < low[2]:
            low = hand
        before, count = tracker.point, len(tracker.rejected)
        was_armed, was_gripped = tracker._armed, tracker._gripped
        tracker.update([_sight(p, pr) for p, pr in sights], gripper_width=width, hand=hand)
        new = len(tracker.rejected) - count
        reached = before is not None and abs(low[2] - before[2]) <= REACH_Z
        assert new == int(width < EMPTY_WIDTH and was_armed and not was_gripped and reached)
        if new:
            np.testing.assert_array_equal(tracker.rejected[-1], low[:2])
        if tracker.point is not None:
            assert not tracker._is_rejected(tracker.point)  # never inside a ruled-out place
    only_inside = copy.deepcopy(tracker)
    for r in tracker.rejected:  # sightings only inside ruled-out places change nothing
        point = only_inside.update([_sight(r + [0.01, 0.0], 1.0)], gripper_width=0.08)
        if tracker.point is None:
            assert point is None
        else:
            np.testing.assert_array_equal(point[0], tracker.point)


def test_after_an_empty_close_on_a_distractor_the_tracker_goes_to_the_next_candidate():
    tracker = GraspPointTracker(gate_m=GATE, reject_m=REJECT_M)
    distractor, cube = np.array([0.45, -0.1]), np.array([0.55, 0.1])
    seen = [_sight(distractor, 0.9), _sight(cube, 0.2)]  # the distractor outscores the cube
    point = tracker.update(seen, gripper_width=0.08, hand=np.array([0.3, 0.0, 0.4]))[0]
    np.testing.assert_allclose(point[:2], distractor)
    high = np.array([*distractor, 0.045 + 2 * REACH_Z])  # shut empty well above: no evidence
    point = tracker.update(seen, gripper_width=0.0, hand=high)[0]
    np.testing.assert_allclose(point[:2], distractor)
    assert tracker.rejected == []
    tracker.update(seen, gripper_width=0.08, hand=high)  # open again
    at = np.array([*distractor + [0.01, 0.0], 0.05])  # down at the distractor, shut on nothing
    point = tracker.update(seen, gripper_width=0.004, hand=at)[0]
    np.testing.assert_allclose(point[:2], cube)  # the next candidate, at once
    assert len(tracker.rejected) == 1
    point = tracker.update(seen, gripper_width=0.0, hand=at)[0]  # the same close: one place
    assert len(tracker.rejected) == 1
    np.testing.assert_allclose(point[:2], cube)
    for _ in range(2 * tracker.switch_after):  # the distractor alone, as sure as ever
        point = tracker.update([_sight(distractor, 1.0)], gripper_width=0.08, hand=at)[0]
    np.testing.assert_allclose(point[:2], cube)
    # the fingers shut while the arm already lifts: the place is where the close began
    lifting = GraspPointTracker(gate_m=GATE, reject_m=REJECT_M)
    lifting.update(seen, gripper_width=0.08, hand=np.array([*distractor, 0.05]))
    for k, width in enumerate((0.07, 0.05, 0.03, 0.012, 0.005)):
        point = lifting.update(
            seen, gripper_width=width, hand=np.array([*distractor, 0.07 + 0.04 * k])
        )[0]
    np.testing.assert_allclose(lifting.rejected, [distractor])
    np.testing.assert_allclose(point[:2], cube)
    # a cube gripped at 5.1 cm that slides out during the lift: a drop, nothing ruled out
    drop = GraspPointTracker(gate_m=GATE, reject_m=REJECT_M)
    drop.update(seen, gripper_width=0.08, hand=np.array([*cube, 0.05]))
    for k, width in enumerate((0.06, 0.051, 0.051, 0.05, 0.02, 0.003)):
        drop.update(seen, gripper_width=width, hand=np.array([*cube, 0.05 + 0.03 * k]))
    assert drop.rejected == [] and not drop.reopening
    tracker.reset()
    assert tracker.rejected == [] and not tracker.reopening
    np.testing.assert_allclose(tracker.update(seen)[0][:2], distractor)
    off = GraspPointTracker(gate_m=GATE)  # the default: no place ruled out
    off.update(seen, gripper_width=0.08, hand=at)
    np.testing.assert_allclose(off.update(seen, gripper_width=0.0, hand=at)[0][:2], distractor)
    with pytest.raises(ValueError, match="reject_m"):
        GraspPointTracker(reject_m=0.0)


def test_an_empty_close_reopens_the_hand_and_searches_fainter_peaks():
    """After an empty close rules out the estimate's place, ``reopening`` holds until the hand
    is open again (``TaskPolicy.predict_chunk`` then commands it open), and while no new
    estimate has begun the tracker is ``searching``: the policy asks ``sightings`` for
    ``SEARCH_TOP`` peaks down to ``SEARCH_MIN_PROB``."""
    tracker = GraspPointTracker(gate_m=GATE, reject_m=REJECT_M)
    distractor = np.array([0.45, -0.1])
    at = np.array([*distractor, 0.05])
    tracker.update([_sight(distractor, 0.9)], gripper_width=0.08, hand=at)
    assert not tracker.reopening and not tracker.searching
    tracker.update([_sight(distractor, 0.9)], gripper_width=0.004, hand=at)  # shut on nothing
    assert tracker.reopening and tracker.searching and tracker.point is None
    for width in (0.01, 0.04, 0.07):  # opening: still told to open, still searching
        tracker.update([_sight(distractor, 0.9)], gripper_width=width, hand=at + [0, 0, 0.05])
        assert tracker.reopening and tracker.searching
    tracker.update([], gripper_width=CLOSING_WIDTH, hand=at + [0, 0, 0.1])
    assert not tracker.reopening and tracker.searching  # open: the policy decides again
    tracker.update([_sight([0.55, 0.1], 0.02)], gripper_width=0.08, hand=at + [0, 0, 0.1])
    assert not tracker.searching and tracker.point is not None  # a faint peak elsewhere


@settings(max_examples=150, deadline=None)
@given(
    start=xy,
    frames=st.lists(
        st.tuples(
            st.lists(st.tuples(xy, st.floats(0.05, 1.0)), max_size=3),  # sightings, prob
            st.floats(0.0, 0.3),  # the TCP's height above the grasp plane
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_tracker_commits_to_its_estimate_while_the_hand_is_low(start, frames):
    """Invariant: while the TCP is less than ``commit_dz`` above the estimate's plane, whatever
    is sighted wherever, the estimate does not move; higher up the tracker does what it does
    without a hand."""
    tracker = GraspPointTracker(gate_m=GATE, commit_dz=COMMIT_DZ)
    tracker.update([_sight(start)])
    for sights, dz in frames:
        seen = [_sight(p, pr) for p, pr in sights]
        before, plain = tracker.point.copy(), copy.deepcopy(tracker)
        hand = np.array([0.5, 0.0, before[2] + dz])
        point = tracker.update(seen, gripper_width=0.08, hand=hand)[0]
        assert tracker.committed == (dz < COMMIT_DZ)
        if dz < COMMIT_DZ:
            np.testing.assert_array_equal(point, before)
        else:
            np.testing.assert_array_equal(point, plain.update(seen)[0])


def test_a_peak_riding_on_the_hand_does_not_walk_the_low_hand_away_from_the_cube():
    """The walk it prevents (RESULTS.md session 22): at the bottom the wrist camera's peak sits
    3 cm beside the TCP whatever the hand does; followed, the estimate and the hand drift
    together. Committed, the estimate stays at the cube; lifted, it follows sightings again."""
    cube = np.array([0.5, 0.0])
    trackers = {}
    for commit, stays in ((COMMIT_DZ, True), (None, False)):
        tracker = trackers[commit] = GraspPointTracker(gate_m=GATE, commit_dz=commit)
        tracker.update([_sight(cube, 0.9)], hand=np.array([0.45, 0.0, 0.2]))
        hand = np.array([*cube, 0.05])
        for _ in range(20):
            point = tracker.update([_sight(hand[:2] + [0.03, 0.0], 0.9)], hand=hand)[0]
            hand[:2] += 0.5 * (point[:2] - hand[:2])  # the hand follows the estimate
        drift = np.linalg.norm(point[:2] - cube)
        assert (drift < 1e-9) if stays else (drift > 0.05)
    committed = trackers[COMMIT_DZ]
    point = committed.update([_sight(cube + [0.02, 0.0])], hand=np.array([*cube, 0.2]))[0]
    assert not committed.committed and point[0] > cube[0] + 0.005  # lifted: following again
    with pytest.raises(ValueError, match="commit_dz"):
        GraspPointTracker(commit_dz=0.0)
    off = GraspPointTracker(gate_m=GATE)  # the default: no commit
    off.update([_sight(cube)], hand=np.array([*cube, 0.05]))
    point = off.update([_sight(cube + [0.02, 0.0])], hand=np.array([*cube, 0.05]))[0]
    assert not off.committed and point[0] > cube[0] + 0.005


def test_tracker_weighs_close_and_sure_sightings_more():
    tracker = GraspPointTracker(gate_m=GATE, memory=1.0)
    tracker.update([Sighting(1, np.zeros(2), 0.5, np.array([1.0, 0]), True,
                             np.array([0.5, 0.0, 0.045]), 0.4)])  # fmt: skip
    point = tracker.update([Sighting(1, np.zeros(2), 0.5, np.array([1.0, 0]), True,
                                     np.array([0.52, 0.0, 0.045]), 0.1)])[0]  # fmt: skip
    assert point[0] == pytest.approx(0.5 + 0.02 * 16 / 17)  # 1/range^2: 16x the weight
    with pytest.raises(ValueError, match="gate_m"):
        GraspPointTracker(gate_m=0.0)


class _Head(torch.nn.Module):
    """A grasp-point head with fixed outputs (logits over a 4 x 4 grid + not in view)."""

    grid = 4

    def __init__(self, logits) -> None:
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float32)[None]

    def forward(self, tokens):
        offs = torch.full((1, 16, 2), 0.5)
        return self.logits, offs, torch.zeros(1, 16, 2)


def test_sightings_are_separate_peaks_of_a_view_that_sees_the_point():
    logits = np.full(17, -10.0)
    logits[[5, 6, 15]] = [3.0, 2.9, 2.5]  # 6 is 5's neighbour: one peak; 15 is another
    absent = np.full(17, -10.0)
    absent[16] = 5.0
    heads = torch.nn.ModuleList([_Head(logits), _Head(absent)])
    found = sightings(heads, torch.zeros(2, 17, 8), [False, True])
    assert [(s.view, s.on_arm) for s in found] == [(0, False), (0, False)]
    np.testing.assert_allclose(found[0].uv, [(1 + 0.5) / 4, (1 + 0.5) / 4])  # patch 5
    np.testing.assert_allclose(found[1].uv, [(3 + 0.5) / 4, (3 + 0.5) / 4])  # patch 15
    assert found[0].prob > found[1].prob


@settings(max_examples=60, deadline=None)
@given(
    xy=st.tuples(st.floats(0.25, 0.8), st.floats(-0.35, 0.35)),
    dq=st.lists(st.floats(-0.3, 0.3), min_size=7, max_size=7),
)
def test_patch_map_cells_are_the_rigs_projection(rig, xy, dq):
    """Invariant: a PatchMap looks a world point up in the patch the rig projects it into."""
    q = HOME_Q + np.array(dq)
    heads = torch.nn.ModuleList([_Head(np.zeros(17)), _Head(np.zeros(17))])
    maps = patch_maps(head_outputs(heads, torch.zeros(2, 17, 8)), rig, rig.poses(q))
    point = np.array([xy[0], xy[1], 0.045])
    uv = rig.project(point, q)
    for v in range(2):
        cell = maps[v].cell(point)
        if np.isnan(uv[v, 0]):
            assert cell is None
        else:
            assert cell == (min(int(uv[v, 0] * 4), 3), min(int(uv[v, 1] * 4), 3))


def _down_map(cells: dict[tuple[int, int], float], height: float) -> PatchMap:
    """A 4 x 4 PatchMap of a camera ``height`` m above (0.5, 0, 0.045) looking straight down
    (image x = world x, image y = -world y; the image spans 1 m at 1 m): ``cells`` (column, row)
    -> probability."""
    prob = np.zeros((4, 4))
    for (c, r), p in cells.items():
        prob[r, c] = p
    pos = np.array([0.5, 0.0, 0.045 + height])
    return PatchMap(prob, pos, np.diag([1.0, -1.0, -1.0]), np.array([1.0, 1.0, 0.5, 0.5]))


def _at(c: int, r: int, height: float) -> np.ndarray:
    """The world point at the centre of patch (c, r) of a ``_down_map`` at ``height``."""
    return np.array([0.5 + ((c + 0.5) / 4 - 0.5) * height, -((r + 0.5) / 4 - 0.5) * height, 0.045])


def test_fused_mass_multiplies_each_views_probability_around_a_point():
    near = _down_map({(0, 0): 0.3, (2, 2): 0.2, (3, 3): 0.2}, 0.4)
    far = _down_map({(2, 2): 0.6, (0, 0): 0.1}, 1.0)
    f = FUSE_FLOOR
    cube = _at(2, 2, 0.4)  # in the far camera that is patch (2, 2) as well (both centred)
    assert near.cell(cube) == (2, 2) and far.cell(cube) == (2, 2)
    assert fused_mass(cube, [near, far]) == pytest.approx((0.2 + 0.2 + f) * (0.6 + 0.0 + f))
    ball = _at(0, 0, 0.4)
    # the ball is patch (1, 1) of the far camera, whose 3 x 3 reaches the cube's (2, 2): a far
    # camera is coarse, and its mass counts wherever its blob could be
    assert fused_mass(ball, [near, far]) == pytest.approx((0.3 + f) * (0.6 + 0.1 + f))
    # outside every image each view says "not in view" with 1 - its patch mass (0.3 each)
    off = np.array([5.0, 5.0, 0.045])
    assert fused_mass(off, [near, far]) == pytest.approx((0.3 + f) * (0.3 + f))


def test_a_sharp_wrong_peak_in_one_view_loses_to_a_place_both_views_see():
    """Seed 100004's home frame (session 14): the fixed camera is sure of a ball (0.68) and gives
    the cube 0.1; the wrist camera sees the cube's square (0.31) and the ball hardly (0.02). The
    sum of the views' masses picks the ball, their product the cube."""
    wrist = _down_map({(1, 1): 0.31, (3, 3): 0.02}, 0.4)
    fixed = _down_map({(1, 1): 0.1, (3, 3): 0.68}, 0.4)  # one grid: the same cells
    cube, ball = _at(1, 1, 0.4), _at(3, 3, 0.4)
    assert wrist.mass_near(ball) + fixed.mass_near(ball) > wrist.mass_near(cube) + fixed.mass_near(
        cube
    )
    assert fused_mass(cube, [fixed, wrist]) > fused_mass(ball, [fixed, wrist])


def test_a_camera_on_the_arm_counts_arm_view_weight_times_in_the_fused_mass(monkeypatch):
    """fused_mass raises each view's factor to its weight; patch_maps gives a view mounted on the
    arm ARM_VIEW_WEIGHT and a world-fixed one 1. With equal weights the fixed camera's sure
    distractor (0.5 vs 0.2 on the cube) wins against the wrist's milder preference for the cube
    (0.45 vs 0.25); with the wrist counted twice the cube wins."""
    from dataclasses import replace

    from ver_core.policy import grasp_point as gp

    fixed = _down_map({(1, 1): 0.2, (3, 3): 0.5}, 0.4)
    wrist = _down_map({(1, 1): 0.45, (3, 3): 0.25}, 0.4)
    cube, ball = _at(1, 1, 0.4), _at(3, 3, 0.4)
    f = FUSE_FLOOR
    assert fused_mass(ball, [fixed, wrist]) > fused_mass(cube, [fixed, wrist])  # weights 1, 1
    heavy = replace(wrist, weight=2.0)
    assert fused_mass(cube, [fixed, heavy]) == pytest.approx((0.2 + f) * (0.45 + f) ** 2)
    assert fused_mass(cube, [fixed, heavy]) > fused_mass(ball, [fixed, heavy])
    # patch_maps weighs by the mount: the simulator's wrist camera rides on the hand
    rig = CameraRig(sim_calibration(["camera", "wrist_camera"]), ["camera", "wrist_camera"])
    logits = torch.zeros(1, 14 * 14 + 1)
    outputs = [(logits, None, None), (logits, None, None)]
    maps = patch_maps(outputs, rig, rig.poses(HOME_Q))
    assert [m.weight for m in maps] == [1.0, ARM_VIEW_WEIGHT]
    monkeypatch.setattr(gp, "ARM_VIEW_WEIGHT", 2.0)  # the measured alternative
    assert [m.weight for m in patch_maps(outputs, rig, rig.poses(HOME_Q))] == [1.0, 2.0]


def test_tracker_starts_where_the_views_agree_not_on_one_cameras_peak():
    """The wrist camera's sharpest peak is a ball (0.3) while its cube blob holds 0.4 over two
    patches and the fixed camera puts 0.6 on the cube: with the maps the tracker starts on the
    cube, at the close camera's sighting of it (not the far camera's, 5 cm off); without the
    maps (the peak rule: a camera on the arm, then the likeliest) on the ball."""
    wrist = _down_map({(0, 3): 0.3, (2, 1): 0.2, (2, 2): 0.2}, 0.4)
    fixed = _down_map({(2, 1): 0.6, (1, 3): 0.05}, 1.0)
    cube, ball = _at(2, 1, 0.4), _at(0, 3, 0.4)
    far_cube = cube + [0.05, 0.0, 0.0]  # the fixed camera's coarser sighting of the cube
    assert fixed.cell(far_cube) == fixed.cell(cube)

    def sight(point, prob, view, range_m):
        return Sighting(view, np.zeros(2), prob, np.array([1.0, 0.0]), view == 1, point, range_m)

    seen = [sight(ball, 0.3, 1, 0.4), sight(cube, 0.2, 1, 0.4), sight(far_cube, 0.6, 0, 1.0)]
    fused = GraspPointTracker().update(seen, [fixed, wrist])[0]
    np.testing.assert_allclose(fused, cube)
    peak = GraspPointTracker().update(seen)[0]
    np.testing.assert_allclose(peak, ball)


def test_a_checkpoint_without_a_yaw_frame_reads_world_yaws_and_new_ones_camera_yaws():
    new = TaskConfig(keypose=True, grasp_point=True, action_mode="keypose")
    assert new.grasp_yaw_frame == "camera"
    saved = new.to_dict()
    assert TaskConfig.from_dict(saved).grasp_yaw_frame == "camera"
    del saved["grasp_yaw_frame"]  # as written before session 13: its heads read world yaws
    assert TaskConfig.from_dict(saved).grasp_yaw_frame == "world"
    with pytest.raises(ValueError, match="grasp_yaw_frame"):
        TaskConfig(grasp_yaw_frame="hand")


@settings(max_examples=100, deadline=None)
@given(psi=st.floats(-np.pi, np.pi), head=st.floats(-np.pi, np.pi), order=st.integers(1, 4))
def test_a_camera_yaw_turns_back_into_the_world_yaw(psi, head, order):
    """Invariant: what a view with heading h reads (psi - h) turns back into psi (n-fold)."""
    seen = np.array([np.cos(order * (psi - head)), np.sin(order * (psi - head))])
    back = world_yaw_vec(seen, head, order, "camera")
    np.testing.assert_allclose(back, [np.cos(order * psi), np.sin(order * psi)], atol=1e-9)
    np.testing.assert_array_equal(world_yaw_vec(seen, head, order, "world"), seen)


@settings(max_examples=100, deadline=None)
@given(grid=st.integers(1, 16), radius=st.integers(0, 3), data=st.data())
def test_neighbour_patches_are_the_cells_within_the_radius_on_the_map(grid, radius, data):
    target = data.draw(st.lists(st.integers(0, grid * grid - 1), min_size=1, max_size=8))
    cells, valid = neighbour_patches(torch.tensor(target), grid, radius)
    assert cells.shape == valid.shape == (len(target), (2 * radius + 1) ** 2)
    for t, row, ok in zip(target, cells.tolist(), valid.tolist(), strict=True):
        want = {
            y * grid + x
            for y in range(grid)
            for x in range(grid)
            if max(abs(x - t % grid), abs(y - t // grid)) <= radius
        }
        assert {c for c, o in zip(row, ok, strict=True) if o} == want
        assert all(c == t for c, o in zip(row, ok, strict=True) if not o)


def test_the_yaw_radius_teaches_the_neighbours_yaw_and_zero_keeps_the_labelled_patch_only():
    torch.manual_seed(0)
    heads = torch.nn.ModuleList([GraspPointHead(dim=16, grid=4, channels=8)])
    tokens = torch.randn(3, 1, 17, 16)
    cls = torch.tensor([[5], [0], [16]])  # an inner patch, a corner, "not in view"
    offset, yaw = torch.rand(3, 1, 2), torch.randn(3, 1, 2)

    def yaw_grad(radius: int) -> torch.Tensor:
        heads.zero_grad()
        maps = []  # the yaw maps' gradient, per patch, through a hook on the head's output
        out_fn = heads[0].forward

        def hooked(x):
            logits, offs, yaws = out_fn(x)
            yaws.retain_grad()
            maps.append(yaws)
            return logits, offs, yaws

        heads[0].forward = hooked
        try:
            grasp_point_loss(heads, tokens, cls, offset, yaw, yaw_radius=radius).backward()
        finally:
            del heads[0].forward
        return maps[0].grad.abs().sum(-1)  # (2 in-view frames, 16 patches)

    g0, g1 = yaw_grad(0), yaw_grad(1)
    assert set(torch.nonzero(g0[0]).flatten().tolist()) == {5}
    assert set(torch.nonzero(g0[1]).flatten().tolist()) == {0}
    assert set(torch.nonzero(g1[0]).flatten().tolist()) == {0, 1, 2, 4, 5, 6, 8, 9, 10}
    assert set(torch.nonzero(g1[1]).flatten().tolist()) == {0, 1, 4, 5}
    with pytest.raises(ValueError, match="grasp_yaw_radius"):
        TaskConfig(grasp_yaw_radius=5)

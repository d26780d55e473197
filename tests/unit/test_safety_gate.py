"""Safety gate: clamping, step caps, every hold reason, e-stop and ramp-in (pure, no ROS)."""

from __future__ import annotations

import numpy as np
import pytest

from ver_core.deploy import ActionChunk, uniform_offsets
from ver_core.safety import (
    FR3_LIMITS,
    PANDA_LIMITS,
    HoldReason,
    SafetyConfig,
    SafetyGate,
    limits_for,
)

HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
RATE = 50.0
DT = 1.0 / RATE


def make_gate(**overrides) -> SafetyGate:
    cfg = SafetyConfig(**{"control_rate_hz": RATE, "ramp_time_s": 0.2, **overrides})
    return SafetyGate(cfg, FR3_LIMITS)


def chunk_to(target: np.ndarray, stamp: float, horizon: int = 30, gripper: float = 0.04):
    actions = np.tile(np.append(target, gripper), (horizon, 1))  # (H, 8)
    return ActionChunk(stamp, uniform_offsets(horizon, RATE), actions)


def run(gate: SafetyGate, t0: float, ticks: int, q_follow: bool = True):
    """Tick the gate; the 'robot' follows each command exactly. Returns commands and outputs."""
    outs = []
    for i in range(ticks):
        now = t0 + i * DT
        out = gate.step(now)
        outs.append(out)
        if out is not None and q_follow:
            gate.on_joint_state(out.arm, now)
    return outs


def started_gate(**overrides) -> tuple[SafetyGate, float]:
    gate = make_gate(**overrides)
    gate.on_joint_state(HOME, 0.0)
    return gate, 0.0


def test_nothing_published_without_joint_state():
    gate = make_gate()
    assert gate.step(0.0) is None
    assert "no_joint_state" in gate.status


def test_holds_at_measured_pose_without_chunk():
    gate, t = started_gate()
    out = gate.step(t)
    assert out.holding and np.array_equal(out.arm, HOME)
    assert "no_chunk" in out.status


def test_out_of_limit_target_is_clamped_with_margin_and_step_capped():
    gate, t = started_gate(observation_budget_s=60.0)
    target = HOME.copy()
    target[0] = 10.0  # far beyond the +2.7437 limit
    target[3] = -9.0
    gate.on_chunk(chunk_to(target, t, horizon=400), t)
    outs = run(gate, t, 390)
    arms = np.stack([o.arm for o in outs])  # (T, 7)
    lo, hi = FR3_LIMITS.lower + 0.05, FR3_LIMITS.upper - 0.05
    assert np.all(arms >= lo - 1e-12) and np.all(arms <= hi + 1e-12)
    np.testing.assert_allclose(arms[-1, 0], hi[0])
    np.testing.assert_allclose(arms[-1, 3], lo[3])
    steps = np.abs(np.diff(np.vstack([HOME, arms]), axis=0))
    assert np.all(steps <= gate.step_cap + 1e-12)
    # velocity: step per tick never exceeds velocity_scale * limit
    assert np.all(steps / DT <= 0.5 * FR3_LIMITS.velocity + 1e-9)


def test_ramp_in_grows_linearly_from_zero():
    gate, t = started_gate()
    target = HOME + 1.0
    gate.on_chunk(chunk_to(target, t, horizon=100), t)
    outs = run(gate, t, 12)
    steps = np.abs(np.diff(np.vstack([HOME] + [o.arm for o in outs]), axis=0))[:, 0]
    ramp_ticks = int(round(0.2 * RATE))
    expected = gate.step_cap[0] * np.minimum(1.0, np.arange(1, 13) / ramp_ticks)
    np.testing.assert_allclose(steps, expected, rtol=1e-9)
    assert [o.status for o in outs][:2] == ["ramping", "ramping"]
    assert outs[-1].status == "ok"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_chunk_rejected_and_never_output(bad):
    gate, t = started_gate()
    gate.on_chunk(chunk_to(HOME + 0.1, t), t)
    run(gate, t, 5)
    held = gate.step(t + 5 * DT).arm
    target = HOME + 0.1
    target[2] = bad
    assert gate.on_chunk(chunk_to(target, t + 0.1), t + 0.1) is HoldReason.NAN_ACTION
    outs = run(gate, t + 0.1, 10)
    assert all(o.holding and "nan_action" in o.status for o in outs)
    assert all(np.all(np.isfinite(o.arm)) and np.array_equal(o.arm, held) for o in outs)
    # a good chunk afterwards resumes with a ramp
    gate.on_chunk(chunk_to(HOME + 0.1, t + 0.3), t + 0.3)
    assert gate.step(t + 0.3).status == "ramping"


def test_stale_observation_rejected_on_arrival():
    gate, t = started_gate(observation_budget_s=0.3)
    reason = gate.on_chunk(chunk_to(HOME + 0.5, t - 0.5), t)
    assert reason is HoldReason.STALE_OBSERVATION
    out = gate.step(t)
    assert out.holding and np.array_equal(out.arm, HOME)


def test_dead_policy_stops_within_the_observation_budget():
    """No new chunk: motion stops once the last chunk's observation is older than the budget."""
    gate, t = started_gate(observation_budget_s=0.25)
    gate.on_chunk(chunk_to(HOME + 0.3, t, horizon=200), t)
    outs = run(gate, t, 30)  # 0.6 s without a new chunk
    assert not outs[5].holding
    moving = [i for i, o in enumerate(outs) if not o.holding]
    assert max(moving) * DT <= 0.25 + 1e-9
    assert outs[-1].holding and "stale_observation" in outs[-1].status
    frozen = [o.arm for o in outs if o.holding]
    assert all(np.array_equal(a, frozen[0]) for a in frozen)


def test_stale_joint_state_holds():
    gate, t = started_gate()
    gate.on_chunk(chunk_to(HOME + 0.3, t), t)
    outs = run(gate, t, 20, q_follow=False)  # joint state only at t=0
    assert outs[-1].holding and "stale_joint_state" in outs[-1].status


def test_chunk_expired_holds():
    gate, t = started_gate(observation_budget_s=5.0)
    gate.on_chunk(chunk_to(HOME + 0.3, t, horizon=5), t)
    outs = run(gate, t, 10)
    assert outs[-1].holding and "chunk_expired" in outs[-1].status


def test_estop_holds_immediately_and_ramps_after_release():
    gate, t = started_gate(observation_budget_s=50.0)
    gate.on_chunk(chunk_to(HOME + 1.0, t, horizon=5000), t)
    outs = run(gate, t, 20)
    moving = outs[-1].arm
    gate.set_estop(True)
    stopped = run(gate, t + 20 * DT, 25)
    assert all(o.holding and "e_stop" in o.status for o in stopped)
    assert all(np.array_equal(o.arm, moving) for o in stopped)
    gate.set_estop(False)
    resumed = run(gate, t + 45 * DT, 15)
    steps = np.abs(np.diff(np.vstack([moving] + [o.arm for o in resumed]), axis=0))[:, 0]
    assert steps[0] <= gate.step_cap[0] * 0.1 + 1e-12  # first tick after release: 1/10 of cap
    assert np.all(np.diff(steps[:10]) > 0)  # accelerating, no jump
    assert resumed[-1].status == "ok"


@pytest.mark.parametrize("moved_by", [0.3, 0.03, 0.005])
def test_leaving_a_hold_starts_from_the_measured_pose(moved_by):
    """Finding 2 of issue 14: moved 30 mrad while held, the first command after release was the
    old held pose (the resync tolerance was 50 mrad, more than a tick's cap)."""
    gate, t = started_gate()
    gate.set_estop(True)
    gate.step(t)
    moved = HOME + moved_by
    t += 1.0  # moved by hand over a second of e-stop
    gate.on_joint_state(moved, t)
    gate.step(t)
    gate.set_estop(False)
    gate.on_chunk(chunk_to(moved + 0.5, t + DT), t + DT)
    gate.on_joint_state(moved, t + DT)
    out = gate.step(t + DT)
    assert np.all(np.abs(out.arm - moved) <= gate.step_cap)
    np.testing.assert_allclose(out.reference, moved)


def test_measured_pose_outside_the_limits_is_a_named_hold_and_never_commanded():
    """Finding 1 of issue 14: joint 4 reported at +1.0 rad (FR3 upper limit -0.1518)."""
    gate, t = started_gate(observation_budget_s=60.0)
    gate.on_chunk(chunk_to(HOME, t, horizon=400), t)
    run(gate, t, 10)
    bad = HOME.copy()
    bad[3] = 1.0
    gate.on_joint_state(bad, t + 10 * DT)
    outs = run(gate, t + 10 * DT, 20, q_follow=False)
    assert all(o.holding and "joint_state_out_of_limits" in o.status for o in outs)
    assert all(o.arm[3] <= FR3_LIMITS.upper[3] - 0.05 for o in outs)
    # a fresh gate that only ever saw the bad pose publishes nothing at all
    fresh = make_gate()
    fresh.on_joint_state(bad, t)
    assert fresh.step(t) is None and "joint_state_out_of_limits" in fresh.status
    # back inside the limits (two agreeing readings: the way back was a jump): it resumes
    gate.on_joint_state(HOME, t + 30 * DT)
    gate.on_joint_state(HOME, t + 31 * DT)
    gate.on_chunk(chunk_to(HOME, t + 31 * DT), t + 31 * DT)
    out = gate.step(t + 31 * DT)
    assert not out.holding and np.all(np.abs(out.arm - HOME) <= gate.step_cap)


def test_a_measured_jump_holds_until_the_readings_agree_again():
    gate, t = started_gate(observation_budget_s=60.0)
    gate.on_chunk(chunk_to(HOME, t, horizon=400), t)
    run(gate, t, 5)
    glitch = HOME.copy()
    glitch[0] += 1.0  # 1 rad in 20 ms: no FR3 joint moves that fast
    gate.on_joint_state(glitch, t + 5 * DT)
    assert "joint_state_jump" in gate.step(t + 5 * DT).status
    gate.on_joint_state(HOME, t + 6 * DT)  # and back: still a jump
    assert "joint_state_jump" in gate.step(t + 6 * DT).status
    gate.on_joint_state(HOME, t + 7 * DT)  # two readings that agree: trusted again
    out = gate.step(t + 7 * DT)
    assert not out.holding
    np.testing.assert_allclose(out.reference, HOME)


def test_upstream_hold_is_named_and_drops_the_chunk():
    gate, t = started_gate()
    gate.on_chunk(chunk_to(HOME + 0.3, t), t)
    run(gate, t, 3)
    gate.set_upstream_hold("missing_view:wrist_camera")
    out = gate.step(t + 3 * DT)
    assert out.holding and "upstream:missing_view:wrist_camera" in out.status
    gate.set_upstream_hold(None)
    assert "no_chunk" in gate.step(t + 4 * DT).status  # the old plan is not resumed


def test_clock_going_backwards_holds():
    gate, t = started_gate()
    gate.on_chunk(chunk_to(HOME + 0.3, t), t)
    run(gate, t, 3)
    out = gate.step(t - 5.0)
    assert out.holding and "clock_jump" in out.status


def test_an_early_tick_moves_less():
    gate, t = started_gate(ramp_time_s=0.0, observation_budget_s=60.0)
    gate.on_chunk(chunk_to(HOME + 1.0, t, horizon=400), t)
    gate.step(t)
    a = gate.step(t + DT).arm
    b = gate.step(t + DT + DT / 4).arm  # a timer burst: a quarter period later
    np.testing.assert_allclose(np.abs(b - a), gate.step_cap / 4)


def test_gripper_resyncs_to_the_measured_width_after_a_hold():
    """An episode reset under e-stop reopens the hand: leaving the hold must not re-close it."""
    gate, t = started_gate()
    for i in range(int(1.2 / DT)):  # the policy closes the hand, fresh chunks every tick
        now = t + i * DT
        gate.on_chunk(chunk_to(HOME, now, gripper=0.0), now)
        out = gate.step(now)
        gate.on_joint_state(out.arm, now, gripper=0.08)
    assert out.gripper < 0.01
    t = now + DT
    gate.set_estop(True)
    gate.step(t)
    gate.on_joint_state(HOME, t + DT, gripper=0.08)  # reset: hand open again
    gate.set_estop(False)
    gate.on_chunk(chunk_to(HOME, t + DT, gripper=0.08), t + DT)
    out = gate.step(t + DT)
    assert out.gripper == pytest.approx(0.08)  # before the fix: ~0.0 (the pre-hold command)


def test_gripper_clamped_and_rate_limited():
    gate, t = started_gate()
    gate.on_chunk(chunk_to(HOME, t, gripper=5.0), t)
    outs = run(gate, t, 200)
    g = np.array([o.gripper for o in outs])
    assert g.max() <= 0.08 + 1e-12 and g.min() >= 0.0
    assert np.all(np.abs(np.diff(g)) <= 0.1 * DT + 1e-12)


def test_wrong_width_chunk_rejected():
    gate, t = started_gate()
    bad = ActionChunk(t, uniform_offsets(3, RATE), np.zeros((3, 5)))
    assert gate.on_chunk(bad, t) is HoldReason.BAD_CHUNK


def test_limit_tables_and_overrides():
    assert limits_for("panda") is PANDA_LIMITS and limits_for("FR3") is FR3_LIMITS
    with pytest.raises(ValueError, match="unknown robot type"):
        limits_for("ur5")
    upper = FR3_LIMITS.upper.copy()
    upper[0] = 1.0
    over = FR3_LIMITS.with_overrides(upper=upper.tolist())
    assert over.upper[0] == 1.0 and over.lower[0] == FR3_LIMITS.lower[0]
    with pytest.raises(ValueError, match="needs 7 values"):
        FR3_LIMITS.with_overrides(velocity=[1.0, 2.0])
    with pytest.raises(ValueError, match="empty range"):
        FR3_LIMITS.shrunk(2.0)


@pytest.mark.parametrize(
    "field,value",
    [("control_rate_hz", 0.0), ("velocity_scale", 1.5), ("max_step", -1.0), ("gripper_min", 0.1)],
)
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        SafetyConfig(**{field: value})

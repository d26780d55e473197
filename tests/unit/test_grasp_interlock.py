"""The grasp interlock: the arm waits while a closing hand's fingers move, and never longer than
its limit (``ver_core.safety.grasp``), alone and inside the safety gate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ver_core.deploy import ActionChunk, uniform_offsets
from ver_core.safety import FR3_LIMITS, SafetyConfig, SafetyGate
from ver_core.safety.grasp import GraspInterlock, GraspInterlockConfig

DT = 0.02  # the gate's 50 Hz tick
OPEN = 0.08
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


def fingers(widths_per_tick, target=0.0, config=None):
    """Run the interlock over measured widths (one per tick) with the hand told to shut; the
    sent width ramps at the gate's 2 mm per tick -> the answers per tick."""
    lock = GraspInterlock(config or GraspInterlockConfig())
    sent, out = OPEN, []
    for k, w in enumerate(widths_per_tick):
        sent = max(target, sent - 0.002)
        out.append(lock.update(k * DT, target, sent, w))
    return out


def closing_on_cube(stop_tick: int = 15, cube: float = 0.053, ticks: int = 100) -> list[float]:
    """Fingers that start 2 ticks late, close at 2 mm per tick and stop on a cube."""
    widths = [OPEN, OPEN]
    while len(widths) < ticks:
        widths.append(max(cube, widths[-1] - 0.002) if len(widths) < stop_tick + 20 else cube)
    return widths


def test_waits_while_the_fingers_move_then_releases_once_they_stop_on_the_cube():
    widths = closing_on_cube()
    held = fingers(widths)
    stopped = next(k for k in range(1, len(widths)) if widths[k] == widths[k - 1] == 0.053)
    assert all(held[:stopped]), "the arm moved while the fingers were still closing"
    release = held.index(False)
    cfg = GraspInterlockConfig()
    # released within the settle window (plus a tick) of the fingers stopping
    assert (release - stopped) * DT <= cfg.settle_s + 2 * DT
    assert not any(held[release:]), "the interlock held again while the hand held the cube"


def test_a_close_on_nothing_releases_when_the_fingers_reach_the_target():
    widths, w = [], OPEN
    for _ in range(60):
        widths.append(w)
        w = max(0.0, w - 0.002)
    held = fingers(widths)
    reached = next(k for k, v in enumerate(widths) if v <= 0.005)
    assert all(held[: reached - 2]) and not any(held[reached:])


def test_a_hand_that_keeps_moving_is_waited_for_at_most_max_s():
    cfg = GraspInterlockConfig(max_s=0.5)
    widths = [OPEN - 0.0005 * k for k in range(100)]  # creeping, never settles, never arrives
    held = fingers(widths, config=cfg)
    assert held.index(False) * DT == pytest.approx(cfg.max_s, abs=DT)
    assert not any(held[held.index(False) :])


def test_a_reopened_hand_waits_again_on_its_next_close():
    lock = GraspInterlock()
    t, answers = 0.0, []
    for w in closing_on_cube(ticks=40):  # first close: ends released, holding the cube
        answers.append(lock.update(t, 0.0, 0.0, w))
        t += DT
    assert answers[-1] is False and lock.state == GraspInterlock.DONE
    assert lock.update(t, OPEN, 0.06, 0.055) is False  # told to open: re-armed
    assert lock.state == GraspInterlock.IDLE
    assert lock.update(t + DT, 0.0, 0.05, 0.075) is True  # the retry's close waits again


@pytest.mark.parametrize("measured", [None, np.nan, np.inf])
def test_an_unknown_width_or_an_interlock_turned_off_never_holds(measured):
    assert GraspInterlock().update(1.0, 0.0, 0.0, measured) is False
    assert GraspInterlock(GraspInterlockConfig(max_s=0.0)).update(1.0, 0.0, 0.0, 0.08) is False


@pytest.mark.parametrize(
    "kwargs", [{"max_s": -1.0}, {"settle_s": np.nan}, {"still_m": -0.1}, {"margin_m": 0.0}]
)
def test_bad_settings_raise(kwargs):
    with pytest.raises(ValueError):
        GraspInterlockConfig(**kwargs)
    with pytest.raises(ValueError):
        SafetyConfig(grasp_wait_s=-0.5)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(0.0, 0.3),  # dt (s), with gaps
            st.sampled_from([0.0, 0.0, 0.04, OPEN]),  # target
            st.floats(0.0, OPEN),  # sent
            st.one_of(st.none(), st.floats(0.0, OPEN), st.just(np.nan)),  # measured
        ),
        min_size=1,
        max_size=80,
    ),
    max_s=st.sampled_from([0.2, 1.0]),
)
def test_no_wait_outlasts_max_s_and_none_starts_without_a_close(steps, max_s):
    """Invariant over any sequence: the interlock holds only while the target is more than the
    margin below a known measured width, and a wait never lasts longer than ``max_s`` since the
    close that began it."""
    cfg = GraspInterlockConfig(max_s=max_s)
    lock, t, began = GraspInterlock(cfg), 0.0, None
    for dt, target, sent, measured in steps:
        t += dt
        held = lock.update(t, target, sent, measured)
        closing = (
            measured is not None and np.isfinite(measured) and target < measured - cfg.margin_m
        )
        if held:
            assert closing
            began = t if began is None else began
            assert t - began < max_s + 1e-9
        if not closing:
            began = None


def gate_run(grasp_wait_s: float, ticks: int = 60):
    """The gate with fresh chunks that close the hand and lift at once (joint 2 toward a goal
    0.4 rad away); the measured fingers follow the command 2 ticks late and stop on a 5.3 cm
    cube."""
    gate = SafetyGate(SafetyConfig(grasp_wait_s=grasp_wait_s, ramp_time_s=0.0), FR3_LIMITS)
    now, q, widths = 10.0, HOME.copy(), [OPEN, OPEN]
    gate.on_joint_state(q, now, gripper=OPEN)
    horizon = 40
    arm = np.repeat((HOME + 0.4 * np.eye(7)[1])[None, :], horizon, axis=0)
    actions = np.concatenate([arm, np.zeros((horizon, 1))], axis=1)
    outs = []
    for _ in range(ticks):
        gate.on_chunk(ActionChunk(now, uniform_offsets(horizon, 50.0), actions), now)
        out = gate.step(now)
        outs.append(out)
        widths.append(max(0.053, min(widths[-1], out.gripper)))
        q = out.arm.copy()
        now += DT
        gate.on_joint_state(q, now, gripper=widths[-3])
    return outs, widths


def test_the_gate_holds_the_arm_while_the_hand_closes_and_lifts_after():
    outs, widths = gate_run(1.0)
    statuses = [o.status for o in outs]
    assert statuses[0] == "grasping"
    release = statuses.index("ok")
    assert all(s == "grasping" for s in statuses[:release])
    assert all(np.array_equal(o.arm, outs[0].arm) for o in outs[:release])  # the arm stayed
    assert not any(o.holding for o in outs[:release])  # a wait, not a safety hold
    assert widths[release] == pytest.approx(0.053)  # the fingers were on the cube first
    assert outs[-1].arm[1] > outs[0].arm[1] + 0.1  # then the arm lifted
    # the gripper command was never held: it closed from the first tick
    assert outs[1].gripper < outs[0].gripper < OPEN


def test_without_the_interlock_the_arm_lifts_while_the_hand_closes():
    outs, widths = gate_run(0.0, ticks=10)
    assert all(o.status in ("ok", "ramping") for o in outs)
    assert outs[5].arm[1] > outs[0].arm[1]  # moving while the fingers were still far from the cube
    assert widths[5] > 0.06

"""Action-chunk sampling, boundary smoothing, stale-frame policy and latency stats."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ver_core.deploy import (
    ActionChunk,
    ChunkSmoother,
    FreshnessGate,
    LatencyStats,
    SmoothingConfig,
    uniform_offsets,
)


def ramp_chunk(stamp: float, start: float, slope: float, horizon: int = 10, rate: float = 10.0):
    off = uniform_offsets(horizon, rate)
    actions = (start + slope * off)[:, None].repeat(2, axis=1)  # (H, 2)
    return ActionChunk(stamp, off, actions)


def test_sample_interpolates_against_observation_time():
    c = ramp_chunk(stamp=100.0, start=0.0, slope=1.0)
    np.testing.assert_allclose(c.sample(100.25), [0.25, 0.25])
    np.testing.assert_allclose(c.sample(99.0), [0.0, 0.0])  # held before start
    np.testing.assert_allclose(c.sample(200.0), [0.9, 0.9])  # held after end
    assert c.sample(np.array([100.0, 100.5])).shape == (2, 2)
    assert c.end_time == pytest.approx(100.9)


def test_chunk_validation():
    with pytest.raises(ValueError, match="strictly increasing"):
        ActionChunk(0.0, np.array([0.0, 0.0]), np.zeros((2, 8)))
    with pytest.raises(ValueError, match="3 actions but 2"):
        ActionChunk(0.0, np.array([0.0, 0.1]), np.zeros((3, 8)))
    assert not ActionChunk(0.0, np.array([0.0]), np.array([[np.nan]])).is_finite()


def test_latest_mode_passes_chunks_through():
    sm = ChunkSmoother(SmoothingConfig(mode="latest", gripper="smooth"))
    sm.add(ramp_chunk(0.0, 0.0, 0.0))
    new = ramp_chunk(0.1, 1.0, 0.0)
    np.testing.assert_array_equal(sm.add(new).actions, new.actions)


def test_ensemble_reduces_boundary_jump():
    sm = ChunkSmoother(SmoothingConfig(mode="ensemble", decay=0.0, gripper="smooth"))
    old = ramp_chunk(0.0, 0.0, 0.0)  # constant 0 over [0, 0.9]
    sm.add(old)
    new = ramp_chunk(0.5, 1.0, 0.0)  # constant 1 over [0.5, 1.4]
    out = sm.add(new)
    # where both cover, equal weights (decay 0) -> 0.5; beyond the old chunk -> 1
    np.testing.assert_allclose(out.actions[:5, 0], 0.5)
    np.testing.assert_allclose(out.actions[5:, 0], 1.0)
    assert out.stamp == new.stamp


def test_ensemble_decay_favors_newer_chunk():
    sm = ChunkSmoother(SmoothingConfig(mode="ensemble", decay=10.0, gripper="smooth"))
    sm.add(ramp_chunk(0.0, 0.0, 0.0))
    out = sm.add(ramp_chunk(0.5, 1.0, 0.0))
    w_old = np.exp(-5.0)
    np.testing.assert_allclose(out.actions[0, 0], 1.0 / (1.0 + w_old))


def test_blend_crossfades_from_previous():
    sm = ChunkSmoother(SmoothingConfig(mode="blend", blend_time_s=0.2, gripper="smooth"))
    sm.add(ramp_chunk(0.0, 0.0, 0.0))
    out = sm.add(ramp_chunk(0.5, 1.0, 0.0), now=0.5)
    # times 0.5, 0.6, 0.7 -> alpha 0, 0.5, 1
    np.testing.assert_allclose(out.actions[:4, 0], [0.0, 0.5, 1.0, 1.0])


def test_smoother_passes_nonfinite_on_without_storing_it():
    sm = ChunkSmoother(SmoothingConfig(mode="ensemble", decay=0.0, gripper="smooth"))
    sm.add(ramp_chunk(0.0, 0.0, 0.0))
    bad = ActionChunk(0.1, uniform_offsets(10, 10.0), np.full((10, 2), np.nan))
    assert not sm.add(bad).is_finite()  # the gate downstream rejects it
    out = sm.add(ramp_chunk(0.2, 1.0, 0.0))
    assert out.is_finite()


def test_smoothing_config_validation():
    with pytest.raises(ValueError, match="smoothing mode"):
        SmoothingConfig(mode="average", gripper="smooth")


def test_freshness_gate_drops_old_out_of_order_and_future():
    g = FreshnessGate(max_age_s=0.1, future_tolerance_s=0.05)
    assert g.check(stamp=1.0, now=1.02) is None
    assert g.check(stamp=0.99, now=1.03) == "out_of_order"
    assert g.check(stamp=1.01, now=1.5) == "too_old"
    assert g.check(stamp=2.0, now=1.5) == "future"
    assert g.check(stamp=1.05, now=1.06) is None
    assert g.accepted == 2 and g.dropped == {"too_old": 1, "out_of_order": 1, "future": 1}


def test_latency_stats_percentiles():
    st = LatencyStats()
    for ms in range(1, 101):
        st.add("encode", ms / 1e3)
    with st.time("policy"):
        pass
    s = st.summary()
    assert s["encode"]["n"] == 100
    assert s["encode"]["p50_ms"] == pytest.approx(50.5)
    assert s["encode"]["p99_ms"] == pytest.approx(99.01)
    assert s["policy"]["n"] == 1
    with pytest.raises(ValueError, match="not finite"):
        st.add("x", float("nan"))


def test_latency_stats_warmup_skips_first_samples():
    st = LatencyStats(warmup=2)
    for v in (1.0, 1.0, 0.001, 0.003):
        st.add("encode", v)
    assert st.summary()["encode"]["n"] == 2 and st.summary()["encode"]["max_ms"] == 3.0


def gripper_chunk(stamp: float, widths) -> ActionChunk:
    widths = np.asarray(widths, float)
    off = uniform_offsets(len(widths), 10.0)
    return ActionChunk(stamp, off, np.stack([np.full(len(widths), 0.3), widths], axis=1))


def test_gripper_is_a_decision_not_an_average():
    """Arm dimensions are smoothed; the width is the newest chunk's (latest) or snapped to
    open/closed (binary), never the mean of an open and a closing chunk."""
    open_, closing = [0.08] * 5, [0.08, 0.05, 0.03, 0.0, 0.0]
    smooth = ChunkSmoother(SmoothingConfig(mode="ensemble", decay=0.0, gripper="smooth"))
    latest = ChunkSmoother(SmoothingConfig(mode="ensemble", decay=0.0, gripper="latest"))
    binary = ChunkSmoother(SmoothingConfig(mode="ensemble", decay=0.0, gripper="binary"))
    for sm in (smooth, latest, binary):
        sm.add(gripper_chunk(0.0, open_))
    s, la, b = (sm.add(gripper_chunk(0.0, closing)) for sm in (smooth, latest, binary))
    np.testing.assert_allclose(s.actions[:, 1], (np.array(open_) + closing) / 2)
    np.testing.assert_allclose(la.actions[:, 1], closing)
    np.testing.assert_allclose(b.actions[:, 1], [0.08, 0.08, 0.0, 0.0, 0.0])
    for out in (s, la, b):  # the arm is smoothed the same way in every mode
        np.testing.assert_allclose(out.actions[:, 0], 0.3)


def _close_after(stamp: float, lead: float, horizon: int = 16) -> ActionChunk:
    """A chunk at 10 Hz that says open until ``lead`` s after its observation, closed after."""
    off = uniform_offsets(horizon, 10.0)
    return gripper_chunk(stamp, np.where(off < lead - 1e-9, 0.08, 0.0))


@settings(max_examples=200, deadline=None)
@given(period=st.floats(0.02, 0.3), lead=st.floats(0.1, 0.5), delay=st.floats(0.0, 0.05))
def test_vote_closes_the_hand_that_every_replan_postpones(period, lead, delay):
    """Invariant: a policy that, observation after observation, predicts the close ``lead`` s
    ahead (it cannot tell how long it has waited) gets the hand closed within 2 x lead (on the
    chunk's 10 Hz grid) + 2 periods of its first such chunk, however fast it replans; the newest chunk's decision
    (binary) never closes it once the loop replans faster than the lead."""
    vote = ChunkSmoother(SmoothingConfig(gripper="vote"))
    binary = ChunkSmoother(SmoothingConfig(gripper="binary"))
    closed_at, binary_closed = None, False
    for k in range(int(2.0 / period)):
        stamp = k * period
        now = stamp + delay  # published, then executed until the next chunk
        chunk = _close_after(stamp, lead)
        v, b = vote.add(chunk, now), binary.add(chunk, now)
        until = now + period
        if closed_at is None and v.sample(until)[-1] == 0.0:
            closed_at = until
        binary_closed |= bool(b.sample(until)[-1] == 0.0)
    grid_lead = np.ceil(lead * 10 - 1e-9) / 10  # the first closed action of the 10 Hz chunk
    assert closed_at is not None and closed_at <= 2 * grid_lead + 2 * period + delay + 1e-9
    if period + delay < lead - 1e-9:
        assert not binary_closed


@settings(max_examples=200, deadline=None)
@given(
    opens=st.integers(2, 20),
    period=st.floats(0.02, 0.2),
    stray=st.integers(0, 15),
)
def test_vote_outvotes_one_stray_close(opens, period, stray):
    """Invariant: one chunk that says "close now" after at least two that say open throughout
    does not close the hand, anywhere in its horizon (the chunks before it outvote it)."""
    vote = ChunkSmoother(SmoothingConfig(gripper="vote"))
    for k in range(opens):
        vote.add(gripper_chunk(k * period, [0.08] * 16), k * period)
    widths = np.full(16, 0.08)
    widths[stray:] = 0.0
    out = vote.add(gripper_chunk(opens * period, widths), opens * period)
    covered = out.times <= (opens - 2) * period + 1.5  # the two newest open chunks cover these
    assert np.all(out.actions[covered, -1] == 0.08)
    binary = ChunkSmoother(SmoothingConfig(gripper="binary"))
    assert np.all(binary.add(gripper_chunk(0.0, widths)).actions[stray:, -1] == 0.0)


def test_vote_with_one_chunk_is_binary():
    widths = [0.08, 0.05, 0.03, 0.0, 0.0]
    vote = ChunkSmoother(SmoothingConfig(gripper="vote")).add(gripper_chunk(0.0, widths))
    binary = ChunkSmoother(SmoothingConfig(gripper="binary")).add(gripper_chunk(0.0, widths))
    np.testing.assert_array_equal(vote.actions, binary.actions)


def test_gripper_mode_validation_and_default():
    assert SmoothingConfig().gripper == "vote"
    with pytest.raises(ValueError, match="gripper must be one of"):
        SmoothingConfig(gripper="half")
    with pytest.raises(ValueError, match="gripper_open"):
        SmoothingConfig(gripper_open=0.0)

"""Command validation and time-based trajectory following (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from ver_core.sim.trajectory import TrajectoryFollower, parse_arm_points, validate_positions

ARM = [f"fr3_joint{i}" for i in range(1, 8)]


def test_parse_reorders_names_and_extracts_gripper():
    names = list(reversed(ARM)) + ["gripper"]
    points = [(0.1, list(range(7, 0, -1)) + [0.05])]
    times, arm, extras = parse_arm_points(names, points, ARM)
    np.testing.assert_array_equal(arm[0], [1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(extras["gripper"], [0.05])
    np.testing.assert_array_equal(times, [0.1])


@pytest.mark.parametrize(
    "names, points, match",
    [
        (["panda_joint1"] + ARM[1:], [(0.0, [0.0] * 7)], "unknown"),
        (ARM[:6], [(0.0, [0.0] * 6)], "missing"),
        (ARM, [(0.0, [0.0] * 6)], "6 values"),
        (ARM, [(0.0, [0.0] * 6 + [float("nan")])], "non-finite"),
        (ARM, [], "no points"),
        (ARM, [(0.2, [0.0] * 7), (0.1, [0.0] * 7)], "non-decreasing"),
        (ARM + ["fr3_joint1"], [(0.0, [0.0] * 8)], "duplicate"),
    ],
)
def test_parse_rejects_bad_trajectories(names, points, match):
    with pytest.raises(ValueError, match=match):
        parse_arm_points(names, points, ARM)


def test_validate_positions():
    with pytest.raises(ValueError, match="expected 7"):
        validate_positions([0.0] * 8, 7)
    with pytest.raises(ValueError, match="non-finite"):
        validate_positions([0.0] * 6 + [float("inf")], 7)


def test_follower_interpolates_chunk_relative_to_stamp():
    f = TrajectoryFollower(np.zeros(2))
    # chunk stamped at t0 = 10.0, received at 10.05: point 0 (due 10.0) is in the past and dropped
    kept = f.set_trajectory(
        10.05, 10.0, np.array([0.0, 0.1, 0.2]), np.array([[9.0, 9.0], [1.0, 2.0], [2.0, 4.0]])
    )
    assert kept == 2
    np.testing.assert_allclose(f.target(10.05), [0, 0])
    np.testing.assert_allclose(f.target(10.075), [0.5, 1.0])
    np.testing.assert_allclose(f.target(10.15), [1.5, 3.0])
    np.testing.assert_allclose(f.target(99.0), [2.0, 4.0])
    # a new chunk replaces the rest of the old one, starting from the current target
    f.set_trajectory(10.15, 10.15, np.array([0.1]), np.array([[0.0, 0.0]]))
    np.testing.assert_allclose(f.target(10.2), [0.75, 1.5])


def test_follower_stale_trajectory_and_forward_command():
    f = TrajectoryFollower(np.zeros(1))
    assert f.set_trajectory(5.0, 1.0, np.array([0.0, 0.5]), np.array([[1.0], [2.0]])) == 0
    np.testing.assert_allclose(f.target(5.0), [2.0])
    f.set_now(np.array([3.0]), 6.0)
    np.testing.assert_allclose(f.target(6.5), [3.0])

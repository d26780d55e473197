"""bench/probe_tracker.py: how it reads recorded tracker updates against the ground truth."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("probe_tracker")


CUBE = np.array([0.5, 0.1])
DISTRACTORS = [np.array([0.45, -0.1]), np.array([0.6, 0.3])]


def _frame(sightings, estimate):
    return {
        "sightings": [
            {"view": v, "on_arm": v == 1, "prob": p, "point": [x, y, 0.045], "range_m": 0.3}
            for v, p, (x, y) in sightings
        ],
        "estimate": None if estimate is None else [*estimate, 0.045],
    }


def test_labels_name_the_nearest_object_within_reach(bench):
    assert bench.label(np.array([0.51, 0.1, 0.0]), CUBE, DISTRACTORS, 0.04) == "cube"
    assert bench.label(np.array([0.46, -0.1, 0.0]), CUBE, DISTRACTORS, 0.04) == "distractor0"
    assert bench.label(np.array([0.7, 0.0, 0.0]), CUBE, DISTRACTORS, 0.04) == "elsewhere"


def test_a_tracker_that_started_on_a_distractor_and_left_it_reads_so(bench):
    frames = [
        _frame([(1, 0.6, (0.45, -0.1))], (0.45, -0.1)),  # the wrist sees the distractor first
        _frame([(0, 0.8, (0.5, 0.1)), (1, 0.3, (0.45, -0.1))], (0.45, -0.1)),
        _frame([], None),  # nothing sighted: not counted as an estimate change
        _frame([(0, 0.9, (0.505, 0.1))], (0.503, 0.1)),
    ]
    got = bench.summarize(frames, CUBE, DISTRACTORS, 0.04)
    assert got["estimate_start"] == "distractor0"
    assert got["estimate_end"] == "cube"
    assert got["switches"] == 1
    assert got["estimate_end_error_m"] == pytest.approx(0.003)
    assert got["probability_mass"]["view1"] == {"distractor": pytest.approx(0.9)}
    assert got["probability_mass"]["view0"] == {"cube": pytest.approx(1.7)}
    assert got["first_update_with"] == {"distractor": 0, "cube": 1}


def test_sightings_are_read_against_where_the_cube_is_at_each_update(bench):
    lifted = _frame([(1, 0.9, (0.58, 0.1))], (0.58, 0.1))
    lifted["cube_xy"] = [0.58, 0.1]  # pushed 8 cm: the detector followed it
    got = bench.summarize([_frame([(0, 0.8, (0.5, 0.1))], (0.5, 0.1)), lifted], CUBE, [], 0.04)
    assert (got["estimate_start"], got["estimate_end"], got["switches"]) == ("cube", "cube", 0)
    assert got["probability_mass"]["view1"] == {"cube": pytest.approx(0.9)}


def test_failures_read_as_identity_near_miss_or_at_the_cube(bench):
    row = {"estimate_end": "distractor1", "closest_m": 0.02}
    assert bench.failure_kind(row) == "identity"  # wherever the hand got
    assert bench.failure_kind({"estimate_end": "elsewhere", "closest_m": 0.2}) == "identity"
    assert bench.failure_kind({"estimate_end": "cube", "closest_m": 0.06}) == "near_miss"
    assert bench.failure_kind({"estimate_end": "cube", "closest_m": 0.026}) == "at_cube"


def test_yaws_read_four_fold(bench):
    assert bench._yaw4(np.array([np.cos(4 * 0.3), np.sin(4 * 0.3)])) == pytest.approx(
        np.degrees(0.3)
    )
    half = np.radians(50) / 2
    quat = np.array([np.cos(half), 0.0, 0.0, np.sin(half)])  # 50 degrees about z
    assert bench._cube_yaw4(quat) == pytest.approx(-40.0)  # = 50 - 90: a cube's faces repeat


@pytest.mark.parametrize("cube_deg", [-40.0, -10.0, 0.0, 25.0, 44.0])
@pytest.mark.parametrize("error_deg", [0.0, 20.0, 40.0, -30.0])
@pytest.mark.parametrize("near_deg", [-170.0, -30.0, 0.0, 60.0, 135.0])
def test_a_forced_yaw_error_is_that_far_off_the_faces_nearest_the_hand(
    bench, cube_deg, error_deg, near_deg
):
    half = np.radians(cube_deg) / 2
    quat = np.array([np.cos(half), 0.0, 0.0, np.sin(half)])  # the cube turned about z
    yaw = bench.off_face_yaw(quat, error_deg, np.radians(near_deg))
    off_face = (np.degrees(yaw) - cube_deg - error_deg + 45) % 90 - 45
    assert off_face == pytest.approx(0.0, abs=1e-9)  # error_deg off a face (mod 90)
    gap = (np.degrees(yaw) - near_deg + 180) % 360 - 180
    assert abs(gap) <= 45 + 1e-9  # of the four, the one nearest the hand's yaw


def test_the_yaw_at_the_close_is_read_at_the_first_closing_frame_modulo_the_faces(bench):
    def frame(width, yaw, cube_yaw):
        return {"width": width, "yaw4_deg": yaw, "cube_yaw4_deg": cube_yaw}

    frames = [frame(0.08, 10.0, 0.0), frame(0.07, 40.0, -20.0), frame(0.05, 0.0, -20.0)]
    assert bench.yaw_error_at_close(frames) == pytest.approx(-30.0)  # 60 off = 30 the other way
    assert bench.yaw_error_at_close(frames[:1]) is None  # the hand never closed
    assert bench.yaw_error_at_close([frame(0.07, None, 5.0)]) is None  # nothing tracked
    rows = [
        {"success": True, "yaw_error_at_close_deg": 5.0},
        {"success": True, "yaw_error_at_close_deg": -20.0},
        {"success": False, "yaw_error_at_close_deg": 40.0},
        {"success": True, "yaw_error_at_close_deg": -35.0},
        {"success": False, "yaw_error_at_close_deg": None},
    ]
    summary = bench.yaw_summary(rows)
    assert summary["episodes"] == 4 and summary["median_abs_deg"] == pytest.approx(27.5)
    assert summary["above_15"] == 3
    assert summary["success_at_most_30"] == [2, 2] and summary["success_above_30"] == [1, 2]

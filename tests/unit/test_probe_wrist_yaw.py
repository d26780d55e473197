"""bench/probe_wrist_yaw.py: how it reads a head's yaw errors against the hand's yaw offset."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("probe_wrist_yaw")


def test_angles_wrap_to_the_cubes_four_fold_symmetry(bench):
    assert bench.wrap4(50.0) == pytest.approx(-40.0)
    assert bench.wrap4(-46.0) == pytest.approx(44.0)
    assert bench.wrap4(44.0) == pytest.approx(44.0)


def _rows(errors_of_delta):
    return [
        {"height_m": 0.2, "delta_deg": d, "view1": errors_of_delta(d), "view0": 3.0 + (d % 7)}
        for d in (-30, -15, 0, 15, 30)
    ]


def test_a_head_that_reports_the_hands_yaw_fits_slope_one(bench):
    got = bench.fit(_rows(lambda d: d + 1.0), "view1", 0.2)
    assert got["slope"] == pytest.approx(1.0)
    assert got["offset_deg"] == pytest.approx(1.0)
    assert got["n"] == 5


def test_a_head_that_reads_the_cube_fits_slope_near_zero(bench):
    got = bench.fit(_rows(lambda d: 2.0), "view1", 0.2)
    assert got["slope"] == pytest.approx(0.0, abs=1e-9)
    assert got["mean_abs_error_deg"] == pytest.approx(2.0)


def test_rows_of_other_heights_or_without_the_view_are_left_out(bench):
    rows = _rows(lambda d: d) + [{"height_m": 0.08, "delta_deg": 0, "view1": 40.0}]
    rows[0].pop("view1")
    got = bench.fit(rows, "view1", 0.2)
    assert got["n"] == 4 and got["slope"] == pytest.approx(1.0)
    assert bench.fit(rows, "view1", 0.33) == {
        "n": 0,
        "slope": None,
        "offset_deg": None,
        "mean_abs_error_deg": None,
    }

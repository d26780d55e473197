"""bench/bench_gripper_modes.py: what a row keeps of a ver-eval report."""

from __future__ import annotations


def test_a_row_keeps_the_rates_and_names_the_failing_seeds(load_bench):
    bench = load_bench("bench_gripper_modes")
    report = {
        "episodes": 3,
        "successes": 2,
        "success_rate": 2 / 3,
        "ci95_low": 0.21,
        "ci95_high": 0.94,
        "per_episode": [
            {"seed": 7, "success": True},
            {"seed": 8, "success": False},
            {"seed": 9, "success": True},
        ],
        "latency_ms": {},
    }
    row = bench.summary(report)
    assert row == {
        "episodes": 3,
        "successes": 2,
        "success_rate": 2 / 3,
        "ci95_low": 0.21,
        "ci95_high": 0.94,
        "failed_seeds": [8],
    }

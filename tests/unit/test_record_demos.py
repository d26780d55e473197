"""ver-record-demos' episode protocol (``record_episode``) against a scripted stand-in graph.

The real graph runs in tests/ros/test_sim_recorder.py and the small make demo (tests/e2e); here the
services answer from a script, so the verdict rules are checked case by case: success needs the
cube lifted when first seen AND still held after the hold, and the recorder is finished with that
verdict (not left to the last /sim/episode message it happened to process).
"""

from __future__ import annotations

import json

import pytest

from ver_ros.record_demos import parse_args, record_episode


class ScriptedGraph:
    """Answers ``call`` from per-service scripts; records every call (key, data)."""

    def __init__(self, success_answers: list[bool]) -> None:
        self.success_answers = list(success_answers)
        self.calls: list[tuple[str, bool | None]] = []

    def call(self, key: str, timeout: float = 15.0, data: bool | None = None):
        self.calls.append((key, data))
        if key == "reset":
            return True, "seed=7"
        if key == "success":
            return (self.success_answers.pop(0) if self.success_answers else False), "cube_z=0"
        if key == "rec_start":
            return True, "/tmp/episode_000000"
        if key in ("rec_finish", "rec_stop"):
            return True, json.dumps({"path": "/tmp/episode_000000", "success": data})
        return True, ""

    def sleep(self, seconds: float) -> None:
        pass


@pytest.mark.parametrize(
    ("answers", "success", "dropped"),
    [
        ([False, False, True, True], True, False),  # lifted, still held after the hold
        ([False, True, False], False, True),  # lifted, then dropped during the hold
        ([], False, False),  # never lifted before the timeout
    ],
)
def test_verdict_is_checked_after_the_hold_and_handed_to_the_recorder(answers, success, dropped):
    graph = ScriptedGraph(answers)
    result = record_episode(
        graph, timeout=0.05 if not answers else 60.0, hold=0.5, discard_failed=False
    )
    assert result["success"] is success and result["seed"] == "7"
    assert result.get("dropped_in_hold", False) is dropped
    finishes = [d for k, d in graph.calls if k == "rec_finish"]
    assert finishes == [success]  # exactly one finish, carrying the verdict
    assert ("rec_stop", None) not in graph.calls
    # the expert stops before the recorder is finished
    keys = [k for k, _ in graph.calls]
    assert keys.index("expert_stop") < keys.index("rec_finish")


def test_failed_episode_discarded_when_asked():
    graph = ScriptedGraph([True, False])  # dropped during the hold
    result = record_episode(graph, timeout=60.0, hold=0.5, discard_failed=True)
    assert result == {"seed": "7", "success": False, "path": None, "dropped_in_hold": True}
    keys = [k for k, _ in graph.calls]
    assert "rec_discard" in keys and "rec_finish" not in keys


@pytest.mark.parametrize(
    ("flag", "attr", "good", "default", "bad", "message"),
    [
        (
            "--min-distractors",
            "min_distractors",
            "3",
            0,
            "4",
            "--min-distractors must be in [0, 3]",
        ),
        ("--detour", "detour", "0.3", 0.0, "1.5", "--detour must be in [0, 1]"),
        ("--miss", "miss", "0.3", 0.0, "-0.1", "--miss must be in [0, 1]"),
        ("--settle", "settle", "1.0", 0.0, "-1", "--settle must be in [0, 5] s"),
    ],
)
def test_scene_flags_are_checked_before_any_process_starts(
    capsys, flag, attr, good, default, bad, message
):
    base = ["--episodes", "2", "--out", "unused"]
    assert getattr(parse_args(base + [flag, good]), attr) == float(good)
    assert getattr(parse_args(base), attr) == default
    with pytest.raises(SystemExit):
        parse_args(base + [flag, bad])
    assert message in capsys.readouterr().err


def test_worker_blocks_cover_the_episodes_once_in_order():
    from hypothesis import given
    from hypothesis import strategies as st

    from ver_ros.record_demos import worker_blocks

    @given(st.integers(1, 500), st.integers(1, 16))
    def check(episodes, workers):
        blocks = worker_blocks(episodes, workers)
        assert len(blocks) == min(episodes, workers)
        covered = [first + i for first, count in blocks for i in range(count)]
        assert covered == list(range(episodes))  # every episode once, blocks in seed order
        counts = [count for _, count in blocks]
        assert max(counts) - min(counts) <= 1 and min(counts) >= 1

    check()
    with pytest.raises(ValueError):
        worker_blocks(0, 2)


def test_next_episode_dir_appends_or_fills_its_block(tmp_path):
    from ver_ros.recorder_node import next_episode_dir

    assert next_episode_dir(tmp_path).name == "episode_000000"
    for i in (0, 1, 4):
        (tmp_path / f"episode_{i:06d}").mkdir()
    (tmp_path / "episode_x").mkdir()  # not an episode directory
    assert next_episode_dir(tmp_path).name == "episode_000005"  # after the highest
    assert next_episode_dir(tmp_path, 0).name == "episode_000002"  # lowest free in the block
    assert next_episode_dir(tmp_path, 4).name == "episode_000005"
    assert next_episode_dir(tmp_path, 9).name == "episode_000009"


def test_workers_option():
    base = ["--episodes", "3", "--out", "/tmp/x"]
    assert parse_args(base).workers == 1
    assert parse_args([*base, "--workers", "8"]).workers == 3  # never more workers than episodes
    assert 1 <= parse_args([*base, "--workers", "0"]).workers <= 3  # one per core
    with pytest.raises(SystemExit):
        parse_args([*base, "--workers", "-1"])

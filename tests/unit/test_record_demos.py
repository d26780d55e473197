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

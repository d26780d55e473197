"""ver-eval in-process in the real simulator: the scripted expert succeeds, holding still does not,
and the CLI writes its results, strip, GIF and plot."""

from __future__ import annotations

import json

import pytest

from ver_core.cli.eval import main

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("controller", "success"), [("expert", True), ("hold", False)])
def test_ver_eval_reference_controllers(tmp_path, capsys, controller, success):
    out = tmp_path / controller
    rc = main(
        ["--controller", controller, "--episodes", "1", "--max-steps", "50", "--out", str(out)]
    )
    assert rc == 0
    report = json.loads((out / "results.json").read_text())
    assert report["successes"] == int(success) and report["episodes"] == 1
    ep = report["per_episode"][0]
    if success:
        assert ep["min_distance_m"] < 0.05 and ep["max_lift_m"] > 0.09 and ep["steps"] < 50
    else:
        assert ep["min_distance_m"] == pytest.approx(ep["start_distance_m"], abs=0.01)
    for name in ("rollout_strip.png", "rollout.gif", "distance.png"):
        assert (out / name).stat().st_size > 1000
    text = capsys.readouterr().out
    assert f"success: {int(success)}/1" in text and "latency" in text

"""bench/probe_identity.py: its cube-vs-distractor scores on features whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("probe_identity")


def _scenes(n: int = 60, p: int = 16, seed: int = 0):
    """n views of p patches: one cube patch and two distractor patches each, the rest empty."""
    rng = np.random.default_rng(seed)
    cube, distractor = np.zeros((n, p)), np.zeros((n, p))
    for i in range(n):
        c, d1, d2 = rng.choice(p, 3, replace=False)
        cube[i, c], distractor[i, [d1, d2]] = 1.0, 0.6
    return cube, distractor, rng


def test_features_that_carry_the_class_score_perfectly(bench):
    cube, distractor, rng = _scenes()
    feats = rng.normal(size=(*cube.shape, 8))
    feats[..., 0] += 4.0 * (cube > 0) - 4.0 * (distractor > 0)  # one direction tells them apart
    out = bench.identity_scores(feats.astype(np.float32), cube, distractor, n_fit=40)
    assert out["balanced_accuracy"] >= 0.95 and out["identity_hit"] >= 0.95
    assert out["views_with_both"] == 20 and out["test_cube_patches"] == 20
    assert out["test_distractor_patches"] == 40 and out["fit_cube_share"] == pytest.approx(
        1 / 3, abs=1e-3
    )


def test_features_blind_to_the_class_score_near_chance(bench):
    cube, distractor, rng = _scenes(n=300)
    feats = rng.normal(size=(*cube.shape, 8)).astype(np.float32)  # no class signal at all
    out = bench.identity_scores(feats, cube, distractor, n_fit=200)
    assert 0.35 < out["balanced_accuracy"] < 0.65
    assert out["identity_hit"] < 0.6  # chance is 1 in 3


def test_a_closer_scene_camera_shows_the_objects_larger(bench):
    """--camera-pos / --camera-target really move the rendered camera: the same scene seen from
    closer covers more of the patch grid with the cube and distractors."""
    seeds = [200000, 200001]
    far = bench.render_home_scenes(seeds, ["camera"], 14)
    near = bench.render_home_scenes(seeds, ["camera"], 14, ((1.1, 0, 0.75), (0.45, 0, 0.1)))
    assert far["views"].shape == near["views"].shape == (2, 1, 224, 224, 3)
    for key in ("cube", "distractor"):
        assert near[key].sum() > 1.5 * far[key].sum() > 0

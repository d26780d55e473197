"""bench/probe_expert_diversity.py: its measures on libraries whose answer is known."""

from __future__ import annotations

import pytest
import torch

from ver_core.model.config import VERConfig
from ver_core.model.vit import VisionExpertTransformer


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("probe_expert_diversity")


def _model(seed: int) -> VisionExpertTransformer:
    torch.manual_seed(seed)
    config = VERConfig(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, moe_blocks=2)
    return VisionExpertTransformer(config).eval()


def test_identical_experts_agree_and_routing_cannot_change_the_tokens(bench):
    model = _model(0)
    with torch.no_grad():
        for block in model.moe_blocks:
            for name in ("w1", "b1", "w2", "b2"):
                p = getattr(block.mlp, name)
                p.copy_(p[:1].expand_as(p))  # every expert a copy of expert 0
    x = torch.randn(3, 3, 32, 32)
    cube = torch.zeros(3, 17, dtype=torch.bool)
    cube[:, 5] = True
    out = bench.probe(model, x, cube)
    for block in out["expert_blocks"]:
        for sel in ("all_patches", "cube_patches"):
            assert block[sel]["pairwise_cosine"] == pytest.approx(1.0, abs=1e-3)
            assert block[sel]["spread_over_mean"] == pytest.approx(0.0, abs=1e-3)
            assert block[sel]["update_over_residual"] > 0
    for e in out["final_tokens_single_vs_average"]:
        assert e["relative_distance_all"] == pytest.approx(0.0, abs=1e-4)
        assert e["cosine_cube"] == pytest.approx(1.0, abs=1e-4)


def test_distinct_experts_are_measured_apart(bench):
    model = _model(1)
    with torch.no_grad():
        for block in model.moe_blocks:
            block.mlp.w2.mul_(50.0)  # large, independent expert updates
    x = torch.randn(3, 3, 32, 32)
    out = bench.probe(model, x, torch.ones(3, 17, dtype=torch.bool))
    assert all(b["all_patches"]["pairwise_cosine"] < 0.5 for b in out["expert_blocks"])
    assert all(b["all_patches"]["spread_over_mean"] > 1.0 for b in out["expert_blocks"])
    assert all(e["relative_distance_all"] > 0.1 for e in out["final_tokens_single_vs_average"])


def test_patch_mask_marks_patches_a_quarter_covered(bench):
    import numpy as np

    masks = np.zeros((1, 16, 16), dtype=bool)
    masks[0, :2, :8] = True  # a quarter of patch (0, 0) of 8x8 pixels -> marked
    masks[0, 8, 8] = True  # one pixel of patch (1, 1) -> not marked
    tokens = bench.patch_mask(masks, 8)
    assert tokens.shape == (1, 5) and tokens.tolist() == [[False, True, False, False, False]]

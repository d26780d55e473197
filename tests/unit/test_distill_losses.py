"""Pure pieces of distillation: losses, translators, schedule, sampling, dense-map features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ver_core.distill.dense_teachers import depth_features, segmentation_features
from ver_core.distill.losses import distillation_objective, feature_loss, mutual_information_loss
from ver_core.distill.trainer import DistillConfig, batch_indices, warmup_constant
from ver_core.distill.translators import FeatureTranslator, build_translators


def test_feature_loss_zero_at_target_and_cosine_is_per_image() -> None:
    target = torch.randn(3, 16, 8)
    assert feature_loss(target.clone(), target).item() == pytest.approx(0.0, abs=1e-6)
    # scaling one image's prediction leaves its cosine unchanged: only smooth-L1 moves
    scaled = target.clone()
    scaled[0] *= 3.0
    cos_only = feature_loss(scaled, target, cosine_weight=1.0, l1_weight=0.0)
    assert cos_only.item() == pytest.approx(0.0, abs=1e-6)
    assert feature_loss(scaled, target).item() > 0.01
    with pytest.raises(ValueError, match="differ"):
        feature_loss(torch.zeros(1, 4, 2), torch.zeros(1, 4, 3))


def test_feature_loss_weights_combine() -> None:
    pred, target = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    cos = 1 - torch.nn.functional.cosine_similarity(pred.flatten(1), target.flatten(1)).mean()
    l1 = torch.nn.functional.smooth_l1_loss(pred, target)
    assert feature_loss(pred, target).item() == pytest.approx(
        (0.9 * cos + 0.1 * l1).item(), rel=1e-5
    )


def _onehot_probs(expert: int, e: int = 6) -> torch.Tensor:
    p = torch.zeros(2, 5, e)
    p[..., expert] = 1.0
    return p


def test_mutual_information_loss_extremes() -> None:
    uniform = torch.full((2, 5, 6), 1 / 6)
    # identical routers: the teacher says nothing about the expert -> I = 0
    assert mutual_information_loss([uniform, uniform]).item() == pytest.approx(0.0, abs=1e-6)
    assert mutual_information_loss([_onehot_probs(1), _onehot_probs(1)]).item() == pytest.approx(
        0.0, abs=1e-6
    )
    # each teacher on its own expert: I = H(E) = log(2) for two teachers
    specialized = mutual_information_loss([_onehot_probs(0), _onehot_probs(3)])
    assert specialized.item() == pytest.approx(-math.log(2), rel=1e-5)
    # three teachers, three experts: -log 3, the most negative value possible
    three = mutual_information_loss([_onehot_probs(i) for i in range(3)])
    assert three.item() == pytest.approx(-math.log(3), rel=1e-5)


def test_mutual_information_loss_has_gradient_towards_specialization() -> None:
    logits = torch.zeros(2, 2, 4, 6, requires_grad=True)  # teachers, B, N, E
    loss = mutual_information_loss([logits[0].softmax(-1), logits[1].softmax(-1)])
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # a symmetric start is a stationary point; a small asymmetry is amplified by descent
    logits2 = torch.zeros(2, 1, 1, 6)
    logits2[0, ..., 0] = 0.1
    logits2[1, ..., 1] = 0.1
    logits2.requires_grad_(True)
    for _ in range(200):
        loss = mutual_information_loss([logits2[0].softmax(-1), logits2[1].softmax(-1)])
        (g,) = torch.autograd.grad(loss, logits2)
        logits2 = (logits2 - 5.0 * g).detach().requires_grad_(True)
    p = logits2.detach().softmax(-1)
    assert p[0, 0, 0, 0] > 0.5 and p[1, 0, 0, 1] > 0.5


def test_distillation_objective_combines_teachers_and_mi() -> None:
    preds = {"a": torch.randn(2, 4, 3), "b": torch.randn(2, 9, 5)}
    targets = {"a": torch.randn(2, 4, 3), "b": torch.randn(2, 9, 5)}
    probs = [[_onehot_probs(0), _onehot_probs(1)], [_onehot_probs(2), _onehot_probs(2)]]
    out = distillation_objective(preds, targets, probs, mi_weight=0.5)
    mean = (out["teacher/a"] + out["teacher/b"]) / 2
    assert out["distill"].item() == pytest.approx(mean.item(), rel=1e-6)
    assert out["mi"].item() == pytest.approx(
        -math.log(2), rel=1e-5
    )  # layer 1 specialized, layer 2 not
    assert out["loss"].item() == pytest.approx(mean.item() - 0.5 * math.log(2), rel=1e-5)


@pytest.mark.parametrize("grid", [(16, 16), (7, 7), (14, 14)])
def test_translator_reaches_teacher_grid(grid: tuple[int, int]) -> None:
    tr = FeatureTranslator(dim=24, in_grid=14, out_channels=10, out_grid=grid)
    x = torch.randn(2, 196, 24, requires_grad=True)
    y = tr(x)
    assert y.shape == (2, grid[0] * grid[1], 10)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="196 patch tokens"):
        tr(torch.randn(1, 100, 24))


def test_build_translators_keyed_by_teacher() -> None:
    d = build_translators(
        16,
        14,
        [
            {"key": "a", "channels": 3, "grid": [16, 16]},
            {"key": "b", "channels": 7, "grid": [7, 7]},
        ],
    )
    assert set(d.keys()) == {"a", "b"}
    assert d["b"](torch.randn(1, 196, 16)).shape == (1, 49, 7)


def test_warmup_then_constant() -> None:
    factors = [warmup_constant(s, 100, 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0 and factors[-1] == 1.0
    assert all(b >= a for a, b in zip(factors[:-1], factors[1:], strict=True))
    assert warmup_constant(0, 5, 0.0) == 1.0


def test_batches_are_world_size_independent_and_cover_epochs() -> None:
    n, b = 10, 4
    seen = [i for s in range(5) for i in batch_indices(s, n, b, seed=3)]  # 20 = two epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert batch_indices(2, n, b, 3) == batch_indices(2, n, b, 3)
    assert batch_indices(0, n, b, 3) != batch_indices(0, n, b, 4)


def test_distill_config_validates() -> None:
    with pytest.raises(ValueError, match="steps"):
        DistillConfig(shards="s", out="o", steps=0)
    with pytest.raises(ValueError, match="warmup_frac"):
        DistillConfig(shards="s", out="o", warmup_frac=1.5)
    assert DistillConfig(shards="s", out="o", batch_size=256).learning_rate == pytest.approx(1e-3)


def test_depth_features_channels() -> None:
    depth = np.tile(np.linspace(1.0, 3.0, 64, dtype=np.float32), (32, 1))  # grows left -> right
    depth[:, :8] = 0.0  # invalid strip
    f = depth_features(depth, grid=16)
    assert f.shape == (4, 16, 16)
    assert torch.all(f[3, :, :2] == 0) and torch.all(f[3, :, 3:] == 1)  # valid fraction
    assert torch.all(f[1, :, 4:-1] > 0)  # positive horizontal log-depth gradient
    assert torch.allclose(f[2], torch.zeros(16, 16), atol=1e-6)  # constant along y
    assert torch.isfinite(f).all()


def test_segmentation_features_are_class_fractions() -> None:
    seg = np.zeros((32, 32), dtype=np.int32)
    seg[:16, :16] = 2
    seg[16:, 16:] = 99  # beyond the class count: shares the last channel
    seg[0, 31] = -1  # negative: background
    f = segmentation_features(seg, num_classes=4, grid=2)
    assert f.shape == (4, 2, 2)
    assert torch.allclose(f.sum(0), torch.ones(2, 2))
    assert f[2, 0, 0] == 1.0 and f[3, 1, 1] == 1.0 and f[0, 0, 1] == 1.0

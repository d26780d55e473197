"""Robot Router: CTA schedule, routing shapes per mode, router-only gradients, parameter budget."""

from __future__ import annotations

import collections

import pytest
import torch

from ver_core.model import build_model
from ver_core.policy import TaskConfig, TaskPolicy
from ver_core.router import (
    ROUTING_MODES,
    ExtendedExpertLayer,
    RobotRouter,
    RouterConfig,
    annealed_top_k,
)

TINY = {"depth": 3, "moe_blocks": 2, "img_size": 64}


def test_cta_schedule_equal_stages():
    total = 1000
    ks = [annealed_top_k(s, total, num_experts=6, k_min=2) for s in range(total + 200)]
    assert ks[0] == 6 and ks[total] == 2 and ks[-1] == 2
    assert all(a >= b for a, b in zip(ks, ks[1:], strict=False))  # never goes back up
    counts = collections.Counter(ks[:total])
    assert sorted(counts) == [2, 3, 4, 5, 6]
    assert all(abs(counts[k] - total / 5) <= 1 for k in counts), counts  # equal stages of S/5
    # the formula K(s) = max(K_min, floor(L + 1 - (L + 1 - K_min) s / S)) at stage midpoints
    assert [annealed_top_k(s, total, 6, 2) for s in (100, 300, 500, 700, 900)] == [6, 5, 4, 3, 2]


def test_cta_edges():
    assert annealed_top_k(5, 0, 6, 2) == 2  # no annealing
    assert annealed_top_k(0, 10, 7, 2) == 7
    with pytest.raises(ValueError, match="k_min"):
        annealed_top_k(0, 10, 6, 7)


@pytest.mark.parametrize("mode", ROUTING_MODES)
def test_routing_modes_shapes(mode):
    model = build_model("ver_tiny", **TINY)
    router = RobotRouter(model.config, RouterConfig(routing=mode, fixed_expert=3))
    tokens = model.forward_bvt(torch.randn(2, 3, 64, 64))  # (2, 17, 192)
    out = router(model, tokens, step=None)
    assert out.tokens.shape == (2, 17, 192)
    k = {"single": 1, "average": 6, "dense": 6}.get(mode, 2)
    for info in out.routing:
        assert info.index.shape == (2, 17, k)
        assert info.probs.shape == (2, 17, 6)
    if mode == "patchwise":  # patchwise: tokens of one image pick different experts
        assert len({tuple(i) for i in out.routing[0].index[0].tolist()}) > 1
    if mode == "frame":  # frame-level: every token of an image has the same experts
        idx = out.routing[0].index
        assert torch.equal(idx, idx[:, :1].expand_as(idx))
    if mode == "single":
        assert (out.routing[0].index == 3).all()
    if mode in ("average", "dense"):
        assert torch.allclose(out.routing[0].probs, torch.full_like(out.routing[0].probs, 1 / 6))


def test_average_and_dense_agree():
    model = build_model("ver_tiny", **TINY)
    tokens = model.forward_bvt(torch.randn(2, 3, 64, 64))
    a = RobotRouter(model.config, RouterConfig(routing="average"))(model, tokens)
    d = RobotRouter(model.config, RouterConfig(routing="dense"))(model, tokens)
    assert torch.allclose(a.tokens, d.tokens, atol=1e-5)


def test_annealed_k_during_training_steps():
    model = build_model("ver_tiny", **TINY)
    router = RobotRouter(model.config, RouterConfig(anneal_steps=50))
    tokens = model.forward_bvt(torch.randn(1, 3, 64, 64))
    assert router(model, tokens, step=0).routing[0].index.shape[-1] == 6
    assert router(model, tokens, step=25).routing[0].index.shape[-1] == 4
    assert router(model, tokens, step=None).routing[0].index.shape[-1] == 2
    assert RobotRouter(model.config, RouterConfig(anneal=False)).top_k(0) == 2


def test_new_experts_extend_router_width():
    model = build_model("ver_tiny", **TINY)
    router = RobotRouter(model.config, RouterConfig(new_experts=1, anneal_steps=10))
    assert router.num_experts == 7
    tokens = model.forward_bvt(torch.randn(2, 3, 64, 64))
    out = router(model, tokens, step=0)
    assert out.routing[0].probs.shape == (2, 17, 7) and out.routing[0].index.shape == (2, 17, 7)
    with pytest.raises(ValueError, match="trainable router"):
        RouterConfig(routing="single", new_experts=1)


def test_extended_layer_matches_library_for_library_experts():
    """Tokens routed only to library experts get exactly the library layer's output."""
    torch.manual_seed(0)
    model = build_model("ver_tiny", **TINY)
    base = model.moe_blocks[0].mlp
    layer = ExtendedExpertLayer(192, base.hidden, 2)
    x = torch.randn(2, 17, 192)
    logits = torch.randn(2, 17, 8)
    logits[..., 6:] = -1e4  # new experts never in the top-k
    y_ext, info = layer(base, x, logits, k=2)
    y_lib, _ = base(x, logits[..., :6], 2)
    assert torch.allclose(y_ext, y_lib, atol=1e-5)
    assert info.index.max() < 6
    logits[..., 7] = 1e4  # now every token uses new expert 7 (+ one library expert)
    y_new, info = layer(base, x, logits, k=2)
    assert (info.index[..., 0] == 7).all() and not torch.allclose(y_new, y_lib)


def test_router_only_gradients_library_unchanged():
    torch.manual_seed(0)
    cfg = TaskConfig(
        model_overrides=TINY,
        neck_dim=32,
        hidden_dim=64,
        chunk_len=2,
        router=RouterConfig(new_experts=1, anneal_steps=4),
    )
    policy = TaskPolicy.build(cfg)
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    router_before = {k: v.clone() for k, v in policy.router.state_dict().items()}
    images = torch.randn(4, 3, 64, 64)
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-2)
    for step in range(6):
        loss = policy.loss(
            policy.model.forward_bvt(images), torch.randn(4, 8), torch.randn(4, 2, 8), step=step
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(not p.requires_grad for p in policy.model.parameters())
    for k, v in policy.model.state_dict().items():  # backbone, experts, library routers
        assert torch.equal(v, before[k]), k
    changed = [
        k for k, v in policy.router.state_dict().items() if not torch.equal(v, router_before[k])
    ]
    assert any("layers" in k for k in changed) and any("new_experts" in k for k in changed)


def test_router_parameter_budget_real_shape():
    policy = TaskPolicy.build(TaskConfig())  # ver_tiny, 224, 12 blocks, 3 MoE layers
    summary = policy.parameter_summary()
    assert summary["robot_router"] == 3 * 192 * 6
    assert summary["router_percent_of_model"] < 0.4

"""The Robot Router: a new per-layer router over the frozen expert library (+ optional new experts).

Shapes: B batch, N = 1 + P tokens (P = 196 patches), D width, E frozen experts, M new experts,
K active experts per token.

Routing modes (the paper's ablations, first-class options):
  - ``patchwise``: a trainable linear router per MoE layer routes every token (the Robot Router).
  - ``frame``: a trainable router per layer routes the whole image (mean token) to one expert set.
  - ``single``: every token uses one fixed expert (``fixed_expert``); nothing to train.
  - ``average``: static average of all experts (uniform weights, K = all experts); nothing to train.
  - ``dense``: no MoE at all (Theia-style). Over a dense distilled student (``moe_blocks=0``, from
    ``ver-distill --model-override moe_blocks=0``) there is nothing to route: the features are the
    student's own. Over an expert library, every library layer runs as one dense MLP whose output
    is the uniform mean over all experts, through the library's dense (static-graph) path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ver_core.model import (
    ExpertLibraryLayer,
    LibraryOutput,
    RouterSpec,
    RoutingInfo,
    VisionExpertTransformer,
    top_k_gating,
)
from ver_core.model.experts import Router
from ver_core.router.schedule import annealed_top_k

ROUTING_MODES = ("patchwise", "frame", "single", "average", "dense")


@dataclass
class RouterConfig:
    """How the Robot Router is set up and annealed."""

    routing: str = "patchwise"
    k_min: int = 2
    anneal: bool = True
    anneal_steps: int = 1000
    new_experts: int = 0
    fixed_expert: int = 0  # for routing="single"

    def __post_init__(self) -> None:
        if self.routing not in ROUTING_MODES:
            raise ValueError(f"unknown routing {self.routing!r}: use one of {ROUTING_MODES}")
        if self.k_min < 1:
            raise ValueError(f"k_min must be >= 1, got {self.k_min}")
        if self.anneal_steps < 0:
            raise ValueError(f"anneal_steps must be >= 0, got {self.anneal_steps}")
        if self.new_experts < 0:
            raise ValueError(f"new_experts must be >= 0, got {self.new_experts}")
        if self.new_experts and self.routing not in ("patchwise", "frame"):
            raise ValueError(
                f"new experts need a trainable router; routing={self.routing!r} has none"
            )

    @property
    def trainable_router(self) -> bool:
        return self.routing in ("patchwise", "frame")

    def as_dict(self) -> dict:
        return asdict(self)


class ExtendedExpertLayer(nn.Module):
    """M new trainable experts that sit beside a frozen ExpertLibraryLayer of E experts.

    ``forward(base, x, logits, k)`` routes tokens over E + M experts: ids < E run the frozen
    library expert, ids >= E run a new one (the two weight sets are concatenated at forward time).
    """

    def __init__(self, dim: int, hidden: int, num_new: int) -> None:
        super().__init__()
        self.new = ExpertLibraryLayer(dim, hidden, num_new)

    def forward(
        self, base: ExpertLibraryLayer, x: Tensor, logits: Tensor, k: int
    ) -> tuple[Tensor, RoutingInfo]:
        b, n, d = x.shape
        e_total = base.num_experts + self.new.num_experts
        logits = logits.expand(b, n, e_total)
        probs, weights, index = top_k_gating(logits, k)  # (B,N,E+M), (B,N,K), (B,N,K)
        w1 = torch.cat([base.w1, self.new.w1])  # (E+M, D, H)
        b1 = torch.cat([base.b1, self.new.b1])
        w2 = torch.cat([base.w2, self.new.w2])  # (E+M, H, D)
        b2 = torch.cat([base.b2, self.new.b2])
        flat = x.reshape(b * n, d)  # (T, D)
        flat_index = index.reshape(-1)  # (T*K,)
        flat_weight = weights.reshape(-1, 1)
        token_of = torch.arange(b * n, device=x.device).repeat_interleave(k)
        out = torch.zeros_like(flat)
        for e in flat_index.unique().tolist():
            sel = (flat_index == e).nonzero().squeeze(1)
            tokens = token_of[sel]
            y = F.gelu(flat[tokens] @ w1[e] + b1[e]) @ w2[e] + b2[e]
            out = out.index_add(0, tokens, y * flat_weight[sel])
        return out.reshape(b, n, d), RoutingInfo(logits=logits, probs=probs, index=index)


class RobotRouter(nn.Module):
    """Per-layer routers (+ new experts) over a frozen VER library, in one of the routing modes.

    The routers live here, not in ``model.routers``, so the policy owns exactly what it trains and
    the library checkpoint stays untouched; they are passed to ``model.forward_library`` as modules.
    """

    def __init__(self, model_config, config: RouterConfig) -> None:
        super().__init__()
        self.config = config
        c = model_config
        self.num_library_experts = c.num_experts
        self.num_experts = c.num_experts + config.new_experts
        if c.moe_blocks == 0 and config.routing != "dense":
            raise ValueError(
                f"routing {config.routing!r} needs expert library blocks, and this model has none "
                "(moe_blocks=0: a dense distilled student); train it with routing 'dense'"
            )
        if config.routing != "dense" and config.k_min > self.num_experts:
            raise ValueError(f"k_min {config.k_min} > number of experts {self.num_experts}")
        if config.routing == "single" and not 0 <= config.fixed_expert < c.num_experts:
            raise ValueError(f"fixed_expert {config.fixed_expert} not in [0, {c.num_experts})")
        self.spec = self._spec()
        self.layers = nn.ModuleList(
            Router(c.embed_dim, self.num_experts, self.spec) for _ in range(c.moe_blocks)
        )
        self.new_experts = nn.ModuleList(
            ExtendedExpertLayer(c.embed_dim, c.expert_hidden, config.new_experts)
            for _ in range(c.moe_blocks if config.new_experts else 0)
        )

    def _spec(self) -> RouterSpec:
        mode = self.config.routing
        if mode == "patchwise":
            return RouterSpec("linear")
        if mode == "frame":
            return RouterSpec("frame")
        if mode == "single":
            return RouterSpec("fixed", fixed_expert=self.config.fixed_expert)
        return RouterSpec("fixed", fixed_expert=-1)  # average, dense

    def top_k(self, step: int | None = None) -> int:
        """K used at training ``step`` (None: the deployed K after annealing)."""
        cfg = self.config
        if cfg.routing in ("average", "dense"):
            return self.num_experts
        if cfg.routing == "single":
            return 1
        if step is None or not cfg.anneal:
            return cfg.k_min
        return annealed_top_k(step, cfg.anneal_steps, self.num_experts, cfg.k_min)

    def forward(
        self, model: VisionExpertTransformer, tokens: Tensor, step: int | None = None
    ) -> LibraryOutput:
        """BVT tokens (B, N, D) -> routed, normed tokens (B, N, D) + routing per MoE layer."""
        k = self.top_k(step)
        if not self.new_experts:
            dense = self.config.routing == "dense"
            return model.forward_library(tokens, router=self.layers, top_k=k, dense=dense)
        routing = []
        for block, router, extra in zip(
            model.moe_blocks, self.layers, self.new_experts, strict=True
        ):
            # the same steps as Block.forward_routed, with E + M experts
            tokens = tokens + block.attn(block.norm1(tokens))
            h = block.norm2(tokens)
            y, info = extra(block.mlp, h, router(h), k)
            tokens = tokens + y
            routing.append(info)
        return LibraryOutput(tokens=model.norm(tokens), routing=routing)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def router_parameter_count(self) -> int:
        return sum(p.numel() for p in self.layers.parameters())


class ViewRouter(nn.Module):
    """Routes every camera view of an observation through the frozen library.

    ``per_camera=False``: one Robot Router shared by all views, which run as one batch (B*V).
    ``per_camera=True``: a Robot Router per camera (the views still share the frozen library).
    Shapes: B batch, V views, N = 1 + P tokens, D width, K experts per token.
    """

    def __init__(
        self, model_config, config: RouterConfig, num_views: int = 1, per_camera: bool = False
    ) -> None:
        super().__init__()
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.config = config
        self.num_views = num_views
        self.per_camera = bool(per_camera and num_views > 1)
        self.routers = nn.ModuleList(
            RobotRouter(model_config, config) for _ in range(num_views if self.per_camera else 1)
        )

    @property
    def num_experts(self) -> int:
        return self.routers[0].num_experts

    @property
    def new_experts(self) -> nn.ModuleList:
        """The new experts of the first router (empty when there are none): tells exporters
        whether the routing has a static-graph form."""
        return self.routers[0].new_experts

    def top_k(self, step: int | None = None) -> int:
        return self.routers[0].top_k(step)

    def router_for(self, view: int) -> RobotRouter:
        return self.routers[view if self.per_camera else 0]

    def forward(
        self, model: VisionExpertTransformer, tokens: Tensor, step: int | None = None
    ) -> LibraryOutput:
        """BVT tokens (B, V, N, D) -> routed tokens (B, V, N, D); routing per MoE layer with
        logits/probs/index of shape (B, V, ...)."""
        if tokens.ndim != 4 or tokens.shape[1] != self.num_views:
            raise ValueError(
                f"expected BVT tokens (B, {self.num_views}, N, D), got {tuple(tokens.shape)}"
            )
        b, v = tokens.shape[:2]
        if not self.per_camera:
            out = self.routers[0](model, tokens.flatten(0, 1), step)  # (B*V, N, D)
            routing = [
                RoutingInfo(
                    logits=r.logits.unflatten(0, (b, v)),
                    probs=r.probs.unflatten(0, (b, v)),
                    index=r.index.unflatten(0, (b, v)),
                )
                for r in out.routing
            ]
            return LibraryOutput(tokens=out.tokens.unflatten(0, (b, v)), routing=routing)
        outs = [self.routers[i](model, tokens[:, i], step) for i in range(v)]
        routing = [
            RoutingInfo(
                logits=torch.stack([o.routing[layer].logits for o in outs], dim=1),
                probs=torch.stack([o.routing[layer].probs for o in outs], dim=1),
                index=torch.stack([o.routing[layer].index for o in outs], dim=1),
            )
            for layer in range(len(outs[0].routing))
        ]
        return LibraryOutput(tokens=torch.stack([o.tokens for o in outs], dim=1), routing=routing)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def router_parameter_count(self) -> int:
        return sum(r.router_parameter_count() for r in self.routers)

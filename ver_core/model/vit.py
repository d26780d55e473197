"""The Vision Expert Transformer: a ViT whose last blocks hold an expert library.

Shapes: B batch, C=3 channels, 224x224 input, P=196 patches (14x14), N=P+1 tokens, D width.

Stages:
    forward_bvt(x)                     images (B,3,224,224) -> tokens (B,N,D) after the BVT blocks
    forward_library(tokens, routers)   tokens -> LibraryOutput(tokens (B,N,D) normed, routing per layer)
    forward_features(x, router=...)    both of the above
    forward_intermediates(x, indices)  list of (B,N,D) block outputs (not normed) + final output
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ver_core.model.config import RouterSpec, VERConfig
from ver_core.model.experts import ExpertLibraryLayer, RouterSet, RoutingInfo


class PatchEmbed(nn.Module):
    """(B, 3, S, S) -> (B, P, D) with a stride-p convolution."""

    def __init__(self, img_size: int, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"expected images of shape (B, C, {self.img_size}, {self.img_size}), got "
                f"{tuple(x.shape)}; resize with ver_core.model.preprocess_images first"
            )
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, g, g) -> (B, P, D)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, d/heads)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block. ``mlp`` is a dense Mlp or an ExpertLibraryLayer."""

    def __init__(self, dim: int, heads: int, mlp: nn.Module, qkv_bias: bool, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = mlp

    @property
    def is_moe(self) -> bool:
        return isinstance(self.mlp, ExpertLibraryLayer)

    def forward(self, x: Tensor) -> Tensor:
        """Dense block: (B, N, D) -> (B, N, D)."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def forward_routed(
        self, x: Tensor, router: nn.Module, k: int, dense: bool = False, dispatch: str | None = None
    ) -> tuple[Tensor, RoutingInfo]:
        """Expert block: the router sees the normed tokens the experts see (``dispatch``: see
        ``ExpertLibraryLayer``; ``dense=True`` is ``dispatch="dense"``)."""
        x = x + self.attn(self.norm1(x))
        h = self.norm2(x)
        y, info = self.mlp(h, router(h), k, dense=dense, dispatch=dispatch)
        return x + y, info


@dataclass
class LibraryOutput:
    """tokens (B, N, D) after the final norm; routing: one RoutingInfo per MoE layer."""

    tokens: Tensor
    routing: list[RoutingInfo]

    @property
    def router_logits(self) -> list[Tensor]:
        return [r.logits for r in self.routing]

    @property
    def expert_index(self) -> list[Tensor]:
        return [r.index for r in self.routing]


class VisionExpertTransformer(nn.Module):
    def __init__(self, config: VERConfig) -> None:
        super().__init__()
        self.config = c = config
        self.patch_embed = PatchEmbed(c.img_size, c.patch_size, c.in_chans, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_tokens, c.embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        blocks = []
        for i in range(c.depth):
            if i >= c.first_moe_block:
                mlp: nn.Module = ExpertLibraryLayer(c.embed_dim, c.expert_hidden, c.num_experts)
            else:
                mlp = Mlp(c.embed_dim, int(c.embed_dim * c.mlp_ratio))
            blocks.append(Block(c.embed_dim, c.num_heads, mlp, c.qkv_bias, c.layer_norm_eps))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.layer_norm_eps)
        self.routers = nn.ModuleDict()
        for name, spec in c.routers.items():
            self._add_router(name, spec)
        self.apply(self._init_linear)

    @staticmethod
    def _init_linear(m: nn.Module) -> None:
        if isinstance(m, nn.Linear) and m.weight.requires_grad and m.out_features > 32:
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def resize_input(self, img_size: int) -> VisionExpertTransformer:
        """Take ``img_size`` px images from now on: the patch grid's position embeddings are
        resampled (bicubic, the CLS entry kept), the way ViTs run at other resolutions. Fewer
        patches cost proportionally less compute in every block (160 px: 100 patches, 224 px: 196).
        In place; returns the model."""
        c = self.config
        if img_size == c.img_size:
            return self
        if img_size <= 0 or img_size % c.patch_size:
            raise ValueError(f"img_size {img_size} is not a positive multiple of {c.patch_size}")
        g_old, g_new = c.grid_size, img_size // c.patch_size
        pos = self.pos_embed.detach()
        grid = pos[:, 1:].reshape(1, g_old, g_old, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
        grid = F.interpolate(grid, size=(g_new, g_new), mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, g_new * g_new, -1)
        self.pos_embed = nn.Parameter(
            torch.cat([pos[:, :1], grid], dim=1), requires_grad=self.pos_embed.requires_grad
        )
        c.img_size = img_size
        self.patch_embed.img_size = img_size
        return self

    # ----------------------------------------------------------------- routers
    def _add_router(self, name: str, spec: RouterSpec) -> RouterSet:
        c = self.config
        routers = RouterSet(c.moe_blocks, c.embed_dim, c.num_experts, spec)
        self.routers[name] = routers
        return routers

    def add_router(self, name: str, spec: RouterSpec | None = None) -> RouterSet:
        """Create (and record in the config, so checkpoints rebuild it) a named router set."""
        spec = spec or RouterSpec()
        if name in self.routers:
            raise ValueError(f"router {name!r} already exists")
        self.config.routers[name] = spec
        return self._add_router(name, spec)

    def remove_router(self, name: str) -> None:
        del self.routers[name]
        del self.config.routers[name]

    @property
    def bvt_blocks(self) -> nn.ModuleList:
        return self.blocks[: self.config.first_moe_block]

    @property
    def moe_blocks(self) -> nn.ModuleList:
        return self.blocks[self.config.first_moe_block :]

    def library_parameters(self) -> list[nn.Parameter]:
        """Expert weights of all expert library layers."""
        return [p for b in self.moe_blocks for p in b.mlp.parameters()]

    # ----------------------------------------------------------------- stages
    def embed(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) -> (B, N, D) tokens with CLS and position embedding."""
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embed

    def forward_bvt(self, x: Tensor) -> Tensor:
        """Images (B, 3, S, S) -> tokens (B, N, D) after the dense (BVT) blocks."""
        x = self.embed(x)
        for block in self.bvt_blocks:
            x = block(x)
        return x

    def _resolve_routers(
        self, router: str | Sequence[nn.Module] | RouterSet
    ) -> Sequence[nn.Module]:
        if isinstance(router, str):
            if router not in self.routers:
                raise KeyError(f"no router named {router!r}; have {sorted(self.routers)}")
            return self.routers[router].layers
        if isinstance(router, RouterSet):
            return router.layers
        if len(router) != self.config.moe_blocks:
            raise ValueError(f"need {self.config.moe_blocks} routers, got {len(router)}")
        return router

    def forward_library(
        self,
        tokens: Tensor,
        router: str | Sequence[nn.Module] | RouterSet = "default",
        top_k: int | None = None,
        dense: bool = False,
        dispatch: str | None = None,
    ) -> LibraryOutput:
        """BVT tokens (B, N, D) -> routed, normed tokens (B, N, D) plus routing per layer.

        ``dispatch`` (sparse, grouped or dense; ``dense=True`` means dense) picks how the expert
        layers run the routing: the same output, see ``ExpertLibraryLayer``."""
        routers = self._resolve_routers(router)
        k = top_k or self.config.top_k
        if not 1 <= k <= self.config.num_experts:
            raise ValueError(f"top_k must be in [1, {self.config.num_experts}], got {k}")
        routing = []
        for block, r in zip(self.moe_blocks, routers, strict=True):
            tokens, info = block.forward_routed(tokens, r, k, dense=dense, dispatch=dispatch)
            routing.append(info)
        return LibraryOutput(tokens=self.norm(tokens), routing=routing)

    def forward_features(
        self,
        x: Tensor,
        router: str | Sequence[nn.Module] | RouterSet = "default",
        top_k: int | None = None,
        dense: bool = False,
        dispatch: str | None = None,
    ) -> LibraryOutput:
        """Images (B, 3, S, S) -> LibraryOutput with tokens (B, 1+P, D)."""
        return self.forward_library(self.forward_bvt(x), router, top_k, dense, dispatch)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: Sequence[int] | None = None,
        router: str | Sequence[nn.Module] | RouterSet = "default",
        top_k: int | None = None,
    ) -> tuple[list[Tensor], LibraryOutput]:
        """Block outputs (B, N, D) at ``indices`` (default all) plus the final LibraryOutput."""
        c = self.config
        want = set(range(c.depth) if indices is None else indices)
        bad = [i for i in want if not 0 <= i < c.depth]
        if bad:
            raise ValueError(f"block indices {bad} out of range [0, {c.depth})")
        routers = self._resolve_routers(router)
        k = top_k or c.top_k
        out, routing = [], []
        h = self.embed(x)
        for i, block in enumerate(self.blocks):
            if block.is_moe:
                h, info = block.forward_routed(h, routers[i - c.first_moe_block], k)
                routing.append(info)
            else:
                h = block(h)
            if i in want:
                out.append(h)
        return out, LibraryOutput(tokens=self.norm(h), routing=routing)

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, 3, S, S) -> tokens (B, N, D) with the default router."""
        return self.forward_features(x).tokens

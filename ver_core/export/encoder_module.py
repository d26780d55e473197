"""The deployable encoder graph: images -> routed tokens + expert choices, as plain tensors.

Exporters (ONNX, torch-tensorrt) need a module whose outputs are tensors, not dataclasses, and a
static graph: the library's sparse expert dispatch (argsort + a loop over data-dependent counts)
does not export, so ``RoutedEncoder`` runs the same routing through the library's dense path
(every expert on every token, masked by the router's top-K: same output, static shapes). A policy
with new trainable experts beside the library has no dense path; it runs through
``TaskPolicy.encode`` (torch backend only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["RoutedEncoder", "exportable", "stack_experts"]


def exportable(policy: nn.Module) -> bool:
    """True if the policy's routing can be written as a static graph (no new experts)."""
    return not len(getattr(policy.router, "new_experts", ()))


def stack_experts(expert_index: Sequence[Tensor], tokens: Tensor, k: int) -> Tensor:
    """Per-layer (B, N, K) expert choices -> (B, L, P, K), the CLS token dropped.

    L = 0 for a dense student (``moe_blocks=0``): an empty (B, 0, P, K) tensor, not an error."""
    if not expert_index:
        b, n = tokens.shape[:2]
        return tokens.new_zeros((b, 0, n - 1, k), dtype=torch.long)
    return torch.stack([i[:, 1:] for i in expert_index], dim=1)


class RoutedEncoder(nn.Module):
    """images (B, 3, 224, 224) -> tokens (B, 1+P, D) float, experts (B, L, P, K) int64.

    L = number of MoE layers (0 for a dense student), K = experts active per patch (the CLS
    token's choice is dropped).
    """

    def __init__(self, policy: nn.Module, static_graph: bool = True) -> None:
        super().__init__()
        self.policy = policy.eval()
        self.static_graph = static_graph and exportable(policy)

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if not self.static_graph:
            out = self.policy.encode(images)
            return out.tokens, stack_experts(
                out.expert_index, out.tokens, self.policy.router.top_k()
            )
        model, router = self.policy.model, self.policy.router
        bvt = model.forward_bvt(images)  # (B, N, D)
        lib = model.forward_library(bvt, router=router.layers, top_k=router.top_k(), dense=True)
        index = [info.index for info in lib.routing]
        return lib.tokens, stack_experts(index, lib.tokens, router.top_k())  # (B, L, P, K)

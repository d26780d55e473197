"""The one image -> routed tokens path: the deployable encoder graph of a task policy.

``RoutedEncoder`` maps the preprocessed camera views of one observation (V, 3, S, S) to routed
tokens (V, 1+P, D) and expert choices (V, L, P, K), as plain tensors. It is what the encoder
node runs (through ``ver_core.deploy.Perception``), what in-process evaluation runs, and what
``ver-export`` writes to ONNX / torch-tensorrt.

``dispatch`` says how the expert layers run the routing (``ExpertLibraryLayer``), the same
output every way:
- ``grouped`` (default): each expert runs on the tokens that chose it, in a fixed loop over the
  experts; static input and output shapes, so it exports (ONNX, ``torch.export``) and does only
  the chosen experts' work.
- ``dense``: every expert on every token, masked (every intermediate shape static, E/K times the
  expert work); also what ``routing="dense"`` runs, where K is every expert anyway.
- ``sparse`` (``static_graph=False``): the sparse dispatch of ``TaskPolicy.encode`` (torch only;
  the only form for a policy with new trainable experts beside the library).

``precision`` ``bf16`` runs the forward pass under bf16 autocast (``ver_core.export.precision``);
the outputs are fp32 either way. With ``stats`` (a ``LatencyStats``) set, eager calls time the
BVT as ``encode`` and the routed library as ``route``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ver_core.export.precision import autocast
from ver_core.model.experts import DISPATCHES

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
    """views (V, 3, S, S) -> tokens (V, 1+P, D) float32, experts (V, L, P, K) int64.

    V = the policy's cameras in order, L = MoE layers (0 for a dense student), K = experts
    active per patch (the CLS token's choice is dropped).
    """

    def __init__(
        self,
        policy: nn.Module,
        static_graph: bool = True,
        precision: str = "fp32",
        dispatch: str | None = None,
    ) -> None:
        super().__init__()
        self.policy = policy.eval()
        dispatch = dispatch or ("grouped" if static_graph else "sparse")
        if dispatch not in DISPATCHES:
            raise ValueError(f"dispatch must be one of {DISPATCHES}, got {dispatch!r}")
        if not exportable(policy):
            dispatch = "sparse"
        elif getattr(policy.router.config, "routing", None) == "dense":
            dispatch = "dense"  # K = every expert: one wide GEMM beats a loop over experts
        self.dispatch = dispatch
        self.precision = precision
        autocast(precision)  # validates the name
        self.stats = None  # a LatencyStats to time eager calls

    @property
    def static_graph(self) -> bool:
        return self.dispatch != "sparse"

    def _time(self, stage: str):
        return self.stats.time(stage) if self.stats is not None else contextlib.nullcontext()

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        with autocast(self.precision, images.device.type):
            tokens, experts = self._forward(images)
        return tokens.float(), experts

    def _forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        policy = self.policy
        model, router = policy.model, policy.router
        k = router.top_k()
        with self._time("encode"):
            bvt = model.forward_bvt(images)  # (V, N, D)
        with self._time("route"):
            if self.dispatch == "sparse":
                out = policy.route(bvt.unsqueeze(0))  # sparse dispatch, (1, V, N, D)
                tokens = out.tokens[0]
                index = [info.index[0] for info in out.routing]  # L x (V, N, K)
                return tokens, stack_experts(index, tokens, k)
            views = []
            for v in range(bvt.shape[0]) if router.per_camera else [None]:
                x = bvt if v is None else bvt[v : v + 1]
                layers = router.router_for(v or 0).layers
                views.append(
                    model.forward_library(x, router=layers, top_k=k, dispatch=self.dispatch)
                )
            tokens = torch.cat([o.tokens for o in views])  # (V, N, D)
            index = [
                torch.cat([o.routing[i].index for o in views]) for i in range(len(views[0].routing))
            ]
            return tokens, stack_experts(index, tokens, k)  # (V, L, P, K)

"""Vision Expert Library layer (mixture of expert MLPs) and the routers that drive it.

Shapes: B batch, N tokens (1 CLS + 196 patches), D channels, E experts, K active experts,
H expert hidden width, T = B*N flattened tokens.

The layer itself holds no router: the caller passes the router logits in (distillation trains one
router per teacher, router training swaps in a Robot Router), and the layer returns what it chose
so that losses (pure functions in ``ver_core.distill.losses``) can be computed outside.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ver_core.model.config import RouterSpec


def top_k_gating(logits: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Softmax over all experts, keep the top-k probabilities without renormalizing (as VER).

    Args:
        logits: (..., E) router logits.
        k: experts kept per token.
    Returns:
        probs: (..., E) full softmax.
        weights: (..., K) kept probabilities.
        index: (..., K) kept expert ids, sorted by probability.
    """
    probs = logits.float().softmax(dim=-1)
    weights, index = probs.topk(k, dim=-1)
    return probs, weights.to(logits.dtype), index


class Router(nn.Module):
    """One router of one MoE layer: tokens (B, N, D) -> logits (B, N, E) (or (B, 1, E) for frame)."""

    def __init__(self, dim: int, num_experts: int, spec: RouterSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or RouterSpec()
        self.num_experts = num_experts
        if self.spec.kind == "fixed":
            if self.spec.fixed_expert >= num_experts:
                raise ValueError(
                    f"fixed_expert {self.spec.fixed_expert} >= num_experts {num_experts}"
                )
            logits = torch.zeros(num_experts)
            if self.spec.fixed_expert >= 0:
                logits.fill_(-30.0)
                logits[self.spec.fixed_expert] = 30.0
            self.register_buffer("fixed_logits", logits, persistent=False)
            return
        self.gate = nn.Linear(dim, num_experts, bias=False)
        nn.init.normal_(self.gate.weight, std=0.02)
        if self.spec.kind == "noisy":
            self.noise = nn.Linear(dim, num_experts, bias=False)
            nn.init.zeros_(self.noise.weight)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, D) -> logits (B, N, E); frame and fixed routers give (B, 1, E)."""
        if self.spec.kind == "fixed":
            return self.fixed_logits.to(x.dtype).expand(x.shape[0], 1, -1)
        if self.spec.kind == "frame":
            return self.gate(x.mean(dim=1, keepdim=True))  # (B, 1, E)
        logits = self.gate(x)
        if self.spec.kind == "noisy" and self.training:
            logits = logits + torch.randn_like(logits) * F.softplus(self.noise(x))
        return logits


class RouterSet(nn.Module):
    """The routers of all MoE layers for one purpose (default, a teacher, a robot task)."""

    def __init__(self, num_layers: int, dim: int, num_experts: int, spec: RouterSpec) -> None:
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleList(Router(dim, num_experts, spec) for _ in range(num_layers))

    def __getitem__(self, i: int) -> Router:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)


@dataclass
class RoutingInfo:
    """What one expert library layer chose. logits (B, N|1, E), probs (B, N, E), index (B, N, K)."""

    logits: Tensor
    probs: Tensor
    index: Tensor


DISPATCHES = ("sparse", "grouped", "dense")


class ExpertLibraryLayer(nn.Module):
    """E expert MLPs (D -> H -> D, GELU) stored as batched weights.

    ``forward(x, logits, k, dispatch="sparse")``: x (B, N, D), logits (B, N|1, E). Three ways to
    run the same routing, all giving the same output (``grouped`` bit for bit like ``sparse``):

    - ``sparse``: groups the token assignments per expert (Python lists of counts) and runs each
      expert only on its tokens. Eager torch only: training and the torch backend.
    - ``grouped``: a fixed loop over the E experts; expert e gathers the tokens that chose it
      (``nonzero``, a data-dependent row count inside the graph) and runs on those only. Inputs
      and outputs keep static shapes, so it traces to ONNX and ``torch.export`` while doing only
      the chosen experts' work (K/E of the dense path's).
    - ``dense``: every expert on every token as two wide GEMMs, masked by the top-K weights
      (every intermediate shape static; E/K times the expert work). ``dense=True`` selects it.

    Under ``torch.autocast`` (bf16) the experts run in the autocast dtype and the output takes
    their dtype; the residual stream around the layer stays in its own dtype.
    """

    def __init__(self, dim: int, hidden: int, num_experts: int) -> None:
        super().__init__()
        self.dim, self.hidden, self.num_experts = dim, hidden, num_experts
        self.w1 = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.b1 = nn.Parameter(torch.zeros(num_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.b2 = nn.Parameter(torch.zeros(num_experts, dim))
        nn.init.trunc_normal_(self.w1, std=0.02)
        nn.init.trunc_normal_(self.w2, std=0.02)

    def expert(self, e: int, x: Tensor) -> Tensor:
        """Run expert e on tokens x: (T, D) -> (T, D)."""
        h = F.gelu(F.linear(x, self.w1[e].t(), self.b1[e]))  # (T, H)
        return F.linear(h, self.w2[e].t(), self.b2[e])

    def forward(
        self, x: Tensor, logits: Tensor, k: int, dense: bool = False, dispatch: str | None = None
    ) -> tuple[Tensor, RoutingInfo]:
        dispatch = dispatch or ("dense" if dense else "sparse")
        if dispatch not in DISPATCHES:
            raise ValueError(f"dispatch must be one of {DISPATCHES}, got {dispatch!r}")
        b, n, d = x.shape
        logits = logits.expand(b, n, self.num_experts)  # frame/fixed routers broadcast over tokens
        probs, weights, index = top_k_gating(logits, k)  # (B,N,E), (B,N,K), (B,N,K)
        run = {"sparse": self._sparse, "grouped": self._grouped, "dense": self._dense}[dispatch]
        out = run(x.reshape(b * n, d), weights.reshape(b * n, k), index.reshape(b * n, k))
        return out.reshape(b, n, d), RoutingInfo(logits=logits, probs=probs, index=index)

    def _dense(self, flat: Tensor, weights: Tensor, index: Tensor) -> Tensor:
        t, d = flat.shape
        e, hid = self.num_experts, self.hidden
        w1 = self.w1.permute(1, 0, 2).reshape(d, e * hid)  # (D, E*H): all experts side by side
        h = F.gelu(F.linear(flat, w1.t(), self.b1.reshape(-1)))  # (T, E*H)
        # combine: (T, E) with the kept probabilities at the kept experts, zero elsewhere
        combine = torch.zeros(t, e, dtype=h.dtype, device=flat.device)
        combine = combine.scatter(-1, index, weights.to(h.dtype))
        h = (h.reshape(t, e, hid) * combine.unsqueeze(-1)).reshape(t, e * hid)  # masked
        y = F.linear(h, self.w2.reshape(e * hid, d).t())  # (T, D) = sum_e c_e * h_e @ W2_e
        return y + F.linear(combine, self.b2.t())  # + sum_e c_e * b2_e

    def _grouped(self, flat: Tensor, weights: Tensor, index: Tensor) -> Tensor:
        out = None
        for e in range(self.num_experts):
            hit = index == e  # (T, K): a token picks an expert at most once
            rows = hit.any(-1).nonzero().squeeze(1)  # (C_e,) tokens routed to e, ascending
            w = (weights * hit).sum(-1)[rows]  # (C_e,) their gate weight for e
            y = self.expert(e, flat[rows]) * w.unsqueeze(1).to(flat.dtype)  # (C_e, D)
            out = flat.new_zeros(flat.shape, dtype=y.dtype) if out is None else out
            # rows are distinct: exports as a scatter, the same sums as index_add in _sparse
            out = out.index_put((rows,), y.to(out.dtype), accumulate=True)
        return out

    def _sparse(self, flat: Tensor, weights: Tensor, index: Tensor) -> Tensor:
        t, k = index.shape
        flat_index = index.reshape(-1)  # (T*K,)
        flat_weight = weights.reshape(-1, 1)  # (T*K, 1)
        token_of = torch.arange(t, device=flat.device).repeat_interleave(k)  # (T*K,)
        order = flat_index.argsort(stable=True)  # group assignments by expert
        counts = torch.bincount(flat_index, minlength=self.num_experts).tolist()
        out = None
        start = 0
        for e, count in enumerate(counts):
            if count == 0:
                continue
            sel = order[start : start + count]
            start += count
            tokens = token_of[sel]
            y = self.expert(e, flat[tokens]) * flat_weight[sel].to(flat.dtype)  # (count, D)
            out = flat.new_zeros(flat.shape, dtype=y.dtype) if out is None else out
            out = out.index_add(0, tokens, y.to(out.dtype))
        return flat.new_zeros(flat.shape) if out is None else out

"""Parameter counts: total, backbone, library, routers, and active per image for a given K."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ver_core.model.vit import VisionExpertTransformer


@dataclass
class ParameterReport:
    name: str
    total: int
    backbone: int  # everything but experts and routers (BVT, shared attention, norms, embeddings)
    experts: int
    router: int  # one router set
    active: dict[int, int]  # K -> parameters used per image with K of E experts active

    def as_dict(self) -> dict:
        return asdict(self)


def parameter_report(model: VisionExpertTransformer, router: str = "default") -> ParameterReport:
    c = model.config
    experts = sum(p.numel() for p in model.library_parameters())
    routers = {n: sum(p.numel() for p in r.parameters()) for n, r in model.routers.items()}
    total = sum(p.numel() for p in model.parameters())
    backbone = total - experts - sum(routers.values())
    per_expert = experts // max(c.num_experts, 1)
    router_params = routers.get(router, 0)
    active = {k: backbone + router_params + k * per_expert for k in range(1, c.num_experts + 1)}
    return ParameterReport(c.name, total, backbone, experts, router_params, active)

"""Expert utilization per teacher router (teacher x expert per MoE layer), as VER's Figure 4."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ver_core.model import VisionExpertTransformer


@torch.no_grad()
def expert_utilization(
    model: VisionExpertTransformer,
    images: torch.Tensor,
    teacher_keys: Sequence[str],
    top_k: int | None = None,
) -> np.ndarray:
    """Fraction of top-k slots each expert takes, per layer and teacher router.

    images: (B, 3, S, S) preprocessed. Returns (L, T, E); each (layer, teacher) row sums to 1.
    """
    was_training = model.training
    model.eval()  # no router noise
    tokens = model.forward_bvt(images)
    e = model.config.num_experts
    util = np.zeros((model.config.moe_blocks, len(teacher_keys), e))
    for t, key in enumerate(teacher_keys):
        out = model.forward_library(tokens, router=f"teacher:{key}", top_k=top_k)
        for layer, info in enumerate(out.routing):
            counts = torch.bincount(info.index.reshape(-1), minlength=e).double()  # (E,)
            util[layer, t] = (counts / counts.sum()).cpu().numpy()
    model.train(was_training)
    return util


def plot_utilization(
    util: np.ndarray, teacher_keys: Sequence[str], path: str | Path, first_block: int = 0
) -> Path:
    """Save a PNG: one teacher x expert heatmap per MoE layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, teachers, experts = util.shape
    fig, axes = plt.subplots(
        1, layers, figsize=(2.2 + 1.1 * experts * layers, 0.8 + 0.55 * teachers), squeeze=False
    )
    for layer, ax in enumerate(axes[0]):
        im = ax.imshow(
            util[layer], vmin=0.0, vmax=max(0.5, float(util.max())), cmap="viridis", aspect="auto"
        )
        ax.set_title(f"block {first_block + layer}")
        ax.set_xticks(range(experts), [f"E{i}" for i in range(experts)])
        ax.set_yticks(range(teachers), teacher_keys if layer == 0 else [""] * teachers)
        for t in range(teachers):
            for e in range(experts):
                ax.text(
                    e,
                    t,
                    f"{util[layer, t, e]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="w",
                )
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="share of top-k slots")
    fig.suptitle("Expert utilization per teacher router")
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path

"""Training plots (matplotlib Agg): loss curves, expert utilization, routing maps."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def plot_losses(history: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    if history["train"]:
        steps, vals = np.array(history["train"]).T
        ax.plot(steps, vals, alpha=0.3, label="train (step)")
        w = max(1, len(vals) // 50)
        ax.plot(
            steps[w - 1 :],
            np.convolve(vals, np.ones(w) / w, mode="valid"),
            label=f"train (mean of {w})",
        )
    if history["val"]:
        steps, vals = np.array(history["val"]).T
        ax.plot(steps, vals, "o-", label="validation (held-out episodes)")
    if history["top_k"]:
        ax2 = ax.twinx()
        steps, ks = np.array(history["top_k"]).T
        ax2.step(steps, ks, "k--", alpha=0.5, where="post")
        ax2.set_ylabel("top-K (curriculum)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_utilization(util: list[list[float]], path: Path) -> None:
    layers, experts = len(util), len(util[0]) if util else 0
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(layers, 1)
    for i, row in enumerate(util):
        ax.bar(np.arange(experts) + i * width, row, width, label=f"MoE layer {i}")
    ax.set_xticks(np.arange(experts) + 0.4 - width / 2, [f"e{e}" for e in range(experts)])
    ax.set_ylabel("share of patch assignments")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def plot_routing_maps(
    policy, images: np.ndarray, tokens: np.ndarray, idx: np.ndarray, path: Path
) -> None:
    """Top-1 expert of every patch, per MoE layer, over a few sample frames (a row per frame and
    camera view). images (N, V, s, s, 3); tokens (N, V, 1+P, D)."""
    idx = idx[np.linspace(0, len(idx) - 1, min(4, len(idx))).astype(int)]
    out = policy.route(torch.from_numpy(tokens[idx].astype(np.float32)))
    g = policy.model.config.grid_size
    layers = len(out.expert_index)
    views = images.shape[1]
    cameras = policy.config.cameras
    rows = [(r, v) for r in range(len(idx)) for v in range(views)]
    cmap = plt.get_cmap("tab10", policy.router.num_experts)
    fig, axes = plt.subplots(
        len(rows), layers + 1, figsize=(2.6 * (layers + 1), 2.6 * len(rows)), squeeze=False
    )
    for row, (r, v) in enumerate(rows):
        img = images[idx[r], v]
        axes[row, 0].imshow(img)
        axes[row, 0].set_title(cameras[v] if row < views else "")
        for layer in range(layers):
            top1 = out.expert_index[layer][r, v, 1:, 0].reshape(g, g).numpy()  # (g, g)
            ax = axes[row, layer + 1]
            ax.imshow(img)
            ax.imshow(
                top1,
                cmap=cmap,
                vmin=-0.5,
                vmax=policy.router.num_experts - 0.5,
                alpha=0.55,
                extent=(0, img.shape[1], img.shape[0], 0),
                interpolation="nearest",
            )
            if row == 0:
                ax.set_title(f"layer {layer} top-1 expert")
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_plots(directory: Path, policy, history: dict, util, images, tokens, idx) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    plot_losses(history, directory / "loss.png")
    if not util:  # a dense student: no experts, no routing to draw
        return
    plot_utilization(util, directory / "expert_utilization.png")
    policy.eval()
    plot_routing_maps(policy, images, tokens, idx, directory / "routing_maps.png")

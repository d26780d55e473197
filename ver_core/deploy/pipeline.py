"""What the encoder and policy nodes compute, without ROS: image -> routed tokens -> chunk.

``Perception``: uint8 RGB -> preprocess -> encoder (backend with fallback) -> tokens (N, D)
float32 + expert choices (L, P, K). ``ChunkPredictor``: tokens + state -> ``ActionChunk``
scheduled against the observation time, smoothed at chunk boundaries. Both time their stages
into a shared ``LatencyStats`` (stage names: preprocess, encode, route, policy, smooth).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ver_core.deploy.chunk import ActionChunk, uniform_offsets
from ver_core.deploy.ensemble import ChunkSmoother, SmoothingConfig
from ver_core.deploy.latency import LatencyStats
from ver_core.deploy.overlay import routing_overlay
from ver_core.export.encoder_module import stack_experts

__all__ = ["ChunkPredictor", "Perception", "load_policy"]

log = logging.getLogger(__name__)


def load_policy(checkpoint: str | Path, device: str = "cpu", threads: int = 0):
    """TaskPolicy from a task checkpoint directory, with a clear error for a wrong path."""
    from ver_core.policy import TaskPolicy

    if threads > 0:
        torch.set_num_threads(threads)
    if not str(checkpoint):
        raise ValueError("parameter 'checkpoint' is empty: pass a task checkpoint directory")
    return TaskPolicy.from_pretrained(checkpoint, map_location=device)


class Perception:
    """Routed VER features of one camera frame."""

    def __init__(
        self,
        policy,
        backend: str = "torch",
        checkpoint_dir: str | Path | None = None,
        device: str = "cpu",
        threads: int = 0,
        stats: LatencyStats | None = None,
    ) -> None:
        from ver_core.export import build_encoder

        self.policy = policy
        self.device = device
        self.size = int(policy.model.config.img_size)
        self.stats = stats or LatencyStats()
        self.encoder, self.backend, self.fallback_message = build_encoder(
            policy, backend, checkpoint_dir, device, threads
        )
        # the torch backend can time BVT ("encode") and routed library ("route") separately
        self._split = self.backend == "torch"

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        from ver_core.model import preprocess_images

        with self.stats.time("preprocess"):
            return preprocess_images(rgb, self.size)  # (1, 3, S, S)

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rgb (H, W, 3) uint8 -> tokens (N, D) float32, experts (L, P, K) int64."""
        x = self.preprocess(rgb)
        if self._split:
            model, router = self.policy.model, self.policy.router
            x = x.to(self.device)
            with self.stats.time("encode"):
                bvt = model.forward_bvt(x)  # (1, N, D)
            with self.stats.time("route"):
                out = router(model, bvt)
                tokens = out.tokens
                experts = stack_experts(out.expert_index, tokens, router.top_k())  # (1, L, P, K)
        else:
            with self.stats.time("encode+route"):
                tokens, experts = self.encoder(x)
        return tokens[0].float().cpu().numpy(), experts[0].cpu().numpy()

    def overlay(self, rgb: np.ndarray, experts: np.ndarray) -> np.ndarray | None:
        """(S, S, 3) uint8 tinted by the last MoE layer's top-1 expert per patch (None: no MoE
        layer to show, a dense student)."""
        from PIL import Image

        if not len(experts):
            return None
        small = np.asarray(Image.fromarray(rgb).resize((self.size, self.size)), dtype=np.uint8)
        return routing_overlay(small, experts[-1])


class ChunkPredictor:
    """tokens (N, D) + state (S,) + observation time -> smoothed ``ActionChunk``."""

    def __init__(
        self, policy, smoothing: SmoothingConfig | None = None, stats: LatencyStats | None = None
    ) -> None:
        self.policy = policy
        self.config = policy.config
        self.smoother = ChunkSmoother(smoothing)
        self.stats = stats or LatencyStats()
        self.offsets = uniform_offsets(self.config.chunk_len, self.config.control_rate_hz)
        self._device = next(policy.parameters()).device

    @torch.no_grad()
    def __call__(
        self, tokens: np.ndarray, state: np.ndarray, stamp: float, now: float | None = None
    ) -> ActionChunk:
        state = np.asarray(state, dtype=np.float32).reshape(-1)
        if state.shape[0] != self.config.state_dim:
            raise ValueError(f"state needs {self.config.state_dim} values, got {state.shape[0]}")
        t = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.float32))[None].to(self._device)
        s = torch.from_numpy(state)[None].to(self._device)
        with self.stats.time("policy"):
            actions = self.policy.predict_chunk(t, s)[0].double().cpu().numpy()  # (H, 8)
        with self.stats.time("smooth"):
            return self.smoother.add(ActionChunk(stamp, self.offsets, actions), now)

"""What the encoder and policy nodes compute, without ROS: camera views -> routed tokens -> chunk.

``Perception``: the uint8 RGB views of one observation (one per camera, any size) -> resize +
normalize -> encoder (``RoutedEncoder`` on the chosen backend, all views in one batch) -> tokens
(V, N, D) float32 + expert choices (V, L, P, K). ``ChunkPredictor``: tokens + state ->
``ActionChunk`` scheduled against the observation time, smoothed at chunk boundaries. Both time
their stages into a shared ``LatencyStats`` (preprocess, encode, route, policy, smooth).
The nodes, in-process evaluation and the benchmarks all run these two classes.

``precision`` (``fp32`` or ``bf16``, ``ver_core.export.precision``) is what the encoder and the
head compute in; a bf16 request falls back to fp32 with one log line where the hardware (or the
ONNX backend) has no bf16. Inputs and outputs stay float32 either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ver_core.deploy.chunk import ActionChunk, uniform_offsets
from ver_core.deploy.ensemble import ChunkSmoother, SmoothingConfig
from ver_core.deploy.latency import LatencyStats
from ver_core.deploy.overlay import routing_overlay
from ver_core.export.precision import autocast

__all__ = ["ChunkPredictor", "Perception", "inference_threads", "load_policy"]

log = logging.getLogger(__name__)


def inference_threads(requested: int = 0) -> int:
    """CPU threads for a node's inference: ``requested`` if > 0; 0 = auto: every core but one (the
    camera, the other nodes and DDS run beside it; an intra-op thread pool that needs every core
    stalls whenever any of them runs), at most 4 (a batch-1 ViT-T gains little more), at least 1.
    """
    if requested > 0:
        return int(requested)
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def load_policy(checkpoint: str | Path, device: str = "cpu", threads: int = 0):
    """TaskPolicy from a task checkpoint directory, with a clear error for a wrong path."""
    from ver_core.policy import TaskPolicy

    if threads > 0:
        torch.set_num_threads(threads)
    if not str(checkpoint):
        raise ValueError("parameter 'checkpoint' is empty: pass a task checkpoint directory")
    return TaskPolicy.from_pretrained(checkpoint, map_location=device)


class Perception:
    """Routed VER features of the camera views of one observation."""

    def __init__(
        self,
        policy,
        backend: str = "torch",
        checkpoint_dir: str | Path | None = None,
        device: str = "cpu",
        threads: int = 0,
        stats: LatencyStats | None = None,
        precision: str = "fp32",
    ) -> None:
        from ver_core.export import build_encoder

        self.policy = policy
        self.device = device
        self.size = int(policy.model.config.img_size)
        self.cameras = list(policy.config.cameras)
        self.stats = stats or LatencyStats()
        built = build_encoder(
            policy, backend, checkpoint_dir, device, threads, self.stats, precision
        )
        self.encoder, self.backend, self.fallback_message, self.precision = built

    def preprocess(self, views: Sequence[np.ndarray]) -> torch.Tensor:
        """V uint8 (H_v, W_v, 3) images -> (V, 3, S, S) normalized (each resized on its own)."""
        from ver_core.model import preprocess_images

        if len(views) != len(self.cameras):
            raise ValueError(f"expected {len(self.cameras)} views {self.cameras}, got {len(views)}")
        with self.stats.time("preprocess"):
            return torch.cat([preprocess_images(np.asarray(v), self.size) for v in views])

    @torch.no_grad()
    def __call__(self, views: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """V views -> tokens (V, N, D) float32, experts (V, L, P, K) int64 (``encode+route`` is
        timed as one stage for exported backends)."""
        x = self.preprocess(views)
        if self.backend == "torch":
            tokens, experts = self.encoder(x)
        else:
            with self.stats.time("encode+route"):
                tokens, experts = self.encoder(x)
        return tokens.float().cpu().numpy(), experts.cpu().numpy()

    def overlay(self, rgb: np.ndarray, experts: np.ndarray) -> np.ndarray | None:
        """One view (H, W, 3) uint8 and its experts (L, P, K) -> (S, S, 3) uint8 tinted by the
        last MoE layer's top-1 expert per patch (None: no MoE layer to show, a dense student)."""
        from ver_core.data.images import resize_rgb

        if not len(experts):
            return None
        return routing_overlay(resize_rgb(np.asarray(rgb), self.size), experts[-1])


class ChunkPredictor:
    """tokens (V, N, D) + state (S,) + observation time -> smoothed ``ActionChunk``."""

    def __init__(
        self,
        policy,
        smoothing: SmoothingConfig | None = None,
        stats: LatencyStats | None = None,
        precision: str = "fp32",
    ) -> None:
        from ver_core.export import select_precision

        self.policy = policy
        self.config = policy.config
        self.smoother = ChunkSmoother(smoothing)
        # a grasp-point policy's estimate, kept across this robot's frames (None: no detector)
        tracker = getattr(policy, "grasp_tracker", None)
        self.tracker = tracker() if tracker is not None else None
        self.stats = stats or LatencyStats()
        self.offsets = uniform_offsets(self.config.chunk_len, self.config.control_rate_hz)
        self._device = next(policy.parameters()).device
        self.precision, self.fallback_message = select_precision(precision, str(self._device))

    def reset(self) -> None:
        """A new episode: forget the smoother's history and the tracked grasp point."""
        self.smoother.reset()
        if self.tracker is not None:
            self.tracker.reset()

    @torch.no_grad()
    def __call__(
        self,
        tokens: np.ndarray,
        state: np.ndarray,
        stamp: float,
        now: float | None = None,
        image_state: np.ndarray | None = None,
        state_stamp: float | None = None,
    ) -> ActionChunk:
        """``image_state``: the joint state when the frames were taken (a grasp-point policy
        casts its camera rays from there; default ``state``). ``state_stamp``: when ``state``
        was measured; with the smoothing config's ``align`` "state" the chunk's first action
        is scheduled then instead of at the image's ``stamp``."""
        state = np.asarray(state, dtype=np.float32).reshape(-1)
        if state.shape[0] != self.config.state_dim:
            raise ValueError(f"state needs {self.config.state_dim} values, got {state.shape[0]}")
        t = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.float32))[None].to(self._device)
        s = torch.from_numpy(state)[None].to(self._device)
        with self.stats.time("policy"), autocast(self.precision, self._device.type):
            kwargs = {} if self.tracker is None else {"tracker": self.tracker}
            if image_state is not None and getattr(self.config, "keypose", False):
                image = np.asarray(image_state, dtype=np.float32).reshape(1, -1)
                kwargs["image_state"] = torch.from_numpy(image).to(self._device)
            actions = self.policy.predict_chunk(t, s, **kwargs)[0].double().cpu().numpy()  # (H, 8)
        offsets = self.offsets
        if self.smoother.config.align == "state" and state_stamp is not None:
            offsets = offsets + max(0.0, float(state_stamp) - float(stamp))
        with self.stats.time("smooth"):
            return self.smoother.add(ActionChunk(stamp, offsets, actions), now)

"""In-process closed-loop evaluation: a task policy (or a baseline) drives ``FrankaPickEnv``.

``evaluate`` runs held-out seeds ``seed, seed + 1, ...``, keeps the frames of the first episode
for an image strip and GIF, plots the distance traces and writes ``results.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ver_core.deploy.latency import LatencyStats
from ver_core.eval.media import save_distance_plot, save_gif, save_strip
from ver_core.eval.report import build_report, write_report
from ver_core.eval.rollout import ChunkController, Controller, EpisodeResult, run_episode

__all__ = [
    "EvalConfig",
    "PolicyPredictor",
    "evaluate",
    "evaluate_controller",
    "policy_predictor",
    "write_outputs",
]

# Held-out seeds start far above the seeds demos are recorded with (0, 1, 2, ...).
DEFAULT_EVAL_SEED = 100_000


@dataclass
class EvalConfig:
    """episodes: number of held-out episodes; seed: the first one (seed, seed+1, ...).
    max_steps: control steps per episode before it counts as a failure.
    execute_steps: actions of each predicted chunk executed before predicting again.
    width/height: render size, the same the demos were recorded at.
    media: write strip / GIF / plot (False for benchmark rows).
    loop: ``deployed`` (the controller the robot runs: encoder -> policy -> smoothing -> safety
    gate on the simulator's clockwork, ``ver_core.eval.closed_loop``) or ``open-loop`` (the
    diagnostic receding horizon: predict, execute ``execute_steps`` actions, predict again).
    latency_s: deployed loop: compute seconds per perception call (the policy head's are
    measured); < 0 = measure both on this machine.
    obs_delay_steps: open-loop only: the policy sees observations this many control steps old.
    observation_budget_s: deployed loop and through ROS: the staleness budget of the graph
    evaluated (None: the deployment config's, 0.25 s). A slower machine than the robot's (the
    2-core development VM rendering two cameras beside the graph) needs more to not hold.
    """

    episodes: int = 20
    seed: int = DEFAULT_EVAL_SEED
    max_steps: int = 150
    execute_steps: int = 8
    width: int = 224
    height: int = 224
    media: bool = True
    loop: str = "deployed"
    latency_s: float = -1.0
    obs_delay_steps: int = 0
    observation_budget_s: float | None = None

    def __post_init__(self) -> None:
        if self.observation_budget_s is not None and not 0 < self.observation_budget_s <= 10:
            raise ValueError(
                f"observation_budget_s must be in (0, 10] s, got {self.observation_budget_s}"
            )
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.execute_steps < 1:
            raise ValueError(f"execute_steps must be >= 1, got {self.execute_steps}")
        if self.obs_delay_steps < 0:
            raise ValueError(f"obs_delay_steps must be >= 0, got {self.obs_delay_steps}")
        if self.loop not in ("deployed", "open-loop"):
            raise ValueError(f"loop must be deployed or open-loop, got {self.loop!r}")


class PolicyPredictor:
    """Chunk predictor over a ``TaskPolicy``: preprocess + encode (``encode``), head (``head``).

    Also counts which library expert each patch token was routed to, per MoE layer
    (``usage``: list of (E,) int arrays), for the expert-utilization statistics.
    """

    def __init__(self, policy) -> None:
        self.policy = policy
        self.cameras = tuple(policy.config.cameras)  # the sim renders these, in this order
        self.usage: list[np.ndarray] = []

    def __call__(self, image: np.ndarray, state: np.ndarray, latency: LatencyStats) -> np.ndarray:
        """image: (H, W, 3), or (V, H, W, 3) for a policy with V cameras."""
        import torch

        from ver_core.model import preprocess_images

        size = getattr(self.policy, "image_size", None) or self.policy.model.config.img_size
        with torch.inference_mode():
            with latency.time("encode"):
                views = preprocess_images(image if image.ndim == 4 else image[None], size)
                routed = self.policy.encode(views.unsqueeze(0))  # (1, V, 3, S, S)
            with latency.time("head"):
                s = torch.as_tensor(state, dtype=torch.float32).unsqueeze(0)  # (1, 8)
                actions = self.policy.predict_chunk(routed.tokens, s)  # (1, H, 8)
        self._count(getattr(routed, "expert_index", None) or [])
        return actions[0].detach().cpu().numpy().astype(np.float64)

    def _count(self, expert_index) -> None:
        for layer, index in enumerate(expert_index):  # (1, P, K) per layer
            flat = index.reshape(-1).cpu().numpy()
            flat = flat[flat >= 0]
            n = int(flat.max()) + 1 if flat.size else 0
            if layer == len(self.usage):
                self.usage.append(np.zeros(0, np.int64))
            if n > self.usage[layer].size:
                self.usage[layer] = np.pad(self.usage[layer], (0, n - self.usage[layer].size))
            self.usage[layer] += np.bincount(flat, minlength=self.usage[layer].size)

    def usage_fractions(self) -> list[list[float]]:
        """Per MoE layer, the fraction of routed (token, slot) pairs that went to each expert."""
        return [(u / max(1, u.sum())).round(4).tolist() for u in self.usage]


def eval_env(config: EvalConfig, wrist_size: tuple[int, int] | None = None):
    """The simulator an evaluation runs: both cameras at ``config``'s render size, the size the
    demos were recorded at (a wrist camera at the simulator's 640x480, squashed to the model's
    square input, is not what the policy trained on), or the wrist at ``wrist_size`` (W, H)."""
    from ver_core.sim import FrankaPickEnv, SimConfig

    ww, wh = wrist_size or (config.width, config.height)
    return FrankaPickEnv(
        SimConfig(width=config.width, height=config.height, wrist_width=ww, wrist_height=wh)
    )


def policy_predictor(policy) -> PolicyPredictor:
    return PolicyPredictor(policy)


def evaluate(
    controller: Controller,
    config: EvalConfig,
    out_dir: str | Path | None = None,
    env=None,
    meta: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run ``config.episodes`` episodes; returns (and with ``out_dir`` writes) the report."""
    if env is None:
        env = eval_env(config)
    episodes: list[EpisodeResult] = []
    start = time.perf_counter()
    for i in range(config.episodes):
        seed = config.seed + i
        ep = run_episode(
            env, controller, seed, config.max_steps, capture_frames=config.media and i == 0
        )
        episodes.append(ep)
        if progress:
            ok = sum(e.success for e in episodes)
            progress(
                f"[eval] episode {i + 1}/{config.episodes} seed {seed}: "
                f"{'success' if ep.success else 'fail'} in {ep.steps} steps, closest "
                f"{ep.min_distance:.3f} m ({ok}/{i + 1} so far, {time.perf_counter() - start:.0f} s)"
            )
    report = build_report(
        episodes,
        controller.latency.summary(),
        {"mode": "in-process", "config": asdict(config), **(meta or {})},
    )
    if isinstance(controller, ChunkController):
        report["chunks_predicted"] = controller.chunks
        if isinstance(controller.predictor, PolicyPredictor) and controller.predictor.usage:
            report["expert_usage"] = controller.predictor.usage_fractions()
    report["wall_s"] = time.perf_counter() - start
    if out_dir is not None:
        dt = 1.0 / getattr(getattr(env, "config", None), "control_hz", 10.0)
        write_outputs(out_dir, report, episodes, dt, media=config.media)
    return report


def evaluate_controller(
    controller,
    config: EvalConfig,
    out_dir: str | Path | None = None,
    timing=None,
    meta: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = print,
    wrist_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Closed-loop episodes of the deployed ``Controller`` (``ver_core.eval.closed_loop``) on
    held-out seeds; the report says ``mode: in-process`` with the timing model used.
    ``wrist_size``: (W, H) of the wrist camera's renders (default: the scene camera's)."""
    from ver_core.eval.closed_loop import LoopTiming, run_controller_episode
    from ver_core.sim.stepper import SimStepper

    timing = timing or LoopTiming()
    env = eval_env(config, wrist_size)
    stepper = SimStepper(env, timing.image_rate_hz, timing.state_rate_hz)
    episodes: list[EpisodeResult] = []
    latency = LatencyStats()
    start = time.perf_counter()
    for i in range(config.episodes):
        seed = config.seed + i
        ep, compute = run_controller_episode(
            stepper,
            controller,
            seed,
            config.max_steps,
            timing,
            capture_frames=config.media and i == 0,
        )
        for stage, values in compute.items():
            for v in values:
                latency.add(f"model_{stage}", v)
        episodes.append(ep)
        if progress:
            ok = sum(e.success for e in episodes)
            progress(
                f"[eval] episode {i + 1}/{config.episodes} seed {seed}: "
                f"{'success' if ep.success else 'fail'} in {ep.steps} steps, closest "
                f"{ep.min_distance:.3f} m ({ok}/{i + 1} so far, {time.perf_counter() - start:.0f} s)"
            )
    env.close()
    stats = (
        controller.encoder.perception.stats.summary()
        if hasattr(controller.encoder.perception, "stats")
        else {}
    )
    report = build_report(
        episodes,
        {**stats, **latency.summary()},
        {
            "mode": "in-process",
            "controller": "deployed (encoder -> policy -> smoothing -> safety gate)",
            "config": asdict(config),
            "timing": asdict(timing),
            **(meta or {}),
        },
    )
    report["wall_s"] = time.perf_counter() - start
    if out_dir is not None:
        write_outputs(out_dir, report, episodes, 1.0 / timing.control_hz, media=config.media)
    return report


def write_outputs(
    out_dir: str | Path,
    report: dict[str, Any],
    episodes: list[EpisodeResult],
    dt: float,
    media: bool,
) -> None:
    """Strip + GIF of the first episode with frames, distance plot (dt s per sample), JSON."""
    out = Path(out_dir)
    if media:
        shown = next((e for e in episodes if e.frames), None)
        if shown is not None:
            labels = [f"#{k}" for k in range(len(shown.frames))]
            report["strip_path"] = str(
                save_strip(shown.frames, out / "rollout_strip.png", labels=labels)
            )
            report["gif_path"] = str(save_gif(shown.frames, out / "rollout.gif", fps=1.0 / dt))
        report["plot_path"] = str(
            save_distance_plot(
                [e.distances for e in episodes],
                [e.success for e in episodes],
                out / "distance.png",
                dt,
            )
        )
    report["results_path"] = str(out / "results.json")
    write_report(out, report)

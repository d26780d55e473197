"""Closed-loop rollouts in the simulator, stepping ``FrankaPickEnv`` directly (no ROS).

A controller maps (image, state) to one action per control step. ``ChunkController`` turns a
chunk predictor (image, state) -> (H, 8) into such a controller the way the deployed graph runs
it: predict a chunk, execute its first ``execute_steps`` actions, predict again (receding
horizon). ``run_episode`` records success, length, the gripper-to-cube distance trace, latency
per stage and (optionally) the frames of the rollout.

Shapes: state (8,) = 7 arm joint positions (rad) + gripper width (m); action (8,) the same units.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ver_core.deploy.latency import LatencyStats

__all__ = [
    "ChunkController",
    "Controller",
    "EpisodeResult",
    "ExpertController",
    "HoldController",
    "RandomController",
    "run_episode",
    "state_of",
]

ChunkPredictor = Callable[[np.ndarray, np.ndarray, LatencyStats], np.ndarray]


class Controller(Protocol):
    """One action (8,) per control step from the current image and state."""

    latency: LatencyStats

    def reset(self, seed: int) -> None: ...

    def act(self, image: np.ndarray, state: np.ndarray) -> np.ndarray: ...


def state_of(obs) -> np.ndarray:
    """(8,) proprioception of a sim Observation: arm joint positions + gripper width."""
    return np.append(np.asarray(obs.arm_q, dtype=np.float64), float(obs.gripper_width))


class ChunkController:
    """Receding-horizon execution of predicted action chunks.

    predictor(image uint8 (H,W,3), or (V,H,W,3) for the predictor's ``cameras``, state (8,),
    latency) -> actions (H, 8); it records its own
    stage timings (e.g. ``encode``, ``head``) into ``latency``.

    ``obs_delay_steps`` = d models a deployed graph's perception latency (camera -> encoder ->
    policy -> gate): a chunk is predicted from the observation d control steps old and, as the
    deployed policy node schedules chunks against the observation's stamp, its first d actions
    (already in the past) are skipped. The first chunk of an episode waits for d steps of history
    (the current observation stands in for the missing older ones).
    """

    def __init__(
        self, predictor: ChunkPredictor, execute_steps: int = 8, obs_delay_steps: int = 0
    ) -> None:
        if execute_steps < 1:
            raise ValueError(f"execute_steps must be >= 1, got {execute_steps}")
        if obs_delay_steps < 0:
            raise ValueError(f"obs_delay_steps must be >= 0, got {obs_delay_steps}")
        self.predictor = predictor
        self.execute_steps = execute_steps
        self.obs_delay_steps = obs_delay_steps
        self.latency = LatencyStats()
        self._queue: list[np.ndarray] = []
        self._history: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=obs_delay_steps + 1)
        self.chunks = 0

    @property
    def cameras(self) -> tuple[str, ...]:
        """The sim cameras the predictor needs, in its order (default: the scene camera)."""
        return tuple(getattr(self.predictor, "cameras", ("camera",)))

    def reset(self, seed: int) -> None:
        self._queue = []
        self._history.clear()

    def act(self, image: np.ndarray, state: np.ndarray) -> np.ndarray:
        self._history.append((image, state))
        if not self._queue:
            image, state = self._history[0]  # d steps old once the history is full
            start = time.perf_counter()
            chunk = np.asarray(self.predictor(image, state, self.latency), dtype=np.float64)
            self.latency.add("policy_total", time.perf_counter() - start)
            if chunk.ndim != 2 or chunk.shape[1] != state.shape[0] or chunk.shape[0] < 1:
                raise ValueError(
                    f"predictor returned shape {chunk.shape}, expected (H, {state.shape[0]})"
                )
            lag = len(self._history) - 1
            if lag >= chunk.shape[0]:
                raise ValueError(f"observation delay {lag} steps >= chunk length {chunk.shape[0]}")
            self._queue = list(chunk[lag : lag + self.execute_steps])
            self.chunks += 1
        return self._queue.pop(0)


class HoldController:
    """Baseline: command the current state (the arm stays where it is)."""

    def __init__(self) -> None:
        self.latency = LatencyStats()

    def reset(self, seed: int) -> None:
        pass

    def act(self, image: np.ndarray, state: np.ndarray) -> np.ndarray:
        return state.copy()


class RandomController:
    """Baseline: a random walk of joint targets (``scale`` rad per step), gripper random."""

    def __init__(self, scale: float = 0.05) -> None:
        self.scale = scale
        self.latency = LatencyStats()
        self._rng = np.random.default_rng(0)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed + 7919)

    def act(self, image: np.ndarray, state: np.ndarray) -> np.ndarray:
        action = state.copy()
        action[:7] += self._rng.normal(0.0, self.scale, 7)
        action[7] = self._rng.uniform(0.0, 0.08)
        return action


class ExpertController:
    """Upper bound: the scripted expert, reading the true cube pose from ``env``."""

    def __init__(self, env) -> None:
        from ver_core.sim import ExpertConfig, ScriptedExpert

        self.env = env
        self.expert = ScriptedExpert(ExpertConfig(control_hz=env.config.control_hz))
        self.latency = LatencyStats()

    def reset(self, seed: int) -> None:
        self.expert.reset(self.env.observation().arm_q)

    def act(self, image: np.ndarray, state: np.ndarray) -> np.ndarray:
        obs = self.env.observation()
        with self.latency.time("expert"):
            q, width = self.expert.act(obs.arm_q, obs.gripper_width, obs.cube_pos, obs.cube_quat)
        return np.append(q, width)


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    steps: int  # control steps run (the step of first success when successful)
    distances: list[float]  # gripper(TCP)-to-cube distance (m) at reset and after every step
    lift: list[float]  # cube height above its start (m) after every step
    frames: list[np.ndarray] = field(default_factory=list, repr=False)
    wall_s: float = 0.0

    @property
    def start_distance(self) -> float:
        return self.distances[0]

    @property
    def min_distance(self) -> float:
        return float(min(self.distances))

    @property
    def final_distance(self) -> float:
        return self.distances[-1]

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "success": self.success,
            "steps": self.steps,
            "start_distance_m": self.start_distance,
            "min_distance_m": self.min_distance,
            "final_distance_m": self.final_distance,
            "max_lift_m": float(max(self.lift)) if self.lift else 0.0,
            "wall_s": self.wall_s,
        }


def run_episode(
    env,
    controller: Controller,
    seed: int,
    max_steps: int,
    capture_frames: bool = False,
    stop_on_success: bool = True,
) -> EpisodeResult:
    """Reset ``env`` to ``seed`` and run ``controller`` for up to ``max_steps`` control steps.

    Rendering and physics are timed into ``controller.latency`` as ``render`` and ``sim_step``.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    t0 = time.perf_counter()
    cameras = tuple(getattr(controller, "cameras", ("camera",)))
    obs = env.reset(seed)
    controller.reset(seed)
    lat = controller.latency
    cube_z0 = float(obs.cube_pos[2])
    distances = [float(np.linalg.norm(obs.tcp_pos - obs.cube_pos))]
    lift: list[float] = []
    frames: list[np.ndarray] = []
    success = False
    steps = 0
    for step in range(1, max_steps + 1):
        steps = step
        with lat.time("render"):
            if cameras == ("camera",):
                image = env.render()
            else:  # (V, H, W, 3): every camera of the policy, rendered at the same instant
                views = env.render_views(cameras)
                image = np.stack([views[c] for c in cameras])
        if capture_frames:
            frames.append(image if image.ndim == 3 else np.concatenate(list(image), axis=1))
        action = controller.act(image, state_of(obs))
        if action.shape != (8,) or not np.all(np.isfinite(action)):
            raise ValueError(f"controller produced an invalid action {action!r}")
        with lat.time("sim_step"):
            obs = env.step(action[:7], float(action[7]))
        distances.append(float(np.linalg.norm(obs.tcp_pos - obs.cube_pos)))
        lift.append(float(obs.cube_pos[2]) - cube_z0)
        if env.success():
            success = True
            if stop_on_success:
                break
    if capture_frames:
        if cameras == ("camera",):
            frames.append(env.render())
        else:
            views = env.render_views(cameras)
            frames.append(np.concatenate([views[c] for c in cameras], axis=1))
    return EpisodeResult(
        seed=seed,
        success=success,
        steps=steps,
        distances=distances,
        lift=lift,
        frames=frames,
        wall_s=time.perf_counter() - t0,
    )

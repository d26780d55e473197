"""The controller the robot runs, as one object: perception -> chunk -> smoothing -> safety gate.

Three stages, each the whole logic of one node (the nodes are thin adapters around them):

- ``EncoderStage`` (encoder_node): camera frames -> a complete set of views (``ViewSet``) ->
  routed tokens per camera (``Perception``: every view in one batched forward pass).
- ``PolicyStage`` (policy_node): routed tokens per camera + the joint state -> a smoothed,
  time-stamped action chunk (``ChunkPredictor``); ``status(now)`` names what keeps it from
  acting (a missing or stale view, no joint state), which the gate turns into a named hold.
- ``SafetyGate`` (safety_node): chunks + joint states + e-stop -> one limited command per tick.

``Controller`` holds the three, ticked on whatever clock its caller gives it. In-process
evaluation (``ver_core.eval.closed_loop``) runs it against the simulator; the ROS nodes run its
stages between processes. What we measure in-process is what the robot runs.

Staleness is one budget (``StalenessBudget``): every stage drops inputs older than it, and the
gate stops the arm once the chunk's observation is older than it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ver_core.deploy.chunk import ActionChunk
from ver_core.deploy.freshness import DEFAULT_BUDGET, StalenessBudget
from ver_core.deploy.views import VIEW_TOLERANCE_S, ViewSet
from ver_core.robot import DEFAULT_FINGERS, DEFAULT_JOINTS, JointStateError, read_joint_state
from ver_core.safety import SafetyGate

JOINT_HISTORY = 512  # joint states kept to look up the arm's pose when a frame was taken

__all__ = ["Controller", "EncodedViews", "EncoderStage", "PolicyStage"]


@dataclass(frozen=True)
class EncodedViews:
    """Routed tokens of one set of views: per camera (in order) its stamp (s), tokens (N, D),
    experts (L, P, K) and the frame it came from."""

    cameras: tuple[str, ...]
    stamps: tuple[float, ...]
    tokens: np.ndarray  # (V, N, D) float32
    experts: np.ndarray  # (V, L, P, K) int64
    frames: tuple[np.ndarray, ...]


class EncoderStage:
    """Camera frames in, routed tokens of complete view sets out."""

    def __init__(
        self,
        perception,
        budget: StalenessBudget = DEFAULT_BUDGET,
        tolerance_s: float = VIEW_TOLERANCE_S,
    ) -> None:
        self.perception = perception
        self.cameras = list(perception.cameras)
        self.budget = budget
        self.views = ViewSet(self.cameras, budget.observation_s, tolerance_s)
        self.dropped = {"too_old": 0, "future": 0}

    def reset(self) -> None:
        self.views.reset()

    def on_image(
        self, camera: str, rgb: np.ndarray, stamp: float, now: float
    ) -> EncodedViews | None:
        """A decoded frame of ``camera`` taken at ``stamp``; encodes once it completes a set.

        Frames older than the budget (or stamped in the future) are dropped: nothing may act on
        them anyway."""
        age = now - stamp
        if age > self.budget.observation_s:
            self.dropped["too_old"] += 1
            return None
        if age < -0.5:
            self.dropped["future"] += 1
            return None
        views = self.views.add(camera, stamp, rgb)
        if views is None:
            return None
        tokens, experts = self.perception(list(views.items))
        return EncodedViews(tuple(self.cameras), views.stamps, tokens, experts, views.items)


class PolicyStage:
    """Routed tokens per camera + joint states in, smoothed action chunks out."""

    def __init__(
        self,
        predictor,
        cameras: Sequence[str],
        joint_names: Sequence[str] = DEFAULT_JOINTS,
        finger_names: Sequence[str] = DEFAULT_FINGERS,
        budget: StalenessBudget = DEFAULT_BUDGET,
        tolerance_s: float = VIEW_TOLERANCE_S,
    ) -> None:
        self.predictor = predictor
        self.cameras = list(cameras)
        self.joint_names, self.finger_names = list(joint_names), list(finger_names)
        self.budget = budget
        self.views = ViewSet(self.cameras, budget.observation_s, tolerance_s)
        self._state: np.ndarray | None = None
        self._state_time = -np.inf
        self._state_problem: str | None = "no_joint_state"
        self._history: deque[tuple[float, np.ndarray]] = deque(maxlen=JOINT_HISTORY)

    def reset(self) -> None:
        """Forget views, state, the smoother's history and the tracked grasp point (a new
        episode)."""
        self.views.reset()
        self.predictor.reset()
        self._state, self._state_time, self._state_problem = None, -np.inf, "no_joint_state"
        self._history.clear()

    def on_joint_state(
        self,
        names: Sequence[str],
        positions: Sequence[float],
        now: float,
        stamp: float | None = None,
    ) -> None:
        """Raises JointStateError for a joint state it cannot read (the caller logs and drops).
        ``stamp``: when the joints were measured (the message's header; default ``now``)."""
        reading = read_joint_state(names, positions, self.joint_names, self.finger_names)
        if reading.gripper is None:
            self._state_problem = "no_gripper_width"
            raise JointStateError(f"joint state lacks the finger joints {self.finger_names}")
        self._state = np.append(reading.q, reading.gripper)
        self._state_time, self._state_problem = float(now), None
        t = float(now if stamp is None or stamp <= 0 else stamp)
        if self._history and t < self._history[-1][0]:
            self._history.clear()  # time ran backwards (a restarted clock): start over
        self._history.append((t, self._state.copy()))

    def state_at(self, t: float) -> np.ndarray | None:
        """The joint state (S,) when a frame stamped ``t`` was taken: interpolated between the
        measurements around ``t`` (the oldest or newest kept one beyond them; None before any).
        A camera on the arm saw the world from where the arm was then, not from where it is
        when the policy acts, 0.1-0.3 s later."""
        if not self._history:
            return None
        times = [h[0] for h in self._history]
        k = int(np.searchsorted(times, t))
        if k == 0:
            return self._history[0][1].copy()
        if k == len(times):
            return self._history[-1][1].copy()
        (t0, s0), (t1, s1) = self._history[k - 1], self._history[k]
        w = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
        return s0 + w * (s1 - s0)

    def status(self, now: float) -> str:
        """``ok``, or ``hold: <reason>`` for what keeps the policy from acting."""
        reason = self.views.status(now)
        if reason is None:
            if self._state_problem is not None:
                reason = self._state_problem
            elif now - self._state_time > self.budget.joint_state_s:
                reason = "stale_joint_state"
        return "ok" if reason is None else f"hold: {reason}"

    def on_features(
        self, camera: str, tokens: np.ndarray, stamp: float, now: float
    ) -> ActionChunk | None:
        """Routed tokens (N, D) of ``camera``'s frame at ``stamp``; a chunk once a set of views is
        complete, fresh and a fresh joint state is known."""
        views = self.views.add(camera, stamp, tokens)
        if views is None or now - views.stamp > self.budget.observation_s:
            return None
        if self._state is None or now - self._state_time > self.budget.joint_state_s:
            return None
        return self.predictor(
            np.stack(views.items),
            self._state,
            views.stamp,
            now=now,
            image_state=self.state_at(views.stamp),
            state_stamp=self._history[-1][0],
        )


class Controller:
    """The three stages on one clock (see the module docstring)."""

    def __init__(self, encoder: EncoderStage, policy: PolicyStage, gate: SafetyGate) -> None:
        if encoder.cameras != policy.cameras:
            raise ValueError(f"encoder cameras {encoder.cameras} != policy's {policy.cameras}")
        self.encoder, self.policy, self.gate = encoder, policy, gate

    @property
    def cameras(self) -> list[str]:
        return self.encoder.cameras

    def reset(self) -> None:
        self.encoder.reset()
        self.policy.reset()

    def on_joint_state(
        self,
        names: Sequence[str],
        positions: Sequence[float],
        now: float,
        stamp: float | None = None,
    ) -> None:
        """The policy and the gate read the same message by the same rule (``stamp``: when
        it was measured)."""
        try:
            self.policy.on_joint_state(names, positions, now, stamp)
        except JointStateError:
            pass
        try:
            reading = read_joint_state(
                names, positions, self.policy.joint_names, self.policy.finger_names
            )
        except JointStateError:
            return
        self.gate.on_joint_state(reading.q, now, gripper=reading.gripper)

    def on_features(self, encoded: EncodedViews, now: float) -> ActionChunk | None:
        """Hand a set of routed views to the policy (as the encoder node's messages, in order)."""
        chunk = None
        for cam, stamp, tokens in zip(encoded.cameras, encoded.stamps, encoded.tokens, strict=True):
            chunk = self.policy.on_features(cam, tokens, stamp, now) or chunk
        return chunk

    def on_chunk(self, chunk: ActionChunk, now: float) -> None:
        self.gate.on_chunk(chunk, now)

    def sync_status(self, now: float) -> str:
        """Pass the policy's hold reason (if any) to the gate, as the policy status topic does."""
        status = self.policy.status(now)
        self.gate.set_upstream_hold(status[len("hold:") :].strip() if status != "ok" else None)
        return status


def build_controller(
    policy,
    settings=None,
    backend: str = "torch",
    checkpoint_dir=None,
    threads: int = 0,
) -> Controller:
    """The controller of a task policy, with the deployment settings (``DeploySettings``, default:
    the built-in defaults) the nodes would run with."""
    from ver_core.deploy.pipeline import ChunkPredictor, Perception
    from ver_core.deploy.settings import DeploySettings

    settings = settings or DeploySettings()
    cfg = policy.config
    perception = Perception(policy, backend, checkpoint_dir, threads=threads)
    encoder = EncoderStage(perception, settings.budget)
    predictor = ChunkPredictor(policy, settings.smoothing, perception.stats)
    stage = PolicyStage(
        predictor, cfg.cameras, cfg.joint_names, cfg.finger_joint_names, settings.budget
    )
    gate = SafetyGate(settings.safety, settings.limits)
    return Controller(encoder, stage, gate)

"""The safety gate between a learned policy and the robot's controllers (pure, no rclpy).

Each control tick (``step(now)``) the gate samples the current action chunk at ``now`` and turns
it into a joint target that is:

- clamped to the joint position limits minus a margin,
- moved from the previous command by at most a per-step cap (min of ``max_step`` and the joint
  velocity limit times ``velocity_scale`` over one control period),
- scaled down further while ramping in after any hold (the cap grows linearly from 0 to full over
  ``ramp_time_s``), so leaving a stop never jumps.

It holds the last command instead (reasons reported by ``status``) on: no joint state yet or a
stale one, e-stop, no chunk, a chunk heartbeat timeout, a chunk whose observation is older than
``observation_timeout_s``, a chunk past its end, or a rejected chunk (NaN/inf, wrong width).
A rejected chunk is never stored, so nothing from it can reach the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from ver_core.deploy.chunk import ActionChunk
from ver_core.safety.limits import JointLimits

__all__ = ["GateOutput", "HoldReason", "SafetyConfig", "SafetyGate"]


GRIPPER_RESYNC_TOLERANCE = 0.01  # m of hand opening


class HoldReason(str, Enum):
    NO_JOINT_STATE = "no_joint_state"
    STALE_JOINT_STATE = "stale_joint_state"
    E_STOP = "e_stop"
    NO_CHUNK = "no_chunk"
    CHUNK_TIMEOUT = "chunk_timeout"
    STALE_OBSERVATION = "stale_observation"
    CHUNK_EXPIRED = "chunk_expired"
    NAN_ACTION = "nan_action"
    BAD_CHUNK = "bad_chunk"


@dataclass
class SafetyConfig:
    """Gate settings. Times in s, angles in rad, gripper widths in m."""

    control_rate_hz: float = 50.0
    position_margin: float = 0.05
    velocity_scale: float = 0.5
    max_step: float = 0.02
    observation_timeout_s: float = 0.6
    chunk_timeout_s: float = 0.5
    joint_state_timeout_s: float = 0.25
    ramp_time_s: float = 1.0
    resync_tolerance: float = 0.05
    gripper_min: float = 0.0
    gripper_max: float = 0.08
    gripper_max_speed: float = 0.1

    def __post_init__(self) -> None:
        positive = (
            "control_rate_hz", "velocity_scale", "max_step", "observation_timeout_s",
            "chunk_timeout_s", "joint_state_timeout_s", "gripper_max_speed", "resync_tolerance",
        )  # fmt: skip
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"safety {name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.velocity_scale <= 1:
            raise ValueError(f"velocity_scale must be in (0, 1], got {self.velocity_scale}")
        if self.position_margin < 0 or self.ramp_time_s < 0:
            raise ValueError("position_margin and ramp_time_s must be >= 0")
        if not self.gripper_min < self.gripper_max:
            raise ValueError(
                f"gripper_min {self.gripper_min} must be < gripper_max {self.gripper_max}"
            )

    @property
    def period(self) -> float:
        return 1.0 / self.control_rate_hz


@dataclass(frozen=True)
class GateOutput:
    """arm: (N,) joint targets; gripper: width in m; holding: True if ``arm`` is a held pose."""

    arm: np.ndarray
    gripper: float
    holding: bool
    status: str


class SafetyGate:
    """Stateful gate: feed it joint states, chunks and the e-stop; call ``step`` every tick."""

    def __init__(self, config: SafetyConfig, limits: JointLimits) -> None:
        self.config = config
        self.limits = limits
        self.n = limits.num_joints
        self.lower, self.upper = limits.shrunk(config.position_margin)  # (N,), (N,)
        self.step_cap = np.minimum(
            config.max_step, config.velocity_scale * limits.velocity * config.period
        )  # (N,) rad per tick
        self._q: np.ndarray | None = None  # measured (N,)
        self._q_time = -np.inf
        self._gripper_measured: float | None = None
        self._chunk: ActionChunk | None = None
        self._chunk_time = -np.inf  # receipt time of the last accepted chunk
        self._rejected: HoldReason | None = None
        self._estop = False
        self._cmd: np.ndarray | None = None  # last commanded (N,)
        self._gripper_cmd: float | None = None
        self._ramp = 0.0  # 0 = just left a hold, 1 = full speed
        self._was_holding = True
        self.status = HoldReason.NO_JOINT_STATE.value

    # ---- inputs -----------------------------------------------------------------------------
    def on_joint_state(self, q: np.ndarray, now: float, gripper: float | None = None) -> None:
        q = np.asarray(q, dtype=np.float64).reshape(-1)
        if q.shape[0] != self.n or not np.all(np.isfinite(q)):
            return  # a broken measurement counts as none: the staleness timer keeps running
        self._q, self._q_time = q, float(now)
        if gripper is not None and np.isfinite(gripper):
            self._gripper_measured = float(gripper)

    def on_chunk(self, chunk: ActionChunk, now: float) -> HoldReason | None:
        """Store ``chunk`` if acceptable; return the rejection reason otherwise.

        A rejected chunk also drops the previous one: after a bad prediction the gate holds until
        a good chunk arrives rather than finishing an older plan.
        """
        reason = None
        if chunk.actions.shape[1] not in (self.n, self.n + 1):
            reason = HoldReason.BAD_CHUNK
        elif not chunk.is_finite():
            reason = HoldReason.NAN_ACTION
        elif now - chunk.stamp > self.config.observation_timeout_s:
            reason = HoldReason.STALE_OBSERVATION
        if reason is not None:
            self._rejected, self._chunk = reason, None
            return reason
        self._chunk, self._chunk_time, self._rejected = chunk, float(now), None
        return None

    def reject(self, reason: HoldReason = HoldReason.BAD_CHUNK) -> None:
        """Record a chunk that could not even be parsed: drop the current chunk and hold."""
        self._rejected, self._chunk = reason, None

    def set_estop(self, active: bool) -> None:
        self._estop = bool(active)

    # ---- tick -------------------------------------------------------------------------------
    def hold_reasons(self, now: float) -> list[HoldReason]:
        reasons: list[HoldReason] = []
        if self._estop:
            reasons.append(HoldReason.E_STOP)
        if self._q is None:
            reasons.append(HoldReason.NO_JOINT_STATE)
        elif now - self._q_time > self.config.joint_state_timeout_s:
            reasons.append(HoldReason.STALE_JOINT_STATE)
        if self._rejected is not None:
            reasons.append(self._rejected)
        elif self._chunk is None:
            reasons.append(HoldReason.NO_CHUNK)
        else:
            if now - self._chunk_time > self.config.chunk_timeout_s:
                reasons.append(HoldReason.CHUNK_TIMEOUT)
            if now - self._chunk.stamp > self.config.observation_timeout_s:
                reasons.append(HoldReason.STALE_OBSERVATION)
            if now > self._chunk.end_time + self.config.period:
                reasons.append(HoldReason.CHUNK_EXPIRED)
        return reasons

    def step(self, now: float) -> GateOutput | None:
        """The command for time ``now``, or None while the robot's position is unknown."""
        if self._cmd is None:
            if self._q is None:
                self.status = HoldReason.NO_JOINT_STATE.value
                return None
            self._cmd = self._q.copy()  # first command: exactly where the robot is
        if self._gripper_cmd is None:
            g = (
                self._gripper_measured
                if self._gripper_measured is not None
                else self.config.gripper_max
            )
            self._gripper_cmd = float(np.clip(g, self.config.gripper_min, self.config.gripper_max))
        reasons = self.hold_reasons(now)
        if reasons:
            self._was_holding, self._ramp = True, 0.0
            self.status = "hold: " + ",".join(r.value for r in reasons)
            return GateOutput(self._cmd.copy(), self._gripper_cmd, True, self.status)
        if self._was_holding:
            self._was_holding = False
            # leaving a hold: if the robot is far from the held command (moved while we held),
            # start from where it really is so the ramp begins at the robot, not at a stale pose
            assert self._q is not None
            if np.max(np.abs(self._q - self._cmd)) > self.config.resync_tolerance:
                self._cmd = self._q.copy()
            # the same for the hand: a width commanded before the hold (closed on a cube, say)
            # must not be re-sent to a hand that was opened meanwhile (an episode reset)
            if (
                self._gripper_measured is not None
                and abs(self._gripper_measured - self._gripper_cmd) > GRIPPER_RESYNC_TOLERANCE
            ):
                self._gripper_cmd = float(
                    np.clip(
                        self._gripper_measured, self.config.gripper_min, self.config.gripper_max
                    )
                )
        if self.config.ramp_time_s > 0:
            self._ramp = min(1.0, self._ramp + self.config.period / self.config.ramp_time_s)
        else:
            self._ramp = 1.0
        assert self._chunk is not None
        target = self._chunk.sample(now)  # (N,) or (N+1,)
        arm = np.clip(target[: self.n], self.lower, self.upper)
        cap = self.step_cap * self._ramp
        self._cmd = self._cmd + np.clip(arm - self._cmd, -cap, cap)
        if target.shape[0] > self.n:
            g = float(np.clip(target[self.n], self.config.gripper_min, self.config.gripper_max))
            g_cap = self.config.gripper_max_speed * self.config.period * self._ramp
            self._gripper_cmd += float(np.clip(g - self._gripper_cmd, -g_cap, g_cap))
        self.status = "ok" if self._ramp >= 1.0 else "ramping"
        return GateOutput(self._cmd.copy(), self._gripper_cmd, False, self.status)

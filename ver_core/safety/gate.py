"""The safety gate between a learned policy and the robot's controllers (pure, no rclpy).

Each control tick (``step(now)``) the gate samples the current action chunk at ``now`` and turns
it into a joint target. Its guarantees hold for every sequence of inputs (joint states, chunks,
e-stops, upstream holds, clock values), and are checked as properties over generated sequences
in ``tests/unit/test_safety_gate_properties.py``:

1. **Inside the limits.** Every arm command is finite and inside the joint position limits minus
   ``position_margin``, whatever the measured state is; every gripper command is finite and
   inside ``[gripper_min, gripper_max]``.
2. **No jump.** A command differs from its reference by at most the per-tick cap
   (``min(max_step, velocity_scale * velocity_limit / control_rate_hz)``, further scaled down by
   the ramp-in after a hold and by a tick that came early). The reference is the previous command,
   except on the first command after a hold, where it is the measured pose clamped into the
   limits: leaving a hold always starts from where the robot is, never from a stale held pose.
3. **A named hold for anything it cannot vouch for**: no joint state, a stale or future one
   (clock jump), a measured pose outside the limits, a measured jump faster than the joints can
   move, an e-stop, an upstream hold (a missing camera view, say), no chunk, a chunk whose
   observation is older than ``observation_budget_s``, a chunk past its end, a rejected chunk
   (NaN/inf, wrong width). While holding, the output is the held pose (the last command), which
   satisfies 1 and 2 by construction. A rejected chunk is never stored.

Besides these holds, the arm waits for the fingers (``ver_core.safety.grasp``): once the chunk
asks the hand to close, the arm command stays at its reference (status ``grasping``: the previous
command, or on leaving a hold the measured pose) until the fingers have stopped on something or
reached their target, ``grasp_wait_s`` at most. That wait sends the reference itself, so 1 and 2
hold through it as well.

The staleness rule is one budget (``ver_core.deploy.freshness.StalenessBudget``): motion stops
at most ``observation_budget_s`` after the camera frame the current chunk was predicted from, and
at most ``joint_state_budget_s`` after the last joint state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from ver_core.deploy.chunk import ActionChunk
from ver_core.safety.grasp import GraspInterlock, GraspInterlockConfig
from ver_core.safety.limits import JointLimits

__all__ = ["GateOutput", "HoldReason", "SafetyConfig", "SafetyGate"]


GRIPPER_RESYNC_TOLERANCE = 0.01  # m of hand opening
# A measured joint moving faster than JUMP_FACTOR x its velocity limit (plus JUMP_SLACK rad, for
# receipt jitter) between two readings is a sensor glitch or a teleport, not motion.
JUMP_FACTOR = 1.5
JUMP_SLACK = 0.02
MIN_JUMP_WINDOW_S = 0.05  # readings that arrive in a burst still had >= this much motion time
FUTURE_TOLERANCE_S = 0.05  # an input stamped later than now by more than this: clock jumped


class HoldReason(str, Enum):
    NO_JOINT_STATE = "no_joint_state"
    STALE_JOINT_STATE = "stale_joint_state"
    JOINT_STATE_OUT_OF_LIMITS = "joint_state_out_of_limits"
    JOINT_STATE_JUMP = "joint_state_jump"
    CLOCK_JUMP = "clock_jump"
    E_STOP = "e_stop"
    UPSTREAM = "upstream"
    NO_CHUNK = "no_chunk"
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
    observation_budget_s: float = 0.25
    joint_state_budget_s: float = 0.25
    ramp_time_s: float = 1.0
    gripper_min: float = 0.0
    gripper_max: float = 0.08
    gripper_max_speed: float = 0.1
    grasp_wait_s: float = 1.0  # the arm waits for a closing hand at most this long (0: never)

    def __post_init__(self) -> None:
        positive = (
            "control_rate_hz", "velocity_scale", "max_step", "observation_budget_s",
            "joint_state_budget_s", "gripper_max_speed",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"safety {name} must be > 0, got {value}")
        if not 0 < self.velocity_scale <= 1:
            raise ValueError(f"velocity_scale must be in (0, 1], got {self.velocity_scale}")
        if not (self.position_margin >= 0 and self.ramp_time_s >= 0):
            raise ValueError("position_margin and ramp_time_s must be >= 0")
        if not self.gripper_min < self.gripper_max:
            raise ValueError(
                f"gripper_min {self.gripper_min} must be < gripper_max {self.gripper_max}"
            )
        if not (np.isfinite(self.grasp_wait_s) and self.grasp_wait_s >= 0):
            raise ValueError(f"safety grasp_wait_s must be >= 0, got {self.grasp_wait_s}")

    @property
    def period(self) -> float:
        return 1.0 / self.control_rate_hz


@dataclass(frozen=True)
class GateOutput:
    """arm: (N,) joint targets; gripper: width in m; holding: True if ``arm`` is a held pose.

    reference: (N,) what ``arm`` was capped against (the previous command, or the clamped
    measured pose on leaving a hold): ``|arm - reference| <= step_cap`` always.
    """

    arm: np.ndarray
    gripper: float
    holding: bool
    status: str
    reference: np.ndarray


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
        self._q: np.ndarray | None = None  # last measured (N,), finite
        self._q_time = -np.inf
        self._q_state: HoldReason | None = None  # out of limits / jump, until a good reading
        self._gripper_measured: float | None = None
        self._chunk: ActionChunk | None = None
        self._rejected: HoldReason | None = None
        self._estop = False
        self._upstream: str | None = None
        self._cmd: np.ndarray | None = None  # last commanded (N,), inside [lower, upper]
        self._gripper_cmd: float | None = None
        self._ramp = 0.0  # 0 = just left a hold, 1 = full speed
        self._was_holding = True
        self._grasp = GraspInterlock(GraspInterlockConfig(max_s=config.grasp_wait_s))
        self._last_tick: float | None = None
        self._clock_jumped = False
        self.status = HoldReason.NO_JOINT_STATE.value

    # ---- inputs -----------------------------------------------------------------------------
    def on_joint_state(self, q: np.ndarray, now: float, gripper: float | None = None) -> None:
        """A measured arm pose (N,) received at ``now``. A reading with the wrong length or a
        non-finite value counts as none (the staleness budget keeps running); a pose outside the
        hard limits, or one that moved faster than the joints can, is kept as the latest reading
        but makes the gate hold (``joint_state_out_of_limits`` / ``joint_state_jump``) until a
        plausible reading inside the limits arrives."""
        q = np.asarray(q, dtype=np.float64).reshape(-1)
        if q.shape[0] != self.n or not np.all(np.isfinite(q)) or not np.isfinite(now):
            return
        lim = self.limits
        if np.any(q < lim.lower) or np.any(q > lim.upper):
            self._q_state = HoldReason.JOINT_STATE_OUT_OF_LIMITS
        elif self._q is not None and self._jumped(q, float(now)):
            self._q_state = HoldReason.JOINT_STATE_JUMP
        else:
            self._q_state = None
        self._q, self._q_time = q, float(now)
        if gripper is not None and np.isfinite(gripper):
            self._gripper_measured = float(gripper)

    def _jumped(self, q: np.ndarray, now: float) -> bool:
        assert self._q is not None
        window = max(now - self._q_time, MIN_JUMP_WINDOW_S)
        reach = JUMP_FACTOR * self.limits.velocity * window + JUMP_SLACK
        return bool(np.any(np.abs(q - self._q) > reach))

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
        elif self._age_bad(chunk.stamp, now, self.config.observation_budget_s):
            reason = HoldReason.STALE_OBSERVATION
        if reason is not None:
            self._rejected, self._chunk = reason, None
            return reason
        self._chunk, self._rejected = chunk, None
        return None

    def reject(self, reason: HoldReason = HoldReason.BAD_CHUNK) -> None:
        """Record a chunk that could not even be parsed: drop the current chunk and hold."""
        self._rejected, self._chunk = reason, None

    def set_estop(self, active: bool) -> None:
        self._estop = bool(active)

    def set_upstream_hold(self, reason: str | None) -> None:
        """A hold asked for by an earlier stage (e.g. ``missing_view:wrist_camera``); None clears
        it. The current chunk is dropped: nothing planned before the problem is finished."""
        if reason:
            if str(reason) != self._upstream:
                self._upstream, self._chunk = str(reason), None
        else:
            self._upstream = None

    @staticmethod
    def _age_bad(stamp: float, now: float, budget: float) -> bool:
        age = now - stamp
        return not (-FUTURE_TOLERANCE_S <= age <= budget)

    # ---- tick -------------------------------------------------------------------------------
    def hold_reasons(self, now: float) -> list[str]:
        cfg = self.config
        reasons: list[str] = []
        if self._clock_jumped:
            reasons.append(HoldReason.CLOCK_JUMP.value)
        if self._estop:
            reasons.append(HoldReason.E_STOP.value)
        if self._q is None:
            reasons.append(HoldReason.NO_JOINT_STATE.value)
        else:
            if self._age_bad(self._q_time, now, cfg.joint_state_budget_s):
                reasons.append(HoldReason.STALE_JOINT_STATE.value)
            if self._q_state is not None:
                reasons.append(self._q_state.value)
        if self._upstream is not None:
            reasons.append(f"{HoldReason.UPSTREAM.value}:{self._upstream}")
        if self._rejected is not None:
            reasons.append(self._rejected.value)
        elif self._chunk is None:
            if self._upstream is None:
                reasons.append(HoldReason.NO_CHUNK.value)
        else:
            if self._age_bad(self._chunk.stamp, now, cfg.observation_budget_s):
                reasons.append(HoldReason.STALE_OBSERVATION.value)
            if now > self._chunk.end_time + cfg.period:
                reasons.append(HoldReason.CHUNK_EXPIRED.value)
        return reasons

    def _start_pose(self) -> np.ndarray:
        """The measured pose clamped into the commandable range (requires a joint state)."""
        assert self._q is not None
        return np.clip(self._q, self.lower, self.upper)

    def _tick_fraction(self, now: float) -> float:
        """Fraction of a full period since the last tick, in [0, 1]: an early tick moves less,
        a late one never more than one period's cap. Notes a clock that went backwards."""
        last, self._last_tick = self._last_tick, float(now)
        self._clock_jumped = not np.isfinite(now) or (last is not None and now < last)
        if last is None or self._clock_jumped:
            return 1.0
        return float(min(1.0, (now - last) / self.config.period))

    def step(self, now: float) -> GateOutput | None:
        """The command for time ``now``, or None while no safe pose is known (no joint state yet,
        or only measurements outside the limits)."""
        cfg = self.config
        fraction = self._tick_fraction(now)
        reasons = self.hold_reasons(now)
        if self._cmd is None:
            # nothing commanded yet: the first held pose is where the robot is, if that is known
            # and plausible; else publish nothing (the robot's controller keeps its own hold)
            if self._q is None or self._q_state is not None:
                self.status = "hold: " + ",".join(reasons or [HoldReason.NO_JOINT_STATE.value])
                return None
            self._cmd = self._start_pose()
        if self._gripper_cmd is None:
            g = self._gripper_measured if self._gripper_measured is not None else cfg.gripper_max
            self._gripper_cmd = float(np.clip(g, cfg.gripper_min, cfg.gripper_max))
        if reasons:
            self._was_holding, self._ramp = True, 0.0
            self.status = "hold: " + ",".join(reasons)
            return GateOutput(
                self._cmd.copy(), self._gripper_cmd, True, self.status, self._cmd.copy()
            )
        if self._was_holding:
            # leaving a hold: start from where the robot is (clamped into the limits), never
            # from the held pose, which the robot may have left meanwhile (moved by hand, reset)
            self._was_holding = False
            self._cmd = self._start_pose()
            # the same for the hand: a width commanded before the hold (closed on a cube, say)
            # must not be re-sent to a hand that was opened meanwhile (an episode reset)
            if (
                self._gripper_measured is not None
                and abs(self._gripper_measured - self._gripper_cmd) > GRIPPER_RESYNC_TOLERANCE
            ):
                self._gripper_cmd = float(
                    np.clip(self._gripper_measured, cfg.gripper_min, cfg.gripper_max)
                )
        if cfg.ramp_time_s > 0:
            self._ramp = min(1.0, self._ramp + cfg.period / cfg.ramp_time_s)
        else:
            self._ramp = 1.0
        assert self._chunk is not None
        reference = self._cmd
        target = self._chunk.sample(now)  # (N,) or (N+1,)
        waiting = False
        if target.shape[0] > self.n:
            g = float(np.clip(target[self.n], cfg.gripper_min, cfg.gripper_max))
            g_cap = cfg.gripper_max_speed * cfg.period * self._ramp * fraction
            self._gripper_cmd = float(
                np.clip(
                    self._gripper_cmd + np.clip(g - self._gripper_cmd, -g_cap, g_cap),
                    cfg.gripper_min,
                    cfg.gripper_max,
                )
            )
            waiting = self._grasp.update(now, g, self._gripper_cmd, self._gripper_measured)
        else:
            self._grasp.reset()
        if waiting:
            self.status = "grasping"  # the arm stays at its reference (see the module doc)
        else:
            arm = np.clip(target[: self.n], self.lower, self.upper)
            cap = self.step_cap * (self._ramp * fraction)
            # clip into the limits last: rounding must never leave the commandable range
            self._cmd = np.clip(
                reference + np.clip(arm - reference, -cap, cap), self.lower, self.upper
            )
            self.status = "ok" if self._ramp >= 1.0 else "ramping"
        return GateOutput(self._cmd.copy(), self._gripper_cmd, False, self.status, reference.copy())

"""ScriptedExpert: solves the pick-and-lift task from the true state, for demonstrations.

It is a stateful policy of the same kind a learned one is: each control step it maps an
observation (measured arm joints, gripper width, cube pose) to an action (7 arm joint position
targets in rad, Franka convention, + gripper width in m). Motion comes from differential inverse
kinematics (damped least squares on MuJoCo's site Jacobian of its own copy of the model) toward a
moving TCP waypoint, with a null-space pull to a comfortable posture. Outputs are smooth by
construction: the waypoint moves at a capped speed, each joint target changes by at most
``max_joint_speed / control_hz`` per step, and targets stay ``limit_margin`` inside the Panda
limits.

Phases: approach (above the cube, gripper open, yaw aligned to a cube face) -> descend -> [settle]
-> close -> lift -> hold. A grasp that closes on nothing (width ~0 while lifting) reopens and
retries. ``settle_s > 0`` adds the settle phase: once the command has reached the grasp, the
gripper stays open until the measured hand is there too (within ``settle_tol``) or has stopped
(the position controller leaves 1-2.5 cm of sag; a hand resting on the cube's top), at most
``settle_s``. With a finite ``settle_far`` a hand stopped farther off goes back up and again.
With DART noise on the descent (``ExecutionNoise``, off while settling) the hand is otherwise up
to 6 cm off the grasp when the close label starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from ver_core.sim.env import HOME_Q, MAX_GRIPPER_WIDTH
from ver_core.sim.scene import JOINT_OFFSET, PANDA_LIMITS, build_model

__all__ = ["Detour", "ExecutionNoise", "ExpertConfig", "Miss", "ScriptedExpert", "Twist"]

APPROACH, DESCEND, CLOSE, LIFT, HOLD, SETTLE = range(6)
MAX_GO_S = 3.0  # longest flight of a Detour to its decoy (s)
MAX_MISS_S = 6.0  # longest missed grasp of a Miss, from home to the lift (s)
PHASE_NAMES = ("approach", "descend", "close", "lift", "hold", "settle")


@dataclass
class ExpertConfig:
    """control_hz: rate of ``act`` calls. Speeds in m/s and rad/s; heights in m."""

    control_hz: float = 10.0
    max_tcp_speed: float = 0.25
    descend_speed: float = 0.12
    max_joint_speed: float = 1.0
    limit_margin: float = 0.05
    pregrasp_height: float = 0.10
    grasp_offset: float = 0.015  # TCP above the cube centre when closing
    lift_height: float = 0.20
    close_time: float = 0.8
    damping: float = 0.05
    null_gain: float = 0.2
    tolerance: float = 0.012
    settle_s: float = 0.0  # longest wait for the measured hand at the grasp (0: close at once)
    settle_tol: float = 0.01  # measured TCP this close to the grasp ends the wait
    settle_still: float = 0.003  # ... as does a hand that moved less than this in one step
    # a hand stopped or timed out farther off than this goes back up and again (off: inf; 0.03
    # taught the policy to back off a few cm above the cube, docs/RESULTS.md session 23)
    settle_far: float = math.inf

    def __post_init__(self) -> None:
        for name in (
            "control_hz",
            "max_tcp_speed",
            "descend_speed",
            "max_joint_speed",
            "close_time",
            "damping",
            "tolerance",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"ExpertConfig.{name} must be > 0, got {getattr(self, name)}")
        if (
            self.settle_s < 0
            or not 0 < self.settle_tol <= self.settle_far
            or self.settle_still <= 0
        ):
            raise ValueError(
                f"ExpertConfig needs settle_s >= 0, 0 < settle_tol <= settle_far and settle_still "
                f"> 0, got {self.settle_s}, {self.settle_tol}, {self.settle_far}, {self.settle_still}"
            )
        if self.max_joint_speed > 2.0:
            raise ValueError(
                f"max_joint_speed {self.max_joint_speed} rad/s exceeds the Panda's 2.175 with margin"
            )


class ScriptedExpert:
    """``reset(arm_q)`` then ``act(arm_q, gripper_width, cube_pos, cube_quat) -> (q (7,), width)``."""

    def __init__(
        self, config: ExpertConfig | None = None, model: mujoco.MjModel | None = None
    ) -> None:
        self.config = config or ExpertConfig()
        self.model = model if model is not None else build_model()
        self.data = mujoco.MjData(self.model)
        self._site = self.model.site("end_effector").id
        self._lo = PANDA_LIMITS[:, 0] + self.config.limit_margin
        self._hi = PANDA_LIMITS[:, 1] - self.config.limit_margin
        self.reset(HOME_Q)

    def reset(self, arm_q) -> None:
        self.phase = APPROACH
        self._q_cmd = np.asarray(arm_q, dtype=np.float64).copy()
        self._waypoint: np.ndarray | None = None
        self._timer = 0
        self._grasp_pos: np.ndarray | None = None
        self._hand: np.ndarray | None = None  # measured TCP at the previous settle step
        self._width_cmd = MAX_GRIPPER_WIDTH
        self.retries = 0

    @property
    def phase_name(self) -> str:
        return PHASE_NAMES[self.phase]

    # ------------------------------------------------------------------ kinematics
    def _fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """TCP position (3,), rotation (3, 3) and Jacobian (6, 7) at Franka joint angles q."""
        d = self.data
        d.qpos[:7] = q - JOINT_OFFSET
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_comPos(self.model, d)
        jp, jr = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        mujoco.mj_jacSite(self.model, d, jp, jr, self._site)
        return (
            d.site_xpos[self._site].copy(),
            d.site_xmat[self._site].reshape(3, 3).copy(),
            np.vstack([jp[:, :7], jr[:, :7]]),
        )

    @staticmethod
    def _grasp_rotation(cube_quat: np.ndarray, current: np.ndarray) -> np.ndarray:
        """Target TCP rotation: pointing down, fingers closing across a cube face, choosing the
        face (yaw mod pi/2) nearest the current yaw."""
        w, x, y, z = cube_quat
        cube_yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        cur_yaw = math.atan2(current[1, 0], current[0, 0])
        k = round((cur_yaw - cube_yaw) / (math.pi / 2))
        yaw = cube_yaw + k * math.pi / 2
        c, s = math.cos(yaw), math.sin(yaw)
        rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        return rz @ np.diag([1.0, -1.0, -1.0])  # Rz(yaw) @ Rx(pi)

    # ------------------------------------------------------------------ policy
    def act(
        self, arm_q, gripper_width: float, cube_pos, cube_quat, detouring: bool = False
    ) -> tuple[np.ndarray, float]:
        """One control step. Returns joint position targets (7,) and gripper width (m).

        ``detouring``: the arm executes something else on purpose (``Detour``): the command goes
        on from itself (no resync to the measured joints) and waits above the cube."""
        cfg = self.config
        q_meas = np.asarray(arm_q, dtype=np.float64)
        cube_pos = np.asarray(cube_pos, dtype=np.float64)
        if q_meas.shape != (7,) or cube_pos.shape != (3,) or not np.all(np.isfinite(q_meas)):
            raise ValueError(
                f"expert needs finite arm_q (7,) and cube_pos (3,), got {q_meas.shape}, {cube_pos.shape}"
            )
        if (
            not detouring and np.max(np.abs(self._q_cmd - q_meas)) > 0.25
        ):  # arm not tracking: resync
            self._q_cmd = q_meas.copy()
        dt = 1.0 / cfg.control_hz
        tcp, rot, jac = self._fk(self._q_cmd)
        above = cube_pos + [0.0, 0.0, cfg.pregrasp_height]
        grasp = cube_pos + [0.0, 0.0, cfg.grasp_offset]
        self._timer += 1
        speed = cfg.max_tcp_speed
        if self.phase == APPROACH:
            goal, self._width_cmd = above, MAX_GRIPPER_WIDTH
            rot_des = self._grasp_rotation(np.asarray(cube_quat, float), rot)
            aligned = np.linalg.norm(tcp - goal) < cfg.tolerance and _rot_err(rot, rot_des) < 0.05
            if aligned and not detouring:
                self._advance(DESCEND)
        elif self.phase == DESCEND:
            goal, speed = grasp, cfg.descend_speed
            rot_des = self._grasp_rotation(np.asarray(cube_quat, float), rot)
            if np.linalg.norm(tcp - goal) < cfg.tolerance * 0.5:
                self._grasp_pos, self._hand = tcp.copy(), None
                self._advance(SETTLE if cfg.settle_s > 0 else CLOSE)
        elif self.phase == SETTLE:  # command at the grasp, gripper open: wait for the hand
            goal, rot_des = self._grasp_pos, rot
            hand = self._fk(q_meas)[0]  # (tcp, rot, jac of the command are copies already)
            still = self._hand is not None and np.linalg.norm(hand - self._hand) < cfg.settle_still
            done = still or self._timer * dt >= cfg.settle_s
            off = float(np.linalg.norm(hand - goal))
            if off < cfg.settle_tol or (done and off < cfg.settle_far):
                self._advance(CLOSE)
            elif done:  # the hand is held off the grasp (resting on the cube's top): go again
                self.retries += 1
                self._advance(APPROACH)
            self._hand = hand
        elif self.phase == CLOSE:
            goal, rot_des, self._width_cmd = self._grasp_pos, rot, 0.0
            if self._timer * dt >= cfg.close_time:
                self._advance(LIFT)
        else:  # LIFT / HOLD
            goal, rot_des, self._width_cmd = self._grasp_pos + [0.0, 0.0, cfg.lift_height], rot, 0.0
            if gripper_width < 0.01 and self._timer * dt > 0.5:  # closed on nothing: retry
                self.retries += 1
                self._advance(APPROACH)
                self._width_cmd = MAX_GRIPPER_WIDTH
            elif self.phase == LIFT and np.linalg.norm(tcp - goal) < cfg.tolerance:
                self._advance(HOLD)
        # moving waypoint: capped TCP speed toward the phase goal
        if self._waypoint is None:
            self._waypoint = tcp.copy()
        step = goal - self._waypoint
        n = np.linalg.norm(step)
        if n > speed * dt:
            step *= speed * dt / n
        self._waypoint = self._waypoint + step
        err = np.concatenate([self._waypoint - tcp, 0.5 * _rot_vec(rot, rot_des)])
        # damped least squares + null-space posture pull
        jjt = jac @ jac.T + cfg.damping**2 * np.eye(6)
        dq = jac.T @ np.linalg.solve(jjt, err)
        pinv = jac.T @ np.linalg.solve(jjt, np.eye(6))
        dq += (np.eye(7) - pinv @ jac) @ (cfg.null_gain * (HOME_Q - self._q_cmd))
        max_step = cfg.max_joint_speed * dt
        dq = np.clip(dq, -max_step, max_step)
        self._q_cmd = np.clip(self._q_cmd + dq, self._lo, self._hi)
        return self._q_cmd.copy(), float(self._width_cmd)

    def command_tcp(self) -> np.ndarray:
        """The TCP (3,) m of the expert's current joint command."""
        return self._fk(self._q_cmd)[0]

    def hover_point(self, cube_pos) -> np.ndarray:
        """Where the approach ends (3,) m: ``pregrasp_height`` above the cube."""
        return np.asarray(cube_pos, dtype=np.float64) + [0.0, 0.0, self.config.pregrasp_height]

    def _advance(self, phase: int) -> None:
        self.phase = phase
        self._timer = 0


def _rot_vec(rot: np.ndarray, rot_des: np.ndarray) -> np.ndarray:
    """Small-angle rotation vector (3,) taking ``rot`` to ``rot_des`` (world frame)."""
    return (
        np.cross(rot[:, 0], rot_des[:, 0])
        + np.cross(rot[:, 1], rot_des[:, 1])
        + np.cross(rot[:, 2], rot_des[:, 2])
    )


def _rot_err(rot: np.ndarray, rot_des: np.ndarray) -> float:
    """Angle (rad) between two rotations."""
    c = (np.trace(rot.T @ rot_des) - 1.0) / 2.0
    return float(math.acos(max(-1.0, min(1.0, c))))


class ExecutionNoise:
    """DART-style noise injection for demonstrations (Laskey et al. 2017).

    The robot executes the expert's command plus a smooth random offset (an Ornstein-Uhlenbeck
    process per joint with standard deviation ``std`` rad and correlation time ``corr_s``), while
    the expert's clean command is recorded as the label. The demos then visit states beside the
    nominal path, each labelled with the expert's way back to it: exactly the states a learned
    policy drifts into. ``phases``: expert phases (``APPROACH``...) with noise; none while closing
    or lifting, so the grasp itself stays clean.

    ``yaw_std`` (rad; 0: ``std`` like the other joints) is joint 7's own: the flange's axis, which
    turns the hand and the camera on it about the fingers' axis. A camera on the hand whose demos
    turn the hand to the cube's faces early sees the cube square to its image in almost every
    close-up frame, and its grasp head learns to answer "square to me" whatever it sees (its yaw
    error equals the hand's offset, slope 0.94-1.02: bench/probe_wrist_yaw.py, RESULTS.md session
    25). A yaw noise of ~20 degrees shows it the cube at many yaws in every scene, each frame
    labelled with the expert's aligned yaw (measured at 0.35 rad: the head still reported the
    hand's yaw and make demo picked 38/50, so it is off by default). It runs in ``yaw_phases`` only (the approach: turned
    fingers that descend beside the cube push it away), so the hand is square again for the grasp.
    """

    JOINT_YAW = 6  # joint 7

    def __init__(
        self,
        std: float,
        corr_s: float = 0.5,
        control_hz: float = 10.0,
        seed: int | None = None,
        phases: tuple[int, ...] = (APPROACH, DESCEND),
        yaw_std: float = 0.0,
        yaw_phases: tuple[int, ...] = (APPROACH,),
    ) -> None:
        if std < 0 or yaw_std < 0 or corr_s <= 0 or control_hz <= 0:
            raise ValueError(
                f"need std >= 0, yaw_std >= 0, corr_s > 0, control_hz > 0; "
                f"got {std}, {yaw_std}, {corr_s}, {control_hz}"
            )
        self.std, self.yaw_std, self.phases = float(std), float(yaw_std), tuple(phases)
        self.yaw_phases = tuple(yaw_phases)
        self.stds = np.full(7, self.std)
        if self.yaw_std > 0:
            self.stds[self.JOINT_YAW] = self.yaw_std
        self.decay = math.exp(-1.0 / (corr_s * control_hz))
        self.rng = np.random.default_rng(seed)
        self.offset = np.zeros(7)

    def reset(self) -> None:
        self.offset = self.rng.normal(0.0, 1.0, 7) * self.stds if self.stds.any() else np.zeros(7)

    def __call__(self, q_cmd: np.ndarray, phase: int) -> np.ndarray:
        """The command to execute for the expert's ``q_cmd`` (7,) in ``phase``."""
        if not self.stds.any():
            return np.asarray(q_cmd, dtype=np.float64).copy()
        kick = math.sqrt(1.0 - self.decay**2) * self.stds
        self.offset = self.decay * self.offset + self.rng.normal(0.0, 1.0, 7) * kick
        if phase not in self.phases:
            return np.asarray(q_cmd, dtype=np.float64).copy()
        offset = self.offset.copy()
        if self.yaw_std > 0 and phase not in self.yaw_phases:
            offset[self.JOINT_YAW] = 0.0  # square for the descent and the grasp
        return np.asarray(q_cmd, dtype=np.float64) + offset


class Detour:
    """Detour demonstrations: the arm first visits a decoy, and the label still goes to the cube.

    The learned policy's remaining failures start at the wrong object: the grasp-point detector
    puts the grasp on a distractor, the hand heads there, and once the hand hovers over an object
    every demonstration says "this is where the hand closes" (in every demo the hand ends where
    the grasp is). No demo shows the hand over a distractor with the grasp elsewhere, so nothing
    can pull the policy back. A detour is DART at the scale of that failure: with probability
    ``prob`` an episode's executed arm command first flies to ``hover`` m above a decoy (one of
    the scene's distractors), stays ``dwell_s``, and returns to the expert's command at the
    expert's joint speed, while the expert's own command (the recorded label) heads for the cube
    from the first step and waits above it (``ScriptedExpert.act(detouring=True)``) until the arm
    is back. The frames then show the hand over a distractor labelled with the cube's grasp.

    ``reset(arm_q, decoys)`` per episode (decoys (n, 3) world positions; none: no detour), then
    per step ``executed = detour(q_cmd, arm_q)`` and ``detour.active`` for the expert's flag."""

    GO, DWELL, RETURN, OFF = range(4)

    def __init__(
        self,
        prob: float,
        seed: int | None = None,
        dwell_s: float = 0.5,
        hover: float = 0.10,
        config: ExpertConfig | None = None,
        model: mujoco.MjModel | None = None,
    ) -> None:
        if not 0.0 <= prob <= 1.0 or dwell_s < 0 or hover <= 0:
            raise ValueError(
                f"need 0 <= prob <= 1, dwell_s >= 0, hover > 0; got {prob}, {dwell_s}, {hover}"
            )
        self.prob, self.dwell_s = float(prob), float(dwell_s)
        self.config = config or ExpertConfig()
        self.rng = np.random.default_rng(seed)
        self._flyer = self._make_flyer(hover, model)
        self.state = self.OFF
        self.decoy: np.ndarray | None = None
        self._q: np.ndarray | None = None
        self._ticks = 0

    @property
    def active(self) -> bool:
        return self.state != self.OFF

    def _make_flyer(self, hover: float, model: mujoco.MjModel | None) -> ScriptedExpert:
        """The executed path to the decoy: an expert of its own, approaching the decoy as a cube
        and stopping ``hover`` m above it."""
        return ScriptedExpert(
            ExpertConfig(**{**vars(self.config), "pregrasp_height": hover}), model
        )

    def cancel(self) -> None:
        """No excursion this episode (the executed command is the expert's from now on)."""
        self.state, self.decoy, self._ticks = self.OFF, None, 0

    def _go(self, arm_q, gripper_width: float) -> bool:
        """One step of the flight to the decoy (sets ``_q``); True when it is over: above the
        decoy and aligned, or out of time (an unreachable decoy ends the detour)."""
        self._q, _ = self._flyer.act(arm_q, MAX_GRIPPER_WIDTH, self.decoy, np.array([1.0, 0, 0, 0]))
        return self._flyer.phase != APPROACH or self._ticks >= round(
            MAX_GO_S * self.config.control_hz
        )

    def reset(self, arm_q, decoys) -> None:
        decoys = np.asarray(decoys, dtype=np.float64).reshape(-1, 3)
        self.state, self.decoy, self._ticks = self.OFF, None, 0
        draw = self.rng.random()  # one draw per episode whatever the scene: reproducible
        if len(decoys) == 0 or draw >= self.prob:
            return
        self.decoy = decoys[self.rng.integers(len(decoys))].copy()
        self._flyer.reset(arm_q)
        self._q = np.asarray(arm_q, dtype=np.float64).copy()
        self.state = self.GO

    def __call__(self, q_cmd, arm_q, gripper_width: float = MAX_GRIPPER_WIDTH) -> np.ndarray:
        """The command to execute for the expert's ``q_cmd`` (7,) at measured ``arm_q`` (and
        gripper width, m)."""
        q_cmd = np.asarray(q_cmd, dtype=np.float64)
        if self.state == self.OFF:
            return q_cmd.copy()
        cfg = self.config
        if self.state == self.GO:
            self._ticks += 1
            if self._go(arm_q, gripper_width):
                self.state, self._ticks = self.DWELL, 0
        elif self.state == self.DWELL:
            self._ticks += 1
            if self._ticks >= round(self.dwell_s * cfg.control_hz):
                self.state = self.RETURN
        if self.state == self.RETURN:  # back to the expert's command at its joint speed
            step = cfg.max_joint_speed / cfg.control_hz
            self._q = self._q + np.clip(q_cmd - self._q, -step, step)
            if np.max(np.abs(q_cmd - self._q)) < 1e-6:
                self.state = self.OFF
                return q_cmd.copy()
        return self._q.copy()


class Miss(Detour):
    """Missed-grasp demonstrations: the arm closes beside the cube, and the label reopens.

    A policy that closes a few centimetres off the cube (a grasp-point estimate that drifted, a
    close issued a moment early) lifts an empty hand and holds it there: no demonstration ever
    shows an empty closed hand, so nothing says "open and try again". With probability ``prob``
    an episode's executed arm and gripper first run a whole grasp of their own at a point
    ``offset`` m (drawn in that range) beside the cube, on either side across the fingers'
    closing direction: approach, descend, close,
    lift ``lift_s``; then the arm returns to the expert's command at the expert's joint speed and
    the gripper follows the expert's again. The expert's own command (the recorded label, arm
    and gripper) meanwhile heads for the cube with the gripper open and waits above it
    (``ScriptedExpert.act(detouring=True)``), so every frame of the miss, the empty close and the
    lift is labelled "open, go over the cube", and the episode ends with the expert's grasp.

    ``reset(arm_q, cube_pos, cube_quat)`` per episode, then per step ``executed = miss(q_cmd,
    arm_q, width)``, ``miss.width`` (the executed gripper command while the miss runs its own,
    else None) and ``miss.active`` for the expert's flag."""

    def __init__(
        self,
        prob: float,
        seed: int | None = None,
        offset: tuple[float, float] = (0.045, 0.06),
        lift_s: float = 0.4,
        config: ExpertConfig | None = None,
        model: mujoco.MjModel | None = None,
    ) -> None:
        if not 0 < offset[0] <= offset[1] or lift_s < 0:
            raise ValueError(
                f"need 0 < offset[0] <= offset[1] and lift_s >= 0; got {offset}, {lift_s}"
            )
        super().__init__(prob, seed, dwell_s=0.0, config=config, model=model)
        self.offset, self.lift_s = (float(offset[0]), float(offset[1])), float(lift_s)
        self.quat = np.array([1.0, 0.0, 0.0, 0.0])
        self.width: float | None = None  # the executed gripper command while the miss runs its own

    def _make_flyer(self, hover: float, model: mujoco.MjModel | None) -> ScriptedExpert:
        return ScriptedExpert(self.config, model)  # a whole grasp, at the expert's settings

    def cancel(self) -> None:
        super().cancel()
        self.width = None

    def reset(self, arm_q, cube_pos, cube_quat) -> None:  # type: ignore[override]
        # every draw made per episode whatever the outcome: the episodes' draws stay reproducible
        draw, side = self.rng.random(), self.rng.choice([-1.0, 1.0])
        radius = self.rng.uniform(*self.offset)
        self.state, self.decoy, self._ticks, self.width = self.OFF, None, 0, None
        if draw >= self.prob:
            return
        # beside the cube across the fingers' closing direction (the fingers close along the
        # hand's x axis; this is its y axis at the grasp the expert would make): the open fingers
        # straddle empty table and shut on nothing (of 40 scenes, none closed on more than 2 cm);
        # a miss at 3.5-5 cm, or along the closing direction, pinches the cube's edge instead
        self.quat = np.asarray(cube_quat, dtype=np.float64).copy()
        rot_now = self._flyer._fk(np.asarray(arm_q, dtype=np.float64))[1]
        across = ScriptedExpert._grasp_rotation(self.quat, rot_now)[:, 1]
        self.decoy = np.asarray(cube_pos, dtype=np.float64) + side * radius * across
        self._flyer.reset(arm_q)
        self._q = np.asarray(arm_q, dtype=np.float64).copy()
        self.state = self.GO

    def _go(self, arm_q, gripper_width: float) -> bool:
        """One step of the missed grasp; True once it has lifted ``lift_s`` (or ran out of time)."""
        self._q, self.width = self._flyer.act(arm_q, gripper_width, self.decoy, self.quat)
        lifted = self._flyer.phase in (LIFT, HOLD) and self._flyer._timer >= round(
            self.lift_s * self.config.control_hz
        )
        if lifted or self._ticks >= round(MAX_MISS_S * self.config.control_hz):
            self.width = None  # from here on the gripper follows the expert's (open) command
            return True
        return False


class Twist:
    """Off-yaw grasps: the executed hand turned about its own axis, the label aligned.

    A learned policy takes its grasp yaw from a detector that is off by 10-40 degrees now and
    then; the hand then shuts across the cube's corners (a 5 cm cube held across its diagonal
    keeps the fingers 7.1 cm apart), a measured width that no aligned demonstration shows after
    a close, and the policy, reading it as a hand still closing, never lifts (docs/RESULTS.md
    session 21). With probability ``prob`` an episode's executed arm command turns joint 7 (the
    flange's axis, vertical in a top-down grasp) by an angle drawn uniformly from ``degrees``
    with a random sign, from the first command to the last; the expert's clean command stays the
    label. The demos then hold the cube at widths between 5 and 7.1 cm, every one labelled with
    the expert's lift. The expert and the other excursions plan from ``plan_q(arm_q)``, the
    measured joints with the twist taken out, so they go on as if the arm followed their command.

    ``reset()`` per episode, then per step ``executed = twist(q_cmd)``."""

    JOINT = 6  # joint 7: the flange turns the hand about the fingers' axis

    def __init__(
        self,
        prob: float,
        seed: int | None = None,
        degrees: tuple[float, float] = (15.0, 40.0),
        limit_margin: float = 0.05,
    ) -> None:
        if not 0.0 <= prob <= 1.0 or not 0.0 <= degrees[0] <= degrees[1] <= 45.0:
            raise ValueError(
                f"need 0 <= prob <= 1 and 0 <= degrees[0] <= degrees[1] <= 45; "
                f"got {prob}, {degrees}"
            )
        self.prob, self.degrees = float(prob), (float(degrees[0]), float(degrees[1]))
        self.rng = np.random.default_rng(seed)
        self._lo = PANDA_LIMITS[:, 0] + limit_margin
        self._hi = PANDA_LIMITS[:, 1] - limit_margin
        self.offset = np.zeros(7)

    @property
    def active(self) -> bool:
        return bool(self.offset[self.JOINT] != 0.0)

    def reset(self) -> None:
        # every draw made per episode whatever the outcome: the episodes' draws stay reproducible
        draw, sign = self.rng.random(), self.rng.choice([-1.0, 1.0])
        angle = math.radians(self.rng.uniform(*self.degrees))
        self.offset = np.zeros(7)
        if draw < self.prob:
            self.offset[self.JOINT] = sign * angle

    def plan_q(self, arm_q) -> np.ndarray:
        """The measured joints (7,) as the plan sees them: the twist taken out."""
        return np.asarray(arm_q, dtype=np.float64) - self.offset

    def __call__(self, q_cmd) -> np.ndarray:
        """The command to execute (7,) for the planned ``q_cmd``: turned, inside the limits."""
        if not self.active:
            return np.asarray(q_cmd, dtype=np.float64).copy()
        return np.clip(np.asarray(q_cmd, dtype=np.float64) + self.offset, self._lo, self._hi)


class Sweep:
    """Hover sweeps: the hand turns about its axis above the cube before it descends.

    The grasp head of a camera on the hand reports the hand's own yaw instead of the cube's: the
    expert turns the hand to the cube's faces early, so nearly every close-up demo frame shows
    the cube square to the image (``bench/probe_wrist_yaw.py``, RESULTS.md session 25). A linear
    readout of the same tokens reads the cube's yaw to ~2 degrees from views of the hand held
    above the cube at several yaws. (Measured at 0.5: the head still reported the hand's yaw and
    make demo picked 37/50, so it is off by default.) With probability ``prob`` an episode, once
    the approaching expert's command is within ``near_m`` of its hover point (``check``, before
    ``ScriptedExpert.act``),
    executes one period of ``amplitude`` rad * sin(2 pi k / steps) on joint 7 over ``steps``
    control steps while the expert holds the hover (``active``: pass it as
    ``ScriptedExpert.act(detouring=...)``); the label stays the aligned hover. Then the expert
    descends as usual.

    ``reset()`` per episode, then per step ``check(expert, cube_pos)``, ``act``, and
    ``executed = sweep(q_cmd)``."""

    JOINT = 6

    def __init__(
        self,
        prob: float,
        seed: int | None = None,
        amplitude: float = math.radians(40.0),
        steps: int = 24,
        near_m: float = 0.03,
    ) -> None:
        if not 0.0 <= prob <= 1.0 or not 0.0 < amplitude <= math.pi / 2 or steps < 2:
            raise ValueError(
                f"need 0 <= prob <= 1, 0 < amplitude <= pi/2, steps >= 2; "
                f"got {prob}, {amplitude}, {steps}"
            )
        self.prob, self.amplitude, self.steps, self.near_m = float(prob), amplitude, steps, near_m
        self.rng = np.random.default_rng(seed)
        self._armed = False
        self._k: int | None = None
        self._lo = PANDA_LIMITS[:, 0] + 0.05
        self._hi = PANDA_LIMITS[:, 1] - 0.05

    @property
    def active(self) -> bool:
        return self._k is not None

    def reset(self) -> None:
        self._armed = bool(self.rng.random() < self.prob)  # one draw per episode
        self._k = None

    def check(self, expert: ScriptedExpert, cube_pos) -> None:
        """Start this episode's sweep once the approaching ``expert``'s commanded TCP is within
        ``near_m`` of its hover point above ``cube_pos`` (m, world)."""
        if not self._armed or self._k is not None or expert.phase != APPROACH:
            return
        if np.linalg.norm(expert.command_tcp() - expert.hover_point(cube_pos)) < self.near_m:
            self._armed, self._k = False, 0

    def __call__(self, q_cmd) -> np.ndarray:
        """The command to execute (7,) for the expert's ``q_cmd``."""
        q = np.asarray(q_cmd, dtype=np.float64).copy()
        if self._k is None:
            return q
        q[self.JOINT] += self.amplitude * math.sin(2.0 * math.pi * self._k / self.steps)
        self._k += 1
        if self._k > self.steps:
            self._k = None
        return np.clip(q, self._lo, self._hi)

"""The safety gate's guarantees as properties over generated input sequences (hypothesis).

A state machine feeds the gate random sequences of joint states (NaN, inf, out of the limits,
jumps, missing gripper), action chunks (NaN, wrong width, stale, far outside the limits), e-stops,
upstream holds and clock steps (gaps, bursts, backwards), and ticks it. After every tick:

- every published arm command is finite and inside the limits minus the margin, whatever the
  measured state is; the gripper command is finite and inside its range;
- no command moves more than the per-tick cap from its reference; the reference is the previous
  command, or, on the first command after a hold, the measured pose clamped into the limits;
- a hold repeats the previous command exactly;
- a measured pose outside the limits is a hold that names it;
- the grasp interlock (status ``grasping``) sends its reference exactly (the previous command,
  or on leaving a hold the measured pose), and no wait lasts longer than ``grasp_wait_s`` (the
  measured fingers lag, stop on an object or follow the command).
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ver_core.deploy import ActionChunk, uniform_offsets
from ver_core.safety import FR3_LIMITS, PANDA_LIMITS, SafetyConfig, SafetyGate

HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
EPS = 1e-9

special = st.sampled_from([np.nan, np.inf, -np.inf, 1e6, -1e6])
offsets = st.floats(-4.0, 4.0, allow_nan=False)


def joint_vectors(scale: float = 4.0):
    """(7,) poses near home, some far outside the limits, some with NaN/inf entries."""
    return st.one_of(
        st.lists(st.floats(-0.3, 0.3), min_size=7, max_size=7).map(lambda d: HOME + np.array(d)),
        st.lists(offsets, min_size=7, max_size=7).map(lambda d: HOME + scale * np.array(d) / 4),
        st.tuples(st.integers(0, 6), special).map(lambda p: _with(HOME.copy(), *p)),
        st.tuples(st.integers(0, 6), st.floats(-10, 10)).map(lambda p: _with(HOME.copy(), *p)),
    )


def _with(q: np.ndarray, index: int, value: float) -> np.ndarray:
    q[index] = value
    return q


class GateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 100.0
        self.prev_out = None  # last GateOutput
        self.good_q: np.ndarray | None = None  # last finite, 7-long measured pose
        self.grasp_began: float | None = None  # when the current run of "grasping" began
        self.fingers = 0.08  # the measured width robot_follows reports

    @initialize(
        robot=st.sampled_from(["fr3", "panda"]),
        ramp=st.sampled_from([0.0, 0.1, 1.0]),
        margin=st.sampled_from([0.0, 0.05, 0.2]),
        grasp_wait=st.sampled_from([0.0, 0.3, 1.0]),
    )
    def setup(self, robot: str, ramp: float, margin: float, grasp_wait: float) -> None:
        limits = FR3_LIMITS if robot == "fr3" else PANDA_LIMITS
        cfg = SafetyConfig(ramp_time_s=ramp, position_margin=margin, grasp_wait_s=grasp_wait)
        self.gate = SafetyGate(cfg, limits)
        self.limits = limits

    # ---- inputs
    @rule(q=joint_vectors(), gripper=st.one_of(st.none(), st.floats(-1, 1), special))
    def joint_state(self, q: np.ndarray, gripper) -> None:
        self.gate.on_joint_state(q, self.now, gripper=gripper)
        if np.all(np.isfinite(q)):
            self.good_q = q.copy()

    @rule(
        goal=joint_vectors(),
        horizon=st.integers(1, 20),
        width=st.sampled_from([7, 8, 8, 8, 5]),
        age=st.sampled_from([0.0, 0.05, 0.2, 0.3, 1.0, -0.2]),
        gripper=st.one_of(st.floats(-0.5, 0.5), special),
        spread=st.floats(0.0, 2.0),
    )
    def chunk(self, goal, horizon, width, age, gripper, spread) -> None:
        ramp = np.linspace(0.0, spread, horizon)[:, None]  # (H, 1): the target moves away
        arm = goal[None, :] + ramp  # (H, 7)
        actions = np.concatenate([arm, np.full((horizon, 1), gripper)], axis=1)[:, :width]
        chunk = ActionChunk(self.now - age, uniform_offsets(horizon, 10.0), actions)
        self.gate.on_chunk(chunk, self.now)

    # ---- nominal operation (most of a real run): the robot follows, chunks arrive fresh
    @rule(
        noise=st.floats(-0.01, 0.01),
        ticks=st.integers(1, 15),
        stop=st.one_of(st.none(), st.floats(0.0, 0.08)),
        lag=st.floats(0.0, 0.004),
    )
    def robot_follows(self, noise: float, ticks: int, stop, lag: float) -> None:
        """The arm follows; the fingers follow the gripper command at most ``lag`` m per tick
        behind it (0: exactly), and with ``stop`` set they stop on an object of that width."""
        for _ in range(ticks):
            self.now += self.gate.config.period
            if self.prev_out is not None:
                q = self.prev_out.arm + noise
                goal = self.prev_out.gripper if stop is None else max(stop, self.prev_out.gripper)
                step = np.clip(goal - self.fingers, -lag, lag) if lag > 0 else goal - self.fingers
                self.fingers = float(self.fingers + step)
                self.gate.on_joint_state(q, self.now, gripper=self.fingers)
                self.good_q = q.copy()
            self.tick()

    @rule(
        delta=st.lists(st.floats(-0.8, 0.8), min_size=7, max_size=7),
        horizon=st.integers(2, 30),
        gripper=st.sampled_from([0.0, 0.04, 0.08]),
    )
    def fresh_chunk(self, delta, horizon: int, gripper: float) -> None:
        base = self.prev_out.arm if self.prev_out is not None else HOME
        goal = base + np.array(delta)
        arm = np.linspace(base, goal, horizon)  # (H, 7)
        actions = np.concatenate([arm, np.full((horizon, 1), gripper)], axis=1)
        self.gate.on_chunk(ActionChunk(self.now, uniform_offsets(horizon, 10.0), actions), self.now)

    @rule(shift=st.floats(-0.1, 0.1), joint=st.integers(0, 6))
    def robot_pushed(self, shift: float, joint: int) -> None:
        """The arm moves without being commanded (by hand under an e-stop, a reset)."""
        if self.good_q is not None:
            q = self.good_q.copy()
            q[joint] += shift
            self.gate.on_joint_state(q, self.now)
            self.good_q = q

    @rule(joint=st.integers(0, 6), inward=st.floats(0.0, 0.25), upper=st.booleans())
    def robot_near_a_limit(self, joint: int, inward: float, upper: bool) -> None:
        """A measured pose inside the limits but within (or near) the margin band."""
        q = (self.good_q if self.good_q is not None else HOME).copy()
        q[joint] = self.limits.upper[joint] - inward if upper else self.limits.lower[joint] + inward
        self.gate.on_joint_state(q, self.now)
        self.good_q = q

    @rule()
    def unparsable_chunk(self) -> None:
        self.gate.reject()

    @rule(active=st.booleans())
    def estop(self, active: bool) -> None:
        self.gate.set_estop(active)

    @rule(reason=st.one_of(st.none(), st.just("missing_view:wrist_camera")))
    def upstream(self, reason) -> None:
        self.gate.set_upstream_hold(reason)

    @rule(dt=st.one_of(st.just(0.02), st.floats(0.0, 0.05), st.floats(0.05, 2.0), st.floats(-1, 0)))
    def clock(self, dt: float) -> None:
        self.now += dt

    # ---- the tick and its properties
    @rule()
    def tick_once(self) -> None:
        self.tick()

    def tick(self) -> None:
        gate = self.gate
        out = gate.step(self.now)
        prev, self.prev_out = self.prev_out, out if out is not None else self.prev_out
        if out is None:
            assert prev is None, "the gate stopped publishing after it had started"
            return
        lo, hi = gate.lower, gate.upper
        assert out.arm.shape == (7,) and np.all(np.isfinite(out.arm))
        assert np.all(out.arm >= lo - EPS) and np.all(out.arm <= hi + EPS), (
            f"command outside the limits: {out.arm}"
        )
        assert np.isfinite(out.gripper)
        assert gate.config.gripper_min - EPS <= out.gripper <= gate.config.gripper_max + EPS
        assert np.all(np.abs(out.arm - out.reference) <= gate.step_cap + EPS), "a jump"
        if out.status == "grasping":
            assert not out.holding
            # the previous command again (on leaving a hold: the measured pose, its reference)
            assert np.array_equal(out.arm, out.reference), "a grasp wait moved the arm"
            self.grasp_began = self.now if self.grasp_began is None else self.grasp_began
            wait = self.now - self.grasp_began
            assert wait <= gate.config.grasp_wait_s + EPS, f"a grasp wait of {wait} s"
        else:
            self.grasp_began = None
        if out.holding:
            if prev is not None:
                assert np.array_equal(out.arm, prev.arm), "a hold moved the arm"
        elif prev is not None:
            if prev.holding:
                start = np.clip(self.good_q, lo, hi)
                np.testing.assert_allclose(out.reference, start, atol=EPS)
            else:
                np.testing.assert_array_equal(out.reference, prev.arm)
        q = self.good_q
        if q is not None and (np.any(q < self.limits.lower) or np.any(q > self.limits.upper)):
            assert out.holding and "joint_state_out_of_limits" in out.status

    @invariant()
    def status_is_named(self) -> None:
        assert self.gate.status


GateMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestGateProperties = GateMachine.TestCase

"""The simulator's clockwork, shared by ``sim_node`` and in-process closed-loop evaluation.

Physics advances in ``tick_s`` slices. Before each slice the arm target comes from a
``TrajectoryFollower`` (commands are followed over time, as a JointTrajectoryController does);
after it the stepper reports whether a joint state and a camera frame are due (at
``state_rate_hz`` and ``image_rate_hz`` of simulated time). ``sim_node`` publishes what is due on
ROS topics; ``ver_core.eval.closed_loop`` hands it to the controller directly. Either way the
robot sees commands and the controller sees the world on the same schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ver_core.sim.env import MAX_GRIPPER_WIDTH, FrankaPickEnv, Observation
from ver_core.sim.trajectory import TrajectoryFollower

__all__ = ["SimStepper", "TICK_S", "TickEvents"]

TICK_S = 0.01  # physics advances in 10 ms slices between command/publish checks


@dataclass(frozen=True)
class TickEvents:
    """After one slice: sim time (s since the last reset... of the stepper), what is due."""

    time: float
    state_due: bool
    image_due: bool


class SimStepper:
    def __init__(
        self,
        env: FrankaPickEnv,
        image_rate_hz: float = 15.0,
        state_rate_hz: float = 50.0,
        tick_s: float = TICK_S,
    ) -> None:
        if not (0 < image_rate_hz <= 100 and 0 < state_rate_hz <= 500 and tick_s > 0):
            raise ValueError(
                f"rates out of range: image {image_rate_hz}, state {state_rate_hz}, tick {tick_s}"
            )
        self.env = env
        self.image_period = 1.0 / image_rate_hz
        self.state_period = 1.0 / state_rate_hz
        self.tick_s = tick_s
        self.time = 0.0  # s of simulated time, monotonic over resets
        self._next_state = self._next_image = 0.0
        self.follower = TrajectoryFollower(env.observation().arm_q)
        self.gripper_target = MAX_GRIPPER_WIDTH

    def reset(self, seed: int | None) -> Observation:
        """Reset the world; the arm holds its new pose, the hand opens."""
        obs = self.env.reset(seed)
        self.follower.set_now(obs.arm_q, self.time)
        self.gripper_target = MAX_GRIPPER_WIDTH
        return obs

    # ---- commands (times in the stepper's clock, s)
    def command_trajectory(
        self, stamp: float, times: np.ndarray, positions: np.ndarray, gripper: float | None = None
    ) -> None:
        """Points (P, 7) due at ``stamp + times``, followed from now on (late ones dropped)."""
        self.follower.set_trajectory(self.time, stamp, times, positions)
        if gripper is not None:
            self.gripper_target = float(gripper)

    def command_now(self, q: np.ndarray) -> None:
        self.follower.set_now(q, self.time)

    def command_gripper(self, width: float) -> None:
        self.gripper_target = float(width)

    # ---- time
    def step(self) -> TickEvents:
        """Apply the current targets and advance one slice."""
        self.env.set_command(self.follower.target(self.time), self.gripper_target)
        self.env.advance(self.tick_s)
        self.time += self.tick_s
        state_due = self.time >= self._next_state
        if state_due:
            self._next_state = self.time + self.state_period - 1e-9
        image_due = self.time >= self._next_image
        if image_due:
            self._next_image = self.time + self.image_period - 1e-9
        return TickEvents(self.time, state_due, image_due)

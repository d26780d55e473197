"""In-process closed loop: the deployed controller against the simulator, on sim time.

It runs what the ROS graph runs, on the same schedule, without DDS: ``SimStepper`` (the clockwork
of ``sim_node``: 10 ms physics slices, joint states at 50 Hz, camera frames at 15 Hz, commands
followed as trajectories) feeds a ``Controller`` (``EncoderStage`` -> ``PolicyStage`` ->
``SafetyGate`` ticking at its control rate), and every gate command goes back to the robot as the
safety node's one-point trajectory. Each episode starts as the through-ROS evaluation's does:
e-stop on, reset, settle, e-stop off.

Latency is modelled explicitly: a frame reaches the encoder ``transport_s`` after its stamp; the
encoder is busy for its compute time (a frame arriving meanwhile waits, and a newer one replaces
it, as a depth-1 subscription does); tokens reach the policy and chunks reach the gate after
their compute time plus ``transport_s`` each. Compute time is ``measured`` (the wall time of
each call on this machine, times ``latency_scale``) or a fixed number of seconds per stage.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ver_core.deploy.controller import Controller
from ver_core.eval.rollout import EpisodeResult
from ver_core.sim.stepper import SimStepper

__all__ = ["LoopTiming", "run_controller_episode"]

# Sim seconds under e-stop after a reset (this loop and the through-ROS evaluation). 1.8 s until
# session 18, from the first evaluation, when the policy kept its chunk history across episodes
# and old chunks had to run out (a chunk spans 1.6 s). Now the policy forgets its episode when the
# e-stop is released, the gate starts from the measured pose and refuses observations older than
# the staleness budget, and the graph streams no held pose during the e-stop: all the settle
# needs is perception warm at release (WARM_S) on a scene at rest (a reset already lets contacts
# settle for 0.1 s). Through ROS at the slow machine's 0.35 x real time the 1.2 s saved are 3.4 s
# of wall time per episode (docs/RESULTS.md session 18).
SETTLE_S = 0.6
WARM_S = 0.4  # perception runs during the last part of the settle, so views are fresh at release


@dataclass
class LoopTiming:
    """control_hz: the rate steps are reported in (the task's chunk rate); gate_hz: safety ticks.
    encoder_s / policy_s: fixed compute seconds per call, or None to measure them (scaled by
    ``latency_scale``); transport_s: delivery delay of every message hop."""

    image_rate_hz: float = 15.0
    state_rate_hz: float = 50.0
    control_hz: float = 10.0
    encoder_s: float | None = None
    policy_s: float | None = None
    latency_scale: float = 1.0
    transport_s: float = 0.002
    settle_s: float = SETTLE_S

    def __post_init__(self) -> None:
        for name in ("image_rate_hz", "state_rate_hz", "control_hz", "latency_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("encoder_s", "policy_s"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if self.transport_s < 0 or self.settle_s < WARM_S:
            raise ValueError(f"need transport_s >= 0 and settle_s >= {WARM_S}")


@dataclass
class _Clocked:
    """Compute time of one call: fixed, or measured and scaled."""

    fixed: float | None
    scale: float
    seconds: list[float] = field(default_factory=list)

    def run(self, fn: Callable, *args):
        start = time.perf_counter()
        out = fn(*args)
        took = time.perf_counter() - start
        dt = self.fixed if self.fixed is not None else took * self.scale
        self.seconds.append(dt)
        return out, dt


def _joint_state(env, controller: Controller) -> tuple[list[str], np.ndarray]:
    """The message sim_node publishes: arm joints + fingers (each finger = half the opening)."""
    obs = env.observation()
    names = [*controller.policy.joint_names, *controller.policy.finger_names]
    return names, np.concatenate([obs.arm_q, env.finger_positions()])


def run_controller_episode(
    stepper: SimStepper,
    controller: Controller,
    seed: int,
    max_steps: int,
    timing: LoopTiming | None = None,
    capture_frames: bool = False,
    stop_on_success: bool = True,
) -> tuple[EpisodeResult, dict[str, list[float]]]:
    """One episode; returns its result and the compute seconds per stage (encoder, policy).

    ``max_steps`` control steps (at ``timing.control_hz``) of sim time after the release."""
    timing = timing or LoopTiming()
    env, gate = stepper.env, controller.gate
    enc = _Clocked(timing.encoder_s, timing.latency_scale)
    pol = _Clocked(timing.policy_s, timing.latency_scale)
    wall0 = time.perf_counter()
    gate.set_estop(True)
    obs = stepper.reset(seed)
    controller.reset()
    start = stepper.time + timing.settle_s  # release time
    end = start + max_steps / timing.control_hz
    gate_period = gate.config.period
    next_tick = stepper.time
    events: list = []  # heap of (time, seq, kind, payload)
    seq = itertools.count()
    encoder_free = -np.inf
    pending_frames = None  # (stamp, views) waiting for the encoder
    cube_z0 = float(obs.cube_pos[2])
    distances = [float(np.linalg.norm(obs.tcp_pos - obs.cube_pos))]
    lift: list[float] = []
    frames: list[np.ndarray] = []
    success, released, next_sample = False, False, start + 1.0 / timing.control_hz
    while stepper.time < end:
        tick = stepper.step()
        now = tick.time
        if tick.state_due:
            names, pos = _joint_state(env, controller)
            state = (names, pos, now)  # measured now, arrives after the transport
            heapq.heappush(events, (now + timing.transport_s, next(seq), "state", state))
        if tick.image_due and now >= start - WARM_S:
            # a frame the encoder cannot start before the next one arrives would be replaced
            # in its depth-1 queue: it need not be rendered at all
            if encoder_free <= now + 1.0 / timing.image_rate_hz:
                views = env.render_views(controller.cameras)
                pending_frames = (now, views)
                if capture_frames and released:
                    frames.append(np.concatenate([views[c] for c in controller.cameras], axis=1))
        # the encoder takes the newest waiting frame set once it is free
        if pending_frames is not None and now >= encoder_free:
            stamp, views = pending_frames
            pending_frames = None
            arrive = stamp + timing.transport_s
            encoded = None
            for cam in controller.cameras:
                out, dt = enc.run(controller.encoder.on_image, cam, views[cam], stamp, arrive)
                encoded = out or encoded
                arrive += dt
            encoder_free = arrive
            if encoded is not None:
                heapq.heappush(
                    events, (arrive + timing.transport_s, next(seq), "features", encoded)
                )
        while events and events[0][0] <= now:
            t_ev, _, kind, payload = heapq.heappop(events)
            if kind == "state":
                names, pos, measured = payload
                controller.on_joint_state(names, pos, t_ev, stamp=measured)
            elif kind == "features":
                chunk, dt = pol.run(controller.on_features, payload, t_ev)
                if chunk is not None:
                    heapq.heappush(
                        events, (t_ev + dt + timing.transport_s, next(seq), "chunk", chunk)
                    )
            else:
                controller.on_chunk(payload, t_ev)
        if now >= start and not released:
            gate.set_estop(False)
            released = True
        if now + 1e-9 >= next_tick:
            next_tick += gate_period
            controller.sync_status(now)
            out = gate.step(now)
            if out is not None and not out.holding:
                # the safety node's command: one point, due one control period later
                stepper.command_trajectory(now, np.array([gate_period]), out.arm[None], out.gripper)
        if released and now >= next_sample:
            obs = env.observation()
            distances.append(float(np.linalg.norm(obs.tcp_pos - obs.cube_pos)))
            lift.append(float(obs.cube_pos[2]) - cube_z0)
            next_sample += 1.0 / timing.control_hz
            if env.success():
                success = True
                if stop_on_success:
                    break
    steps = max(1, round((stepper.time - start) * timing.control_hz))
    result = EpisodeResult(
        seed=seed,
        success=success,
        steps=steps,
        distances=distances,
        lift=lift,
        frames=frames,
        wall_s=time.perf_counter() - wall0,
    )
    return result, {"encoder": enc.seconds, "policy": pol.seconds}

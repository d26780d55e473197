"""Simulated Franka pick world (MuJoCo), scripted expert. Pure Python: no rclpy here."""

from ver_core.sim.config import SEG_CLASSES, SimConfig
from ver_core.sim.env import HOME_Q, MAX_GRIPPER_WIDTH, FrankaPickEnv, Observation
from ver_core.sim.expert import (
    Detour,
    ExecutionNoise,
    ExpertConfig,
    Miss,
    ScriptedExpert,
    Sweep,
    Twist,
)

__all__ = [
    "HOME_Q",
    "MAX_GRIPPER_WIDTH",
    "SEG_CLASSES",
    "Detour",
    "ExecutionNoise",
    "ExpertConfig",
    "FrankaPickEnv",
    "Miss",
    "Observation",
    "ScriptedExpert",
    "SimConfig",
    "Sweep",
    "Twist",
]

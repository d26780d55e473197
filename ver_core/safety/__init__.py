"""Pure safety logic for robot commands: joint limit tables and the safety gate."""

from ver_core.safety.gate import GateOutput, HoldReason, SafetyConfig, SafetyGate
from ver_core.safety.limits import (
    FR3_LIMITS,
    PANDA_LIMITS,
    ROBOT_LIMITS,
    JointLimits,
    limits_for,
)

__all__ = [
    "FR3_LIMITS",
    "PANDA_LIMITS",
    "ROBOT_LIMITS",
    "GateOutput",
    "HoldReason",
    "JointLimits",
    "SafetyConfig",
    "SafetyGate",
    "limits_for",
]

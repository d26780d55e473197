"""QoS profiles per stream, as fixed in docs/INTERFACES.md.

Import these instead of passing a bare depth integer so every node agrees on reliability and
durability (a reliable subscriber does not match a best-effort publisher):

- ``SENSOR_QOS``: camera image, camera info, joint states, VER features. Best effort, keep last 1,
  volatile: a late frame is worth less than the next one.
- ``COMMAND_QOS``: arm trajectory / forward commands, gripper command, action chunks. Reliable,
  keep last 10, volatile.
- ``LATCHED_QOS``: e-stop and status topics. Reliable, keep last 1, transient local: a node that
  joins late still receives the last value.

``sensor_qos(depth)`` gives the sensor profile with a deeper queue, for subscribers that must not
lose frames under bursty scheduling (the recorder); it stays compatible with ``SENSOR_QOS``
publishers because compatibility only depends on reliability and durability.
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

__all__ = ["COMMAND_QOS", "LATCHED_QOS", "SENSOR_QOS", "command_qos", "sensor_qos"]


def sensor_qos(depth: int = 1) -> QoSProfile:
    """Best-effort, volatile, keep-last ``depth`` profile for sensor streams."""
    if depth < 1:
        raise ValueError(f"QoS depth must be >= 1, got {depth}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def command_qos(depth: int = 10) -> QoSProfile:
    """Reliable, volatile, keep-last ``depth`` profile for command streams."""
    if depth < 1:
        raise ValueError(f"QoS depth must be >= 1, got {depth}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


SENSOR_QOS = sensor_qos(1)
COMMAND_QOS = command_qos(10)
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

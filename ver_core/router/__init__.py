"""Robot Router: task-specific routing over the frozen VER expert library (+ new experts)."""

from ver_core.router.robot_router import (
    ROUTING_MODES,
    ExtendedExpertLayer,
    RobotRouter,
    RouterConfig,
)
from ver_core.router.schedule import annealed_top_k

__all__ = ["ROUTING_MODES", "ExtendedExpertLayer", "RobotRouter", "RouterConfig", "annealed_top_k"]

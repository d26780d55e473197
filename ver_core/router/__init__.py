"""Robot Router: task-specific routing over the frozen VER expert library (+ new experts)."""

from ver_core.router.robot_router import (
    ROUTING_MODES,
    ExtendedExpertLayer,
    RobotRouter,
    RouterConfig,
    ViewRouter,
)
from ver_core.router.schedule import annealed_top_k

__all__ = [
    "ROUTING_MODES",
    "ExtendedExpertLayer",
    "RobotRouter",
    "RouterConfig",
    "ViewRouter",
    "annealed_top_k",
]

"""Typed configuration of the simulated pick world."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

__all__ = ["CAMERA_POS", "CAMERA_TARGET", "CAMERAS", "SimConfig", "SEG_CLASSES"]

# The default camera: in front of the robot, looking down at the cube's workspace.
CAMERA_POS = (1.6, 0.0, 1.0)
CAMERA_TARGET = (0.3, 0.0, 0.28)

# The cameras of the pick world, by the name of their ROS namespace (realsense-ros naming:
# /<name>/camera/color/image_raw): the fixed scene camera and the D405-like camera on the hand.
CAMERAS = ("camera", "wrist_camera")
MAX_DISTRACTORS = 3  # distractor bodies in the scene (ver_core.sim.scene)

# Segmentation class ids returned by FrankaPickEnv.render_segmentation() (int32 per pixel).
SEG_CLASSES: dict[str, int] = {
    "background": 0,  # sky and floor
    "table": 1,  # table top and legs
    "robot": 2,  # Panda links 0-7
    "gripper": 3,  # hand and both fingers
    "cube": 4,  # the object to pick
    "distractor": 5,  # randomized clutter (visual only)
}


@dataclass
class SimConfig:
    """Settings of :class:`ver_core.sim.FrankaPickEnv`.

    width/height: render size in pixels (640x480 RealSense-like; 224x224 for the demo pipeline).
    fy_at_480: focal length (px) of a 640x480 render; other sizes keep the vertical FOV.
    control_hz: rate of ``step()`` (each step holds the command for 1/control_hz s of sim time).
    randomize: domain randomization of colors, lights and distractors (cube pose is always
        randomized per seed).
    min_distractors: the fewest distractors a randomized scene places (it draws min .. 3); raise
        it for demonstrations that show the detector more objects that are not the cube.
    lift_height: success when the cube bottom is this far (m) above the table top.
    cube_x / cube_y: ranges (m, robot base frame) of the cube's initial position.
    cube_yaw: half range (rad) of the cube's initial yaw.
    shadows / reflections: off by default (about 10x faster offscreen rendering).
    msaa_samples: offscreen multisampling (0 = none, ~1.7x faster software rendering than 4).
    camera_pos / camera_target: where the camera sits and the point it looks at (m, world frame,
        robot base at the origin, table top at z = 0); match them to a real rig's camera.
    wrist_width / wrist_height: render size of the wrist camera (640x480 like a D405).
    wrist_fovy_deg: its vertical field of view (a D405: about 58 degrees).
    wrist_pos: its mount in the flange frame (m; x forward, z along the fingers).
    wrist_tilt_deg: how far its optical axis leans toward the fingers.
    """

    width: int = 640
    height: int = 480
    fy_at_480: float = 615.0
    control_hz: float = 10.0
    randomize: bool = True
    min_distractors: int = 0
    lift_height: float = 0.10
    cube_x: tuple[float, float] = (0.40, 0.60)
    cube_y: tuple[float, float] = (-0.18, 0.18)
    cube_yaw: float = 0.6
    shadows: bool = False
    reflections: bool = False
    msaa_samples: int = 0
    camera_pos: tuple[float, float, float] = CAMERA_POS
    camera_target: tuple[float, float, float] = CAMERA_TARGET
    wrist_width: int = 640
    wrist_height: int = 480
    wrist_fovy_deg: float = 58.0
    wrist_pos: tuple[float, float, float] = (0.07, 0.0, 0.06)
    wrist_tilt_deg: float = 10.0

    def size_of(self, camera: str) -> tuple[int, int]:
        """(width, height) of ``camera``'s renders."""
        if camera == "camera":
            return self.width, self.height
        if camera == "wrist_camera":
            return self.wrist_width, self.wrist_height
        raise ValueError(f"unknown camera {camera!r}; the sim has {CAMERAS}")

    def __post_init__(self) -> None:
        for w, h in ((self.width, self.height), (self.wrist_width, self.wrist_height)):
            if not (16 <= w <= 1280 and 16 <= h <= 960):
                raise ValueError(f"render size {w}x{h} outside 16x16 .. 1280x960")
        if not 20.0 <= self.wrist_fovy_deg <= 120.0:
            raise ValueError(f"wrist_fovy_deg must be in [20, 120], got {self.wrist_fovy_deg}")
        if not -45.0 <= self.wrist_tilt_deg <= 60.0:
            raise ValueError(f"wrist_tilt_deg must be in [-45, 60], got {self.wrist_tilt_deg}")
        self.wrist_pos = tuple(float(v) for v in self.wrist_pos)
        if len(self.wrist_pos) != 3 or not all(
            math.isfinite(v) and abs(v) <= 0.3 for v in self.wrist_pos
        ):
            raise ValueError(
                f"wrist_pos needs 3 finite coordinates within 0.3 m, got {self.wrist_pos}"
            )
        if not 0 <= self.min_distractors <= MAX_DISTRACTORS:
            raise ValueError(
                f"min_distractors must be in [0, {MAX_DISTRACTORS}], got {self.min_distractors}"
            )
        if self.msaa_samples not in (0, 2, 4, 8):
            raise ValueError(f"msaa_samples must be 0, 2, 4 or 8, got {self.msaa_samples}")
        if self.fy_at_480 <= 0:
            raise ValueError(f"fy_at_480 must be > 0, got {self.fy_at_480}")
        if not 1.0 <= self.control_hz <= 500.0:
            raise ValueError(f"control_hz must be in [1, 500], got {self.control_hz}")
        if not 0.01 <= self.lift_height <= 0.4:
            raise ValueError(f"lift_height must be in [0.01, 0.4] m, got {self.lift_height}")
        for name in ("camera_pos", "camera_target"):
            value = tuple(float(v) for v in getattr(self, name))  # YAML gives lists
            if len(value) != 3 or not all(math.isfinite(v) and abs(v) <= 5.0 for v in value):
                raise ValueError(f"{name} needs 3 finite coordinates within 5 m, got {value}")
            setattr(self, name, value)
        if math.dist(self.camera_pos, self.camera_target) < 0.05:
            raise ValueError("camera_pos and camera_target must be at least 5 cm apart")
        self.cube_x = tuple(float(v) for v in self.cube_x)  # YAML gives lists
        self.cube_y = tuple(float(v) for v in self.cube_y)
        for name, (lo, hi) in (("cube_x", self.cube_x), ("cube_y", self.cube_y)):
            if lo > hi:
                raise ValueError(f"{name} range is empty: {lo} > {hi}")
        if not (0.30 <= self.cube_x[0] and self.cube_x[1] <= 0.70):
            raise ValueError(f"cube_x {self.cube_x} outside the reachable 0.30 .. 0.70 m")
        if abs(self.cube_y[0]) > 0.3 or abs(self.cube_y[1]) > 0.3:
            raise ValueError(f"cube_y {self.cube_y} outside the reachable -0.3 .. 0.3 m")

    @classmethod
    def from_dict(cls, d: dict) -> SimConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SimConfig keys {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

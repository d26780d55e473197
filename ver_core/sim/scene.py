"""MJCF scene of the pick world: our table, cube, distractors, lights and camera around the
Franka Panda model shipped in the ``gymnasium-robotics`` wheel.

The Panda files are located with ``importlib.util.find_spec`` (the package itself is never
imported: its dependencies are not installed) or with the ``VER_FRANKA_ASSETS`` environment
variable pointing at a ``franka_assets`` directory.

Joint conventions. The gymnasium-robotics chain builds link6 and link7 with extra fixed
rotations, so its joint6/joint7 zero differs from Franka's: ``q_franka = q_model + JOINT_OFFSET``
(offsets pi/2 and pi/4, found by matching the model's forward kinematics against Franka's DH
table). Everything outside this module (ROS topics, expert, policies) uses Franka's convention.
Joint ranges are rewritten to Franka Panda's published limits (REFERENCE.md).
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import mujoco
import numpy as np

from ver_core.sim.config import CAMERA_POS, CAMERA_TARGET, MAX_DISTRACTORS

__all__ = [
    "CAMERA_NAME",
    "JOINT_OFFSET",
    "WRIST_CAMERA_NAME",
    "PANDA_LIMITS",
    "TABLE_TOP_Z",
    "build_model",
    "franka_assets_dir",
]

# q_franka = q_model + JOINT_OFFSET, (7,) rad
JOINT_OFFSET = np.array([0.0, 0.0, 0.0, 0.0, 0.0, math.pi / 2, math.pi / 4])
# Franka Panda position limits (rad), (7, 2), Franka convention
PANDA_LIMITS = np.array(
    [
        [-2.8973, 2.8973],
        [-1.7628, 1.7628],
        [-2.8973, 2.8973],
        [-3.0718, -0.0698],
        [-2.8973, 2.8973],
        [-0.0175, 3.7525],
        [-2.8973, 2.8973],
    ]
)
TABLE_TOP_Z = 0.0  # the robot base stands on the table top at the world origin
CAMERA_NAME = "realsense"
WRIST_CAMERA_NAME = "wrist_realsense"
WRIST_BODY = "panda0_link7"  # the flange; its z axis points along the fingers
# The hand sits on the flange turned by -45 degrees about z (as the TCP site): the hand frame's x
# is perpendicular to the finger travel, y along it.
HAND_YAW = -math.pi / 4
CUBE_HALF = 0.025
N_DISTRACTORS = MAX_DISTRACTORS


def franka_assets_dir() -> Path:
    """Directory holding chain.xml / assets.xml / actuator.xml of the Panda model."""
    env = os.environ.get("VER_FRANKA_ASSETS")
    if env:
        path = Path(env)
    else:
        spec = importlib.util.find_spec("gymnasium_robotics")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "Franka model not found: install it with `pip install --no-deps gymnasium-robotics` "
                "or set VER_FRANKA_ASSETS to a franka_assets directory"
            )
        root = Path(next(iter(spec.submodule_search_locations)))
        path = root / "envs" / "assets" / "kitchen_franka" / "franka_assets"
    for name in ("chain.xml", "assets.xml", "actuator.xml"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"Franka model file {path / name} is missing")
    return path


def _look_at_axes(pos: np.ndarray, target: np.ndarray) -> str:
    """MJCF ``xyaxes`` for a camera at ``pos`` looking at ``target`` with world z up."""
    fwd = target - pos
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    return " ".join(f"{v:.6f}" for v in (*right, *up))


def _scene_xml(franka: Path, fovy_deg: float, camera_pos, camera_target) -> str:
    cam_pos = np.asarray(camera_pos, dtype=np.float64)
    cam_axes = _look_at_axes(cam_pos, np.asarray(camera_target, dtype=np.float64))
    distractors = "\n".join(
        f'<body name="distractor{i}" mocap="true" pos="0 {1 + i} -0.5">'
        # never a box: the policy sees no privileged state, so the target must be the only cube
        f'<geom name="distractor{i}" type="{"cylinder" if i % 2 else "sphere"}" '
        f'size="{"0.025 0.035" if i % 2 else "0.035"}" '
        f'contype="0" conaffinity="0" rgba="0.2 0.6 0.2 1"/></body>'
        for i in range(N_DISTRACTORS)
    )
    return f"""
<mujoco model="ver_franka_pick">
  <include file="{franka}/assets.xml"/>
  <compiler angle="radian" meshdir="{franka}/meshes" autolimits="true"/>
  <option timestep="0.002" cone="elliptic" impratio="5"/>
  <visual>
    <global offwidth="1280" offheight="960"/>
    <quality shadowsize="0"/>
    <map znear="0.01" zfar="20"/>
  </visual>
  <include file="{franka}/actuator.xml"/>
  <asset>
    <texture name="floor_tex" type="2d" builtin="checker" rgb1=".35 .35 .38" rgb2=".3 .3 .33" width="256" height="256"/>
    <material name="floor_mat" texture="floor_tex" texrepeat="6 6"/>
  </asset>
  <worldbody>
    <light name="key" pos="0.8 0.6 2.0" dir="-0.3 -0.3 -1" diffuse="0.7 0.7 0.7" specular="0.1 0.1 0.1" castshadow="false"/>
    <light name="fill" pos="0.4 -1.0 1.5" dir="0 0.6 -1" diffuse="0.4 0.4 0.4" specular="0 0 0" castshadow="false"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="4 4 0.1" material="floor_mat"/>
    <geom name="table_top" type="box" pos="0.35 0 -0.02" size="0.65 0.6 0.02" rgba="0.55 0.42 0.3 1" friction="1 0.01 0.001"/>
    <geom name="table_leg0" type="box" pos="-0.25 0.55 -0.385" size="0.03 0.03 0.345" rgba="0.3 0.3 0.3 1"/>
    <geom name="table_leg1" type="box" pos="-0.25 -0.55 -0.385" size="0.03 0.03 0.345" rgba="0.3 0.3 0.3 1"/>
    <geom name="table_leg2" type="box" pos="0.95 0.55 -0.385" size="0.03 0.03 0.345" rgba="0.3 0.3 0.3 1"/>
    <geom name="table_leg3" type="box" pos="0.95 -0.55 -0.385" size="0.03 0.03 0.345" rgba="0.3 0.3 0.3 1"/>
    <camera name="{CAMERA_NAME}" pos="{cam_pos[0]} {cam_pos[1]} {cam_pos[2]}" xyaxes="{cam_axes}" fovy="{fovy_deg:.6f}"/>
    <include file="{franka}/chain.xml"/>
    <body name="cube" pos="0.5 0 {CUBE_HALF}">
      <freejoint name="cube_joint"/>
      <geom name="cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="0.05" rgba="0.85 0.1 0.1 1"
            friction="1.5 0.02 0.001" condim="4" solref="0.005 1"/>
    </body>
    {distractors}
  </worldbody>
</mujoco>
"""


def wrist_camera_axes(tilt_deg: float) -> np.ndarray:
    """(3, 3) columns = the wrist camera's x, y, z axes in the flange frame.

    The camera looks along the fingers (flange +z), tilted by ``tilt_deg`` toward the finger axis
    from its mount in front of the hand (hand +x); image up is toward hand +x, so the fingertips
    show in the lower part of the image. MuJoCo cameras look along their -z axis.
    """
    t = math.radians(tilt_deg)
    view = np.array([-math.sin(t), 0.0, math.cos(t)])  # optical axis, flange frame
    z = -view
    y = np.array([math.cos(t), 0.0, math.sin(t)])  # image up: toward +x, orthogonal to view
    x = np.cross(y, z)
    c, s = math.cos(HAND_YAW), math.sin(HAND_YAW)
    hand = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # hand frame in the flange
    return hand @ np.stack([x, y, z], axis=1)


def _quat_from_matrix(r: np.ndarray) -> list[float]:
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(r, dtype=np.float64).reshape(-1))
    return quat.tolist()


def _add_wrist_camera(spec: mujoco.MjSpec, pos, tilt_deg: float, fovy_deg: float) -> None:
    """A D405-like camera rigidly mounted on the hand, with a small visual housing."""
    flange = spec.body(WRIST_BODY)
    c, s = math.cos(HAND_YAW), math.sin(HAND_YAW)
    mount = np.array([c * pos[0] - s * pos[1], s * pos[0] + c * pos[1], pos[2]])  # flange frame
    cam = flange.add_camera()
    cam.name = WRIST_CAMERA_NAME
    cam.pos = mount.tolist()
    cam.quat = _quat_from_matrix(wrist_camera_axes(tilt_deg))
    cam.fovy = float(fovy_deg)
    housing = flange.add_geom()
    housing.name = "wrist_camera_housing"
    housing.type = mujoco.mjtGeom.mjGEOM_BOX
    housing.size = [0.021, 0.021, 0.012]  # a D405 is 42 x 42 x 23 mm
    housing.pos = (mount + [0.0, 0.0, -0.014]).tolist()
    housing.quat = _quat_from_matrix(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]))
    housing.contype, housing.conaffinity = 0, 0
    housing.rgba = [0.12, 0.12, 0.13, 1.0]
    housing.mass = 0.0


def build_model(
    fy_at_480: float = 615.0,
    camera_pos=CAMERA_POS,
    camera_target=CAMERA_TARGET,
    wrist_pos=(0.07, 0.0, 0.06),
    wrist_tilt_deg: float = 10.0,
    wrist_fovy_deg: float = 58.0,
) -> mujoco.MjModel:
    """Compile the scene. ``fy_at_480`` sets the scene camera's vertical FOV so that a 640x480
    render has focal length fy (fx = fy: MuJoCo pixels are square); it sits at ``camera_pos``
    looking at ``camera_target``. The wrist camera sits at ``wrist_pos`` in the flange frame
    (x forward, z along the fingers), tilted ``wrist_tilt_deg`` toward the fingers, with a
    vertical field of view of ``wrist_fovy_deg`` (a D405 has about 58 degrees)."""
    fovy = math.degrees(2.0 * math.atan(240.0 / fy_at_480))
    xml = _scene_xml(franka_assets_dir(), fovy, camera_pos, camera_target)
    spec = mujoco.MjSpec.from_string(xml)
    _add_wrist_camera(spec, wrist_pos, wrist_tilt_deg, wrist_fovy_deg)
    for body in spec.bodies:
        # Gravity compensation on the arm, as Franka's own controllers do: no position droop.
        if body.name.startswith("panda0"):
            body.gravcomp = 1.0
    model = spec.compile()
    # Franka Panda limits in the model's joint convention; the actuators get the same range.
    for j in range(7):
        lo, hi = PANDA_LIMITS[j] - JOINT_OFFSET[j]
        model.jnt_range[j] = (lo, hi)
        model.actuator_ctrlrange[j] = (lo, hi)
    model.site_rgba[:, 3] = 0.0  # the TCP marker stays invisible to the camera
    return model

"""FrankaPickEnv: a Panda on a table, a cube to pick and lift, a fixed RealSense-like scene camera
and a D405-like camera on the hand.

Joint positions are in Franka's convention (see ``scene.JOINT_OFFSET``); the gripper is driven
and reported as an opening width in m (0 closed .. 0.08 open), each finger at width / 2.

Rendering is headless (set ``MUJOCO_GL=egl`` before importing mujoco; osmesa also works), per
camera by name (``camera``: the scene camera, the default; ``wrist_camera``: on the hand):
``render(camera)`` RGB uint8 (H, W, 3), ``render_depth(camera)`` float32 metres (H, W),
``render_segmentation(camera)`` int32 class ids (H, W), ids in ``config.SEG_CLASSES``;
``render_views(cameras)`` every named camera's RGB image in one dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from ver_core.sim.config import CAMERAS, SEG_CLASSES, SimConfig
from ver_core.sim.scene import (
    CAMERA_NAME,
    CUBE_HALF,
    JOINT_OFFSET,
    N_DISTRACTORS,
    PANDA_LIMITS,
    TABLE_TOP_Z,
    WRIST_CAMERA_NAME,
    build_model,
)

__all__ = ["FrankaPickEnv", "HOME_Q", "MAX_GRIPPER_WIDTH", "Observation"]

HOME_Q = np.array([0.0, -0.35, 0.0, -2.3, 0.0, 1.95, math.pi / 4])  # (7,) rad, Franka convention
MAX_GRIPPER_WIDTH = 0.08
_HIDDEN = np.array([0.0, 5.0, -1.0])  # where unused distractors wait (out of view)
_MJCF_CAMERA = {"camera": CAMERA_NAME, "wrist_camera": WRIST_CAMERA_NAME}


@dataclass
class Observation:
    """True state after a reset or step. Arrays are float64."""

    time: float  # sim time, s
    arm_q: np.ndarray  # (7,) joint positions, rad
    arm_dq: np.ndarray  # (7,) joint velocities, rad/s
    gripper_width: float  # finger opening, m
    cube_pos: np.ndarray  # (3,) m, world = robot base frame
    cube_quat: np.ndarray  # (4,) w, x, y, z
    tcp_pos: np.ndarray  # (3,) tool centre point between the fingertips, m


class FrankaPickEnv:
    """Pick-and-lift world. ``reset(seed)`` randomizes the cube pose (and with
    ``config.randomize`` colors, lights and distractors) deterministically from the seed."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        c = self.config
        self.model = build_model(
            c.fy_at_480,
            c.camera_pos,
            c.camera_target,
            c.wrist_pos,
            c.wrist_tilt_deg,
            c.wrist_fovy_deg,
        )
        self.model.vis.quality.offsamples = self.config.msaa_samples
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._arm_qadr = np.array([m.jnt_qposadr[j] for j in range(7)])
        self._arm_dadr = np.array([m.jnt_dofadr[j] for j in range(7)])
        self._finger_qadr = np.array(
            [m.jnt_qposadr[m.joint(f"robot:panda0_finger_joint{i}").id] for i in (1, 2)]
        )
        self._cube_qadr = m.jnt_qposadr[m.joint("cube_joint").id]
        self._cube_body = m.body("cube").id
        self._tcp_site = m.site("end_effector").id
        self._cube_geom = m.geom("cube").id
        self._table_geom = m.geom("table_top").id
        self._light_ids = [m.light("key").id, m.light("fill").id]
        self._light_defaults = m.light_diffuse[self._light_ids].copy()
        self._distractor_mocap = [
            m.body_mocapid[m.body(f"distractor{i}").id] for i in range(N_DISTRACTORS)
        ]
        self._distractor_geoms = [m.geom(f"distractor{i}").id for i in range(N_DISTRACTORS)]
        self._default_rgba = m.geom_rgba.copy()
        self._seg_lut = self._segmentation_lut()
        self._n_sub = max(1, round(1.0 / (self.config.control_hz * m.opt.timestep)))
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._modes: dict[tuple[int, int], str] = {}
        self.seed: int | None = None
        self.reset(0)

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None) -> Observation:
        """Reset robot, cube and (if enabled) appearance from ``seed``."""
        self.seed = seed
        rng = np.random.default_rng(seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        q0 = HOME_Q + rng.uniform(-0.05, 0.05, 7)
        d.qpos[self._arm_qadr] = q0 - JOINT_OFFSET
        d.qpos[self._finger_qadr] = MAX_GRIPPER_WIDTH / 2
        cx, cy, yaw = (
            rng.uniform(*self.config.cube_x),
            rng.uniform(*self.config.cube_y),
            rng.uniform(-1, 1) * self.config.cube_yaw,
        )
        d.qpos[self._cube_qadr : self._cube_qadr + 7] = [
            cx,
            cy,
            TABLE_TOP_Z + CUBE_HALF,
            math.cos(yaw / 2),
            0,
            0,
            math.sin(yaw / 2),
        ]
        self._randomize_appearance(rng, np.array([cx, cy]))
        self.set_command(q0, MAX_GRIPPER_WIDTH)
        mujoco.mj_forward(m, d)
        self.advance(0.1)  # let contacts settle
        d.time = 0.0
        return self.observation()

    def _randomize_appearance(self, rng: np.random.Generator, cube_xy: np.ndarray) -> None:
        m = self.model
        m.geom_rgba[:] = self._default_rgba
        m.light_diffuse[self._light_ids] = self._light_defaults
        for k, mid in enumerate(self._distractor_mocap):
            self.data.mocap_pos[mid] = _HIDDEN + [0.0, 0.2 * k, 0.0]
        if not self.config.randomize:
            return
        hue = rng.uniform(0, 1)
        m.geom_rgba[self._cube_geom, :3] = _hsv_to_rgb(
            hue, rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0)
        )
        m.geom_rgba[self._table_geom, :3] = _hsv_to_rgb(
            rng.uniform(0, 1), rng.uniform(0.0, 0.4), rng.uniform(0.3, 0.8)
        )
        m.light_diffuse[self._light_ids] = self._light_defaults * rng.uniform(0.6, 1.4, (2, 1))
        m.light_pos[self._light_ids[0], :2] = rng.uniform(-1.0, 1.0, 2)
        n = int(rng.integers(self.config.min_distractors, N_DISTRACTORS + 1))
        for k in range(n):
            for _ in range(50):  # rejection sample a spot away from the cube and the robot base
                xy = np.array([rng.uniform(0.3, 0.75), rng.uniform(-0.4, 0.4)])
                if np.linalg.norm(xy - cube_xy) > 0.15 and np.linalg.norm(xy) > 0.3:
                    break
            self.data.mocap_pos[self._distractor_mocap[k]] = [xy[0], xy[1], TABLE_TOP_Z + 0.035]
            m.geom_rgba[self._distractor_geoms[k], :3] = _hsv_to_rgb(
                rng.uniform(0, 1), rng.uniform(0.3, 1), rng.uniform(0.3, 1)
            )

    # ------------------------------------------------------------------ control
    def set_command(self, arm_q, gripper_width: float) -> None:
        """Set joint position targets (7,) rad and gripper width (m). Non-finite or misshapen
        input raises ValueError and leaves the previous command in place; finite targets are
        clipped to the Panda limits and to 0 .. 0.08 m."""
        q = np.asarray(arm_q, dtype=np.float64)
        if q.shape != (7,):
            raise ValueError(f"arm command needs 7 joint positions, got shape {q.shape}")
        if not np.all(np.isfinite(q)) or not math.isfinite(float(gripper_width)):
            raise ValueError(
                f"non-finite command rejected: arm {q.tolist()}, gripper {gripper_width}"
            )
        q = np.clip(q, PANDA_LIMITS[:, 0], PANDA_LIMITS[:, 1])
        w = float(np.clip(gripper_width, 0.0, MAX_GRIPPER_WIDTH))
        self.data.ctrl[:7] = q - JOINT_OFFSET
        self.data.ctrl[7:9] = w / 2

    def advance(self, seconds: float) -> None:
        """Step physics for ``seconds`` of sim time (at least one physics step)."""
        n = max(1, round(seconds / self.model.opt.timestep))
        mujoco.mj_step(self.model, self.data, nstep=n)

    def step(self, arm_q, gripper_width: float) -> Observation:
        """Apply a command and hold it for one control period (1 / config.control_hz s)."""
        self.set_command(arm_q, gripper_width)
        mujoco.mj_step(self.model, self.data, nstep=self._n_sub)
        return self.observation()

    # ------------------------------------------------------------------ state
    def observation(self) -> Observation:
        d = self.data
        c = d.qpos[self._cube_qadr : self._cube_qadr + 7]
        return Observation(
            time=float(d.time),
            arm_q=d.qpos[self._arm_qadr] + JOINT_OFFSET,
            arm_dq=d.qvel[self._arm_dadr].copy(),
            gripper_width=float(d.qpos[self._finger_qadr].sum()),
            cube_pos=c[:3].copy(),
            cube_quat=c[3:].copy(),
            tcp_pos=d.site_xpos[self._tcp_site].copy(),
        )

    def distractor_positions(self) -> np.ndarray:
        """(n, 3) world positions (m) of the distractors placed in this scene (n = 0 .. 3)."""
        pos = [self.data.mocap_pos[m].copy() for m in self._distractor_mocap]
        return np.array([p for p in pos if p[2] > 0], dtype=np.float64).reshape(-1, 3)

    def finger_positions(self) -> np.ndarray:
        """(2,) finger joint positions (m), each half the opening."""
        return self.data.qpos[self._finger_qadr].copy()

    def success(self) -> bool:
        """Cube lifted ``lift_height`` above the table and held between the fingers."""
        cube = self.data.xpos[self._cube_body]
        lifted = cube[2] - CUBE_HALF - TABLE_TOP_Z > self.config.lift_height
        held = np.linalg.norm(cube - self.data.site_xpos[self._tcp_site]) < 0.06
        return bool(lifted and held)

    # ------------------------------------------------------------------ cameras
    def camera_info(self, camera: str = "camera") -> dict:
        """Pinhole intrinsics of ``camera``'s renders: width, height, K (3x3 row-major list), D,
        distortion model."""
        w, h = self.config.size_of(camera)
        fovy = math.radians(self.model.cam_fovy[self.model.camera(_MJCF_CAMERA[camera]).id])
        f = (h / 2) / math.tan(fovy / 2)
        k = [[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]]
        return {"width": w, "height": h, "K": k, "D": [0.0] * 5, "distortion_model": "plumb_bob"}

    def camera_pose(self, camera: str = "camera") -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) and rotation (3, 3) (columns: image right, up, backward) now."""
        cid = self.model.camera(_MJCF_CAMERA[camera]).id
        return self.data.cam_xpos[cid].copy(), self.data.cam_xmat[cid].reshape(3, 3).copy()

    def _render(self, mode: str, camera: str) -> np.ndarray:
        if camera not in _MJCF_CAMERA:
            raise ValueError(f"unknown camera {camera!r}; the sim has {CAMERAS}")
        w, h = self.config.size_of(camera)
        r = self._renderers.get((h, w))
        if r is None:
            r = self._renderers[(h, w)] = mujoco.Renderer(self.model, h, w)
            flags = r.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = self.config.shadows
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = self.config.reflections
            self._modes[(h, w)] = "rgb"
        if mode != self._modes[(h, w)]:
            r.disable_depth_rendering()
            r.disable_segmentation_rendering()
            if mode == "depth":
                r.enable_depth_rendering()
            elif mode == "seg":
                r.enable_segmentation_rendering()
            self._modes[(h, w)] = mode
        r.update_scene(self.data, camera=_MJCF_CAMERA[camera])
        return r.render()

    def render(self, camera: str = "camera") -> np.ndarray:
        """RGB image of ``camera``, (H, W, 3) uint8."""
        return self._render("rgb", camera).copy()

    def render_views(self, cameras=("camera",)) -> dict[str, np.ndarray]:
        """{camera name: RGB image (H, W, 3) uint8} for every camera in ``cameras``."""
        return {c: self.render(c) for c in cameras}

    def render_depth(self, camera: str = "camera") -> np.ndarray:
        """Depth along the optical axis, (H, W) float32 metres."""
        return self._render("depth", camera).astype(np.float32)

    def render_segmentation(self, camera: str = "camera") -> np.ndarray:
        """Per-pixel class ids (H, W) int32, see ``SEG_CLASSES``."""
        seg = self._render("seg", camera)  # (H, W, 2): object id, object type
        ids, types = seg[..., 0], seg[..., 1]
        is_geom = (types == int(mujoco.mjtObj.mjOBJ_GEOM)) & (ids >= 0)
        out = np.zeros(ids.shape, np.int32)
        out[is_geom] = self._seg_lut[ids[is_geom]]
        return out

    def _segmentation_lut(self) -> np.ndarray:
        m = self.model
        lut = np.zeros(m.ngeom, np.int32)
        gripper_bodies = {m.body("panda0_leftfinger").id, m.body("panda0_rightfinger").id}
        hand_meshes = {m.mesh("hand_viz").id, m.mesh("hand_col").id}
        for g in range(m.ngeom):
            name, body = m.geom(g).name, int(m.geom_bodyid[g])
            if name == "cube":
                lut[g] = SEG_CLASSES["cube"]
            elif name.startswith("table"):
                lut[g] = SEG_CLASSES["table"]
            elif name.startswith("distractor"):
                lut[g] = SEG_CLASSES["distractor"]
            elif m.body(body).name.startswith("panda0"):
                hand = (
                    body in gripper_bodies
                    or int(m.geom_dataid[g]) in hand_meshes
                    or name == "wrist_camera_housing"
                )
                lut[g] = SEG_CLASSES["gripper" if hand else "robot"]
        return lut

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])

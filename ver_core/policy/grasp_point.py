"""Grasp-point detection: where, in each camera's image, the hand will close.

The keypose estimator regresses 7 joint angles from pooled features; near the object it is off
by about a centimetre, and a cube is grasped or missed by less (bench/keypose_estimator*.py,
docs/RESULTS.md). A detector has the geometry built in instead: per camera view a small conv
head over the routed patch grid says which patch holds the *grasp point* (the TCP at the
demonstration's close event), or "not in this view", and where inside the patch it lies. The
detected pixel's ray meets the horizontal plane the training grasps lie on (``grasp_height``);
the same head reads the grasp's yaw about the vertical at that patch (as cos n psi, sin n psi:
an n-fold symmetric grasp looks alike every 2 pi / n), and a few damped-least-squares steps move
the regressed keypose so that its TCP sits on that point, pointing down at that yaw (a top-down
grasp, as every demonstration of the pick task is). bench/grasp_point_detector.py measured the
idea: 0.25 cm near the grasp vs 1.01 cm for the regression (100 scenes).

Labels need what a calibrated rig has, no object pose: the demos' commanded joints (the
keypose), the arm's kinematic model, and each camera's calibration (``TaskConfig.
camera_calibration``). A calibration entry, per camera name::

    {"mount": "world" | <body of the kinematic model the camera is fixed to, e.g. "hand">,
     "pos": [x, y, z],            # m, optical centre in the mount's frame
     "rot": [9 numbers],          # row-major 3x3: the optical frame's axes (x right, y down,
                                  # z forward, ROS' *_optical_frame) in the mount's frame
     "intrinsics": [fx, fy, cx, cy]}  # in units of the image's width (fx, cx) and height (fy, cy)

Intrinsics in image units survive the resize to the model's square input (the one image path
squashes the whole frame), so a RealSense camera_info's K divided by its width/height is the
entry. ``sim_calibration`` gives the simulator's cameras.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ver_core.policy.config import GRASP_YAW_FRAMES

__all__ = [
    "CameraRig",
    "GraspPointHead",
    "GraspPointTracker",
    "PatchMap",
    "Sighting",
    "fused_mass",
    "grasp_point_labels",
    "grasp_point_loss",
    "neighbour_patches",
    "grasp_yaw",
    "head_outputs",
    "GraspYawNet",
    "fit_yaw_nets",
    "patch_windows",
    "patch_maps",
    "sightings",
    "sim_calibration",
    "top_down",
    "world_yaw_vec",
]

log = logging.getLogger(__name__)

# The simulator's camera (ver_core.sim.scene) behind each camera name of the task's topics.
SIM_CAMERAS = {"camera": "realsense", "wrist_camera": "wrist_realsense"}
OPTICAL_FROM_MUJOCO = np.diag([1.0, -1.0, -1.0])  # MuJoCo cameras look along -z, image y up
# An empty close: the opening (m) below EMPTY_WIDTH (the hand holds nothing; a 5 cm cube reads
# ~5.1) with the TCP within REACH_Z (m) of the grasp plane. Nothing graspable lies within 3.5 cm
# of it (the cube's centre would be between the open fingers, 8 cm apart with 2 cm wide pads, or
# under them), and the object the detector saw there is ruled out with its whole blob: REJECT_M
# (m). At 3.5 cm the next estimate landed on the same distractor's rim, 3-4 cm from the close
# (session 22); 8 cm covers a 7 cm sphere and a patch of detector spread. On make demo's checkpoint
# every empty close at the plane over 150 held-out scenes came in an episode that failed without
# the rule (nine at a distractor, 0.3-1.7 cm from its centre; docs/RESULTS.md session 27).
OPEN_WIDTH, EMPTY_WIDTH, REACH_Z, REJECT_M = 0.08, 0.01, 0.03, 0.08
COMMIT_DZ = 0.06  # m: the TCP this little above the grasp plane commits to the estimate
# After an empty close ruled out the estimate's place (GraspPointTracker(reject_m=...)), the tracker
# searches: the next frames' sightings take up to SEARCH_TOP peaks per view down to SEARCH_MIN_PROB
# (instead of sightings' 3 and 0.05). A cube the detector ranked below a distractor is often
# under 0.05 in the fixed camera's map, and without a search the tracker had no estimate for 20
# frames after the close (docs/RESULTS.md session 27).
SEARCH_TOP, SEARCH_MIN_PROB = 5, 0.01
# The fingers stopped on an object: two measured openings in a row within GRIPPED_STILL (m) of each
# other, above GRIPPED_MIN (m), while closing. A hand that then ends empty dropped what it held
# (the cube slid out during the lift): its grasp place is not ruled out.
GRIPPED_MIN, GRIPPED_STILL = 0.02, 0.002
CLOSING_WIDTH = 0.075  # m: below it the hand is closing (the open hand reads 0.079-0.080)
MAX_CORRECTION = 0.25  # m: the keypose's TCP moves at most this far toward a detected point
OFFSET_WEIGHT = 4.0
FUSE_FLOOR = 1e-3  # added to each view's factor in fused_mass: one empty view does not zero a place
# fused_mass's exponent on a camera that rides on the arm (the wrist). 2 (its close view tells the
# cube from a distractor better) started on a distractor in 152 vs 168 of 2100 held-out home frames
# but scored 45/50 and 44/50 through ROS against 136/150 with 1 (docs/RESULTS.md session 16): 1.
ARM_VIEW_WEIGHT = 1.0
# m: GraspPointTracker(hold_margin=...) holds its estimate while the hand's opening is this far
# below the widest seen in the episode (closing, holding, or closed empty); a Franka hand open reads
# its full width to ~1 mm, and a 5 cm cube held across its diagonal reads 7.1 of 8 cm. Off by
# default: measured 44 vs 43/50 in-process and 12 vs 10/20 under a forced 40 degree yaw error, but
# its fresh-clone make demo picked 40/50 (docs/RESULTS.md session 21), and a retry that reopens the
# hand only to ~7.4 cm never releases it.
HOLD_MARGIN = 0.005
YAW_WEIGHT = 1.0  # weight of the grasp yaw's (cos n psi, sin n psi) L1 at the labelled patch
TOP_DOWN = np.diag(
    [1.0, -1.0, -1.0]
)  # TCP z pointing down (Rx(pi)); a yaw turns it about z  # weight of the in-patch offset (L1, patch units) beside the patch CE


def sim_calibration(cameras: list[str], model: mujoco.MjModel | None = None) -> dict[str, Any]:
    """The simulator's calibration of ``cameras`` (names as in ``TaskConfig.cameras``)."""
    from ver_core.sim.scene import build_model

    model = model or build_model()
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    mujoco.mj_camlight(model, data)
    out = {}
    for name in cameras:
        if name not in SIM_CAMERAS:
            raise ValueError(
                f"the simulator has no camera for {name!r} (it has {sorted(SIM_CAMERAS)}): "
                "give its calibration in camera_calibration"
            )
        cam = model.camera(SIM_CAMERAS[name])
        body = int(cam.bodyid[0])
        r_body = data.xmat[body].reshape(3, 3)
        pos = r_body.T @ (data.cam_xpos[cam.id] - data.xpos[body])
        rot = r_body.T @ data.cam_xmat[cam.id].reshape(3, 3) @ OPTICAL_FROM_MUJOCO
        f = 0.5 / math.tan(math.radians(float(model.cam_fovy[cam.id])) / 2)  # square renders
        out[name] = {
            "mount": "world" if body == 0 else model.body(body).name,
            "pos": [round(float(v), 6) for v in pos],
            "rot": [round(float(v), 8) for v in rot.ravel()],
            "intrinsics": [round(f, 6), round(f, 6), 0.5, 0.5],
        }
    return out


def heading(rot: np.ndarray) -> float:
    """The heading (rad) about the world's vertical of a camera with optical frame ``rot``
    (world): its image x axis' yaw."""
    return float(np.arctan2(rot[1, 0], rot[0, 0]))


def to_image(
    point: np.ndarray, pos: np.ndarray, rot: np.ndarray, intrinsics: np.ndarray
) -> np.ndarray:
    """A world point -> image coordinates (2,) in [0, 1) of a camera at ``pos`` with optical
    frame ``rot`` (world) and ``intrinsics`` (fx, fy, cx, cy in image units); NaN where the
    point is behind the camera or outside its image."""
    x, y, z = rot.T @ (np.asarray(point, np.float64) - pos)
    if z < 0.02:
        return np.full(2, np.nan)
    fx, fy, cx, cy = intrinsics
    u, w = cx + fx * x / z, cy + fy * y / z
    return np.array([u, w]) if 0 <= u < 1 and 0 <= w < 1 else np.full(2, np.nan)


class CameraRig:
    """Each camera's world pose at measured arm joints, projection and back-projection.

    ``calibration``: as in the module docstring, one entry per name of ``cameras``. Joints use the
    Franka convention (the kinematic model is the simulator's Panda, ver_core.eval.kinematics)."""

    def __init__(self, calibration: dict[str, Any], cameras: list[str]) -> None:
        from ver_core.eval.kinematics import TcpKinematics

        self.kin = TcpKinematics()
        model = self.kin.model
        self.views = []
        for name in cameras:
            if name not in calibration:
                raise ValueError(f"camera_calibration has no entry for camera {name!r}")
            c = calibration[name]
            try:
                mount = str(c["mount"])
                pos = np.asarray(c["pos"], np.float64).reshape(3)
                rot = np.asarray(c["rot"], np.float64).reshape(3, 3)
                fx, fy, cx, cy = (float(v) for v in c["intrinsics"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"camera_calibration[{name!r}] is malformed ({e}): {c!r}") from e
            if not np.allclose(rot @ rot.T, np.eye(3), atol=1e-4):
                raise ValueError(f"camera_calibration[{name!r}].rot is not a rotation")
            if fx <= 0 or fy <= 0:
                raise ValueError(f"camera_calibration[{name!r}] needs positive focal lengths")
            if mount == "world":
                body = 0
            else:
                try:
                    body = model.body(mount).id
                except KeyError as e:
                    raise ValueError(
                        f"camera_calibration[{name!r}].mount {mount!r} is not a body of the arm"
                    ) from e
            self.views.append((body, pos, rot, np.array([fx, fy, cx, cy])))

    def poses(self, q: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """World (position, optical-frame rotation) of each view with the arm at joints ``q``."""
        kin = self.kin
        kin.data.qpos[kin._qadr] = np.asarray(q, np.float64) - kin._offset
        mujoco.mj_kinematics(kin.model, kin.data)
        out = []
        for body, pos, rot, _ in self.views:
            r_body = kin.data.xmat[body].reshape(3, 3)
            out.append((kin.data.xpos[body] + r_body @ pos, r_body @ rot))
        return out

    def project(self, point: np.ndarray, q: np.ndarray) -> np.ndarray:
        """A world point -> (V, 2) image coordinates in [0, 1) (x right, y down), NaN where the
        point is behind a camera or outside its image."""
        out = np.full((len(self.views), 2), np.nan)
        for v, (pos, rot) in enumerate(self.poses(q)):
            out[v] = to_image(point, pos, rot, self.views[v][3])
        return out

    def ray_to_plane(self, view: int, uv: np.ndarray, q: np.ndarray, height: float) -> np.ndarray:
        """Where view's ray through image point ``uv`` (in [0, 1]) meets the plane z = height
        (world, m); NaN when the ray runs away from it."""
        pos, rot = self.poses(q)[view]
        fx, fy, cx, cy = self.views[view][3]
        ray = rot @ np.array([(uv[0] - cx) / fx, (uv[1] - cy) / fy, 1.0])
        if abs(ray[2]) < 1e-9 or (height - pos[2]) / ray[2] <= 0:
            return np.full(3, np.nan)
        return pos + (height - pos[2]) / ray[2] * ray

    def headings(self, q: np.ndarray) -> np.ndarray:
        """Each view's heading (V,) (rad) about the world's vertical at joints ``q``: the yaw of
        its image's x axis. A grasp yaw seen in a camera's image is the world yaw less this."""
        return np.array([heading(rot) for _, rot in self.poses(q)])

    def tcp_yaw(self, q: np.ndarray) -> float:
        """The TCP's yaw (rad) about the world's vertical at joints q (its x axis' heading)."""
        self.kin.tcp(np.asarray(q, np.float64))
        r = self.kin.data.site_xmat[self.kin._site].reshape(3, 3)
        return float(np.arctan2(r[1, 0], r[0, 0]))

    def reach(
        self,
        q0: np.ndarray,
        target: np.ndarray,
        iters: int = 30,
        max_move: float = np.inf,
        rotation: np.ndarray | None = None,
    ) -> np.ndarray:
        """Joints near ``q0`` whose TCP is at ``target`` (and, given, has world ``rotation``
        (3, 3)) by damped least squares (steps of at most 0.1 rad, inside the arm's limits), or
        ``max_move`` m from q0's TCP toward the target where it is farther; q0 where the target
        is not finite."""
        kin = self.kin
        q = np.asarray(q0, np.float64).copy()
        if not np.all(np.isfinite(target)):
            return q
        start = kin.tcp(q)
        way = np.asarray(target, np.float64) - start
        if np.linalg.norm(way) > max_move:
            target = start + way * (max_move / np.linalg.norm(way))
        model, data = kin.model, kin.data
        lo = model.jnt_range[:7, 0] + kin._offset
        hi = model.jnt_range[:7, 1] + kin._offset
        jp, jr = np.zeros((3, model.nv)), np.zeros((3, model.nv))
        for _ in range(iters):
            err = target - kin.tcp(q)
            if rotation is not None:
                current = data.site_xmat[kin._site].reshape(3, 3)
                quat = np.zeros(4)
                mujoco.mju_mat2Quat(quat, (rotation @ current.T).ravel())
                turn = np.zeros(3)
                mujoco.mju_quat2Vel(turn, quat, 1.0)  # axis * angle, world frame
                err = np.concatenate([err, turn])
            if np.linalg.norm(err) < 1e-4:
                break
            mujoco.mj_comPos(model, data)  # the Jacobian reads cdof / subtree_com
            mujoco.mj_jacSite(model, data, jp, jr, kin._site)
            j = jp if rotation is None else np.vstack([jp, jr])
            j = j[:, kin._qadr]  # arm joints (qadr == dofadr for hinges)
            dq = j.T @ np.linalg.solve(j @ j.T + 1e-4 * np.eye(len(j)), err)
            q = np.clip(q + np.clip(dq, -0.1, 0.1), lo, hi)
        return q


def grasp_point_labels(
    rig: CameraRig,
    keyposes: np.ndarray,
    valid: np.ndarray,
    joints: np.ndarray,
    grid: int,
    yaw_order: int = 4,
    yaw_frame: str = "camera",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame and view: the patch holding the grasp point (``grid**2`` = not in view; -1 = no
    label, the frame has no keypose), its offset inside the patch (N, V, 2) in [0, 1), and the
    grasp's yaw as (cos n psi, sin n psi) (N, V, 2) (n = ``yaw_order``: grasps n-fold symmetric
    about the vertical look alike); ``yaw_frame`` "camera": psi as that view sees it (the world
    yaw less the camera's heading, ``CameraRig.headings``: what a camera on the hand can tell
    from its image, whatever the hand's yaw), "world": the world yaw in every view. And the
    grasp points (N, 3) (NaN without a keypose). keyposes (N, 7), valid (N,), joints (N, 7): the
    measured arm joints at each frame (they place a camera on the hand)."""
    if yaw_frame not in GRASP_YAW_FRAMES:
        raise ValueError(f"yaw_frame must be one of {GRASP_YAW_FRAMES}, got {yaw_frame!r}")
    n, v = len(keyposes), len(rig.views)
    cls = np.full((n, v), -1, np.int64)
    offset = np.zeros((n, v, 2), np.float32)
    yaw = np.zeros((n, v, 2), np.float32)
    points = np.full((n, 3), np.nan)
    pose_of: dict[bytes, tuple[np.ndarray, float]] = {}
    for i in np.flatnonzero(valid):
        key = keyposes[i].tobytes()
        if key not in pose_of:
            q = keyposes[i].astype(np.float64)
            pose_of[key] = (rig.kin.tcp(q), rig.tcp_yaw(q))
        points[i], psi = pose_of[key]
        poses = rig.poses(joints[i])
        for k, (_, rot) in enumerate(poses):
            seen_yaw = psi - (heading(rot) if yaw_frame == "camera" else 0.0)
            yaw[i, k] = (np.cos(yaw_order * seen_yaw), np.sin(yaw_order * seen_yaw))
        uv = np.stack(
            [to_image(points[i], pos, rot, rig.views[k][3]) for k, (pos, rot) in enumerate(poses)]
        )
        for k in range(v):
            if np.isnan(uv[k, 0]):
                cls[i, k] = grid * grid
                continue
            cell = np.minimum((uv[k] * grid).astype(np.int64), grid - 1)
            cls[i, k] = cell[1] * grid + cell[0]
            offset[i, k] = uv[k] * grid - cell
    return cls, offset, yaw, points


class GraspPointHead(nn.Module):
    """Routed tokens (B, 1+P, D) of one view -> logits (B, P + 1) over the P patches and "not in
    view", the point's offset inside each patch (B, P, 2) in [0, 1], and the grasp's yaw as
    (cos n psi, sin n psi) at each patch (B, P, 2)."""

    def __init__(self, dim: int, grid: int, channels: int = 64) -> None:
        super().__init__()
        self.grid = grid
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(
            nn.Conv2d(dim, channels, 1),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, 5, 1),
        )
        self.absent = nn.Linear(dim, 1)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.norm(tokens)
        b, g = x.shape[0], self.grid
        maps = self.net(x[:, 1:].transpose(1, 2).reshape(b, -1, g, g)).flatten(2)  # (B, 5, P)
        logits = torch.cat([maps[:, 0], self.absent(x[:, 0])], dim=1)
        return logits, maps[:, 1:3].transpose(1, 2).sigmoid(), maps[:, 3:].transpose(1, 2)


class MeanGraspHead:
    """One view's grasp-point heads of several ensemble members, used as one head: the patch
    probabilities averaged (returned as their log: logits whose softmax is the mean), the
    in-patch offsets and yaw readings averaged. Detection only; each member trains its own."""

    def __init__(self, heads: list[GraspPointHead]) -> None:
        if not heads or len({h.grid for h in heads}) != 1:
            raise ValueError("MeanGraspHead needs one or more heads of one grid")
        self.heads = list(heads)
        self.grid = heads[0].grid

    def __call__(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        outs = [h(tokens) for h in self.heads]
        prob = torch.stack([logits.softmax(1) for logits, _, _ in outs]).mean(0)
        offs = torch.stack([o for _, o, _ in outs]).mean(0)
        yaws = torch.stack([y for _, _, y in outs]).mean(0)
        return prob.clamp_min(1e-30).log(), offs, yaws


YAW_NET_RADIUS = 2  # a GraspYawNet reads the (2r+1)^2 patches around a point: two valid 3x3 convs


class GraspYawNet(nn.Module):
    """One view's grasp yaw, (cos n psi, sin n psi), read from the routed tokens of the 5x5
    patches around a point: a LayerNorm, a 1x1 conv and two unpadded 3x3 convs that shrink the
    window to one cell, and a linear readout. Trained apart from the ``GraspPointHead`` (on
    frozen tokens, after it: ``fit_yaw_nets``), with the yaw as its only target.

    Why apart: the head's yaw channel shares the head's trunk with the patch classifier and,
    trained with it, answered "square to me" on the camera on the hand whatever the cube's yaw
    (slope 0.92-1.02 in ``bench/probe_wrist_yaw.py``, docs/RESULTS.md session 25), while a
    network of this shape fitted on its own to the same demos' frames reads the cube's yaw on
    held-out hover views (RESULTS.md session 26). It needs demos whose close-up views show the
    cube at many yaws (``ver-record-demos --sweep``): trained without them it reads nothing.

    ``forward`` takes windows (B, 5, 5, D); ``forward_map`` the whole patch grid (B, 1+P, D) ->
    (B, P, 2), each patch's window clamped at the image's border (as ``patch_windows``): the
    same numbers as ``forward`` on that patch's window."""

    def __init__(self, dim: int, channels: int = 64) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(
            nn.Conv2d(dim, channels, 1),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3),
            nn.GELU(),
        )
        self.out = nn.Linear(channels, 2)

    def forward(self, windows: Tensor) -> Tensor:
        x = self.net(self.norm(windows).permute(0, 3, 1, 2))  # (B, C, 1, 1)
        return self.out(x.flatten(1))

    def forward_map(self, tokens: Tensor) -> Tensor:
        b, p, d = tokens.shape[0], tokens.shape[1] - 1, tokens.shape[2]
        g = math.isqrt(p)
        x = self.norm(tokens[:, 1:]).transpose(1, 2).reshape(b, d, g, g)
        r = YAW_NET_RADIUS
        x = self.net(F.pad(x, (r, r, r, r), mode="replicate"))  # (B, C, g, g)
        return self.out(x.flatten(2).transpose(1, 2))


def patch_windows(tokens: Tensor, cells: Tensor, grid: int, radius: int = YAW_NET_RADIUS) -> Tensor:
    """Routed tokens (B, 1+P, D) and one patch index per row (B,) -> the tokens of the
    (2r+1)^2 patches around it (B, 2r+1, 2r+1, D), rows and columns clamped at the border."""
    d = torch.arange(-radius, radius + 1)
    xs = (cells % grid)[:, None] + d
    ys = (cells // grid)[:, None] + d
    idx = 1 + ys.clamp(0, grid - 1)[:, :, None] * grid + xs.clamp(0, grid - 1)[:, None, :]
    return tokens[torch.arange(len(cells))[:, None, None], idx]


def fit_yaw_nets(
    nets: nn.ModuleList,
    tokens: np.ndarray,
    cls: np.ndarray,
    yaw: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    seed: int = 0,
    progress: bool = False,
    order: int = 4,
) -> dict[str, dict[str, float | int | None]]:
    """Fit each view's ``GraspYawNet`` on routed ``tokens`` (N, V, 1+P, D) of frames ``train``
    whose grasp point is in that view (``cls`` (N, V) a patch index, ``grasp_point_labels``):
    mean squared error to ``yaw`` (N, V, 2) at the window around the labelled patch, AdamW.
    Returns per view the frames used and, over the ``val`` frames in view, the mean absolute
    yaw error (degrees, modulo the grasp's ``order``-fold symmetry) beside a constant answer's
    (the training labels' mean vector)."""
    from tqdm.auto import tqdm

    report: dict[str, dict[str, float | int | None]] = {}
    grid = math.isqrt(tokens.shape[2] - 1)
    seen = (cls >= 0) & (cls < grid * grid)  # (N, V): the point in that view
    for v, net in enumerate(nets):
        tr, va = train[seen[train, v]], val[seen[val, v]]
        report[f"view{v}"] = {"train_frames": int(len(tr)), "val_frames": int(len(va))}
        if len(tr) == 0 or steps == 0:
            continue
        gen = torch.Generator().manual_seed(seed * 1_000_003 + v)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        net.train()
        bar = tqdm(range(steps), desc=f"train yaw net (view {v})", disable=not progress)
        for step in bar:
            rows = tr[torch.randint(0, len(tr), (min(batch_size, len(tr)),), generator=gen).numpy()]
            factor = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps))
            for group in opt.param_groups:
                group["lr"] = lr * factor
            windows = patch_windows(
                torch.from_numpy(tokens[rows, v]).float(), torch.from_numpy(cls[rows, v]), grid
            )
            loss = ((net(windows) - torch.from_numpy(yaw[rows, v])) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        net.eval()
        if len(va):
            with torch.no_grad():
                windows = patch_windows(
                    torch.from_numpy(tokens[va, v]).float(), torch.from_numpy(cls[va, v]), grid
                )
                got = net(windows).numpy()
            const = np.broadcast_to(yaw[tr, v].mean(0), got.shape)
            err = round(_yaw_error_deg(got, yaw[va, v], order), 2)
            report[f"view{v}"]["val_mean_abs_deg"] = err
            report[f"view{v}"]["val_constant_deg"] = round(
                _yaw_error_deg(const, yaw[va, v], order), 2
            )
    return report


def _yaw_error_deg(got: np.ndarray, want: np.ndarray, order: int) -> float:
    """Mean absolute difference (degrees) of the yaws of (cos n psi, sin n psi) rows."""
    a = np.arctan2(got[:, 1], got[:, 0]) - np.arctan2(want[:, 1], want[:, 0])
    return float(np.degrees(np.abs(np.angle(np.exp(1j * a))) / order).mean())


def neighbour_patches(target: Tensor, grid: int, radius: int) -> tuple[Tensor, Tensor]:
    """Patch indices (B, (2r+1)^2) within Chebyshev ``radius`` of each ``target`` patch (B,) of a
    ``grid`` x ``grid`` map, and which of them lie on the map (B, (2r+1)^2) (the others repeat
    the target)."""
    d = torch.arange(-radius, radius + 1, device=target.device)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    x = (target % grid)[:, None] + dx.reshape(1, -1)
    y = (target // grid)[:, None] + dy.reshape(1, -1)
    valid = (x >= 0) & (x < grid) & (y >= 0) & (y < grid)
    return torch.where(valid, y * grid + x, target[:, None]), valid


def grasp_point_loss(
    heads: nn.ModuleList,
    tokens: Tensor,
    cls: Tensor,
    offset: Tensor,
    yaw: Tensor,
    yaw_radius: int = 0,
) -> Tensor:
    """Sum over views of the patch cross-entropy + OFFSET_WEIGHT x in-patch offset L1 +
    YAW_WEIGHT x yaw L1 at the labelled patch and those within ``yaw_radius`` of it (where the
    detector's best patch lands when it is off by a neighbour), over the frames that have a label.
    tokens (B, V, 1+P, D), cls (B, V), offset (B, V, 2), yaw (B, V, 2)."""
    total = tokens.new_zeros(())
    for v, head in enumerate(heads):
        labelled = cls[:, v] >= 0
        if not labelled.any():
            continue
        logits, offs, yaws = head(tokens[labelled, v])
        target = cls[labelled, v]
        total = total + F.cross_entropy(logits, target)
        inside = target < logits.shape[1] - 1
        if inside.any():
            got = offs[inside, target[inside]]
            total = total + OFFSET_WEIGHT * (got - offset[labelled, v][inside]).abs().mean()
            cells, valid = neighbour_patches(target[inside], head.grid, yaw_radius)
            got = yaws[inside][torch.arange(len(cells))[:, None], cells]  # (b, k, 2)
            err = (got - yaw[labelled, v][inside][:, None]).abs().mean(-1)
            total = total + YAW_WEIGHT * err[valid].mean()
    return total


@torch.no_grad()
def detect(
    heads: nn.ModuleList, tokens: Tensor, yaw_nets: nn.ModuleList | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Routed tokens (B, V, 1+P, D) -> per frame and view the detected point's image coordinates
    (B, V, 2) in [0, 1], the probability that it is in view (B, V), and the grasp's
    (cos n psi, sin n psi) there (B, V, 2) (from ``yaw_nets``, given)."""
    b, nv = tokens.shape[:2]
    uv = np.zeros((b, nv, 2))
    p_seen = np.zeros((b, nv))
    yaw = np.zeros((b, nv, 2))
    for v, head in enumerate(heads):
        logits, offs, yaws = head(tokens[:, v].float())
        if yaw_nets is not None:
            yaws = yaw_nets[v].forward_map(tokens[:, v].float())
        g = head.grid
        p_seen[:, v] = (1 - logits.softmax(1)[:, -1]).numpy()
        best = logits[:, :-1].argmax(1)
        o = offs[torch.arange(b), best].numpy()
        yaw[:, v] = yaws[torch.arange(b), best].numpy()
        best = best.numpy()
        uv[:, v, 0] = (best % g + o[:, 0]) / g
        uv[:, v, 1] = (best // g + o[:, 1]) / g
    return uv, p_seen, yaw


def world_yaw_vec(yaw_vec: np.ndarray, heading: float, order: int, frame: str) -> np.ndarray:
    """A detected (cos n psi, sin n psi) in ``frame`` ("camera": as a view with ``heading``
    (rad) sees it; "world": already the world's) -> the world's."""
    if frame == "world":
        return np.asarray(yaw_vec, np.float64)
    c, s = np.cos(order * heading), np.sin(order * heading)
    x, y = yaw_vec
    return np.array([c * x - s * y, s * x + c * y])


def grasp_yaw(yaw_vec: np.ndarray, order: int, near: float) -> float:
    """The yaw (rad) whose (cos n psi, sin n psi) is ``yaw_vec``, of the n equivalent ones the
    one nearest ``near`` (as the demonstrations choose the face nearest the hand's yaw)."""
    base = float(np.arctan2(yaw_vec[1], yaw_vec[0])) / order
    step = 2 * np.pi / order
    return base + step * round((near - base) / step)


def top_down(yaw: float) -> np.ndarray:
    """The TCP rotation of a top-down grasp at ``yaw``: Rz(yaw) Rx(pi)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ TOP_DOWN


@dataclass(frozen=True)
class Sighting:
    """One candidate grasp point of one view's detection: its image point ``uv`` (2,) in [0, 1],
    probability ``prob`` (that patch, of all patches and "not in view"), the grasp's
    (cos n psi, sin n psi) there ``yaw_vec`` (2,), the view, whether that camera rides on the arm,
    and once met with the grasp plane its world ``point`` (3,) and ``range_m`` from the camera."""

    view: int
    uv: np.ndarray
    prob: float
    yaw_vec: np.ndarray
    on_arm: bool
    point: np.ndarray | None = None
    range_m: float = math.inf


@dataclass(frozen=True)
class PatchMap:
    """One view's grasp-point detection over its whole image, ``prob`` (grid, grid) (row = image
    y), with the camera's world pose (``pos``, optical frame ``rot``) and ``intrinsics`` at that
    moment, so that any world point can be looked up in it."""

    prob: np.ndarray
    pos: np.ndarray
    rot: np.ndarray
    intrinsics: np.ndarray
    weight: float = 1.0  # the view's exponent in fused_mass (ARM_VIEW_WEIGHT on the arm)

    def cell(self, point: np.ndarray) -> tuple[int, int] | None:
        """The (column, row) patch ``point`` falls in; None outside the image."""
        uv = to_image(point, self.pos, self.rot, self.intrinsics)
        if np.isnan(uv[0]):
            return None
        g = self.prob.shape[0]
        return min(int(uv[0] * g), g - 1), min(int(uv[1] * g), g - 1)

    @property
    def p_absent(self) -> float:
        """The view's probability that the grasp point is not in its image."""
        return max(0.0, 1.0 - float(self.prob.sum()))

    def mass_near(self, point: np.ndarray) -> float:
        """The probability of the 3 x 3 patches around ``point``'s: an object's whole blob (the
        wrist camera sees the cube over four patches or more), at this camera's resolution."""
        cell = self.cell(point)
        return 0.0 if cell is None else self._mass_around(cell)

    def _mass_around(self, cell: tuple[int, int]) -> float:
        c, r = cell
        return float(self.prob[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].sum())


@torch.no_grad()
def head_outputs(
    heads: nn.ModuleList, tokens: Tensor, yaw_nets: nn.ModuleList | None = None
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Routed tokens (V, 1+P, D) of one observation -> each view's head output (logits, offsets,
    yaws), batch 1: what ``sightings`` and ``patch_maps`` read (one pass for both). With
    ``yaw_nets`` (``GraspYawNet`` per view) the yaws are theirs instead of the heads'."""
    out = []
    for v, head in enumerate(heads):
        logits, offs, yaws = head(tokens[v : v + 1].float())
        if yaw_nets is not None:
            yaws = yaw_nets[v].forward_map(tokens[v : v + 1].float())
        out.append((logits, offs, yaws))
    return out


def patch_maps(
    outputs: list[tuple[Tensor, Tensor, Tensor]],
    rig: CameraRig,
    poses: list[tuple[np.ndarray, np.ndarray]],
) -> list[PatchMap]:
    """Each view's head output (``head_outputs``) with the cameras' world ``poses``
    (``CameraRig.poses`` at the frame's joints) -> each view's ``PatchMap`` (a view's patch
    probabilities sum to its P(in view))."""
    out = []
    for v, ((logits, _, _), (pos, rot)) in enumerate(zip(outputs, poses, strict=True)):
        prob = logits.softmax(1)[0, :-1].numpy()
        grid = math.isqrt(len(prob))
        on_arm = rig.views[v][0] != 0  # mounted on a body of the arm, not the world
        weight = ARM_VIEW_WEIGHT if on_arm else 1.0
        out.append(PatchMap(prob.reshape(grid, grid), pos, rot, rig.views[v][3], weight))
    return out


def fused_mass(point: np.ndarray, maps: list[PatchMap]) -> float:
    """How much all views together put the grasp point at ``point``: the product over views of
    the probability each puts around it (``PatchMap.mass_near``; where ``point`` falls outside a
    view's image, that view's probability of "not in view"), each plus ``FUSE_FLOOR`` and raised
    to the view's ``weight`` (a weighted logarithmic pool: a camera on the arm counts
    ``ARM_VIEW_WEIGHT`` times, 1 by default; docs/RESULTS.md session 16 measured 2).
    Independent views' evidence multiplies: a place that both cameras give some probability
    outweighs one camera's sharp peak that the other camera denies. The fixed camera sees an
    object over about one patch and is sure of the wrong one in some scenes; the wrist camera
    sees the object's shape over four. A sum let the sharper, wrong peak win (on 300 held-out
    home frames of four checkpoints the product starts on a distractor in 73 vs 80 scenes, and
    within 3 cm of the cube in 1064 vs 1052: docs/RESULTS.md session 14)."""
    total = 1.0
    for m in maps:
        cell = m.cell(point)
        total *= ((m.p_absent if cell is None else m._mass_around(cell)) + FUSE_FLOOR) ** m.weight
    return total


@torch.no_grad()
def sightings(
    heads: nn.ModuleList,
    tokens: Tensor,
    on_arm: list[bool],
    top: int = 3,
    min_prob: float = 0.05,
    outputs: list[tuple[Tensor, Tensor, Tensor]] | None = None,
) -> list[Sighting]:
    """Routed tokens (V, 1+P, D) of one observation (or their ``head_outputs``, given) -> up
    to ``top`` candidates per view that
    sees the point (P(in view) > 0.5): the most likely patches, each at least two patches from a
    likelier one (one peak is one candidate), with probability >= ``min_prob``. The best first
    per view. A distractor can outscore the object in one frame; the object stays a candidate,
    and ``GraspPointTracker`` keeps to it."""
    out = []
    outputs = outputs if outputs is not None else head_outputs(heads, tokens)
    for v, (head, (logits, offs, yaws)) in enumerate(zip(heads, outputs, strict=True)):
        prob = logits.softmax(1)[0]
        if float(prob[-1]) >= 0.5:
            continue
        g = head.grid
        taken: list[tuple[int, int]] = []
        for idx in prob[:-1].argsort(descending=True).tolist():
            if len(taken) == top or float(prob[idx]) < min_prob:
                break
            cell = (idx % g, idx // g)
            if any(max(abs(cell[0] - a), abs(cell[1] - b)) <= 1 for a, b in taken):
                continue
            taken.append(cell)
            o = offs[0, idx].numpy()
            uv = np.array([(cell[0] + o[0]) / g, (cell[1] + o[1]) / g])
            out.append(Sighting(v, uv, float(prob[idx]), yaws[0, idx].numpy().copy(), on_arm[v]))
    return out


class GraspPointTracker:
    """Keeps one grasp point in the world across frames (the object lies still until the hand
    reaches it), so that one frame's detection cannot move the grasp.

    Each frame's sightings (``sightings``, met with the grasp plane) update the estimate:
    - the first ones set it: given the views' ``PatchMap``s, at the sighting with the most
      probability the views jointly put around it (``fused_mass``), refined to the sighting there that
      weighs most (``_likeliest``); without maps a camera on the arm first, then the likeliest;
    - after that, the likeliest sighting within ``gate_m`` of the estimate joins it, weighted
      by its probability over its squared range (a close camera sees the point finer), with
      older evidence decaying by ``memory`` per frame, so the estimate follows the close-up
      views of the approach; the yaw (as n-fold vectors) is averaged the same way;
    - sightings all farther than ``gate_m`` leave the estimate alone (a distractor that
      outscores the object in some frames does not take the grasp), unless one place is sighted
      ``switch_after`` frames running with none near the estimate: the object moved (or a new
      scene began), and the estimate restarts there;
    - no sighting (the point out of every view, or covered by the fingers) keeps the estimate;
    - with ``hold_margin`` (None: off, the default), while the hand closes or holds
      (``gripper_width`` given and ``hold_margin`` below the widest seen since ``reset``),
      sightings are ignored and the estimate stays where the grasp
      was, until the fingers open again (an empty close and a retry, or a drop). A held object
      rides with the hand above the grasp plane, and its sighting met with the plane along a
      camera ray lands beside the hand: followed, it pulls the keypose after the hand, which
      carries the object further (a chase along the table instead of a lift). The training labels
      say the same: a sample after the grasp keeps the grasp's keypose (``keypose_labels``);
    - with ``commit_dz`` (None: off, the default) and the hand's TCP given: while the TCP is less than
      ``commit_dz`` above the estimate's plane, sightings are ignored and the estimate stays:
      the last centimetres run on the estimate the approach built. Down there the camera on the
      hand sees the object from a few centimetres, partly behind the fingers, and its peak can
      sit on the hand itself: followed, it moves the keypose with the hand, which moves the
      peak again (a walk away from the cube; over 50 held-out scenes the estimate was 0.4-0.5 cm
      off the cube at TCP heights of 10-20 cm and drifted to 2 cm and more at the bottom:
      RESULTS.md session 22). Lifted again (a retry), the sightings count again. Off by
      default: in-process it fixed those walks but moved no total (47 vs 47/50 with the
      held-width augmentation, 45 vs 44 and 41 vs 42 without);
    - with ``reject_m`` (None: off, the class default; ``TaskPolicy.grasp_tracker`` uses
      ``REJECT_M``) and the hand's TCP given: a close that comes up empty (opening below
      ``EMPTY_WIDTH``) that began (the TCP's lowest since the hand was last open wider than
      ``CLOSING_WIDTH``) within ``REACH_Z`` of the grasp plane is evidence that
      nothing graspable lies within ``reject_m`` of that TCP (an object there would have been
      between the fingers or touched by them). That place is remembered until ``reset``: its
      sightings are dropped from then on, and an estimate there restarts on the next sightings
      elsewhere, so the retry goes to the next candidate instead of closing on the same
      distractor again. One place per close: the hand must open past half its opening first.
      A close whose fingers stopped on something first (``GRIPPED_STILL``) and ended empty
      dropped what it held: no place is ruled out.
      From the close until the hand is open again (``CLOSING_WIDTH``) ``reopening`` is set
      (``TaskPolicy.predict_chunk`` then commands the hand open: a policy that shut on nothing
      far from its new estimate hovered half-closed instead), and while no new estimate has
      begun ``searching`` is (the policy then asks for fainter peaks, ``SEARCH_TOP``).
    ``reset`` forgets it (a new episode)."""

    def __init__(
        self,
        gate_m: float = 0.04,
        memory: float = 0.7,
        switch_after: int = 4,
        hold_margin: float | None = None,
        reject_m: float | None = None,
        commit_dz: float | None = None,
    ) -> None:
        if commit_dz is not None and not commit_dz > 0:
            raise ValueError(f"commit_dz must be > 0 m (or None: off), got {commit_dz}")
        self.commit_dz = commit_dz
        if reject_m is not None and not reject_m > 0:
            raise ValueError(f"reject_m must be > 0 m (or None: off), got {reject_m}")
        self.reject_m = reject_m
        if gate_m <= 0 or not 0 < memory <= 1 or switch_after < 1:
            raise ValueError(
                f"need gate_m > 0, 0 < memory <= 1, switch_after >= 1; "
                f"got {gate_m}, {memory}, {switch_after}"
            )
        if hold_margin is not None and not hold_margin > 0:
            raise ValueError(f"hold_margin must be > 0 m (or None: off), got {hold_margin}")
        self.gate_m, self.memory, self.switch_after = gate_m, memory, switch_after
        self.hold_margin = hold_margin
        self.reset()

    def reset(self) -> None:
        self._forget()
        self._open_width = 0.0  # m: the widest the hand has been since reset
        self.holding = False
        self.committed = False  # the hand is within commit_dz of the grasp plane
        self.rejected: list[np.ndarray] = []  # world xy (2,) of empty closes at the grasp plane
        self._armed = True  # the hand opened since the last empty close recorded
        self._gripped = False  # the fingers stopped on something since the hand was last open
        self._last_width = math.nan
        self.reopening = False  # an empty close was recorded and the hand has not opened since
        self._low_hand: np.ndarray | None = None  # TCP (3,) where the current close began

    @staticmethod
    def _weight_of(s: Sighting) -> float:
        return s.prob / max(s.range_m, 0.05) ** 2

    def _start(self, s: Sighting) -> None:
        self.point, self.view = s.point.copy(), s.view
        self.yaw_vec = s.yaw_vec * self._weight_of(s)
        self._weight = self._weight_of(s)
        self._challenger, self._challenges = None, 0

    def _likeliest(self, seen: list[Sighting], maps: list[PatchMap]) -> Sighting:
        """The sighting to (re)start on: with maps, the place with the most fused mass, and of
        the sightings at that place the one weighed most (the closest camera's). "At that place":
        within a patch of it in the coarser (farther) of the two views; a far camera's patch is
        several centimetres of table, and a start on its sighting could sit outside the gate of
        the close camera's sightings of the same object."""
        if not maps:
            return max(seen, key=lambda s: (s.on_arm, s.prob))
        best = max(seen, key=lambda s: (fused_mass(s.point, maps), s.on_arm))

        def at_best(s: Sighting) -> bool:
            coarse = maps[best.view if best.range_m >= s.range_m else s.view]
            a, b = coarse.cell(best.point), coarse.cell(s.point)
            return a is not None and b is not None and max(abs(a[0] - b[0]), abs(a[1] - b[1])) <= 1

        return max([s for s in seen if s is best or at_best(s)], key=self._weight_of)

    def _note_empty_close(self, gripper_width: float | None, hand: np.ndarray | None) -> None:
        """Remember where the hand closed when the close came up empty. The fingers shut while
        the arm already lifts, so the place is the hand's lowest since it was last fully open
        (where the close began), and it counts only if that was at the grasp plane."""
        if self.reject_m is None or gripper_width is None or not np.isfinite(gripper_width):
            return
        if hand is not None and np.all(np.isfinite(hand)):
            hand = np.asarray(hand, np.float64)
            if gripper_width >= CLOSING_WIDTH or self._low_hand is None:
                self._low_hand = hand.copy()  # open: the close, if one comes, starts here
            elif hand[2] < self._low_hand[2]:
                self._low_hand = hand.copy()
        last, self._last_width = self._last_width, float(gripper_width)
        if gripper_width >= CLOSING_WIDTH:
            self.reopening = False  # open again: the policy's own gripper decides from here
            self._gripped = False
        elif gripper_width > GRIPPED_MIN and abs(gripper_width - last) < GRIPPED_STILL:
            self._gripped = True  # stopped on an object: a later empty hand is a drop, not a miss
        if gripper_width > 0.5 * OPEN_WIDTH:
            self._armed = True
            return
        low = self._low_hand
        if (
            gripper_width < EMPTY_WIDTH
            and self._armed
            and not self._gripped
            and low is not None
            and self.point is not None
            and abs(float(low[2]) - float(self.point[2])) <= REACH_Z
        ):
            self._armed, self.reopening = False, True
            self.rejected.append(low[:2].copy())
            if self._is_rejected(self.point):
                self._forget()

    @property
    def searching(self) -> bool:
        """An empty close ruled out the estimate's place and no new estimate has begun: the next
        sightings may come from fainter peaks (``SEARCH_TOP``, ``SEARCH_MIN_PROB``)."""
        return bool(self.rejected) and self.point is None

    def _is_rejected(self, point: np.ndarray) -> bool:
        return any(np.linalg.norm(point[:2] - r) <= self.reject_m for r in self.rejected)

    def update(
        self,
        seen: list[Sighting],
        maps: list[PatchMap] | None = None,
        gripper_width: float | None = None,
        hand: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, int] | None:
        """This frame's sightings (``point`` set; others are ignored), optionally every view's
        ``PatchMap``, the hand's measured opening (m) and its TCP (3,) (m, world) -> the
        estimate: world point (3,), yaw vector (2,) and the view that last joined it; None before
        any (or after an empty close on it, until a sighting elsewhere)."""
        maps = maps or []
        seen = [s for s in seen if s.point is not None and np.all(np.isfinite(s.point))]
        self._note_empty_close(gripper_width, hand)
        if self.rejected:
            seen = [s for s in seen if not self._is_rejected(s.point)]
        self.committed = bool(
            self.commit_dz is not None
            and self.point is not None
            and hand is not None
            and np.all(np.isfinite(hand))
            and float(hand[2]) - float(self.point[2]) < self.commit_dz
        )
        if self.committed:
            seen = []  # the last centimetres run on the approach's estimate (see the class doc)
            self._challenger, self._challenges = None, 0
        if (
            self.hold_margin is not None
            and gripper_width is not None
            and np.isfinite(gripper_width)
        ):
            self._open_width = max(self._open_width, float(gripper_width))
            self.holding = gripper_width < self._open_width - self.hold_margin
        if self.holding and self.point is not None:
            seen = []  # the grasp's place holds while the hand is closed (see the class doc)
            self._challenger, self._challenges = None, 0
        if seen and self.point is None:
            self._start(self._likeliest(seen, maps))
        elif seen:
            near = [s for s in seen if np.linalg.norm(s.point[:2] - self.point[:2]) <= self.gate_m]
            if near:
                s = max(near, key=self._weight_of)
                w = self._weight_of(s)
                self._weight = self.memory * self._weight + w
                self.point = self.point + (w / self._weight) * (s.point - self.point)
                self.yaw_vec = self.memory * self.yaw_vec + w * s.yaw_vec
                self.view = s.view
                self._challenger, self._challenges = None, 0
            else:
                best = self._likeliest(seen, maps)
                same = self._challenger is not None and (
                    np.linalg.norm(best.point[:2] - self._challenger[:2]) <= self.gate_m
                )
                self._challenger = best.point.copy()
                self._challenges = self._challenges + 1 if same else 1
                if self._challenges >= self.switch_after:
                    self._start(best)
        if self.point is not None and self.rejected and self._is_rejected(self.point):
            self._forget()  # averaged into a ruled-out place: start again on the next sightings
        if self.point is None:
            return None
        return self.point.copy(), self.yaw_vec.copy(), self.view

    def _forget(self) -> None:
        """Drop the estimate (and any challenger to it); what the tracker learnt of the hand stays."""
        self.point: np.ndarray | None = None
        self.view, self._weight = -1, 0.0
        self.yaw_vec = np.zeros(2)
        self._challenger: np.ndarray | None = None
        self._challenges = 0

"""TaskConfig: everything a task checkpoint needs to rebuild its policy (saved in config.json)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ver_core.data.streams import ACTION_SOURCES, GRIPPER_SOURCES
from ver_core.policy.normalization import ACTION_MODES
from ver_core.robot import DEFAULT_FINGERS as _FINGERS
from ver_core.robot import DEFAULT_JOINTS as _JOINTS
from ver_core.robot import camera_names
from ver_core.router import RouterConfig

# what a grasp-point head's yaw reading is relative to (TaskConfig.grasp_yaw_frame)
GRASP_YAW_FRAMES = ("camera", "world")

DEFAULT_JOINTS = list(_JOINTS)
DEFAULT_FINGERS = list(_FINGERS)
SCENE_TOPIC = "/camera/camera/color/image_raw"
HEADS = ("mlp", "diffusion")
NECKS = ("conv", "spatial", "attention")
MAX_MEMBERS = 8  # ensemble members (TaskConfig.members)


@dataclass
class TaskConfig:
    """A robot task policy: VER library + Robot Router + neck + action head.

    State (S = 8): 7 arm joint positions (rad, order of ``joint_names``) + gripper width (m, the sum
    of the two finger joints). Action (8): 7 joint position targets (rad) + gripper width (m),
    predicted as chunks of ``chunk_len`` steps at ``control_rate_hz``.

    Cameras: one per entry of ``image_topics`` (the first is the primary view), named by their
    namespace (``ver_core.robot.camera_name``). Every view goes through the same frozen library;
    ``router_per_camera`` gives each camera its own Robot Router instead of one shared by all;
    each camera has its own neck, and the head sees all of them with the proprioception.
    """

    model: str = "ver_tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    library: str | None = None  # library checkpoint dir (None: freshly initialized library)
    # input resolution, px (None: the library's own, 224 for the shipped one); another size runs
    # the library at it with resampled position embeddings (VisionExpertTransformer.resize_input):
    # 160 px is 100 patches instead of 196, ~2.3x less compute per frame (RESULTS.md session 19)
    image_size: int | None = None
    router: RouterConfig = field(default_factory=RouterConfig)
    head: str = "mlp"
    neck: str = "conv"
    neck_dim: int = 256
    hidden_dim: int = 512
    # "absolute" arm targets; "delta": offsets from the measured joints; "keypose" (a keypose
    # policy): offsets from the keypose the head acts on
    action_mode: str = "absolute"

    chunk_len: int = 16
    control_rate_hz: float = 10.0
    diffusion_train_steps: int = 100
    diffusion_infer_steps: int = 10
    diffusion_prediction: str = "sample"  # denoiser target: sample (clean chunk) or epsilon
    joint_names: list[str] = field(default_factory=lambda: list(DEFAULT_JOINTS))
    gripper_max_width: float = 0.08  # m, full opening of the hand (normalization range)
    finger_joint_names: list[str] = field(default_factory=lambda: list(DEFAULT_FINGERS))
    image_topics: list[str] = field(default_factory=lambda: [SCENE_TOPIC])
    router_per_camera: bool = False
    state_topic: str = "/joint_states"
    action_topic: str = "/fr3_arm_controller/joint_trajectory"
    gripper_topic: str = "/gripper/command"
    # std_msgs/Bool marking the demo frames whose arm motion was for the cameras only (the
    # scripted expert's hover sweep): left out of the action losses, kept for the grasp yaw nets
    # (read where a bag has it; "" = not read)
    perception_only_topic: str = "/scripted_expert/perception_only"
    # Where the training targets came from (ver_core.data.streams): arm "command" (recorded
    # commands) or "next-state" (measured joints one control period later); gripper "command"
    # (command topic or franka_gripper action goals) or "finger-width" (measured). "auto" picks
    # from the data; the checkpoint records the choice made.
    action_source: str = "auto"
    gripper_source: str = "auto"
    # Keypose policy (ver_core.policy.keypose): the vision part estimates the arm pose at the next
    # gripper event, and the head acts on (keypose, proprioception) only. keypose_noise: std (rad)
    # of the noise on the demonstrated keypose the head trains on (0.03 rad per joint, several cm
    # at the hand, taught the head to average over keyposes: 1/20 vs 6/20 at 0.005, RESULTS.md);
    # keypose_weight: weight of the estimator's loss beside the action loss.
    keypose: bool = False
    keypose_noise: float = 0.005
    keypose_weight: float = 1.0
    # a keypose policy's head also sees where the hand's TCP is relative to the keypose's, in
    # metres (world x, y, z): "how far above the grasp am I" as three numbers instead of a
    # joint-space difference whose metric meaning changes across the workspace (far from the
    # base the head took 5 cm above the grasp for "there" and closed: RESULTS.md session 22).
    # Ignored without keypose; False in the checkpoints before session 22
    head_tcp_offset: bool = True
    # Grasp-point detection (ver_core.policy.grasp_point; needs keypose): per camera a conv head
    # finds where the hand will close, and the regressed keypose is moved so its TCP sits there.
    # camera_calibration: per camera name {mount, pos, rot, intrinsics} (empty when training: the
    # simulator's cameras); grasp_height: z (m) of the plane the grasps lie on (set in training).
    grasp_point: bool = False
    grasp_point_weight: float = 1.0
    grasp_yaw_order: int = 4  # the grasp looks alike every 360/n degrees about the vertical
    # the yaw a view's head reads: "camera" (the grasp's yaw less the camera's heading, what a
    # camera on the hand sees whatever the hand's yaw), "world" (checkpoints before session 13)
    grasp_yaw_frame: str = "camera"
    # patches (Chebyshev radius) around the labelled one whose yaw reading is trained too: the
    # detector's best patch is often a neighbour, whose yaw is otherwise never taught (0: the
    # labelled patch only, checkpoints before session 22)
    grasp_yaw_radius: int = 0
    # a GraspYawNet per view reads the grasp's yaw instead of the head's yaw channel, fitted on
    # its own after the heads (ver_core.policy.grasp_point.GraspYawNet; False: the head's, the
    # checkpoints before session 26)
    grasp_yaw_net: bool = False
    camera_calibration: dict[str, Any] = field(default_factory=dict)
    grasp_height: float | None = None
    # an ensemble: this many members, each with its own necks, head, keypose estimator and
    # grasp-point heads over the one router, trained side by side from different initial
    # weights; deployed, they vote: keypose offsets and action chunks averaged, grasp-point
    # probabilities averaged (ver_core.policy.task_policy.PolicyMember). One checkpoint of one
    # recipe differs from the next by as much as any lever measured (RESULTS.md session 28)
    members: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.image_topics, str):
            self.image_topics = [self.image_topics]
        self.image_topics = list(self.image_topics)
        if not self.image_topics:
            raise ValueError("image_topics needs at least one camera topic")
        camera_names(self.image_topics)  # one namespace per camera
        if isinstance(self.router, dict):
            self.router = RouterConfig(**self.router)
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}: use one of {HEADS}")
        if self.neck not in NECKS:
            raise ValueError(f"unknown neck {self.neck!r}: use one of {NECKS}")
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {self.action_mode!r}: use one of {ACTION_MODES}")
        if self.action_mode == "keypose" and not self.keypose:
            raise ValueError("action_mode keypose is relative to a keypose: it needs keypose")
        if self.action_source not in ACTION_SOURCES:
            raise ValueError(
                f"unknown action_source {self.action_source!r}: use one of {ACTION_SOURCES}"
            )
        if self.gripper_source not in GRIPPER_SOURCES:
            raise ValueError(
                f"unknown gripper_source {self.gripper_source!r}: use one of {GRIPPER_SOURCES}"
            )
        if self.chunk_len < 1:
            raise ValueError(f"chunk_len must be >= 1, got {self.chunk_len}")
        if self.control_rate_hz <= 0:
            raise ValueError(f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        if len(self.joint_names) != 7 or len(set(self.joint_names)) != 7:
            raise ValueError(f"joint_names must be 7 distinct arm joints, got {self.joint_names}")
        if not 1 <= self.diffusion_infer_steps <= self.diffusion_train_steps:
            raise ValueError("diffusion_infer_steps must be in [1, diffusion_train_steps]")
        if self.diffusion_prediction not in ("sample", "epsilon"):
            raise ValueError(
                f"diffusion_prediction must be sample or epsilon, got {self.diffusion_prediction!r}"
            )
        if self.keypose_noise < 0 or self.keypose_weight < 0:
            raise ValueError("keypose_noise and keypose_weight must be >= 0")
        if self.grasp_point and not self.keypose:
            raise ValueError("grasp_point corrects a keypose policy's estimate: it needs keypose")
        if self.grasp_point_weight < 0:
            raise ValueError("grasp_point_weight must be >= 0")
        if self.grasp_yaw_order < 1:
            raise ValueError("grasp_yaw_order must be >= 1")
        if self.grasp_yaw_net and not self.grasp_point:
            raise ValueError(
                "grasp_yaw_net needs grasp_point (it reads the grasp point's yaw): add "
                "--grasp-point or --no-grasp-yaw-net (make demo: VER_DEMO_YAW_NET=0)"
            )
        if not 0 <= self.grasp_yaw_radius <= 3:
            raise ValueError(f"grasp_yaw_radius must be in [0, 3], got {self.grasp_yaw_radius}")
        if self.grasp_yaw_frame not in GRASP_YAW_FRAMES:
            raise ValueError(
                f"grasp_yaw_frame must be one of {GRASP_YAW_FRAMES}, got {self.grasp_yaw_frame!r}"
            )
        if not 1 <= self.members <= MAX_MEMBERS:
            raise ValueError(f"members must be in [1, {MAX_MEMBERS}], got {self.members}")
        for name in ("neck_dim", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    @property
    def cameras(self) -> list[str]:
        """Camera names, in view order (``camera``, ``wrist_camera``, ...)."""
        return camera_names(self.image_topics)

    @property
    def num_views(self) -> int:
        return len(self.image_topics)

    @property
    def state_dim(self) -> int:
        return len(self.joint_names) + 1

    @property
    def action_dim(self) -> int:
        return len(self.joint_names) + 1

    @property
    def action_names(self) -> list[str]:
        """Joint names of an action chunk message: 7 arm joints + ``gripper`` (width, m)."""
        return [*self.joint_names, "gripper"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskConfig:
        data = dict(data)
        if "image_topic" in data:  # one-camera checkpoints (before image_topics)
            data.setdefault("image_topics", [data.pop("image_topic")])
        for name in ("action_source", "gripper_source"):  # checkpoints before the sources:
            data.setdefault(name, "command")  # trained on recorded commands
        data.setdefault("grasp_yaw_frame", "world")  # checkpoints before it read world yaws
        data.setdefault("head_tcp_offset", False)  # their heads took no TCP offset
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TaskConfig fields: {sorted(unknown)}")
        return cls(**data)

"""The deployment graph, described once: ``launch/franka_pick.launch.py`` and ``ver-bringup``
both build their nodes from ``build_graph(options)``.

Pure Python (no rclpy, no launch import), so the launch file can use it and tests can compare the
two front ends structurally.

Cameras come from the checkpoint (its ``image_topics``; one camera named ``camera`` when the
checkpoint cannot be read yet): one camera node per camera (``camera_node`` for the scene camera,
``<camera>_node`` for the others, each with its own section in the parameter file, e.g. the
RealSense serial), one realsense-ros driver per camera in its namespace, or the simulator
rendering every camera. Every node but the simulator is respawned when it dies (``RESPAWN``):
the safety node keeps holding the arm meanwhile.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "LAUNCH_ARGUMENTS",
    "GraphOptions",
    "NodeSpec",
    "RESPAWN",
    "build_graph",
    "checkpoint_cameras",
    "default_config_path",
    "ros_args",
]

PACKAGE = "ver_ros"
CONFIG_NAME = "franka_pick.yaml"
ROBOT_TYPES = ("fr3", "panda")
CONTROLLER_TYPES = ("trajectory", "forward")
BACKENDS = ("tensorrt", "onnxruntime", "torch")
SCENE_TOPIC = "/camera/camera/color/image_raw"
SIM_CAMERAS = ("camera", "wrist_camera")
# respawn of a dead node: wait this long, at most this many times in a row (launch's respawn)
RESPAWN = {"delay_s": 1.0, "max_retries": 5}

# launch argument -> (default, description); ver-bringup has the same options as flags
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "checkpoint": ("", "task checkpoint directory (written by ver-train-router)"),
    "sim": ("false", "run the MuJoCo simulator instead of the robot and camera"),
    "use_realsense_ros": ("false", "camera from realsense-ros instead of ver_ros camera_node"),
    "record": ("false", "also start the demo recorder"),
    "robot_type": ("fr3", "joint limit table of the safety node: fr3 or panda"),
    "controller_type": (
        "trajectory",
        "trajectory (JointTrajectoryController) or forward (position)",
    ),
    "backend": ("torch", "encoder backend: tensorrt, onnxruntime or torch (falls back)"),
    "host_encoder": ("false", "run the encoder inside the policy process (lowest latency)"),
    "config": ("", "parameter YAML; empty = the installed config/franka_pick.yaml"),
}


def _as_bool(name: str, value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"launch argument {name}:={value!r} is not a boolean (true/false)")


@dataclass
class GraphOptions:
    checkpoint: str = ""
    sim: bool = False
    use_realsense_ros: bool = False
    record: bool = False
    robot_type: str = "fr3"
    controller_type: str = "trajectory"
    backend: str = "torch"
    host_encoder: bool = False
    config: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.type in (bool, "bool"):
                setattr(self, f.name, _as_bool(f.name, getattr(self, f.name)))
        if self.robot_type not in ROBOT_TYPES:
            raise ValueError(f"robot_type must be one of {ROBOT_TYPES}, got {self.robot_type!r}")
        if self.controller_type not in CONTROLLER_TYPES:
            raise ValueError(
                f"controller_type must be one of {CONTROLLER_TYPES}, got {self.controller_type!r}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not self.checkpoint:
            raise ValueError("checkpoint:=DIR is required (a task checkpoint directory)")
        if self.sim and self.use_realsense_ros:
            raise ValueError(
                "sim:=true renders its own camera: do not combine with use_realsense_ros"
            )
        if not self.config:
            self.config = str(default_config_path())

    @classmethod
    def from_strings(cls, values: dict[str, str]) -> GraphOptions:
        """From launch-argument strings (unknown keys are an error)."""
        unknown = set(values) - set(LAUNCH_ARGUMENTS)
        if unknown:
            raise ValueError(f"unknown graph options {sorted(unknown)}")
        return cls(**values)


@dataclass
class NodeSpec:
    """One node of the graph.

    module/node_class: where ver-bringup finds it (None for nodes of other packages);
    parameters: per-node overrides applied after the parameter files.
    """

    name: str
    package: str
    executable: str
    module: str | None
    node_class: str | None
    param_files: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    namespace: str = ""
    respawn: bool = True


def default_config_path(name: str = CONFIG_NAME) -> Path:
    """config/<name> (default franka_pick.yaml) of a source checkout, else of the installed
    share directory."""
    here = Path(__file__).resolve().parent.parent / "config" / name
    if here.is_file():
        return here
    candidates = [Path(sys.prefix) / "share" / PACKAGE / "config" / name]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / PACKAGE / "config" / name)
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"cannot find {name} (looked at {here} and {candidates})")


def checkpoint_cameras(checkpoint: str) -> list[tuple[str, str]]:
    """(camera name, image topic) of every camera of a task checkpoint, in view order; the scene
    camera alone when the checkpoint's config cannot be read (not written yet, say)."""
    try:
        task = json.loads((Path(checkpoint) / "config.json").read_text())["task"]
        topics = task.get("image_topics") or [task["image_topic"]]
    except (OSError, ValueError, KeyError, TypeError):
        topics = [SCENE_TOPIC]
    names = [[p for p in t.split("/") if p][0] for t in topics]
    return list(zip(names, topics, strict=True))


def _camera_node_name(camera: str) -> str:
    return "camera_node" if camera == "camera" else f"{camera}_node"


def _ours(name: str, params_file: str, module: str | None = None, **parameters: Any) -> NodeSpec:
    class_names = {
        "camera_node": "CameraNode",
        "encoder_node": "EncoderNode",
        "policy_node": "PolicyNode",
        "safety_node": "SafetyNode",
        "sim_node": "SimNode",
        "recorder_node": "RecorderNode",
    }
    module = module or name
    return NodeSpec(
        name=name,
        package=PACKAGE,
        executable=module,
        module=f"{PACKAGE}.{module}",
        node_class=class_names[module],
        param_files=[params_file],
        parameters=dict(parameters),
        respawn=module != "sim_node",
    )


def _camera_sources(options: GraphOptions, cameras: list[tuple[str, str]]) -> list[NodeSpec]:
    cfg = options.config
    if options.sim:
        unknown = [c for c, _ in cameras if c not in SIM_CAMERAS]
        if unknown:
            raise ValueError(
                f"the simulator has cameras {SIM_CAMERAS}; the checkpoint wants {unknown}"
            )
        topics = dict(cameras)
        params: dict[str, Any] = {"cameras": [c for c, _ in cameras]}
        if "camera" in topics:
            params["image_topic"] = topics["camera"]
        if "wrist_camera" in topics:
            params["wrist_image_topic"] = topics["wrist_camera"]
        return [_ours("sim_node", cfg, **params)]
    if options.use_realsense_ros:
        return [
            NodeSpec(
                name="camera",
                namespace=cam,
                package="realsense2_camera",
                executable="realsense2_camera_node",
                module=None,
                node_class=None,
                parameters={"enable_depth": False, "rgb_camera.color_profile": "640,480,30"},
            )
            for cam, _ in cameras
        ]
    return [
        _ours(
            _camera_node_name(cam),
            cfg,
            module="camera_node",
            image_topic=topic,
            camera_info_topic=topic.rsplit("/", 1)[0] + "/camera_info",
        )
        for cam, topic in cameras
    ]


def build_graph(options: GraphOptions) -> list[NodeSpec]:
    """The nodes to start for ``options``, in start order (sources first, safety last)."""
    cfg = options.config
    cameras = checkpoint_cameras(options.checkpoint)
    nodes: list[NodeSpec] = _camera_sources(options, cameras)
    if not options.host_encoder:
        nodes.append(
            _ours("encoder_node", cfg, checkpoint=options.checkpoint, backend=options.backend)
        )
    nodes.append(
        _ours(
            "policy_node",
            cfg,
            checkpoint=options.checkpoint,
            host_encoder=options.host_encoder,
            backend=options.backend,
        )
    )
    nodes.append(
        _ours(
            "safety_node",
            cfg,
            robot_type=options.robot_type,
            controller_type=options.controller_type,
        )
    )
    if options.record:
        nodes.append(_ours("recorder_node", cfg, image_topics=[t for _, t in cameras]))
    if options.sim:  # the simulator publishes /clock: everyone else runs on simulated time
        for n in nodes:
            if n.name != "sim_node":
                n.parameters["use_sim_time"] = True
    return nodes


def _yaml_value(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def ros_args(spec: NodeSpec) -> list[str]:
    """``--ros-args`` for running ``spec`` as its own process (name, files, overrides).

    Overrides name their node (``-p encoder_node:backend:=onnxruntime``): rcl lets a parameter
    file's node section win over a bare ``-p`` when the file also has a ``/**`` section (as
    config/franka_pick.yaml does), which silently dropped ``--backend`` and ``--robot-type``.
    rcl's ``-p`` takes no namespace: a namespaced node gets bare overrides."""
    args = ["--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        args += ["-r", f"__ns:=/{spec.namespace}"]
    for f in spec.param_files:
        args += ["--params-file", f]
    target = "" if spec.namespace else f"{spec.name}:"
    for key, value in spec.parameters.items():
        args += ["-p", f"{target}{key}:={_yaml_value(value)}"]
    return args

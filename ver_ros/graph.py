"""The deployment graph, described once: ``launch/franka_pick.launch.py`` and ``ver-bringup``
both build their nodes from ``build_graph(options)``.

Pure Python (no rclpy, no launch import), so the launch file can use it and tests can compare the
two front ends structurally.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "LAUNCH_ARGUMENTS",
    "GraphOptions",
    "NodeSpec",
    "build_graph",
    "default_config_path",
    "ros_args",
]

PACKAGE = "ver_ros"
CONFIG_NAME = "franka_pick.yaml"
ROBOT_TYPES = ("fr3", "panda")
CONTROLLER_TYPES = ("trajectory", "forward")
BACKENDS = ("tensorrt", "onnxruntime", "torch")

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


def default_config_path() -> Path:
    """config/franka_pick.yaml of a source checkout, else of the installed share directory."""
    here = Path(__file__).resolve().parent.parent / "config" / CONFIG_NAME
    if here.is_file():
        return here
    candidates = [Path(sys.prefix) / "share" / PACKAGE / "config" / CONFIG_NAME]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / PACKAGE / "config" / CONFIG_NAME)
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"cannot find {CONFIG_NAME} (looked at {here} and {candidates})")


def _ours(name: str, params_file: str, **parameters: Any) -> NodeSpec:
    class_names = {
        "camera_node": "CameraNode",
        "encoder_node": "EncoderNode",
        "policy_node": "PolicyNode",
        "safety_node": "SafetyNode",
        "sim_node": "SimNode",
        "recorder_node": "RecorderNode",
    }
    return NodeSpec(
        name=name,
        package=PACKAGE,
        executable=name,
        module=f"{PACKAGE}.{name}",
        node_class=class_names[name],
        param_files=[params_file],
        parameters=dict(parameters),
    )


def build_graph(options: GraphOptions) -> list[NodeSpec]:
    """The nodes to start for ``options``, in start order (sources first, safety last)."""
    cfg = options.config
    nodes: list[NodeSpec] = []
    if options.sim:
        nodes.append(_ours("sim_node", cfg))
    elif options.use_realsense_ros:
        nodes.append(
            NodeSpec(
                name="camera",
                namespace="camera",
                package="realsense2_camera",
                executable="realsense2_camera_node",
                module=None,
                node_class=None,
                parameters={"enable_depth": False, "rgb_camera.color_profile": "640,480,30"},
            )
        )
    else:
        nodes.append(_ours("camera_node", cfg))
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
        nodes.append(_ours("recorder_node", cfg))
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
    """``--ros-args`` for running ``spec`` as its own process (name, files, overrides)."""
    args = ["--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        args += ["-r", f"__ns:=/{spec.namespace}"]
    for f in spec.param_files:
        args += ["--params-file", f]
    for key, value in spec.parameters.items():
        args += ["-p", f"{key}:={_yaml_value(value)}"]
    return args

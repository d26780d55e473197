"""Declare ROS parameters from a config dataclass: type, default and description per field.

Each field of the dataclass becomes one parameter; its description comes from
``field(metadata={"help": "..."})``. Supported field types: bool, int, float, str, list[float],
list[int], list[str]. The values read back go through the dataclass constructor, so its
``__post_init__`` validation applies to what the user passed on the command line or in YAML.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

__all__ = ["declare_config", "describe_config", "param", "parameter_type"]

T = TypeVar("T")

_SCALARS: dict[Any, tuple[int, Parameter.Type]] = {
    bool: (ParameterType.PARAMETER_BOOL, Parameter.Type.BOOL),
    int: (ParameterType.PARAMETER_INTEGER, Parameter.Type.INTEGER),
    float: (ParameterType.PARAMETER_DOUBLE, Parameter.Type.DOUBLE),
    str: (ParameterType.PARAMETER_STRING, Parameter.Type.STRING),
}
_ARRAYS: dict[Any, tuple[int, Parameter.Type]] = {
    bool: (ParameterType.PARAMETER_BOOL_ARRAY, Parameter.Type.BOOL_ARRAY),
    int: (ParameterType.PARAMETER_INTEGER_ARRAY, Parameter.Type.INTEGER_ARRAY),
    float: (ParameterType.PARAMETER_DOUBLE_ARRAY, Parameter.Type.DOUBLE_ARRAY),
    str: (ParameterType.PARAMETER_STRING_ARRAY, Parameter.Type.STRING_ARRAY),
}


IMAGE_TRANSPORTS = ("raw", "compressed")


def check_checkpoint_and_transport(checkpoint: str, image_transport: str) -> None:
    """Validation shared by the nodes that load a task checkpoint and may subscribe to a camera."""
    if image_transport not in IMAGE_TRANSPORTS:
        raise ValueError(f"image_transport must be raw or compressed, got {image_transport!r}")
    if not checkpoint:
        raise ValueError("parameter 'checkpoint' is required: a task checkpoint directory")


def check_precision(precision: str) -> None:
    """``precision`` of the nodes that run the model: one of ``ver_core.export.PRECISIONS``."""
    from ver_core.export.precision import PRECISIONS

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def param(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a parameter description (lists get a default_factory)."""
    meta = {"help": help}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta, **kwargs)
    return dataclasses.field(default=default, metadata=meta, **kwargs)


def parameter_type(annotation: Any) -> tuple[int, Parameter.Type]:
    """(rcl_interfaces ParameterType, rclpy Parameter.Type) for a field annotation."""
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        if item in _ARRAYS:
            return _ARRAYS[item]
    raise TypeError(f"no ROS parameter type for field annotation {annotation!r}")


def describe_config(cls: type) -> list[dict[str, Any]]:
    """[{name, type, default, description}] for every field (used by docs and tests)."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rows.append(
            {
                "name": f.name,
                "type": parameter_type(hints[f.name])[1].name,
                "default": default,
                "description": f.metadata.get("help", ""),
            }
        )
    return rows


def declare_config(node: Node, cls: type[T], prefix: str = "") -> T:
    """Declare one parameter per field of ``cls`` on ``node`` and build ``cls`` from the values.

    Raises ValueError (from the dataclass validation) naming a bad value, and TypeError for a
    field without a description (every parameter must be documented).
    """
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("help"):
            raise TypeError(f"{cls.__name__}.{f.name} has no description (use params.param)")
        ros_type, py_type = parameter_type(hints[f.name])
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        descriptor = ParameterDescriptor(
            name=prefix + f.name, type=ros_type, description=f.metadata["help"]
        )
        name = prefix + f.name
        # an empty list carries no type for rclpy: declare it by type, treat "unset" as []
        value = py_type if isinstance(default, list) and not default else default
        node.declare_parameter(name, value, descriptor)
        try:
            got = node.get_parameter(name).value
        except ParameterUninitializedException:
            got = default
        values[f.name] = list(got) if isinstance(default, list) else got
    return cls(**values)

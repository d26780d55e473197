"""Every node parameter is declared with a type, a default and a description."""

from __future__ import annotations

import pytest

from ver_ros.camera_node import CameraParams
from ver_ros.encoder_node import EncoderParams
from ver_ros.params import describe_config
from ver_ros.policy_node import PolicyParams
from ver_ros.safety_node import SafetyParams
from ver_ros.sim_node import SimNodeConfig


@pytest.mark.parametrize(
    "cls", [CameraParams, EncoderParams, PolicyParams, SafetyParams, SimNodeConfig]
)
def test_every_parameter_is_described(cls):
    rows = describe_config(cls)
    assert rows
    for row in rows:
        assert row["description"], f"{cls.__name__}.{row['name']} has no description"
        assert row["type"] in {
            "BOOL",
            "INTEGER",
            "DOUBLE",
            "STRING",
            "DOUBLE_ARRAY",
            "STRING_ARRAY",
            "INTEGER_ARRAY",
        }


def test_safety_params_validate():
    with pytest.raises(ValueError, match="controller_type"):
        SafetyParams(controller_type="effort")
    with pytest.raises(ValueError, match="unknown robot type"):
        SafetyParams(robot_type="ur5")
    assert SafetyParams().gate_config().control_rate_hz == 50.0


def test_encoder_and_policy_need_a_checkpoint():
    with pytest.raises(ValueError, match="checkpoint"):
        EncoderParams()
    with pytest.raises(ValueError, match="smoothing"):
        PolicyParams(checkpoint="/c", smoothing="median")


@pytest.mark.parametrize("cls", [EncoderParams, PolicyParams])
def test_checkpoint_and_transport_are_checked(cls):
    with pytest.raises(ValueError, match="'checkpoint' is required"):
        cls()
    with pytest.raises(ValueError, match="image_transport must be raw or compressed"):
        cls(checkpoint="runs/pick", image_transport="theora")
    assert cls(checkpoint="runs/pick", image_transport="compressed").image_transport == "compressed"


@pytest.mark.parametrize("cls", [EncoderParams, PolicyParams])
def test_precision_is_checked(cls):
    assert cls(checkpoint="runs/pick").precision == "fp32"
    assert cls(checkpoint="runs/pick", precision="bf16").precision == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        cls(checkpoint="runs/pick", precision="fp16")


def test_sim_node_rejects_a_bad_camera_pose():
    assert SimNodeConfig(camera_pos=[1.0, 0.2, 0.6]).camera_pos == [1.0, 0.2, 0.6]
    with pytest.raises(ValueError, match="camera_pos needs 3"):
        SimNodeConfig(camera_pos=[1.0, 0.2])

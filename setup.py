"""VER-ROS: ament_python package (colcon) that also installs with plain pip."""

from glob import glob

from setuptools import find_packages, setup

package_name = "ver_ros"

# Console commands (pip and colcon both install them on PATH).
commands = {
    "ver-model-info": "ver_core.cli.model_info:main",
    "ver-extract-teachers": "ver_core.cli.extract_teachers:main",
    "ver-distill": "ver_core.cli.distill:main",
    "ver-train-router": "ver_core.cli.train_router:main",
    "ver-export-dataset": "ver_core.cli.export_dataset:main",
    "ver-export": "ver_core.cli.export:main",
    "ver-eval": "ver_core.cli.eval:main",
    "ver-record-demos": "ver_ros.record_demos:main",
    "ver-bringup": "ver_ros.bringup:main",
}
# ROS executables (`ros2 run ver_ros <name>`).
nodes = {
    "camera_node": "ver_ros.camera_node:main",
    "encoder_node": "ver_ros.encoder_node:main",
    "policy_node": "ver_ros.policy_node:main",
    "safety_node": "ver_ros.safety_node:main",
    "sim_node": "ver_ros.sim_node:main",
    "recorder_node": "ver_ros.recorder_node:main",
    "scripted_expert": "ver_ros.scripted_expert:main",
}

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["ver_core", "ver_core.*", "ver_ros", "ver_ros.*"]),
    package_data={"ver_core": ["sim/assets/*.xml", "assets/**/*"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools", "numpy", "safetensors", "pyyaml", "tqdm"],
    zip_safe=False,
    maintainer="VER-ROS developers",
    maintainer_email="ver-ros@example.org",
    description="VER (Vision Expert Transformer) perception and control for ROS 2 Franka robots",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [f"{k}={v}" for k, v in {**commands, **nodes}.items()],
    },
)

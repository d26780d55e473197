"""Launch the VER pick graph on a Franka (or in the simulator with sim:=true).

    ros2 launch ver_ros franka_pick.launch.py checkpoint:=/path/to/task sim:=true

The nodes come from ver_ros.graph.build_graph, the same description ver-bringup runs, so the two
cannot drift apart: one camera source per camera of the checkpoint, and every node but the
simulator respawns when it dies (ver_ros.graph.RESPAWN), while the safety node holds the arm.
Every process it starts loads the shipped Fast DDS transport profile
(config/fastdds_large_frames.xml, ver_ros.transport) unless FASTDDS_DEFAULT_PROFILES_FILE is
set already: without it most raw camera frames above 512 KB are lost between processes.
Written for a real ROS 2 install (the Docker images); on the development machines launch_ros
does not exist, and this file is only checked structurally by tests/unit/test_launch_graph.py.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from ver_ros.graph import LAUNCH_ARGUMENTS, RESPAWN, GraphOptions, build_graph
from ver_ros.transport import PROFILE_ENV, default_profile_path


def _nodes(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    options = GraphOptions.from_strings(values)
    return [
        Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            namespace=spec.namespace,
            parameters=[*spec.param_files, spec.parameters],
            output="screen",
            emulate_tty=True,
            respawn=spec.respawn,
            respawn_delay=RESPAWN["delay_s"],
        )
        for spec in build_graph(options)
    ]


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in LAUNCH_ARGUMENTS.items()
    ]
    # the user's profile wins; otherwise the shipped one (set before any node starts)
    profile = EnvironmentVariable(PROFILE_ENV, default_value=str(default_profile_path()))
    transport = SetEnvironmentVariable(PROFILE_ENV, profile)
    return LaunchDescription([*arguments, transport, OpaqueFunction(function=_nodes)])

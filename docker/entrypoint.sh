#!/bin/bash
# Source ROS 2 and the ver_ros overlay, then run the given command.
set -e
ROS_DISTRO=${ROS_DISTRO:-humble}
for f in /opt/ros/${ROS_DISTRO}/setup.bash /opt/ros/${ROS_DISTRO}/install/setup.bash; do
  [ -f "$f" ] && source "$f" && break
done
source /opt/ver_ros/install/setup.bash
exec "$@"

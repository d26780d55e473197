#!/usr/bin/env bash
# `make demo`: the main job. Grows with the project; today it runs the stages that exist.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export MUJOCO_GL="${MUJOCO_GL:-egl}"
echo "== VER-ROS demo: model sizes"
.venv/bin/ver-model-info

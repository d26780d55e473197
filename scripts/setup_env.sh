#!/usr/bin/env bash
# Creates .venv/ at the repo root (when missing) and installs everything VER-ROS needs.
# Idempotent: a second run only checks. Used by `make demo`, `make test` and .ci/run.
#
#   VER_TORCH_SPEC  torch requirement (default torch==2.13.0, the pinned CPU build). On a CUDA
#                   workstation set e.g. VER_TORCH_SPEC="torch --index-url <your CUDA index>".
#   VER_SKIP_APT=1  skip the apt step (no root, or packages already present).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.ver-installed"
want="$(cat requirements.txt constraints-cpu.txt scripts/setup_env.sh | sha256sum | cut -c1-16)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

# System packages: libusb for pyrealsense2, EGL/OSMesa for headless MuJoCo rendering.
if [[ "${VER_SKIP_APT:-0}" != "1" ]] && command -v apt-get >/dev/null 2>&1; then
  need=()
  for p in libusb-1.0-0 libegl1 libgl1 libosmesa6; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if ((${#need[@]})); then
    echo "[setup] apt-get install ${need[*]}"
    sudo_cmd=""
    [[ "$(id -u)" != "0" ]] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

py="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "[setup] creating $venv"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)

torch_spec="${VER_TORCH_SPEC:-torch==2.13.0}"
if [[ -z "${VER_TORCH_SPEC:-}" ]]; then
  export PIP_CONSTRAINT="$root/constraints-cpu.txt"
fi
echo "[setup] installing $torch_spec"
# shellcheck disable=SC2086
"${pip[@]}" $torch_spec
echo "[setup] installing requirements (ROS 2 rclpy wheels, MuJoCo, rosbags, transformers, ...)"
"${pip[@]}" -r requirements.txt
# Packages whose declared dependencies would pull torchvision/timm/gymnasium: install bare.
"${pip[@]}" --no-deps efficientnet-lite-pytorch gymnasium-robotics
"${pip[@]}" --no-deps -e .
echo "$want" > "$stamp"
echo "[setup] done: $venv"

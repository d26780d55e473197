"""Shared pytest fixtures: isolated ROS domains, headless rendering, temp dirs."""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def ros_env(monkeypatch) -> dict[str, str]:
    """Environment for a test that starts real ROS processes.

    A random ROS_DOMAIN_ID plus localhost-only discovery keeps parallel tests (and other users
    of the machine) out of each other's graphs. The returned dict is the full environment to
    pass to subprocesses; the current process is switched to it too (for in-test rclpy nodes).
    """
    domain = str(random.randint(1, 200))
    monkeypatch.setenv("ROS_DOMAIN_ID", domain)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    return dict(os.environ)


@pytest.fixture(scope="session")
def load_bench():
    """Import a script of bench/ as a module: ``load_bench("bench_ablation")``."""

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load

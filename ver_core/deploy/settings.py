"""Deployment settings from the graph's parameter file, for the controller outside ROS.

The nodes read ``config/franka_pick.yaml`` as ROS parameters; in-process evaluation reads the
same file here, so both run the gate, the smoother and the staleness budget with the same
values. Only what the controller needs is read: ``/**`` (the staleness budget),
``policy_node`` (smoothing) and ``safety_node`` (the gate and its joint limit table).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ver_core.deploy.ensemble import SmoothingConfig
from ver_core.deploy.freshness import StalenessBudget
from ver_core.safety import JointLimits, SafetyConfig, limits_for

__all__ = ["DeploySettings"]


def _section(params: dict, name: str) -> dict:
    return dict((params.get(name) or {}).get("ros__parameters") or {})


@dataclass
class DeploySettings:
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    robot_type: str = "fr3"
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    budget: StalenessBudget = field(default_factory=StalenessBudget)

    def with_observation_budget(self, seconds: float) -> DeploySettings:
        """The same settings with another camera-frame staleness budget (gate and policy)."""
        return dataclasses.replace(
            self,
            safety=dataclasses.replace(self.safety, observation_budget_s=seconds),
            budget=dataclasses.replace(self.budget, observation_s=seconds),
        )

    @property
    def limits(self) -> JointLimits:
        return limits_for(self.robot_type)

    @classmethod
    def from_params(cls, params: dict) -> DeploySettings:
        """From a parsed ROS parameter file (node name -> ros__parameters)."""
        common = _section(params, "/**")
        safety_p = {**common, **_section(params, "safety_node")}
        policy_p = {**common, **_section(params, "policy_node")}
        keys = {f.name for f in dataclasses.fields(SafetyConfig)}
        safety = SafetyConfig(**{k: v for k, v in safety_p.items() if k in keys})
        smoothing = SmoothingConfig(
            mode=policy_p.get("smoothing", SmoothingConfig.mode),
            decay=float(policy_p.get("ensemble_decay", SmoothingConfig.decay)),
            blend_time_s=float(policy_p.get("blend_time_s", SmoothingConfig.blend_time_s)),
            gripper=str(policy_p.get("gripper", SmoothingConfig.gripper)),
            align=str(policy_p.get("chunk_align", SmoothingConfig.align)),
        )
        budget = StalenessBudget(
            observation_s=float(
                policy_p.get("observation_budget_s", StalenessBudget.observation_s)
            ),
            joint_state_s=float(
                policy_p.get("joint_state_budget_s", StalenessBudget.joint_state_s)
            ),
        )
        return cls(safety, str(safety_p.get("robot_type", "fr3")), smoothing, budget)

    @classmethod
    def from_yaml(cls, path: str | Path) -> DeploySettings:
        return cls.from_params(yaml.safe_load(Path(path).read_text()) or {})

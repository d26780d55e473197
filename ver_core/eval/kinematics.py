"""Tool-centre-point position from measured joint angles (for evaluations that only see
/joint_states, e.g. through the ROS graph)."""

from __future__ import annotations

import mujoco
import numpy as np

__all__ = ["TcpKinematics"]


class TcpKinematics:
    """Forward kinematics of the sim's Panda: ``tcp(arm_q (7,), Franka convention) -> (3,) m``."""

    def __init__(self) -> None:
        from ver_core.sim.scene import JOINT_OFFSET, build_model

        self.model = build_model()
        self.data = mujoco.MjData(self.model)
        self._offset = JOINT_OFFSET
        self._qadr = np.array([self.model.jnt_qposadr[j] for j in range(7)])
        self._site = self.model.site("end_effector").id

    def tcp(self, arm_q) -> np.ndarray:
        q = np.asarray(arm_q, dtype=np.float64)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"arm_q must be 7 finite joint angles, got {q!r}")
        self.data.qpos[self._qadr] = q - self._offset
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self._site].copy()

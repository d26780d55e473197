"""Keyposes: the arm pose at the next gripper event of a demonstration, as a training target.

A pick demonstration closes the hand where the object is; the arm's commanded joints at that
moment (the *grasp keypose*) say where the object was, in the robot's own joint space, with no
object pose, no camera calibration and no kinematic model. Every demonstration carries it in
its commands.

A keypose policy (``TaskConfig.keypose``) splits the job the way our privileged-pose diagnostic
showed it must be split (bench/privileged_policy.py): a vision part estimates the keypose from
the routed tokens of every camera, and the action head acts on (keypose, proprioception) alone,
a low-dimensional input it interpolates between demonstrations instead of memorizing images.
In training the head sees the demonstrated keypose with noise (``keypose_noise``), so it acts
well on an estimate that is off by about that much; the estimator learns from the same labels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["keypose_labels"]


def keypose_labels(
    actions: np.ndarray, episode: np.ndarray, gripper_open: float = 0.08
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the commanded arm joints at the episode's next gripper event.

    actions (N, H, A): action chunks (arm joints + gripper width last), samples of one episode in
    time order; episode (N,). An event is the first action of a sample switching between open
    (width >= half of ``gripper_open``) and closed. A sample after the episode's last event takes
    that last event. Returns keyposes (N, A - 1) float32 and valid (N,) bool (False: the episode
    never opens or closes the hand, so it has no keypose).
    """
    actions = np.asarray(actions)
    episode = np.asarray(episode)
    if actions.ndim != 3 or len(actions) != len(episode):
        raise ValueError(
            f"need actions (N, H, A) and episode (N,), got {actions.shape}, {episode.shape}"
        )
    first = actions[:, 0]  # (N, A): the command at each sample's time
    closed = first[:, -1] < gripper_open / 2
    out = np.zeros((len(first), first.shape[1] - 1), np.float32)
    valid = np.zeros(len(first), bool)
    for e in np.unique(episode):
        idx = np.flatnonzero(episode == e)  # time order
        events = idx[1:][closed[idx[1:]] != closed[idx[:-1]]]  # sample indices of switches
        if len(events) == 0:
            continue
        for k in idx:
            later = events[events >= k]
            j = later[0] if len(later) else events[-1]
            out[k] = first[j, :-1]
        valid[idx] = True
    return out, valid

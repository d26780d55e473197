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

__all__ = ["delay_close_until_arrival", "keypose_labels"]


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


def delay_close_until_arrival(
    actions: np.ndarray,
    states: np.ndarray,
    episode: np.ndarray,
    tcp_of,
    arrive_m: float,
    max_delay: int = 10,
    gripper_open: float = 0.08,
) -> tuple[np.ndarray, int]:
    """A copy of ``actions`` whose close labels wait for the hand: the scripted expert closes when
    its command reaches the grasp, while the measured hand may still be centimetres above it (up
    to 6 cm in make demo's demos), and a head that learns those labels closes while high. Per
    episode, every open -> closed switch of the label's gripper (first action of a sample) at
    sample i0 moves to the first sample i1 >= i0 whose measured TCP (``tcp_of(states[k, :7])``)
    is at most ``arrive_m`` above the commanded TCP there (at most ``max_delay`` samples later);
    every chunk entry whose time falls in [i0, i1) is relabelled open. Samples of an episode are
    consecutive control steps in time order (chunk entry h of sample k is step k + h). Returns the
    new actions and the number of closes delayed."""
    out = np.array(actions, copy=True)
    first = out[:, 0]
    closed = first[:, -1] < gripper_open / 2
    delayed = 0
    for e in np.unique(episode):
        idx = np.flatnonzero(episode == e)
        for t in range(1, len(idx)):
            if not closed[idx[t]] or closed[idx[t - 1]]:
                continue
            stop = min(t + max_delay, len(idx))
            arrived = t
            while arrived < stop:
                k = idx[arrived]
                hand, goal = tcp_of(states[k, :7]), tcp_of(first[k, :-1])
                if hand[2] - goal[2] <= arrive_m:
                    break
                arrived += 1
            if arrived == t:
                continue
            delayed += 1
            for s in range(max(0, t - out.shape[1] + 1), arrived):
                for h in range(out.shape[1]):
                    if t <= s + h < arrived:
                        out[idx[s], h, -1] = gripper_open
    return out, delayed

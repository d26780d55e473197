"""Every usable episode under a directory, resolved to frames on a grid (shared by training from
bags and by the LeRobot exporter, so both see the same frames).

``prepare_episodes`` scans each episode (no pixels yet), skips the unusable ones with a reason
naming the episode and the problem, picks the action and gripper sources for the whole set
(``ver_core.data.streams``; the choice is logged once) and lays each episode on the grid at
``fps`` (``ver_core.data.align.frame_table``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ver_core.data.align import FrameTable, frame_table
from ver_core.data.bag_reader import (
    EpisodeSkip,
    EpisodeSource,
    EpisodeStreams,
    TopicConfig,
    find_episodes,
    scan_episode,
)
from ver_core.data.streams import SourceChoice, derived_targets, resolve_sources

log = logging.getLogger(__name__)
VIEW_TOLERANCE_S = 0.05  # views whose frames lie further apart do not form a sample


@dataclass
class PreparedEpisode:
    """One usable episode: its source, streams (no pixels) and frames on the grid."""

    source: EpisodeSource
    streams: EpisodeStreams
    table: FrameTable

    @property
    def name(self) -> str:
        return str(self.source.path)


def prepare_episodes(
    root: str | Path,
    topics: TopicConfig,
    fps: float | Fraction,
    control_rate_hz: float,
    include_failed: bool = False,
    action_source: str = "auto",
    gripper_source: str = "auto",
    sources: list[EpisodeSource] | None = None,
) -> tuple[list[PreparedEpisode], list[tuple[str, str]], SourceChoice]:
    """(usable episodes, skipped [(episode, reason)], the resolved sources). Derived targets
    (next-state, finger-width) lead the measurement by one control period (1 / control_rate_hz).
    Raises FileNotFoundError when there are no episodes (ValueError from the callers when none
    is usable)."""
    sources = sources if sources is not None else find_episodes(root)
    skipped: list[tuple[str, str]] = []
    scanned: list[tuple[EpisodeSource, EpisodeStreams]] = []

    def skip(src: EpisodeSource, reason: str) -> None:
        log.warning("skipping episode %s: %s", src.path, reason)
        skipped.append((str(src.path), reason))

    for src in sources:
        if src.meta.get("_meta_error"):
            skip(src, src.meta["_meta_error"])
        elif src.meta.get("success") is False and not include_failed:
            skip(src, "episode.json says success: false (pass --include-failed to use it)")
        else:
            try:
                scanned.append((src, scan_episode(src, topics)))
            except EpisodeSkip as e:
                skip(src, str(e))
    choice = resolve_sources(
        action_source,
        gripper_source,
        [s.has_arm for _, s in scanned],
        [s.has_gripper for _, s in scanned],
        [src.name for src, _ in scanned],
    )
    if scanned:
        log.info("%s", choice.note or f"action source: {choice.action}; gripper: {choice.gripper}")
    goals = sum(s.gripper_from == "action goals" for _, s in scanned)
    if choice.gripper == "command" and goals:
        log.info(
            "gripper commands: %d episodes from %s, %d from franka_gripper action goals",
            len(scanned) - goals,
            topics.gripper,
            goals,
        )
    lead_ns = int(round(1e9 / control_rate_hz))
    tolerance_ns = int(VIEW_TOLERANCE_S * 1e9)
    prepared = []
    for src, s in scanned:
        if s.cut_off:
            log.warning(
                "episode %s: the bag is cut off (%s): using the messages before the cut",
                src.path,
                s.cut_off,
            )
        try:
            arm_t, arm, grip_t, grip = _targets(s, choice, topics, lead_ns)
        except EpisodeSkip as e:
            skip(src, str(e))
            continue
        table = frame_table(
            s.image_times,
            s.state_times,
            s.states,
            arm_t,
            arm,
            grip_t,
            grip,
            fps,
            tolerance_ns,
        )
        if len(table) == 0:
            skip(
                src,
                f"no frame of {s.image_topics[0]} has a joint state and an arm target before it",
            )
            continue
        prepared.append(PreparedEpisode(src, s, table))
    return prepared, skipped, choice


def _targets(
    s: EpisodeStreams, choice: SourceChoice, topics: TopicConfig, lead_ns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if choice.action == "next-state":
        arm_t, arm = derived_targets(s.state_times, s.states[:, :7], lead_ns)
    elif not s.has_arm:
        raise EpisodeSkip(
            f"no arm command messages on {topics.action} (--action-source next-state uses the "
            "measured joints instead)"
        )
    else:
        arm_t, arm = s.arm_times, s.arm_targets
    if choice.gripper == "finger-width":
        grip_t, grip = derived_targets(s.state_times, s.states[:, 7], lead_ns)
    elif not s.has_gripper:
        raise EpisodeSkip(
            f"no gripper command messages on {topics.gripper} and no franka_gripper action goals "
            "(--gripper-source finger-width uses the measured finger width instead)"
        )
    else:
        grip_t, grip = s.gripper_times, s.gripper_targets
    return arm_t, arm, grip_t, grip

"""ver-export-dataset: rosbag2 episodes -> a LeRobotDataset v3.0 directory.

    ver-export-dataset --bag demos/ --out datasets/pick --fps 30

Each episode is resampled to --fps (frame k is the moment k / fps after its start): Parquet
rows with observation.state, action, timestamp, frame_index, episode_index, index, task_index;
one MP4 video per camera (observation.images.<camera>); meta/info.json, stats.json,
tasks.parquet and episodes/. Episodes that cannot be used are skipped with the reason.

Options are the fields of ExportConfig (the dataset) and TopicConfig (what the bags hold),
plus the ones below; the options a run used are written to OUT/ver-export-dataset.yaml.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ver_core.cli import options
from ver_core.data import TopicConfig
from ver_core.data.lerobot_export import ExportConfig, export_lerobot
from ver_core.policy.config import TaskConfig

log = logging.getLogger("ver-export-dataset")
PROG = "ver-export-dataset"
ALIASES = options.Aliases(  # the topic flags of ver-train-router
    rename={
        "--image-topics": ("--images",),
        "--state-topic": ("--state",),
        "--action-topic": ("--action",),
        "--gripper-topic": ("--gripper",),
        "--gripper-state-topic": ("--gripper-state",),
        "--control-rate": ("--control-rate-hz",),
    },
    gather={"--image-topic": "--images"},
)


@dataclass
class ExportDatasetCommand:
    """rosbag2 episodes -> a LeRobotDataset v3.0 directory."""

    bag: Path | None = None  # directory of rosbag2 episodes / .mcap files (recursive, required)
    out: Path | None = None  # dataset directory to write (required; must not hold a dataset)
    export: ExportConfig = field(default_factory=ExportConfig)
    topics: TopicConfig = field(default_factory=TopicConfig)
    # the control period derived targets lead the measurement by (next-state, finger-width)
    control_rate_hz: float = TaskConfig.control_rate_hz
    action_source: str = "auto"  # arm targets: command | next-state | auto (as ver-train-router)
    gripper_source: str = "auto"  # gripper targets: command | finger-width | auto
    include_failed: bool = False  # also export episodes whose episode.json says success: false
    config: Path | None = None  # YAML file of these options (OUT/ver-export-dataset.yaml)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cmd, _ = options.parse(ExportDatasetCommand, argv, PROG, __doc__, ALIASES)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    if cmd.bag is None or cmd.out is None:
        log.error("--bag and --out are required")
        return 2
    try:
        report = export_lerobot(
            cmd.bag,
            cmd.out,
            cmd.topics,
            cmd.export,
            cmd.control_rate_hz,
            cmd.include_failed,
            cmd.action_source,
            cmd.gripper_source,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        log.error("%s", e)
        return 2
    options.save(cmd, Path(cmd.out), PROG)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

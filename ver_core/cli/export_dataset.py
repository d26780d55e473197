"""ver-export-dataset: rosbag2 episodes -> a LeRobotDataset v3.0 directory.

    ver-export-dataset --bag demos/ --out datasets/pick --fps 30

Each episode is resampled to --fps (frame k is the moment k / fps after its start): Parquet
rows with observation.state, action, timestamp, frame_index, episode_index, index, task_index;
one MP4 video per camera (observation.images.<camera>); meta/info.json, stats.json,
tasks.parquet and episodes/. Episodes that cannot be used are skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ver_core.data import ACTION_SOURCES, GRIPPER_SOURCES, TopicConfig
from ver_core.data.lerobot_export import ExportConfig, export_lerobot
from ver_core.data.video import VIDEO_CODECS
from ver_core.policy.config import TaskConfig

log = logging.getLogger("ver-export-dataset")


def build_parser() -> argparse.ArgumentParser:
    d, e = TaskConfig(), ExportConfig()
    p = argparse.ArgumentParser(prog="ver-export-dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("--bag", required=True, help="directory of rosbag2 episodes (recursive)")
    p.add_argument("--out", required=True, help="dataset directory to write")
    p.add_argument("--fps", type=int, default=e.fps, help="frames per second of the dataset")
    p.add_argument("--vcodec", choices=VIDEO_CODECS, default=e.vcodec)
    p.add_argument("--crf", type=int, default=e.crf, help="video quality (lower: better)")
    p.add_argument("--task", default=e.task, help="task text where episode.json names none")
    p.add_argument("--robot-type", default=e.robot_type)
    p.add_argument("--control-rate", type=float, default=d.control_rate_hz)
    p.add_argument("--image-topic", action="append", default=None)
    p.add_argument("--state-topic", default=d.state_topic)
    p.add_argument("--action-topic", default=d.action_topic)
    p.add_argument("--gripper-topic", default=d.gripper_topic)
    p.add_argument("--gripper-state-topic", default="")
    p.add_argument("--action-source", choices=ACTION_SOURCES, default="auto")
    p.add_argument("--gripper-source", choices=GRIPPER_SOURCES, default="auto")
    p.add_argument("--include-failed", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    d = TaskConfig()
    try:
        topics = TopicConfig(
            images=args.image_topic or list(d.image_topics),
            state=args.state_topic,
            action=args.action_topic,
            gripper=args.gripper_topic,
            joint_names=d.joint_names,
            finger_joint_names=d.finger_joint_names,
            gripper_state=args.gripper_state_topic,
            gripper_open_width=d.gripper_max_width,
        )
        config = ExportConfig(
            fps=args.fps,
            vcodec=args.vcodec,
            crf=args.crf,
            task=args.task,
            robot_type=args.robot_type,
        )
        report = export_lerobot(
            args.bag,
            args.out,
            topics,
            config,
            args.control_rate,
            args.include_failed,
            args.action_source,
            args.gripper_source,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        log.error("%s", e)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Demo data: rosbag2 episode reading, image decoding, time alignment, cached datasets."""

from ver_core.data.align import (
    FrameTable,
    chunk_actions,
    frame_table,
    grid_times,
    latest_at_or_before,
    match_views,
    sample_frames,
)
from ver_core.data.bag_reader import (
    EpisodeSkip,
    EpisodeSource,
    EpisodeStreams,
    TopicConfig,
    find_episodes,
    iter_frames,
    read_episode,
    scan_episode,
)
from ver_core.data.dataset import DemoData, load_demos
from ver_core.data.images import ImageDecodeError, decode_image
from ver_core.data.streams import ACTION_SOURCES, GRIPPER_SOURCES

__all__ = [
    "ACTION_SOURCES",
    "GRIPPER_SOURCES",
    "DemoData",
    "EpisodeSkip",
    "EpisodeSource",
    "EpisodeStreams",
    "FrameTable",
    "ImageDecodeError",
    "TopicConfig",
    "chunk_actions",
    "decode_image",
    "find_episodes",
    "frame_table",
    "grid_times",
    "iter_frames",
    "latest_at_or_before",
    "load_demos",
    "match_views",
    "read_episode",
    "sample_frames",
    "scan_episode",
]

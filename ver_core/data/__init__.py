"""Demo data: rosbag2 episode reading, image decoding, time alignment, cached datasets."""

from ver_core.data.align import AlignedSamples, align_episode, latest_at_or_before, select_frames
from ver_core.data.bag_reader import (
    EpisodeSkip,
    EpisodeSource,
    EpisodeStreams,
    TopicConfig,
    find_episodes,
    read_episode,
)
from ver_core.data.dataset import DemoData, load_demos
from ver_core.data.images import ImageDecodeError, decode_image

__all__ = [
    "AlignedSamples",
    "DemoData",
    "EpisodeSkip",
    "EpisodeSource",
    "EpisodeStreams",
    "ImageDecodeError",
    "TopicConfig",
    "align_episode",
    "decode_image",
    "find_episodes",
    "latest_at_or_before",
    "load_demos",
    "read_episode",
    "select_frames",
]

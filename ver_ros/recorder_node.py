"""recorder_node: records cameras, joint states and commands into one rosbag2 episode per start/stop.

Subscriptions hand over the serialized bytes (``raw=True``); the callbacks only stamp them with
the node clock (sim time with ``use_sim_time:=true``) and enqueue them for a writer thread
(``ver_core.data.background_writer.BackgroundBagWriter``), so disk writes, segment rotation and JPEG
encoding never hold up the executor. Bytes are stored as is (trailing buffer padding trimmed, see
``trim_cdr``); with ``compressed:=true`` the image is re-encoded to JPEG in the writer thread and
stored as sensor_msgs/CompressedImage on ``<image topic>/compressed``. Every camera of
``image_topics`` is recorded (scene and wrist camera by default); ``object_pose_topic`` (the
sim-only privileged cube pose, for diagnostics; '' = none) is recorded when it is published.

Sensor subscriptions are best effort (a reliable subscriber would not match the best-effort camera
and joint-state publishers at all) with a deep history (``queue_depth``). Frames of 640x480 and
up only arrive intact when Fast DDS's shared-memory segment holds several frames: see
``ver_ros.transport.write_fastdds_profile`` and docs/SIM.md.

Services (std_srvs/Trigger): ``~/start`` (refused while recording, or when the output directory
is unwritable / too full: the node keeps running), ``~/stop`` (finalize; message = JSON summary
with received/written counts; success false with ``"error"`` when writing failed mid-episode,
e.g. disk full: the segments committed before stay readable), ``~/discard`` (drop the current
episode). ``~/finish`` (std_srvs/SetBool) is ``~/stop`` with the caller's verdict: ``data`` is
the episode's success (an operator's judgement on a real rig; ``ver-record-demos``'s check of the
sim after the hold). Episode metadata (task, seed, success, ``success_source``: ``caller`` from
``~/finish``, else ``sim`` from the last ``/sim/episode`` message received before ``~/stop``,
which can lag the sim by a publish period, else ``none``) goes to ``episode.json`` and the bag's
custom_data.
Crash safety: see ``EpisodeBagWriter`` (closed segments survive SIGKILL; SIGINT closes all).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from ver_core.data.background_writer import BackgroundBagWriter
from ver_core.data.bag_writer import BagWriteError, EpisodeBagWriter, check_writable
from ver_ros.conversions import compressed_image_to_msg, msg_to_rgb
from ver_ros.params import declare_config, param
from ver_ros.qos import LATCHED_QOS, command_qos, sensor_qos


def episode_indices(root: Path) -> list[int]:
    """Indices of the ``episode_NNNNNN`` directories in ``root``."""
    return [
        int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(r"episode_(\d+)", p.name))
    ]


def next_episode_dir(root: Path, first_index: int = -1) -> Path:
    """The next episode directory: after the highest index in ``root`` (``first_index`` -1), or
    the lowest free index >= ``first_index`` (a recorder that owns a block of indices while
    another recorder fills the block after it)."""
    taken = set(episode_indices(root))
    if first_index < 0:
        index = max(taken, default=-1) + 1
    else:
        index = first_index
        while index in taken:
            index += 1
    return root / f"episode_{index:06d}"


@dataclass
class RecorderConfig:
    output_dir: str = param("demos", "directory that receives episode_NNNNNN/ bag directories")
    first_index: int = param(
        -1,
        "index of the first episode directory: -1 = after the highest one in output_dir; >= 0 = "
        "the lowest free index from there (parallel recorders writing one directory, each its block)",
    )
    storage: str = param("mcap", "rosbag2 storage: mcap or sqlite3")
    compressed: bool = param(False, "store the image as JPEG CompressedImage instead of raw")
    jpeg_quality: int = param(90, "JPEG quality with compressed:=true")
    image_topics: list[str] = param(
        ["/camera/camera/color/image_raw", "/wrist_camera/camera/color/image_raw"],
        "camera image topics (sensor_msgs/Image), one per camera",
    )
    joint_state_topic: str = param("/joint_states", "joint state topic")
    trajectory_topic: str = param(
        "/fr3_arm_controller/joint_trajectory", "arm JointTrajectory command topic"
    )
    intended_topic: str = param(
        "/scripted_expert/intended_trajectory",
        "the scripted expert's clean command under DART noise (recorded when published); '' = none",
    )
    intended_gripper_topic: str = param(
        "/scripted_expert/intended_gripper",
        "the scripted expert's own gripper command (recorded when published); '' = none",
    )
    perception_only_topic: str = param(
        "/scripted_expert/perception_only",
        "the scripted expert's perception-only flag (std_msgs/Bool, recorded when published); "
        "'' = none",
    )
    forward_topic: str = param(
        "/forward_position_controller/commands", "arm Float64MultiArray command topic"
    )
    gripper_topic: str = param("/gripper/command", "gripper width command topic (std_msgs/Float64)")
    object_pose_topic: str = param(
        "/sim/object_pose", "sim-only cube pose (PoseStamped) recorded for diagnostics; '' = none"
    )
    episode_info_topic: str = param(
        "/sim/episode", "sim-only JSON episode info (seed, success); '' = none"
    )
    task: str = param("pick_cube", "task name written to episode.json")
    joint_names: list[str] = param(
        [f"fr3_joint{i}" for i in range(1, 8)], "arm joint names for episode.json"
    )
    segment_seconds: float = param(
        1.0, "crash-safe segment length (wall s): at most this is lost on SIGKILL"
    )
    min_free_mb: float = param(200.0, "refuse to start with less free disk space (MB)")
    queue_depth: int = param(50, "DDS history depth of every subscription (sensor: best effort)")
    write_queue: int = param(
        150, "messages buffered for the writer thread before new ones are dropped (counted)"
    )

    def __post_init__(self) -> None:
        if self.storage not in ("mcap", "sqlite3"):
            raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {self.storage!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if not self.image_topics or len(set(self.image_topics)) != len(self.image_topics):
            raise ValueError(f"image_topics must be distinct topics, got {self.image_topics}")
        if self.first_index < -1:
            raise ValueError(f"first_index must be >= -1, got {self.first_index}")
        if self.segment_seconds <= 0 or self.queue_depth < 1 or self.write_queue < 1:
            raise ValueError("segment_seconds must be > 0, queue_depth and write_queue >= 1")


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder_node")
        self.cfg = c = declare_config(self, RecorderConfig)
        self.writer: BackgroundBagWriter | None = None
        self.episode_info: dict = {}
        sq, cq = sensor_qos(c.queue_depth), command_qos(c.queue_depth)
        image_type = "sensor_msgs/msg/CompressedImage" if c.compressed else "sensor_msgs/msg/Image"
        self.image_out = {t: t + "/compressed" if c.compressed else t for t in c.image_topics}
        self.topics = {
            **{out: image_type for out in self.image_out.values()},
            c.joint_state_topic: "sensor_msgs/msg/JointState",
            c.trajectory_topic: "trajectory_msgs/msg/JointTrajectory",
            c.forward_topic: "std_msgs/msg/Float64MultiArray",
            c.gripper_topic: "std_msgs/msg/Float64",
        }
        optional = (  # recorded when configured ('' = not recorded)
            (c.intended_topic, JointTrajectory, "trajectory_msgs/msg/JointTrajectory", cq),
            (c.intended_gripper_topic, Float64, "std_msgs/msg/Float64", cq),
            (c.perception_only_topic, Bool, "std_msgs/msg/Bool", cq),
            (c.object_pose_topic, PoseStamped, "geometry_msgs/msg/PoseStamped", sq),
        )
        for topic, msg_type, type_name, qos in optional:
            if topic:
                self.topics[topic] = type_name
                self.create_subscription(msg_type, topic, self._raw_cb(topic), qos, raw=True)
        for topic in c.image_topics:
            self.create_subscription(Image, topic, self._image_cb(topic), sq, raw=True)
        self.create_subscription(
            JointState, c.joint_state_topic, self._raw_cb(c.joint_state_topic), sq, raw=True
        )
        self.create_subscription(
            JointTrajectory, c.trajectory_topic, self._raw_cb(c.trajectory_topic), cq, raw=True
        )
        self.create_subscription(
            Float64MultiArray, c.forward_topic, self._raw_cb(c.forward_topic), cq, raw=True
        )
        self.create_subscription(
            Float64, c.gripper_topic, self._raw_cb(c.gripper_topic), cq, raw=True
        )
        if c.episode_info_topic:
            self.create_subscription(
                String, c.episode_info_topic, self._on_episode_info, LATCHED_QOS
            )
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_service(SetBool, "~/finish", self._on_finish)
        self.create_service(Trigger, "~/discard", self._on_discard)
        self.get_logger().info(
            f"recorder ready: {c.output_dir} ({c.storage}, {'jpeg' if c.compressed else 'raw'} images)"
        )

    # ------------------------------------------------------------------ recording
    def _now_ns(self) -> int:
        ns = self.get_clock().now().nanoseconds
        return ns if ns > 0 else time.time_ns()

    def _raw_cb(self, topic: str) -> Callable[[bytes], None]:
        def enqueue(data: bytes) -> None:
            if (writer := self.writer) is not None:
                writer.submit(topic, self._now_ns(), data)

        return enqueue

    def _image_cb(self, topic: str) -> Callable[[bytes], None]:
        out = self.image_out[topic]
        transform = self._to_jpeg if self.cfg.compressed else None

        def enqueue(data: bytes) -> None:
            if (writer := self.writer) is not None:
                writer.submit(out, self._now_ns(), data, transform)

        return enqueue

    def _to_jpeg(self, data: bytes) -> bytes:
        """Serialized Image -> serialized JPEG CompressedImage (writer thread)."""
        msg = deserialize_message(data, Image)
        out = compressed_image_to_msg(
            msg_to_rgb(msg), msg.header.stamp, msg.header.frame_id, "jpeg", self.cfg.jpeg_quality
        )
        return serialize_message(out)

    def _on_write_error(self, error: str) -> None:
        self.get_logger().error(
            f"recording stopped, episode kept up to the last closed segment: {error}; "
            "call ~/stop (reports it) or ~/discard"
        )

    def _on_episode_info(self, msg: String) -> None:
        try:
            info = json.loads(msg.data)
        except json.JSONDecodeError as e:
            self.get_logger().warning(f"bad episode info JSON ignored: {e}")
            return
        if info.get("seed") != self.episode_info.get("seed"):  # once per reset, not per message
            self.get_logger().info(f"episode info: seed {info.get('seed')}")
        self.episode_info = info

    def _finish(self, success: bool | None = None, **updates) -> dict:
        """Close the episode; ``success`` None takes it from the last ``/sim/episode`` info."""
        writer, self.writer = self.writer, None
        if writer is None:
            return {}
        if success is not None:
            source = "caller"
        elif "success" in self.episode_info:
            success, source = bool(self.episode_info["success"]), "sim"
        else:
            success, source = False, "none"
        if writer.writer.metadata.get("seed") is None and "seed" in self.episode_info:
            # the episode started before the sim's latched /sim/episode reached this node (a
            # first episode on a busy machine): the sim republishes it every 0.2 s, and no reset
            # came between start and finish, so the one now is this episode's
            updates["seed"] = self.episode_info["seed"]
        try:
            summary = writer.close(
                stop_time_ns=self._now_ns(), success=success, success_source=source, **updates
            )
        except BagWriteError as e:
            summary = writer.stats()
            summary["error"] = str(e)
            self.get_logger().error(f"episode {writer.path} incomplete: {e}")
        summary["success"], summary["success_source"] = success, source
        summary["counts"] = summary["written"]
        summary["messages"] = writer.writer.message_count
        summary["bytes"] = writer.writer.bytes_written
        if summary["skipped"]:
            self.get_logger().warning(
                f"{summary['skipped']} messages not recorded, last: {writer.last_skip}"
            )
        return summary

    # ------------------------------------------------------------------ services
    def _on_start(self, request, response):
        if self.writer is not None:
            state = f"failed ({self.writer.error})" if self.writer.error else "recording"
            response.success = False
            response.message = f"already {state} {self.writer.path}; stop or discard it first"
            return response
        root = Path(self.cfg.output_dir)
        try:
            check_writable(root, self.cfg.min_free_mb)
            path = next_episode_dir(root, self.cfg.first_index)
            meta = {
                "task": self.cfg.task,
                "success": False,
                "seed": self.episode_info.get("seed"),
                "start_time_ns": self._now_ns(),
                "joint_names": list(self.cfg.joint_names),
            }
            episode = EpisodeBagWriter(path, self.cfg.storage, self.cfg.segment_seconds, meta)
            for topic, msgtype in self.topics.items():
                episode.add_topic(topic, msgtype)
        except BagWriteError as e:
            self.get_logger().error(f"cannot start recording: {e}")
            response.success, response.message = False, f"cannot start recording: {e}"
            return response
        self.writer = BackgroundBagWriter(episode, self.cfg.write_queue, self._on_write_error)
        self.get_logger().info(f"recording {path}")
        response.success, response.message = True, str(path)
        return response

    def _on_stop(self, request, response, success: bool | None = None):
        if self.writer is None:
            response.success, response.message = False, "not recording"
            return response
        summary = self._finish(success)
        response.success = summary.get("error") is None
        response.message = json.dumps(summary)
        self.get_logger().info(f"episode done: {response.message}")
        return response

    def _on_finish(self, request, response):
        return self._on_stop(request, response, success=bool(request.data))

    def _on_discard(self, request, response):
        if self.writer is None:
            response.success, response.message = False, "not recording"
            return response
        writer, self.writer = self.writer, None
        writer.discard()
        response.success, response.message = True, f"discarded {writer.path}"
        return response


def main(args=None) -> None:
    rclpy.init(args=args)
    node = RecorderNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.writer is not None:  # SIGINT mid-episode: keep everything received
            summary = node._finish(interrupted=True)
            print(f"recorder_node: episode closed on shutdown: {json.dumps(summary)}", flush=True)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()

"""ver-train-router: train a Robot Router + action head on rosbag2 demos or a LeRobotDataset v3.0
directory -> task checkpoint.

Options are the fields of TaskConfig (the policy, saved in the checkpoint), its RouterConfig
and TrainConfig (the run), plus the ones below. --anneal-steps defaults to half of --steps.
The options a run used are written to OUT/ver-train-router.yaml (--config reads them back).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
import tyro

from ver_core.cli import options
from ver_core.data import TopicConfig, load_demos
from ver_core.policy import TaskConfig, TaskPolicy
from ver_core.train import RouterTrainer, TrainConfig

log = logging.getLogger("ver-train-router")
PROG = "ver-train-router"
ALIASES = options.Aliases(
    rename={"--control-rate": ("--control-rate-hz",)},
    gather={"--image-topic": "--image-topics"},
)


@dataclass
class TrainRouterCommand:
    """Train a Robot Router + action head over a VER library."""

    bag: Path | None = None  # directory of rosbag2 episodes / .mcap files (recursive)
    dataset: Path | None = None  # LeRobotDataset v3.0 directory (instead of --bag)
    out: Path | None = None  # task checkpoint directory to write (required)
    task: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # VERConfig override of a fresh library, KEY=JSON, e.g. depth=3
    model_override: Annotated[list[str], tyro.conf.UseAppendAction] = field(default_factory=list)
    gripper_state_topic: str = ""  # extra JointState topic with the finger joints ("" = none)
    include_failed: bool = False  # also train on episodes whose episode.json says success: false
    resume: bool = False  # continue the run saved in --out (its saved config wins)
    cache_dir: Path | None = None  # demo / feature cache (None: OUT/cache)
    threads: int = 0  # torch CPU threads (0: torch default; 1 is fastest on a loaded machine)
    config: Path | None = None  # YAML file of these options (OUT/ver-train-router.yaml); flags win

    def check(self) -> None:
        if (self.bag is None) == (self.dataset is None):
            raise ValueError("give one of --bag DIR or --dataset DIR")
        if self.out is None:
            raise ValueError("--out is required")


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--model-override expects KEY=JSON, got {item!r}")
        out[key] = json.loads(value)
    return out


def resolve(cmd: TrainRouterCommand, given: set[str]) -> TrainRouterCommand:
    """The options a fresh run trains with: model overrides folded into the task, annealing
    over half the joint steps unless set, a dataset's cameras unless image topics are set."""
    task = cmd.task
    overrides = {**task.model_overrides, **_overrides(cmd.model_override)}
    router = task.router
    if "anneal_steps" not in given:
        router = dataclasses.replace(router, anneal_steps=cmd.train.steps // 2)
    topics = task.image_topics
    if cmd.dataset is not None and "image_topics" not in given:
        from ver_core.data.lerobot_read import dataset_cameras

        topics = [camera_topic(c) for c in dataset_cameras(cmd.dataset)]
    task = dataclasses.replace(task, model_overrides=overrides, router=router, image_topics=topics)
    return dataclasses.replace(cmd, task=task, model_override=[])


def run(cmd: TrainRouterCommand, given: set[str] | None = None) -> dict:
    out = Path(cmd.out)
    resuming = cmd.resume and (out / "train_state.json").is_file()
    if resuming:
        policy = TaskPolicy.from_pretrained(out)
        cmd = dataclasses.replace(cmd, task=policy.config, model_override=[])
        log.info("resuming %s (its saved config wins over flags)", out)
    else:
        if cmd.resume:
            log.warning("--resume: %s holds no train_state.json; starting fresh", out)
        cmd = resolve(cmd, given or set())
        torch.manual_seed(cmd.train.seed)  # a fresh library is then the same run to run
        policy = TaskPolicy.build(cmd.task)
    config = policy.config
    s = policy.parameter_summary()
    log.info(
        "parameters: library %d, robot router %d (%.3f%% of the model, limit 0.4%%), new experts %d, "
        "neck %d, head %d (%d member%s)",
        s["library"],
        s["robot_router"],
        s["router_percent_of_model"],
        s["new_experts"],
        s["neck"],
        s["head"],
        s["members"],
        "" if s["members"] == 1 else "s",
    )
    if s["router_percent_of_model"] >= 0.4:
        log.warning(
            "WARNING: router parameters are %.3f%% of the model (>= 0.4%%)",
            s["router_percent_of_model"],
        )
    cache = Path(cmd.cache_dir) if cmd.cache_dir else out / "cache"
    data = _load_data(cmd, config, policy.model.config.img_size, cache)
    config.action_source = data.action_source  # the checkpoint records the choice
    config.gripper_source = data.gripper_source
    log.info(
        "%d samples from %d episodes (%d skipped)",
        len(data),
        len(data.episode_names),
        len(data.skipped),
    )
    options.save(dataclasses.replace(cmd, task=config), out, PROG)
    trainer = RouterTrainer(policy, data, out, cmd.train, cache_dir=cache)
    if resuming:
        trainer.resume()
    metrics = trainer.fit()
    log.info("task checkpoint written to %s (val loss %s)", out, metrics["final_val_loss"])
    return metrics


def camera_topic(camera: str) -> str:
    """The image topic a camera of a dataset gets (realsense-ros naming: its namespace)."""
    return f"/{camera}/camera/color/image_raw"


def _load_data(cmd: TrainRouterCommand, config: TaskConfig, image_size: int, cache: Path):
    """Training samples from --bag or --dataset, by the config's cameras, joints and sources."""
    if cmd.dataset is not None:
        from ver_core.data.lerobot_read import load_lerobot

        return load_lerobot(
            cmd.dataset,
            config.chunk_len,
            config.control_rate_hz,
            image_size,
            cameras=config.cameras,
            joint_names=config.joint_names,
            action_source=config.action_source,
            cache_dir=cache,
        )
    topics = TopicConfig.of_task(config, cmd.gripper_state_topic)
    return load_demos(
        cmd.bag,
        topics,
        config.chunk_len,
        config.control_rate_hz,
        image_size,
        cmd.include_failed,
        cache,
        config.action_source,
        config.gripper_source,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cmd, given = options.parse(TrainRouterCommand, argv, PROG, __doc__, ALIASES)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    if cmd.threads > 0:
        torch.set_num_threads(cmd.threads)
    try:
        cmd.check()
        run(cmd, given)
    except (FileNotFoundError, ValueError, KeyError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

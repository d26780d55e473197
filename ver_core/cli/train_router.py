"""ver-train-router: train a Robot Router + action head on rosbag2 demos or a LeRobotDataset v3.0
directory -> task checkpoint."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from ver_core.data import ACTION_SOURCES, GRIPPER_SOURCES, TopicConfig, load_demos
from ver_core.policy import TaskConfig, TaskPolicy
from ver_core.policy.config import NECKS
from ver_core.policy.normalization import ACTION_MODES
from ver_core.router import ROUTING_MODES, RouterConfig
from ver_core.train import RouterTrainer, TrainConfig

log = logging.getLogger("ver-train-router")


def build_parser() -> argparse.ArgumentParser:
    d = TaskConfig()
    p = argparse.ArgumentParser(prog="ver-train-router", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", help="directory of rosbag2 episodes / .mcap files (recursive)")
    src.add_argument("--dataset", help="LeRobotDataset v3.0 directory (instead of --bag)")
    p.add_argument("--out", required=True, help="task checkpoint directory to write")
    p.add_argument(
        "--library", default=None, help="VER library checkpoint (ver-distill); default: fresh"
    )
    p.add_argument("--model", default="ver_tiny", help="model size when no --library is given")
    p.add_argument(
        "--model-override",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="VERConfig override for a fresh library, e.g. depth=3 (repeatable)",
    )
    p.add_argument("--head", choices=("mlp", "diffusion"), default="mlp")
    p.add_argument("--neck", choices=NECKS, default=TaskConfig.neck)
    p.add_argument(
        "--action-mode",
        choices=ACTION_MODES,
        default=TaskConfig.action_mode,
        help="arm targets absolute, or as offsets from the measured joints",
    )
    p.add_argument(
        "--steps", type=int, default=1000, help="joint steps: router + neck + head (K annealed)"
    )
    p.add_argument(
        "--head-steps",
        type=int,
        default=3000,
        help="then steps of neck + head alone on the routed tokens of the trained router, "
        "cached once (~10x cheaper per step)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--chunk-len", type=int, default=d.chunk_len)
    p.add_argument(
        "--control-rate", type=float, default=d.control_rate_hz, help="Hz of chunk steps"
    )
    p.add_argument("--k-min", type=int, default=2)
    p.add_argument("--anneal-steps", type=int, default=None, help="default: half of --steps")
    p.add_argument("--no-anneal", action="store_true", help="train at K = k-min from the start")
    p.add_argument("--routing", choices=ROUTING_MODES, default="patchwise")
    p.add_argument("--fixed-expert", type=int, default=0, help="expert for --routing single")
    p.add_argument(
        "--new-experts", type=int, default=0, help="trainable experts beside the library"
    )
    t = TrainConfig
    p.add_argument(
        "--augment-views",
        type=int,
        default=t.augment_views,
        help="augmented copies per frame (color jitter + shift), cached; a sample picks one",
    )
    p.add_argument(
        "--augment-shift", type=int, default=t.augment_shift, help="max shift (px) per axis"
    )
    p.add_argument(
        "--augment-color",
        type=float,
        default=t.augment_color,
        help="brightness/contrast/saturation factors in [1-x, 1+x]",
    )
    p.add_argument(
        "--state-noise",
        type=float,
        default=t.state_noise,
        help="std (rad) of Gaussian noise on the joint angles fed to the policy in training",
    )
    p.add_argument("--include-failed", action="store_true", help="use episodes with success: false")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--cache-dir", default=None, help="demo/feature cache (default: OUT/cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch default; 1 is fastest on a loaded machine)",
    )
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--image-topic",
        action="append",
        default=None,
        help="camera image topic, repeatable: one per camera, the first is the primary view "
        f"(default {d.image_topics[0]})",
    )
    p.add_argument(
        "--router-per-camera",
        action="store_true",
        help="one Robot Router per camera instead of one shared by all views",
    )
    p.add_argument("--state-topic", default=d.state_topic)
    p.add_argument("--action-topic", default=d.action_topic)
    p.add_argument("--gripper-topic", default=d.gripper_topic)
    p.add_argument(
        "--gripper-state-topic",
        default="",
        help="extra JointState topic holding the finger joints (when --state-topic lacks them)",
    )
    p.add_argument(
        "--action-source",
        choices=ACTION_SOURCES,
        default=d.action_source,
        help="arm targets: recorded commands, or the measured joints one control period later "
        "(kinesthetic / leader-arm demos); auto: commands if every episode has them",
    )
    p.add_argument(
        "--gripper-source",
        choices=GRIPPER_SOURCES,
        default=d.gripper_source,
        help="gripper targets: command topic or franka_gripper action goals, or the measured "
        "finger width one control period later; auto: commands if every episode has them",
    )
    return p


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--model-override expects KEY=JSON, got {item!r}")
        out[key] = json.loads(value)
    return out


def run(args: argparse.Namespace) -> dict:
    d = TaskConfig()
    out = Path(args.out)
    resuming = args.resume and (out / "train_state.json").is_file()
    if resuming:
        policy = TaskPolicy.from_pretrained(out)
        config = policy.config
        log.info("resuming %s (its saved config wins over flags)", out)
    else:
        if args.resume:
            log.warning("--resume: %s holds no train_state.json; starting fresh", out)
        config = TaskConfig(
            model=args.model,
            model_overrides=_overrides(args.model_override),
            library=args.library,
            router=RouterConfig(
                routing=args.routing,
                k_min=args.k_min,
                anneal=not args.no_anneal,
                anneal_steps=args.anneal_steps
                if args.anneal_steps is not None
                else args.steps // 2,
                new_experts=args.new_experts,
                fixed_expert=args.fixed_expert,
            ),
            head=args.head,
            neck=args.neck,
            action_mode=args.action_mode,
            chunk_len=args.chunk_len,
            control_rate_hz=args.control_rate,
            image_topics=args.image_topic or list(d.image_topics),
            router_per_camera=args.router_per_camera,
            state_topic=args.state_topic,
            action_topic=args.action_topic,
            gripper_topic=args.gripper_topic,
            action_source=args.action_source,
            gripper_source=args.gripper_source,
        )
        if args.dataset and not args.image_topic:  # the dataset's cameras, realsense-ros topics
            from ver_core.data.lerobot_read import dataset_cameras

            config.image_topics = [camera_topic(c) for c in dataset_cameras(args.dataset)]
        torch.manual_seed(args.seed)  # a fresh library is then the same run to run (feature cache)
        policy = TaskPolicy.build(config)
    s = policy.parameter_summary()
    log.info(
        "parameters: library %d, robot router %d (%.3f%% of the model, limit 0.4%%), new experts %d, "
        "neck %d, head %d",
        s["library"],
        s["robot_router"],
        s["router_percent_of_model"],
        s["new_experts"],
        s["neck"],
        s["head"],
    )
    if s["router_percent_of_model"] >= 0.4:
        log.warning(
            "WARNING: router parameters are %.3f%% of the model (>= 0.4%%)",
            s["router_percent_of_model"],
        )
    cache = Path(args.cache_dir) if args.cache_dir else out / "cache"
    data = _load_data(args, config, policy.model.config.img_size, cache)
    policy.config.action_source = data.action_source  # the checkpoint records the choice
    policy.config.gripper_source = data.gripper_source
    log.info(
        "%d samples from %d episodes (%d skipped)",
        len(data),
        len(data.episode_names),
        len(data.skipped),
    )
    train_cfg = TrainConfig(
        steps=args.steps,
        head_steps=args.head_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        val_fraction=args.val_fraction,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        progress=not args.no_progress,
        plots=not args.no_plots,
        augment_views=args.augment_views,
        augment_shift=args.augment_shift,
        augment_color=args.augment_color,
        state_noise=args.state_noise,
    )
    trainer = RouterTrainer(policy, data, out, train_cfg, cache_dir=cache)
    if resuming:
        trainer.resume()
    metrics = trainer.fit()
    log.info("task checkpoint written to %s (val loss %s)", out, metrics["final_val_loss"])
    return metrics


def camera_topic(camera: str) -> str:
    """The image topic a camera of a dataset gets (realsense-ros naming: its namespace)."""
    return f"/{camera}/camera/color/image_raw"


def _load_data(args: argparse.Namespace, config: TaskConfig, image_size: int, cache: Path):
    """Training samples from --bag or --dataset, by the config's cameras, joints and sources."""
    if args.dataset:
        from ver_core.data.lerobot_read import load_lerobot

        return load_lerobot(
            args.dataset,
            config.chunk_len,
            config.control_rate_hz,
            image_size,
            cameras=config.cameras,
            joint_names=config.joint_names,
            action_source=config.action_source,
            cache_dir=cache,
        )
    topics = TopicConfig(
        images=config.image_topics,
        state=config.state_topic,
        action=config.action_topic,
        gripper=config.gripper_topic,
        joint_names=config.joint_names,
        finger_joint_names=config.finger_joint_names,
        gripper_state=args.gripper_state_topic,
        gripper_open_width=config.gripper_max_width,
    )
    return load_demos(
        args.bag,
        topics,
        config.chunk_len,
        config.control_rate_hz,
        image_size,
        args.include_failed,
        cache,
        config.action_source,
        config.gripper_source,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        run(args)
    except (FileNotFoundError, ValueError, KeyError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ver-eval: closed-loop evaluation of a task checkpoint in the simulator.

Success rate (Wilson 95 % CI), episode lengths, latency per stage, an image strip + GIF of one
rollout, a distance plot and results.json, on held-out seeds ``--seed, --seed + 1, ...``.

--in-process   runs the deployed controller (encoder -> policy -> smoothing -> safety gate, the
               objects the nodes run, with the deployment config) against the simulator on its
               own clockwork, latency modelled (no DDS); --open-loop instead predicts a chunk,
               executes --execute-steps actions and predicts again (a diagnostic).
--through-ros  starts the deployment graph (sim -> encoder -> policy -> safety -> sim, real ROS
               processes, via ver-bringup) and supervises episodes over ROS services.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering unless the user chose

from ver_core.eval.evaluate import DEFAULT_EVAL_SEED, EvalConfig

CONTROLLERS = ("policy", "expert", "hold", "random")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ver-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint", type=Path, help="task checkpoint directory (ver-train-router --out)"
    )
    p.add_argument("--episodes", type=int, default=20, help="held-out episodes (default 20)")
    p.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_EVAL_SEED,
        help=f"first seed (default {DEFAULT_EVAL_SEED})",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--in-process",
        dest="mode",
        action="store_const",
        const="in-process",
        help="step the env directly (default)",
    )
    mode.add_argument(
        "--through-ros",
        dest="mode",
        action="store_const",
        const="through-ros",
        help="run the ROS deployment graph",
    )
    p.set_defaults(mode="in-process")
    p.add_argument("--out", type=Path, help="output directory (default runs/eval/<time>)")
    p.add_argument(
        "--max-steps",
        type=int,
        default=EvalConfig.max_steps,
        help=f"control steps before an episode fails (default {EvalConfig.max_steps})",
    )
    p.add_argument(
        "--open-loop",
        action="store_true",
        help="--in-process: receding-horizon diagnostic instead of the deployed controller",
    )
    p.add_argument(
        "--latency",
        type=float,
        default=-1.0,
        help="--in-process deployed loop: seconds per perception call (default: measured here)",
    )
    p.add_argument(
        "--execute-steps",
        type=int,
        default=8,
        help="--open-loop: actions executed per predicted chunk (default 8)",
    )
    p.add_argument(
        "--obs-delay-steps",
        type=int,
        default=0,
        help="--in-process: the policy sees observations N control steps old and skips the "
        "chunk's first N actions, as the deployed graph does with its latency (a diagnostic)",
    )
    p.add_argument(
        "--width",
        type=int,
        default=224,
        help="render width, as the demos were recorded (default 224)",
    )
    p.add_argument("--height", type=int, default=224, help="render height (default 224)")
    p.add_argument(
        "--controller",
        choices=CONTROLLERS,
        default="policy",
        help="policy (default) or a reference: scripted expert, hold still, random walk",
    )
    p.add_argument(
        "--rtf",
        type=float,
        default=1.0,
        help="--through-ros: simulator speed as a fraction of real time (default 1.0; lower it on a busy machine)",
    )
    p.add_argument("--no-media", action="store_true", help="skip the strip, GIF and plot")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the policy (default 1: the simulator renders on the other core, and "
        "several threads on a few shared cores slow inference down; 0: torch default)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-episode progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.controller == "policy" and args.checkpoint is None:
        print(
            "ver-eval: --checkpoint is required (or pick --controller expert|hold|random)",
            file=sys.stderr,
        )
        return 2
    if args.checkpoint is not None and not (args.checkpoint / "config.json").is_file():
        print(
            f"ver-eval: {args.checkpoint} is not a task checkpoint (no config.json)",
            file=sys.stderr,
        )
        return 2
    try:
        config = EvalConfig(
            episodes=args.episodes,
            seed=args.seed,
            max_steps=args.max_steps,
            execute_steps=args.execute_steps,
            obs_delay_steps=args.obs_delay_steps,
            loop="open-loop" if args.open_loop else "deployed",
            latency_s=args.latency,
            width=args.width,
            height=args.height,
            media=not args.no_media,
        )
    except ValueError as e:
        print(f"ver-eval: {e}", file=sys.stderr)
        return 2
    out = args.out or Path("runs") / "eval" / time.strftime("%Y%m%d-%H%M%S")
    progress = None if args.quiet else print
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    meta = {
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "controller": args.controller,
    }
    if args.mode == "through-ros":
        if args.obs_delay_steps:
            print(
                "ver-eval: --obs-delay-steps models latency in-process; the ROS graph has its own",
                file=sys.stderr,
            )
            return 2
        if args.controller != "policy":
            print("ver-eval: --through-ros evaluates a --checkpoint policy only", file=sys.stderr)
            return 2
        from ver_ros.eval_graph import evaluate_through_ros

        task = json.loads((args.checkpoint / "config.json").read_text()).get("task", {})
        report = evaluate_through_ros(
            args.checkpoint,
            config,
            out,
            control_hz=float(task.get("control_rate_hz", 10.0)),
            progress=progress,
            rtf=args.rtf,
            threads=args.threads,
        )
    else:
        report = _in_process(args, config, out, meta, progress)
    from ver_core.eval.report import format_summary

    print(
        f"== ver-eval ({report['mode']}, {report['episodes']} held-out episodes from seed {config.seed})"
    )
    print(format_summary(report))
    return 0


def _in_process(args, config: EvalConfig, out: Path, meta: dict, progress) -> dict:
    from ver_core.eval.evaluate import evaluate, policy_predictor
    from ver_core.eval.rollout import (
        ChunkController,
        ExpertController,
        HoldController,
        RandomController,
    )
    from ver_core.sim import FrankaPickEnv, SimConfig

    env = FrankaPickEnv(SimConfig(width=config.width, height=config.height))
    if args.controller == "policy":
        from ver_core.policy import TaskPolicy

        policy = TaskPolicy.from_pretrained(args.checkpoint)
        meta["task"] = json.loads((args.checkpoint / "config.json").read_text()).get("task", {})
        if config.loop == "deployed":
            return _deployed(policy, args, config, out, meta, progress)
        controller = ChunkController(
            policy_predictor(policy), config.execute_steps, config.obs_delay_steps
        )
    elif args.controller == "expert":
        controller = ExpertController(env)
    elif args.controller == "hold":
        controller = HoldController()
    else:
        controller = RandomController()
    return evaluate(controller, config, out, env=env, meta=meta, progress=progress)


def _deployed(policy, args, config: EvalConfig, out: Path, meta: dict, progress) -> dict:
    """The controller the nodes run, built with the deployment config they read."""
    from ver_core.deploy.controller import build_controller
    from ver_core.deploy.settings import DeploySettings
    from ver_core.eval.closed_loop import LoopTiming
    from ver_core.eval.evaluate import evaluate_controller
    from ver_ros.graph import default_config_path

    config_path = default_config_path()
    settings = DeploySettings.from_yaml(config_path)
    controller = build_controller(policy, settings, checkpoint_dir=args.checkpoint)
    fixed = config.latency_s if config.latency_s >= 0 else None
    timing = LoopTiming(control_hz=policy.config.control_rate_hz, encoder_s=fixed)
    meta["deploy_config"] = str(config_path)
    return evaluate_controller(controller, config, out, timing, meta, progress)


if __name__ == "__main__":
    sys.exit(main())

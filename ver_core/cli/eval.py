"""ver-eval: closed-loop evaluation of a task checkpoint in the simulator.

Success rate (Wilson 95 % CI), episode lengths, latency per stage, an image strip + GIF of one
rollout, a distance plot and results.json, on held-out seeds ``--seed, --seed + 1, ...``.

--in-process   runs the deployed controller (encoder -> policy -> smoothing -> safety gate, the
               objects the nodes run, with the deployment config they read) against the
               simulator on its own clockwork, latency modelled (no DDS); --open-loop instead
               predicts a chunk, executes --execute-steps actions and predicts again (a diagnostic).
--through-ros  starts the deployment graph (sim -> encoder -> policy -> safety -> sim, real ROS
               processes, via ver-bringup) and supervises episodes over ROS services.

Options are the fields of EvalConfig plus the ones below; the options a run used are written to
OUT/ver-eval.yaml (--config reads them back).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering unless the user chose

from ver_core.cli import options
from ver_core.eval.evaluate import EvalConfig

PROG = "ver-eval"
ALIASES = options.Aliases(
    rename={
        "--in-process": ("--mode", "in-process"),
        "--through-ros": ("--mode", "through-ros"),
        "--open-loop": ("--loop", "open-loop"),
    }
)


@dataclass
class EvalCommand:
    """Closed-loop evaluation of a task checkpoint (or a reference controller) in the simulator."""

    checkpoint: Path | None = None  # task checkpoint directory (ver-train-router --out)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # in-process: step the simulator directly; through-ros: run the ROS deployment graph
    mode: Literal["in-process", "through-ros"] = "in-process"
    out: Path | None = None  # output directory (None: runs/eval/<time>)
    # policy, or a reference: the scripted expert, holding still, a random walk
    controller: Literal["policy", "expert", "hold", "random"] = "policy"
    # --through-ros: simulator speed as a fraction of real time (lower it on a slow or busy
    # machine); 0: auto, slowed so that encoder + policy keep up (ver_ros.eval_graph.auto_rtf)
    rtf: float = 1.0
    # --through-ros: the encoder node's backend (tensorrt | onnxruntime | torch; unavailable ones
    # fall back); '' = the graph's launch default (ver_ros.eval_graph.deployed_backend: torch)
    backend: str = ""
    # torch threads of the policy (1: the simulator renders on the other core; 0: torch default)
    threads: int = 1
    quiet: bool = False  # no per-episode progress lines
    config: Path | None = None  # YAML file of these options (OUT/ver-eval.yaml); flags win


def main(argv: list[str] | None = None) -> int:
    try:
        args, _ = options.parse(EvalCommand, argv, PROG, __doc__, ALIASES)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    config = args.eval
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
        if config.obs_delay_steps:
            print(
                "ver-eval: --obs-delay-steps models latency in-process; the ROS graph has its own",
                file=sys.stderr,
            )
            return 2
        if args.controller != "policy":
            print("ver-eval: --through-ros evaluates a --checkpoint policy only", file=sys.stderr)
            return 2
        options.save(dataclasses.replace(args, out=out), out, PROG)
        from ver_ros.eval_graph import auto_rtf, evaluate_through_ros

        rtf = args.rtf
        if rtf == 0:
            rtf, seconds = auto_rtf(
                args.checkpoint,
                args.threads,
                budget_s=config.observation_budget_s,
                backend=args.backend or None,
            )
            print(
                f"ver-eval: encoder + policy take {seconds:.3f} s per observation here: "
                f"simulator at {rtf:g} x real time (--rtf 0: auto)",
                flush=True,
            )

        task = json.loads((args.checkpoint / "config.json").read_text()).get("task", {})
        report = evaluate_through_ros(
            args.checkpoint,
            config,
            out,
            control_hz=float(task.get("control_rate_hz", 10.0)),
            progress=progress,
            rtf=rtf,
            threads=args.threads,
            backend=args.backend or None,
        )
    else:
        options.save(dataclasses.replace(args, out=out), out, PROG)
        report = _in_process(args, config, out, meta, progress)
    from ver_core.eval.report import format_summary

    print(
        f"== ver-eval ({report['mode']}, {report['episodes']} held-out episodes from seed {config.seed})"
    )
    print(format_summary(report))
    return 0


def _in_process(args, config: EvalConfig, out: Path, meta: dict, progress) -> dict:
    from ver_core.eval.evaluate import eval_env, evaluate, policy_predictor
    from ver_core.eval.rollout import (
        ChunkController,
        ExpertController,
        HoldController,
        RandomController,
    )

    env = eval_env(config)
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
    if config.observation_budget_s is not None:
        settings = settings.with_observation_budget(config.observation_budget_s)
    controller = build_controller(policy, settings, checkpoint_dir=args.checkpoint)
    fixed = config.latency_s if config.latency_s >= 0 else None
    timing = LoopTiming(control_hz=policy.config.control_rate_hz, encoder_s=fixed)
    meta["deploy_config"] = str(config_path)
    return evaluate_controller(controller, config, out, timing, meta, progress)


if __name__ == "__main__":
    sys.exit(main())

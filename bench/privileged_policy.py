"""Privileged-pose diagnostic: the policy head given the cube's true pose in place of image features.

It separates perception from control. The same kind of head as a task policy (MLP, 16-step
chunks, the same normalization, the same demos) sees the cube's pose (from the sim-only
``/sim/object_pose`` the demos record) plus proprioception. If it fails, no image feature can
make the policy succeed: the data, the action timing or the controller are at fault.

    python bench/privileged_policy.py --bag runs/demo/demos --episodes 50 [--pose initial]
        [--gripper binary|latest|smooth] [--mode deployed|open-loop --execute-steps N]
        [--out bench/results/privileged.json]

``--pose current``: the pose at the frame's time; ``initial``: the episode's first pose only.
``--mode deployed``: evaluated through the deployed controller (``ver_core.eval.closed_loop``:
encoder -> policy -> smoothing -> safety gate on the simulator's clockwork, latency modelled);
``open-loop``: the old receding-horizon loop (predict, execute ``--execute-steps``, repeat).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch
from torch import nn

from ver_core.data import TopicConfig, load_demos
from ver_core.policy.heads import MLPHead
from ver_core.policy.normalization import ActionNormalization, NormStats

POSE_DIM = 5  # x, y, z, sin(4 yaw), cos(4 yaw): a cube looks the same every quarter turn


def pose_features(pose: np.ndarray) -> np.ndarray:
    """(N, 7) x, y, z, qw, qx, qy, qz -> (N, 5) features."""
    w, x, y, z = pose[:, 3], pose[:, 4], pose[:, 5], pose[:, 6]
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.stack(
        [pose[:, 0], pose[:, 1], pose[:, 2], np.sin(4 * yaw), np.cos(4 * yaw)], axis=1
    ).astype(np.float32)


@dataclass
class PrivilegedConfig:
    chunk_len: int = 16
    control_rate_hz: float = 10.0
    state_dim: int = 8
    action_dim: int = 8
    action_mode: str = "absolute"
    hidden_dim: int = 512
    neck_dim: int = 256


class PrivilegedPolicy(ActionNormalization, nn.Module):
    """pose features (B, 1, 1, 5) + state (B, 8) -> chunk (B, H, 8): a task policy's head and
    normalization with a pose embedding in place of the image neck."""

    def __init__(self, config: PrivilegedConfig, stats: NormStats) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Sequential(
            nn.Linear(POSE_DIM, 128), nn.GELU(), nn.Linear(128, config.neck_dim)
        )
        self.head = MLPHead(
            config.neck_dim + config.state_dim,
            config.hidden_dim,
            config.chunk_len,
            config.action_dim,
        )
        self.stats = stats
        for name, t in stats.tensors().items():
            self.register_buffer(name, t, persistent=False)
        self.register_buffer("pose_mean", torch.zeros(POSE_DIM), persistent=False)
        self.register_buffer("pose_std", torch.ones(POSE_DIM), persistent=False)

    def condition(self, pose: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        pose = pose.reshape(pose.shape[0], -1)[:, :POSE_DIM]
        p = (pose - self.pose_mean) / self.pose_std
        s = (state - self.state_mean) / self.state_std
        return torch.cat([self.embed(p), s], dim=-1)

    def loss(self, pose, state, actions):
        return self.head.loss(self.condition(pose, state), self.normalize_actions(actions, state))

    @torch.no_grad()
    def predict_chunk(self, pose, state, generator=None):
        normalized = self.head.sample(self.condition(pose, state)).clamp(-1, 1)
        return self.unnormalize_actions(normalized, state)


def episode_initial(pose: np.ndarray, episode: np.ndarray) -> np.ndarray:
    """Each sample's pose replaced by its episode's first pose."""
    out = pose.copy()
    for e in np.unique(episode):
        idx = np.flatnonzero(episode == e)
        out[idx] = pose[idx[0]]
    return out


def train(data, pose: np.ndarray, steps: int, seed: int = 0) -> PrivilegedPolicy:
    torch.manual_seed(seed)
    cfg = PrivilegedConfig(chunk_len=data.actions.shape[1])
    stats = NormStats.for_task(data.states, data.actions, cfg.action_mode, 0.08)
    policy = PrivilegedPolicy(cfg, stats)
    feats = pose_features(pose)
    policy.pose_mean.copy_(torch.from_numpy(feats.mean(0)))
    policy.pose_std.copy_(torch.from_numpy(np.maximum(feats.std(0), 1e-3)))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    f, s, a = (torch.from_numpy(x) for x in (feats, data.states, data.actions))
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(f), 256))
        for g in opt.param_groups:
            g["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = policy.loss(f[idx], s[idx], a[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy.eval()


class PosePerception:
    """Stands in for the encoder: the cube's pose read from the simulator when a frame is taken
    (``initial``: the pose at the episode's first frame)."""

    def __init__(self, env, which: str, noise_m: float = 0.0, bias_m: float = 0.0) -> None:
        self.env, self.which = env, which
        self.noise_m, self.bias_m = noise_m, bias_m  # per-frame noise / per-episode bias (m)
        self.rng = np.random.default_rng(0)
        self._bias = np.zeros(2)
        self.cameras = ["camera"]
        self._first = None
        self._seed = None

    def __call__(self, views):
        if self.which == "initial" and self._first is not None and self.env.seed == self._seed:
            pose = self._first
        else:
            if self.env.seed != self._seed:
                self._bias = self.rng.normal(0.0, self.bias_m, 2)
            obs = self.env.observation()
            pose = pose_features(np.concatenate([obs.cube_pos, obs.cube_quat])[None])[0]
            self._first, self._seed = pose, self.env.seed
        if self.noise_m or self.bias_m:
            pose = pose.copy()
            pose[:2] += self._bias + self.rng.normal(0.0, self.noise_m, 2)
        return pose[None, None, :].astype(np.float32), np.zeros((1, 0, 1, 1), np.int64)


def evaluate(policy, args) -> dict:
    from ver_core.deploy.controller import Controller, EncoderStage, PolicyStage
    from ver_core.deploy.pipeline import ChunkPredictor
    from ver_core.deploy.settings import DeploySettings
    from ver_core.eval.closed_loop import LoopTiming, run_controller_episode
    from ver_core.eval.rollout import ChunkController, run_episode
    from ver_core.safety import SafetyGate
    from ver_core.sim import FrankaPickEnv, SimConfig
    from ver_core.sim.stepper import SimStepper

    env = FrankaPickEnv(SimConfig(width=64, height=64, wrist_width=64, wrist_height=64))
    results = []
    if args.mode == "deployed":
        settings = DeploySettings.from_yaml(args.config)
        if args.gripper:
            settings.smoothing = dataclasses.replace(settings.smoothing, gripper=args.gripper)
        perception = PosePerception(env, args.pose, args.pose_noise, args.pose_bias)
        predictor = ChunkPredictor(policy, settings.smoothing)
        ctrl = Controller(
            EncoderStage(perception, settings.budget),
            PolicyStage(predictor, ["camera"], budget=settings.budget),
            SafetyGate(settings.safety, settings.limits),
        )
        stepper = SimStepper(env)
        timing = LoopTiming(encoder_s=args.latency, policy_s=0.0)
        for i in range(args.episodes):
            perception._first = None
            ep, _ = run_controller_episode(stepper, ctrl, args.seed + i, args.max_steps, timing)
            results.append(ep)
    else:
        perception = PosePerception(env, args.pose)

        def predict(image, state, latency):
            pose, _ = perception([image])
            t = torch.from_numpy(pose)[None]
            s = torch.as_tensor(state, dtype=torch.float32)[None]
            return policy.predict_chunk(t, s)[0].double().numpy()

        ctrl = ChunkController(predict, args.execute_steps)
        for i in range(args.episodes):
            perception._first = None
            results.append(run_episode(env, ctrl, args.seed + i, args.max_steps))
    ok = sum(r.success for r in results)
    return {
        "successes": ok,
        "episodes": len(results),
        "closest_m_mean": float(np.mean([r.min_distance for r in results])),
        "steps_mean": float(np.mean([r.steps for r in results])),
        "failed_seeds": [r.seed for r in results if not r.success],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--bag", type=Path, required=True)
    p.add_argument("--pose", choices=("current", "initial"), default="current")
    p.add_argument("--mode", choices=("deployed", "open-loop"), default="deployed")
    p.add_argument("--execute-steps", type=int, default=8)
    p.add_argument("--latency", type=float, default=0.08, help="deployed: s from frame to tokens")
    p.add_argument("--pose-noise", type=float, default=0.0, help="m of noise on x, y per frame")
    p.add_argument("--pose-bias", type=float, default=0.0, help="m of error on x, y per episode")
    p.add_argument(
        "--gripper",
        choices=("vote", "binary", "latest", "smooth"),
        default=None,
        help="deployed: the smoother's gripper mode (default: the config's)",
    )
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=100_000)
    p.add_argument("--max-steps", type=int, default=150)
    p.add_argument("--train-steps", type=int, default=3000)
    p.add_argument("--config", type=Path, default=Path("config/franka_pick.yaml"))
    p.add_argument("--cache-dir", type=Path, default=Path("runs/cache_privileged"))
    p.add_argument("--out", type=Path, default=None, help="append the result to this JSON file")
    p.add_argument("--label", default="")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    topics = TopicConfig(object_pose="/sim/object_pose")
    data = load_demos(args.bag, topics, 16, 10.0, 32, cache_dir=args.cache_dir)
    if data.object_pose is None:
        print(
            "the demos hold no /sim/object_pose: record them with ver-record-demos", file=sys.stderr
        )
        return 2
    pose = (
        data.object_pose
        if args.pose == "current"
        else episode_initial(data.object_pose, data.episode)
    )
    t0 = time.time()
    policy = train(data, pose, args.train_steps)
    row = {
        "label": args.label,
        "pose": args.pose,
        "mode": args.mode,
        "execute_steps": args.execute_steps if args.mode == "open-loop" else None,
        "latency_s": args.latency if args.mode == "deployed" else None,
        "pose_noise_m": args.pose_noise,
        "pose_bias_m": args.pose_bias,
        "gripper": args.gripper if args.mode == "deployed" else None,
        "demos": len(data.episode_names),
        "train_s": round(time.time() - t0, 1),
        **evaluate(policy, args),
        "load_1min": os.getloadavg()[0],
    }
    print(json.dumps(row))
    if args.out:
        rows = json.loads(args.out.read_text()) if args.out.is_file() else []
        rows.append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How far off is a keypose policy's estimator, on demonstrations of scenes it never saw?

A keypose policy (``ver-train-router --keypose``) estimates, from the routed tokens of every
camera, the arm pose at the next gripper event; its head then acts on (estimate, joints). With
the true keypose the head picks the cube (bench/results/keypose_estimator.json, "true keypose"
rows), so the estimator is the part to measure. This runs a checkpoint's estimator over every
frame of held-out demonstrations (``--bag``: episodes of other seeds than the training ones) and
compares the estimate with the demonstrated keypose where it matters, at the hand: the distance
between the tool-centre points of the two arm poses (forward kinematics of the sim's Panda), in
cm, overall and by phase (the fraction of the way from the episode's start to its grasp:
``far`` < 1/3, ``mid`` 1/3..0.8, ``near`` 0.8..1). A grasp tolerates about 1.5 cm
(bench/results/privileged_noise.json).

    python bench/keypose_estimator.py --checkpoint runs/demo/policy --bag runs/heldout/demos \
        [--label 'make demo, 50 demos'] [--out bench/results/keypose_estimator.json]

``--true-keypose-episodes N`` also runs the checkpoint's head with the TRUE keypose (the scripted
expert's commanded joints at its close event in that scene) in place of the estimate, through the
deployed controller (encoder 0.08 s per view, policy 0.01 s, staleness budget 0.4 s, 120 steps) on
held-out seeds from 100000: the success the head reaches when perception is perfect.

Rows accumulate in ``--out`` (one per checkpoint and bag), so checkpoints trained on different
numbers of demos compare on the same held-out scenes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch

from ver_core.data import TopicConfig, load_demos
from ver_core.eval.kinematics import TcpKinematics
from ver_core.model.preprocess import preprocess_images
from ver_core.policy import TaskPolicy
from ver_core.policy.keypose import keypose_labels

ROOT = Path(__file__).resolve().parent.parent
PHASES = {"far": (0.0, 1 / 3), "mid": (1 / 3, 0.8), "near": (0.8, 1.0 + 1e-9)}


def grasp_phase(actions: np.ndarray, episode: np.ndarray, gripper_open: float) -> np.ndarray:
    """Per sample, the fraction of the way from its episode's first sample to the first gripper
    event (1 there, > 1 after it)."""
    closed = actions[:, 0, -1] < gripper_open / 2
    out = np.zeros(len(actions))
    for e in np.unique(episode):
        idx = np.flatnonzero(episode == e)
        events = idx[1:][closed[idx[1:]] != closed[idx[:-1]]]
        end = events[0] if len(events) else idx[-1]
        out[idx] = (idx - idx[0]) / max(end - idx[0], 1)
    return out


def summarize(err_cm: np.ndarray, phase: np.ndarray) -> dict:
    row = {
        "frames": int(len(err_cm)),
        "mean_cm": round(float(err_cm.mean()), 3),
        "median_cm": round(float(np.median(err_cm)), 3),
        "within_1.5cm": round(float((err_cm < 1.5).mean()), 3),
    }
    for name, (lo, hi) in PHASES.items():
        sel = (phase >= lo) & (phase < hi)
        row[f"{name}_cm"] = round(float(err_cm[sel].mean()), 3) if sel.any() else None
    return row


@torch.no_grad()
def estimator_errors(
    policy: TaskPolicy, data, batch: int = 32, episodes: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """TCP distance (cm) between estimated and demonstrated keypose for every frame with a
    keypose (of ``episodes``, default all), and each frame's grasp phase. Keys: ``regression``
    (the keypose head) and, for a grasp-point policy, ``grasp_point`` (the keypose moved onto the
    detected point: what the head acts on)."""
    cfg = policy.config
    keypose, valid = keypose_labels(data.actions, data.episode, cfg.gripper_max_width)
    phase = grasp_phase(data.actions, data.episode, cfg.gripper_max_width)
    chosen = np.ones(len(valid), bool) if episodes is None else np.isin(data.episode, episodes)
    idx = np.flatnonzero(valid & (phase <= 1.0) & chosen)
    if len(idx) == 0:
        raise ValueError("no frame before a gripper event in these demos: nothing to compare")
    policy.eval()
    kin = TcpKinematics()
    names = ["regression"] + (["grasp_point"] if cfg.grasp_point else [])
    err = {name: np.empty(len(idx)) for name in names}
    for s in range(0, len(idx), batch):
        rows = idx[s : s + batch]
        views = data.images[rows]  # (b, V, s, s, 3) uint8: deployment's preprocessing
        x = preprocess_images(views.reshape(-1, *views.shape[2:]), policy.model.config.img_size)
        tokens = policy.encode(x.unflatten(0, views.shape[:2])).tokens
        state = torch.from_numpy(data.states[rows]).float()
        est = {"regression": policy.estimate_keypose(tokens, state).numpy()}
        if cfg.grasp_point:
            est["grasp_point"] = policy.corrected_keypose(tokens, state).numpy()
        for name in names:
            for k, r in enumerate(rows):
                err[name][s + k] = np.linalg.norm(kin.tcp(est[name][k]) - kin.tcp(keypose[r])) * 100
    return err, phase[idx]


def expert_keypose(env, seed: int, max_steps: int = 400) -> np.ndarray | None:
    """The scripted expert's commanded arm joints when it starts closing the hand in scene
    ``seed`` (the demos' grasp keypose), or None if it never gets there."""
    from ver_core.sim import ExpertConfig, ScriptedExpert
    from ver_core.sim.expert import CLOSE

    obs = env.reset(seed)
    expert = ScriptedExpert(ExpertConfig(control_hz=env.config.control_hz))
    expert.reset(obs.arm_q)
    for _ in range(max_steps):
        q, width = expert.act(obs.arm_q, obs.gripper_width, obs.cube_pos, obs.cube_quat)
        if expert.phase == CLOSE:
            return q
        obs = env.step(q, width)
    return None


def expert_scene_episodes(
    policy: TaskPolicy, episodes: int, seed0: int, max_steps: int, on_scene, label: str
) -> list[bool]:
    """Closed loop through the deployed controller (in-process, 0.08 s per view, budget 0.4 s)
    on seeds ``seed0, seed0 + 1, ...``; before each episode ``on_scene(keypose)`` gets the
    scripted expert's keypose of that scene (scenes the expert never grasps in are skipped).
    Returns each episode's success."""
    from ver_core.deploy.controller import build_controller
    from ver_core.deploy.settings import DeploySettings
    from ver_core.eval.closed_loop import LoopTiming, run_controller_episode
    from ver_core.sim import FrankaPickEnv, SimConfig
    from ver_core.sim.stepper import SimStepper

    settings = DeploySettings.from_yaml(ROOT / "config" / "franka_pick.yaml")
    controller = build_controller(policy, settings.with_observation_budget(0.4))
    sizes = {"width": 224, "height": 224, "wrist_width": 224, "wrist_height": 224}
    env = FrankaPickEnv(SimConfig(**sizes))
    ok = []
    for seed in range(seed0, seed0 + episodes):
        kp = expert_keypose(env, seed)
        if kp is None:
            continue
        on_scene(kp)
        ep, _ = run_controller_episode(
            SimStepper(env), controller, seed, max_steps, LoopTiming(encoder_s=0.08, policy_s=0.01)
        )
        ok.append(bool(ep.success))
        print(f"{label}, seed {seed}: {'success' if ep.success else 'fail'}", flush=True)
    return ok


def true_keypose_success(policy: TaskPolicy, episodes: int, seed0: int = 100000) -> dict:
    """Closed loop through the deployed controller with the head acting on the true keypose
    (in place of the regressed or grasp-point-corrected estimate, in every action mode)."""
    truth: dict[str, torch.Tensor] = {}
    estimate, corrected = policy.estimate_keypose, policy.corrected_keypose

    def true_keypose(tokens, state, tracker=None):
        return truth["keypose"].expand(len(state), -1)

    def on_scene(kp):
        truth["keypose"] = torch.as_tensor(kp, dtype=torch.float32)[None]

    policy.estimate_keypose = policy.corrected_keypose = true_keypose
    try:
        ok = expert_scene_episodes(policy, episodes, seed0, 120, on_scene, "true keypose")
    finally:
        policy.estimate_keypose, policy.corrected_keypose = estimate, corrected
    return {"successes": int(sum(ok)), "episodes": len(ok), "seeds_from": seed0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a keypose task checkpoint")
    p.add_argument("--bag", required=True, help="held-out demonstrations (other seeds)")
    p.add_argument(
        "--validation-episodes",
        action="store_true",
        help="only the episodes the checkpoint's training held out for validation (--bag: its "
        "training demos)",
    )
    p.add_argument("--label", default=None, help="row name (default: the checkpoint path)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--true-keypose-episodes", type=int, default=0, help="closed loop, true keypose")
    p.add_argument("--cache-dir", default=None, help="demo cache (default: <bag>/../cache)")
    p.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "keypose_estimator.json"
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    policy = TaskPolicy.from_pretrained(a.checkpoint)
    cfg = policy.config
    if not cfg.keypose:
        raise SystemExit(f"{a.checkpoint} is not a keypose policy (trained without --keypose)")
    topics = TopicConfig.of_task(cfg)
    cache = a.cache_dir or str(Path(a.bag).resolve().parent / "cache")
    t0 = time.perf_counter()
    data = load_demos(
        a.bag, topics, cfg.chunk_len, cfg.control_rate_hz, policy.model.config.img_size,
        cache_dir=cache, action_source=cfg.action_source, gripper_source=cfg.gripper_source,
    )  # fmt: skip
    episodes = None
    if a.validation_episodes:
        from ver_core.train.trainer import STATE_FILE, TrainConfig, split_episodes

        state = json.loads((Path(a.checkpoint) / STATE_FILE).read_text())
        val_fraction = state["train_config"].get("val_fraction", TrainConfig.val_fraction)
        names = split_episodes(len(state["episodes"]), val_fraction)[1]
        held = {state["episodes"][i] for i in names}
        episodes = np.array([i for i, n in enumerate(data.episode_names) if n in held])
    err, phase = estimator_errors(policy, data, episodes=episodes)
    row = {
        "label": a.label or a.checkpoint,
        "checkpoint": a.checkpoint,
        "bag": a.bag + (" (validation episodes)" if a.validation_episodes else ""),
        "episodes": len(data.episode_names) if episodes is None else len(episodes),
        **summarize(err["regression"], phase),
        **({"grasp_point": summarize(err["grasp_point"], phase)} if "grasp_point" in err else {}),
        "seconds": round(time.perf_counter() - t0, 1),
        **(
            {"true_keypose": true_keypose_success(policy, a.true_keypose_episodes)}
            if a.true_keypose_episodes
            else {}
        ),
        "load_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(row))
    out = json.loads(a.out.read_text()) if a.out.is_file() else {}
    out.setdefault(
        "what",
        "TCP distance (cm) between a keypose policy's estimated and the demonstrated keypose on "
        "every frame before the grasp of held-out demonstrations (bench/keypose_estimator.py)",
    )
    out["machine"] = platform.processor() or platform.machine()
    rows = [r for r in out.get("rows", []) if (r["checkpoint"], r["bag"]) != (a.checkpoint, a.bag)]
    out["rows"] = rows + [row]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Do a library's tokens tell the cube from a distractor? A per-patch linear probe at the home pose.

The identity failures of make demo (the hand goes to a sphere or cylinder that both cameras take
for the cube) can come from the library (its tokens hold no cube-versus-distractor difference a
head could read) or from the policy's heads (the difference is there, 100 demos do not teach it).
This probe separates the two. It renders ``--scenes`` held-out scenes with three distractors at
the home pose through the evaluation's cameras and sizes (seeds from 200000: neither demos nor
the evaluation's held-out seeds), labels every patch of the model's 14x14 grid whose pixels are
at least 20% cube as cube and at least 20% distractor as distractor, and fits one class-balanced
logistic regression, cube against distractor, on the object patches of the first 2/3 of the
scenes, per feature set:

- ``bvt``: the frozen BVT tokens the policy caches,
- ``library_average``: the library's output, every expert averaged (a dense distilled student's
  output tokens when ``--library`` is one),
- ``checkpoint_routed`` (with ``--checkpoint``): the tokens the trained policy's router gives its
  heads,
- ``segmentation_teacher``: the per-class pixel fractions of each patch (what the
  ``sim_segmentation`` teacher gave the distillation): the ceiling.

On the held-out third it reports the balanced patch accuracy and, per view that shows the cube and
a distractor, whether the object patch the probe scores highest is a cube patch
(``identity_hit``): the question the grasp-point tracker's start asks.

    .venv/bin/python bench/probe_identity.py --checkpoint runs/demo/policy \
        --out bench/results/probe_identity.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe_localization import fit_probe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OBJECT_FRACTION = 0.2  # a patch shows an object from this fraction of its pixels on
CAMERAS = ("camera", "wrist_camera")


def render_home_scenes(seeds, cameras, grid: int, placement=None) -> dict[str, np.ndarray]:
    """Per scene at the home pose: the RGB view of every camera (n, V, H, W, 3) and its per-patch
    cube / distractor pixel fractions (n, V, P) on the model's grid (the squash-resize the
    policy's preprocessing does). ``placement``: (camera_pos, camera_target) of the scene camera
    (None: the simulator's)."""
    import dataclasses

    import torch.nn.functional as F

    from ver_core.eval.evaluate import EvalConfig, eval_env
    from ver_core.sim import FrankaPickEnv
    from ver_core.sim.config import SEG_CLASSES

    env = eval_env(EvalConfig())
    if placement is not None:
        pos, target = (tuple(map(float, v)) for v in placement)
        config = dataclasses.replace(env.config, camera_pos=pos, camera_target=target)
        env.close()
        env = FrankaPickEnv(config)
    env.config.min_distractors = 3  # every scene shows the identity question
    views, cube, distractor = [], [], []
    try:
        for seed in seeds:
            env.reset(seed)
            views.append(np.stack([env.render(cam) for cam in cameras]))
            fr = []
            for cam in cameras:
                seg = torch.from_numpy(env.render_segmentation(cam).astype(np.int64))
                masks = torch.stack(
                    [(seg == SEG_CLASSES[k]).float() for k in ("cube", "distractor")]
                )[None]
                fr.append(F.adaptive_avg_pool2d(masks, (grid, grid))[0].flatten(1).numpy())
            cube.append(np.stack([f[0] for f in fr]))
            distractor.append(np.stack([f[1] for f in fr]))
    finally:
        env.close()
    return {"views": np.stack(views), "cube": np.stack(cube), "distractor": np.stack(distractor)}


@torch.no_grad()
def feature_sets(
    library: str, checkpoint: str | None, views: np.ndarray, image_size: int | None = None
) -> dict[str, np.ndarray]:
    """views (n, V, H, W, 3) -> (n, V, P, D) patch tokens per feature set (class tokens dropped).
    The checkpoint's router sees all V views of a scene at once, as it does when deployed.
    ``image_size``: run the library at that resolution (``TaskConfig.image_size``); a checkpoint
    runs at its own, which must be the same."""
    from ver_core.model import load_library, preprocess_images
    from ver_core.policy import TaskConfig, TaskPolicy
    from ver_core.router import RouterConfig

    model = load_library(library).eval()
    if image_size is not None:
        model.resize_input(image_size)
    # a dense distilled student (moe_blocks=0) has no library: its output tokens stand in
    routing = "dense" if model.config.moe_blocks == 0 else "average"
    average = TaskPolicy(TaskConfig(router=RouterConfig(routing=routing)), model).eval()
    trained = TaskPolicy.from_pretrained(checkpoint).eval() if checkpoint else None
    if trained is not None and trained.model.config.img_size != model.config.img_size:
        raise ValueError(
            f"{checkpoint} runs at {trained.model.config.img_size} px, the probe at "
            f"{model.config.img_size} px: give --image-size {trained.model.config.img_size}"
        )
    n, v = views.shape[:2]
    grid = model.config.img_size // model.config.patch_size
    out: dict[str, list] = {"bvt": [], "library_average": []}
    if trained is not None:
        out["checkpoint_routed"] = []

    def patches(t: torch.Tensor, b: int) -> np.ndarray:
        return t[..., -grid * grid :, :].reshape(b, v, grid * grid, t.shape[-1]).float().numpy()

    for start in range(0, n, 10):
        chunk = views[start : start + 10]
        b = len(chunk)
        x = preprocess_images(chunk.reshape(-1, *chunk.shape[2:]), size=model.config.img_size)
        bvt = model.forward_bvt(x)  # (b * V, 1 + P, D)
        out["bvt"].append(patches(bvt, b))
        out["library_average"].append(patches(average.route(bvt).tokens, b))
        if trained is not None:
            tb = trained.model.forward_bvt(x)
            routed = trained.route(tb.reshape(b, v, *tb.shape[1:])).tokens
            out["checkpoint_routed"].append(patches(routed, b))
    return {k: np.concatenate(x) for k, x in out.items()}


def identity_scores(
    features: np.ndarray, cube: np.ndarray, distractor: np.ndarray, n_fit: int
) -> dict:
    """Fit cube-vs-distractor on the object patches of the first ``n_fit`` views; score the rest."""
    is_cube = cube >= OBJECT_FRACTION
    is_distractor = (distractor >= OBJECT_FRACTION) & ~is_cube
    obj = is_cube | is_distractor
    d = features.shape[-1]
    fit_x = features[:n_fit][obj[:n_fit]].reshape(-1, d)
    fit_y = is_cube[:n_fit][obj[:n_fit]].astype(np.float32)
    score = fit_probe(fit_x, fit_y)
    correct_cube, correct_distractor, hits = [], [], []
    for f, c, o in zip(features[n_fit:], is_cube[n_fit:], obj[n_fit:], strict=True):
        if not o.any():
            continue
        s = score(f[o])
        labels = c[o]
        correct_cube += list(s[labels] > 0)
        correct_distractor += list(s[~labels] <= 0)
        if labels.any() and (~labels).any():
            hits.append(bool(labels[int(np.argmax(s))]))
    return {
        "fit_object_patches": int(len(fit_y)),
        "fit_cube_share": round(float(fit_y.mean()), 3),
        "test_cube_patches": len(correct_cube),
        "test_distractor_patches": len(correct_distractor),
        "balanced_accuracy": round(
            0.5 * (float(np.mean(correct_cube)) + float(np.mean(correct_distractor))), 3
        ),
        "views_with_both": len(hits),
        "identity_hit": round(float(np.mean(hits)), 3) if hits else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--library", default=str(ROOT / "assets" / "ver_tiny_sim_library"))
    p.add_argument("--checkpoint", default=None, help="a trained policy: adds checkpoint_routed")
    p.add_argument("--scenes", type=int, default=300)
    p.add_argument("--first-seed", type=int, default=200_000)
    p.add_argument("--cameras", nargs="+", default=list(CAMERAS), choices=CAMERAS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--image-size", type=int, default=224, help="the policy's input resolution (px)")
    p.add_argument(
        "--camera-pos", type=float, nargs=3, default=None, help="scene camera position (m)"
    )
    p.add_argument(
        "--camera-target", type=float, nargs=3, default=None, help="point it looks at (m)"
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "probe_identity.json")
    args = p.parse_args(argv)
    if args.scenes < 3:
        p.error("--scenes must be >= 3 (2/3 fit, 1/3 held out)")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    grid = args.image_size // 16  # VER-T's 16 px patches: 14 at 224 px
    placement = None
    if args.camera_pos is not None or args.camera_target is not None:
        from ver_core.sim.config import CAMERA_POS, CAMERA_TARGET

        placement = (args.camera_pos or CAMERA_POS, args.camera_target or CAMERA_TARGET)
    seeds = range(args.first_seed, args.first_seed + args.scenes)
    results: dict = {
        "benchmark": "identity probe (cube vs distractor per patch, home pose)",
        "library": args.library,
        "checkpoint": args.checkpoint,
        "scenes": args.scenes,
        "seeds": [args.first_seed, args.first_seed + args.scenes],
        "fitted_on_scenes": 2 * args.scenes // 3,
        "image_size": args.image_size,
        "scene_camera": None
        if placement is None
        else {"pos": placement[0], "target": placement[1]},
        "cameras": {},
    }
    data = render_home_scenes(seeds, args.cameras, grid, placement)
    feats = feature_sets(args.library, args.checkpoint, data["views"], args.image_size)
    feats["segmentation_teacher"] = np.stack([data["cube"], data["distractor"]], axis=-1)
    n_fit = 2 * args.scenes // 3
    for v, cam in enumerate(args.cameras):
        cube, distractor = data["cube"][:, v], data["distractor"][:, v]
        results["cameras"][cam] = {
            "cube_patches_per_view": round(float((cube >= OBJECT_FRACTION).sum(1).mean()), 2),
            "distractor_patches_per_view": round(
                float((distractor >= OBJECT_FRACTION).sum(1).mean()), 2
            ),
            "probes": {
                k: identity_scores(f[:, v], cube, distractor, n_fit) for k, f in feats.items()
            },
        }
        print(f"[probe_identity] {cam}: {json.dumps(results['cameras'][cam], indent=1)}")
    results.update(
        wall_s=round(time.perf_counter() - t0, 1),
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
        machine=f"{platform.machine()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does a VER library know where the cube is? A per-patch linear probe on simulator images.

Renders ``--images`` randomized scenes (224x224, seeds from 5000), labels every 16x16 patch
"cube" when the simulator's segmentation puts at least 20 % cube pixels in it, and fits one
logistic-regression probe per feature set on the first ``--fit`` images (default 2/3):

- ``bvt``: the BVT tokens (before the expert library),
- ``library_average``: the library's output with every expert averaged (no router to train),
- ``dense_student`` instead of both when ``--library`` is a dense distilled student
  (``moe_blocks=0``, the ablation's Theia-style backbone): its output tokens,
- ``segmentation_translator`` (with ``--translator-state``, the distillation's trainer state):
  the class fractions the distilled translator predicts from the library, routed by the
  segmentation teacher's own router: what the library holds about objects when read by a head
  trained on 800 images with dense labels instead of a policy neck trained on a few positions,
- ``segmentation_teacher``: the class fractions per patch from the simulator's segmentation (what
  the ``sim_segmentation`` teacher gives the distillation): the ceiling a library could reach.

On the held-out third it reports how often the highest-scoring patch of an image is a cube patch
(``top_patch_hit``) and how far (in patches) it lies from the cube's centroid. A library whose
tokens localize a one-patch cube poorly cannot give a policy the cube's position, however the
router or head are trained (docs/RESULTS.md).

It also trains the policy's own necks (+ a linear layer; conv, and spatial-softmax keypoints with
the ``spatial_`` prefix) to regress the cube's table position (x, y in m) from the same tokens
(``position_error_cm`` on the held-out scenes): the number to hold against what a grasp
tolerates (the 5 cm cube in the 8 cm hand: about 1.5 cm). ``--fit 45`` asks what 45 scenes, the
cube positions 50 demos give a policy, teach.

    python bench/probe_localization.py --library assets/ver_tiny_sim_library
    python bench/probe_localization.py --camera-pos 1.15 0 0.7 --camera-target 0.45 0 0.12
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "egl")

ROOT = Path(__file__).resolve().parent.parent
CUBE_FRACTION = 0.2  # a patch is a cube patch from this fraction of cube pixels on


def render_scenes(
    n: int, size: int = 224, patch: int = 16, camera: dict | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> images (n, size, size, 3) uint8, cube fraction per patch (n, g*g), cube xy (n, 2) m,
    fraction of every segmentation class per patch (n, g*g, classes): the sim_segmentation
    teacher's signal on the student's grid, i.e. what a perfectly distilled library could carry."""
    from ver_core.sim import FrankaPickEnv, SimConfig
    from ver_core.sim.config import SEG_CLASSES

    env = FrankaPickEnv(SimConfig(width=size, height=size, **(camera or {})))
    g = size // patch
    classes = max(SEG_CLASSES.values()) + 1
    images, fractions, xy, seg_tokens = [], [], [], []
    for i in range(n):
        obs = env.reset(5000 + i)
        images.append(env.render())
        xy.append(obs.cube_pos[:2].copy())
        seg = env.render_segmentation()
        onehot = (seg[..., None] == np.arange(classes)).astype(np.float32)  # (H, W, C)
        per_patch = onehot.reshape(g, patch, g, patch, classes).mean(axis=(1, 3))
        seg_tokens.append(per_patch.reshape(g * g, classes))
        fractions.append(per_patch[..., SEG_CLASSES["cube"]].reshape(-1))
    env.close()
    return np.stack(images), np.stack(fractions), np.stack(xy), np.stack(seg_tokens)


@torch.no_grad()
def patch_features(
    library: str, images: np.ndarray, translator_state: Path | None = None
) -> dict[str, np.ndarray]:
    """Feature sets of the library (one load, one BVT pass per image): ``bvt`` +
    ``library_average`` (or ``dense_student``), and with ``translator_state`` the distilled
    segmentation translator's prediction resampled to the patch grid
    (``segmentation_translator``, (n, P, C))."""
    from ver_core.model import load_library, preprocess_images
    from ver_core.policy import TaskConfig, TaskPolicy
    from ver_core.router import RouterConfig

    model = load_library(library).eval()
    c = model.config
    dense = c.moe_blocks == 0
    routing = RouterConfig(routing="dense" if dense else "average")
    policy = TaskPolicy(TaskConfig(router=routing), model).eval()
    translator, teacher = None, None
    if translator_state is not None:
        from safetensors.torch import load_file

        from ver_core.distill.translators import build_translators

        teachers = json.loads((Path(library) / "config.json").read_text())["distill"]["teachers"]
        teacher = next((t for t in teachers if t["key"] == "sim_segmentation"), None)
        if teacher is None:
            raise SystemExit(f"{library} was not distilled from sim_segmentation")
        translators = build_translators(c.embed_dim, c.grid_size, teachers)
        translators.load_state_dict(load_file(str(translator_state / "translators.safetensors")))
        translator = translators[teacher["key"]].eval()
    bvt, routed, seg = [], [], []
    for start in range(0, len(images), 25):
        x = preprocess_images(images[start : start + 25], size=c.img_size)
        tokens = model.forward_bvt(x)
        bvt.append(tokens[:, 1:])
        routed.append(policy.route(tokens).tokens[:, 1:])
        if translator is not None:
            lib = model.forward_library(tokens, router=f"teacher:{teacher['key']}")
            pred = translator(lib.tokens[:, 1:])  # (B, T, C) on the teacher grid
            maps = pred.transpose(1, 2).reshape(len(x), -1, *teacher["grid"])
            maps = torch.nn.functional.interpolate(maps, (c.grid_size,) * 2, mode="bilinear")
            seg.append(maps.flatten(2).transpose(1, 2))
    if dense:  # no library: the BVT is the whole student, its output the features
        out = {"dense_student": torch.cat(routed).numpy()}
    else:
        out = {"bvt": torch.cat(bvt).numpy(), "library_average": torch.cat(routed).numpy()}
    if seg:
        out["segmentation_translator"] = torch.cat(seg).numpy()
    return out


def fit_probe(x: np.ndarray, y: np.ndarray, steps: int = 300):
    """Class-balanced logistic regression (full batch Adam) -> scoring function."""
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    mean, std = xt.mean(0), xt.std(0) + 1e-4
    torch.manual_seed(0)  # the same init for every feature set, whatever ran before
    probe = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    pos_weight = (1 - yt.mean()) / yt.mean().clamp_min(1e-6)
    for _ in range(steps):
        logits = probe((xt - mean) / std).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, yt, pos_weight=pos_weight
        )
        opt.zero_grad()
        loss.backward()
        opt.step()

    def score(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return probe((torch.from_numpy(z).float() - mean) / std).squeeze(-1).numpy()

    return score


def evaluate(features: np.ndarray, fractions: np.ndarray, n_train: int) -> dict:
    n, p, d = features.shape
    g = int(round(p**0.5))
    labels = (fractions >= CUBE_FRACTION).astype(np.float32)
    score = fit_probe(features[:n_train].reshape(-1, d), labels[:n_train].reshape(-1))
    scores = score(features[n_train:].reshape(-1, d)).reshape(n - n_train, p)
    grid = np.stack(np.unravel_index(np.arange(p), (g, g)), axis=1).astype(np.float64)  # (P, 2)
    hits, dists = [], []
    for s, frac, lab in zip(scores, fractions[n_train:], labels[n_train:], strict=True):
        if frac.sum() == 0:
            continue  # cube hidden (behind the arm)
        top = int(s.argmax())
        hits.append(bool(lab[top] > 0))
        centroid = (grid * frac[:, None]).sum(0) / frac.sum()
        dists.append(float(np.linalg.norm(grid[top] - centroid)))
    return {
        "test_images": len(hits),
        "top_patch_hit": float(np.mean(hits)),
        "mean_distance_patches": float(np.mean(dists)),
        "median_distance_patches": float(np.median(dists)),
    }


def regress_position(
    features: np.ndarray, xy: np.ndarray, n_train: int, neck: str = "conv", steps: int = 600
) -> dict:
    """A policy neck (``conv`` or ``spatial``) + a linear layer: patch tokens -> cube (x, y);
    held-out error (cm)."""
    from ver_core.policy.neck import build_neck

    n, p, d = features.shape
    tokens = torch.cat([torch.zeros(n, 1, d), torch.from_numpy(features).float()], dim=1)
    tokens = (tokens - tokens[:n_train].mean((0, 1))) / (tokens[:n_train].std((0, 1)) + 1e-4)
    target = torch.from_numpy(xy).float()
    mu, sd = target[:n_train].mean(0), target[:n_train].std(0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        build_neck(neck, d, int(round(p**0.5)), 256), torch.nn.GELU(), torch.nn.Linear(256, 2)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, n_train, (32,), generator=gen)
        loss = torch.nn.functional.smooth_l1_loss(model(tokens[idx]), (target[idx] - mu) / sd)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model(tokens[n_train:]) * sd + mu
    err = (pred - target[n_train:]).norm(dim=1).numpy() * 100
    prefix = "" if neck == "conv" else f"{neck}_"
    return {
        f"{prefix}position_error_cm_mean": float(err.mean()),
        f"{prefix}position_error_cm_median": float(np.median(err)),
        f"{prefix}within_1_5cm": float((err <= 1.5).mean()),
        "predict_mean_error_cm": float(((target[n_train:] - mu).norm(dim=1) * 100).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--library", default=str(ROOT / "assets" / "ver_tiny_sim_library"))
    p.add_argument("--images", type=int, default=600)
    p.add_argument(
        "--fit",
        type=int,
        default=None,
        help="scenes the probes are fitted on (default 2/3 of --images; the rest are held out)",
    )
    p.add_argument(
        "--translator-state",
        type=Path,
        default=None,
        help="distillation trainer_state/ of --library: adds the segmentation_translator set",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--camera-pos", type=float, nargs=3, default=None, help="sim camera (m)")
    p.add_argument("--camera-target", type=float, nargs=3, default=None, help="its look-at (m)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "localization.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    from ver_core.sim import SimConfig

    camera = {"camera_pos": SimConfig().camera_pos, "camera_target": SimConfig().camera_target}
    if args.camera_pos:
        camera["camera_pos"] = tuple(args.camera_pos)
    if args.camera_target:
        camera["camera_target"] = tuple(args.camera_target)
    images, fractions, xy, seg_tokens = render_scenes(args.images, camera=camera)
    feats = patch_features(args.library, images, args.translator_state)
    feats["segmentation_teacher"] = seg_tokens
    n_train = 2 * args.images // 3 if args.fit is None else args.fit
    if not 0 < n_train < args.images:
        p.error(f"--fit must be in [1, {args.images - 1}]")
    results = {
        "benchmark": "cube localization probe",
        "library": args.library,
        "camera": camera,
        "images": args.images,
        "fitted_on": n_train,
        "cube_patches_per_image": float((fractions >= CUBE_FRACTION).sum(1).mean()),
        "probes": {
            k: {
                **evaluate(v, fractions, n_train),
                **regress_position(v, xy, n_train, "conv"),
                **regress_position(v, xy, n_train, "spatial"),
            }
            for k, v in feats.items()
        },
        "wall_s": round(time.perf_counter() - t0, 1),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["probes"], indent=2))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""End to end: teachers -> shards (ver-extract-teachers) -> distillation (ver-distill) -> library."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ver_core.cli.distill import main as distill_main
from ver_core.cli.extract_teachers import main as extract_main
from ver_core.distill.shards import ShardDataset
from ver_core.distill.synthetic import make_synthetic_images, save_tiny_hf_teachers
from ver_core.model import ExpertLibraryLayer, load_library

SMALL = [
    "--model-override",
    "depth=4",
    "--model-override",
    "moe_blocks=2",
    "--model-override",
    "embed_dim=64",
    "--model-override",
    "num_heads=2",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train faster single-threaded, and far faster on a busy shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distill")
    make_synthetic_images(root / "images", 32, sizes=((96, 96), (72, 120), (150, 100)))
    dino, vit = save_tiny_hf_teachers(root / "hf", kinds=("dinov2", "vit"))
    teachers = f"efficientnet_lite0,hf:{dino},hf:{vit}"
    rc = extract_main(
        [
            "--images",
            str(root / "images"),
            "--teachers",
            teachers,
            "--out",
            str(root / "shards"),
            "--shard-size",
            "12",
            "--no-progress",
        ]
    )
    assert rc == 0
    return root / "shards"


def _distill(shards: Path, out: Path, steps: int, *extra: str) -> int:
    return distill_main(
        [
            "--shards",
            str(shards),
            "--out",
            str(out),
            "--steps",
            str(steps),
            "--batch-size",
            "8",
            "--lr",
            "2e-3",
            "--no-progress",
            *SMALL,
            *extra,
        ]
    )


def _losses(out: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines()]


def test_shards_layout(shards: Path) -> None:
    manifest = json.loads((shards / "manifest.json").read_text())
    keys = [t["key"] for t in manifest["teachers"]]
    assert keys == ["efficientnet_lite0", "hf_tiny_dinov2", "hf_tiny_vit"]
    assert manifest["num_images"] == 32 and [s["count"] for s in manifest["shards"]] == [12, 12, 8]
    shard = load_file(str(shards / manifest["shards"][0]["file"]))
    assert shard["images"].dtype == torch.uint8 and shard["images"].shape == (12, 224, 224, 3)
    assert shard["feat.efficientnet_lite0"].dtype == torch.bfloat16
    assert shard["feat.efficientnet_lite0"].shape == (12, 49, 1280)
    assert shard["feat.hf_tiny_dinov2"].shape == (12, 256, 32)
    ds = ShardDataset(shards)
    _, feats = ds.batch(list(range(32)))
    for k, f in feats.items():  # z-normalized by the dataset statistics
        assert f.mean(dim=(0, 1)).abs().max() < 0.05, k
        live = ds.std[k] > 1e-3
        assert (f.std(dim=(0, 1))[live] - 1).abs().max() < 0.05, k


def test_distillation_loss_falls_and_library_loads(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "lib"
    assert _distill(shards, out, 30) == 0
    losses = _losses(out)
    assert len(losses) == 30 and all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.8 * first, (first, last)
    model = load_library(out)  # config.json + model.safetensors alone rebuild the model
    assert "default" in model.routers and "teacher:hf_tiny_vit" in model.routers
    assert torch.equal(
        model.routers["default"][0].gate.weight,
        model.routers["teacher:efficientnet_lite0"][0].gate.weight,
    )
    with torch.no_grad():
        tokens = model(torch.randn(1, 3, 224, 224))
    assert tokens.shape == (1, 197, 64)
    state = out / "trainer_state"
    assert {p.name for p in state.iterdir()} >= {
        "translators.safetensors",
        "optimizer.safetensors",
        "optimizer.json",
        "state.json",
        "rng_rank0.safetensors",
    }
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))
    util = json.loads((out / "expert_utilization.json").read_text())
    assert np.allclose(np.asarray(util["utilization"]).sum(-1), 1.0)
    png = (out / "expert_utilization.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_resume_continues_the_same_run(shards: Path, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _distill(shards, straight, 8) == 0
    assert _distill(shards, resumed, 4) == 0
    assert _distill(shards, resumed, 8, "--resume") == 0
    a, b = _losses(straight), _losses(resumed)
    assert len(b) == 8
    assert np.allclose(a, b, rtol=1e-4, atol=1e-5), (
        a,
        b,
    )  # same data order, RNG and optimizer state
    sa, sb = (
        load_file(str(straight / "model.safetensors")),
        load_file(str(resumed / "model.safetensors")),
    )
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5) for k in sa)


def test_resume_without_a_run_is_an_error(shards: Path, tmp_path: Path, capsys) -> None:
    assert _distill(shards, tmp_path / "nothing", 2, "--resume") == 2
    assert "holds no earlier run" in capsys.readouterr().err


def test_dense_student_distills_without_experts(shards: Path, tmp_path: Path) -> None:
    """``moe_blocks=0``: the Theia-style dense student of the ablation, same recipe, no library."""
    out = tmp_path / "dense"
    assert _distill(shards, out, 20, "--model-override", "moe_blocks=0") == 0
    losses = _losses(out)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert all(
        json.loads(ln)["mi"] == 0.0 for ln in (out / "metrics.jsonl").read_text().splitlines()
    )
    model = load_library(out)
    assert model.config.moe_blocks == 0 and len(model.bvt_blocks) == 4
    assert not any(isinstance(m, ExpertLibraryLayer) for m in model.modules())
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 197, 64)
    assert not (out / "expert_utilization.png").exists()  # nothing to map

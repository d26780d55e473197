"""Bad input to ver-extract-teachers / ver-distill: each a clear error naming the problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ver_core.cli.distill import main as distill_main
from ver_core.cli.extract_teachers import main as extract_main
from ver_core.distill.shards import ShardDataset, ShardError, shards_hold
from ver_core.distill.synthetic import make_synthetic_images


def _extract(images: Path, out: Path, teachers: str = "sim_depth", *extra: str) -> int:
    return extract_main(
        [
            "--images",
            str(images),
            "--teachers",
            teachers,
            "--out",
            str(out),
            "--shard-size",
            "3",
            "--no-progress",
            *extra,
        ]
    )


@pytest.fixture
def images(tmp_path: Path) -> Path:
    make_synthetic_images(tmp_path / "images", 6)
    return tmp_path / "images"


def test_unknown_teacher_name(images: Path, tmp_path: Path, capsys) -> None:
    assert _extract(images, tmp_path / "out", "sim_depth,dinov3_giant") == 2
    err = capsys.readouterr().err
    assert "unknown teacher 'dinov3_giant'" in err and "efficientnet_lite0" in err
    assert not (tmp_path / "out").exists()


def test_missing_weights_directory(images: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "models" / "dinov2-small"
    assert _extract(images, tmp_path / "out", f"hf:{missing}") == 2
    assert f"weights directory {missing} does not exist" in capsys.readouterr().err


def test_unreadable_image_is_named_and_nothing_is_left(
    images: Path, tmp_path: Path, capsys
) -> None:
    (images / "scene_0003.png").write_bytes(b"this is not a png")
    assert _extract(images, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and "scene_0003.png" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_too_small_image_is_named(images: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(images / "tiny.png")
    assert _extract(images, tmp_path / "out") == 2
    assert "tiny.png is 5x4: too small" in capsys.readouterr().err


def test_existing_output_is_not_overwritten(images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert _extract(images, out) == 0
    assert _extract(images, out) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert _extract(images, out, "sim_depth", "--overwrite") == 0


def test_corrupt_shard(images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "shards"
    assert _extract(images, out) == 0
    ShardDataset(out)  # intact
    shard = out / "shard_00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the tensor data
    shard.write_bytes(bytes(data))
    with pytest.raises(
        ShardError, match=r"shard .*shard_00001\.safetensors is corrupt: its sha256"
    ):
        ShardDataset(out)
    shard.write_bytes(bytes(data[:-100]))  # truncated
    assert distill_main(["--shards", str(out), "--out", str(tmp_path / "lib"), "--steps", "1"]) == 2
    assert "shard_00001.safetensors is corrupt" in capsys.readouterr().err
    shard.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")  # a bad header, size fixed up
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"][1]["bytes"] = shard.stat().st_size
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="shard_00001.safetensors is corrupt"):
        ShardDataset(out, verify=False)


def test_missing_shard_dir_and_manifest(tmp_path: Path, capsys) -> None:
    assert distill_main(["--shards", str(tmp_path / "none"), "--out", str(tmp_path / "lib")]) == 2
    assert f"shard directory {tmp_path / 'none'} does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardError, match="has no manifest.json"):
        ShardDataset(tmp_path / "empty")


def test_shards_hold_names_the_teachers_with_their_arguments(images: Path, tmp_path: Path) -> None:
    """make distill-sim extracts again when the shards hold other teachers: a segmentation
    teacher with class weights is not the unweighted one, and order counts."""
    out = tmp_path / "shards"
    assert not shards_hold(out, ["sim_depth"])  # nothing extracted yet
    assert _extract(images, out, "sim_depth,sim_segmentation:8:1=8/2=3") == 0
    assert shards_hold(out, ["sim_depth", "sim_segmentation:8:1=8/2=3"])
    assert not shards_hold(out, ["sim_depth", "sim_segmentation"])
    assert not shards_hold(out, ["sim_segmentation:8:1=8/2=3", "sim_depth"])
    # the weights act after z-normalization: the weighted channels' targets are that many times
    # the unweighted run's, the others equal (scaling the raw fractions would be normalized away)
    plain = tmp_path / "plain"
    assert _extract(images, plain, "sim_depth,sim_segmentation:8") == 0
    weighted, unweighted = ShardDataset(out), ShardDataset(plain)
    w = torch.ones(8)
    w[1], w[2] = 8.0, 3.0  # the synthetic scenes' object ids 1-3
    got = weighted.batch(range(len(weighted)))[1]["sim_segmentation"]
    ref = unweighted.batch(range(len(unweighted)))[1]["sim_segmentation"]
    assert ref[..., 1].abs().max() > 0 and ref[..., 2].abs().max() > 0  # both classes present
    assert torch.allclose(got, ref * w, rtol=1e-4, atol=1e-4)
    assert json.loads((out / "manifest.json").read_text())["teachers"][1]["channel_weights"] == [
        *w.tolist()
    ]
    (out / "manifest.json").write_text("{")
    with pytest.raises(ShardError, match="not valid JSON"):
        shards_hold(out, ["sim_depth"])


def test_shard_images_of_the_wrong_size(images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "shards112"
    assert _extract(images, out, "sim_depth", "--image-size", "112") == 0
    assert distill_main(["--shards", str(out), "--out", str(tmp_path / "lib"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "hold 112x112 images but the model takes 224x224" in err
    assert not (tmp_path / "lib" / "model.safetensors").exists()


def test_shard_tensor_with_wrong_shape(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    assert _extract(images, out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["teachers"][0]["channels"] = 7  # manifest and shards disagree
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ShardError, match=r"tensor 'feat.sim_depth' has shape \(3, 256, 4\), expected \(3, 256, 7\)"
    ):
        ShardDataset(out)


def test_invalid_settings_are_reported(images: Path, tmp_path: Path, capsys) -> None:
    assert (
        distill_main(["--shards", str(tmp_path), "--out", str(tmp_path / "lib"), "--steps", "0"])
        == 2
    )
    assert "steps must be >= 1" in capsys.readouterr().err


def test_existing_checkpoint_needs_resume_or_overwrite(
    images: Path, tmp_path: Path, capsys
) -> None:
    shards, lib = tmp_path / "shards", tmp_path / "lib"
    assert _extract(images, shards) == 0
    small = ["--model-override", "depth=2", "--model-override", "moe_blocks=1"]
    small += ["--model-override", "embed_dim=32", "--model-override", "num_heads=2"]
    cmd = ["--shards", str(shards), "--out", str(lib), "--steps", "1", "--batch-size", "2", *small]
    assert distill_main([*cmd, "--no-progress"]) == 0
    before = (lib / "model.safetensors").read_bytes()
    assert distill_main([*cmd, "--no-progress"]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert (lib / "model.safetensors").read_bytes() == before  # nothing lost
    assert distill_main([*cmd, "--no-progress", "--overwrite"]) == 0

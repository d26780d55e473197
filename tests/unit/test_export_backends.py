"""Encoder export: backend fallback, ONNX Runtime vs torch, ver-export, TensorRT path refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ver_core.export import (
    BackendUnavailable,
    RoutedEncoder,
    backend_status,
    build_encoder,
    normalize_backend,
    select_backend,
)


@pytest.fixture(scope="module")
def policy():
    from ver_core.policy import TaskConfig, TaskPolicy

    torch.manual_seed(0)
    return TaskPolicy.build(TaskConfig(chunk_len=4))


def test_fallback_chain_with_one_log_line():
    down = {"tensorrt": "no libnvinfer", "onnxruntime": None, "torch": None}
    chosen, msg = select_backend("tensorrt", status=lambda b: down[b])
    assert chosen == "onnxruntime"
    assert "tensorrt" in msg and "no libnvinfer" in msg and "falling back to 'onnxruntime'" in msg
    chosen, msg = select_backend("onnx", status=lambda b: None)
    assert (chosen, msg) == ("onnxruntime", None)
    chosen, msg = select_backend("tensorrt", status=lambda b: None if b == "torch" else "missing")
    assert chosen == "torch" and msg.count("missing") == 2


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown backend 'cuda-magic'"):
        normalize_backend("cuda-magic")


def test_tensorrt_really_unavailable_here_and_compile_refuses(policy):
    """This machine has no TensorRT and no GPU: the real code path must refuse cleanly."""
    why = backend_status("tensorrt")
    if why is None:
        pytest.skip("TensorRT is available here: exercise it on the device instead")
    from ver_core.export.tensorrt import compile_tensorrt

    with pytest.raises(BackendUnavailable, match="TensorRT backend unavailable"):
        compile_tensorrt(RoutedEncoder(policy))
    chosen, msg = select_backend("tensorrt")
    assert chosen == "onnxruntime" and "falling back" in msg


def test_static_graph_matches_policy_encode(policy):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    ref = policy.encode(x)  # two one-view observations
    tokens, experts = RoutedEncoder(policy)(x)  # the static graph batches them
    assert tokens.shape == (2, 197, 192) and experts.shape == (2, 3, 196, 2)
    torch.testing.assert_close(tokens, ref.tokens[:, 0], atol=1e-5, rtol=1e-5)
    assert torch.equal(experts, torch.stack([i[:, 0] for i in ref.expert_index], dim=1))
    for b in range(2):  # the sparse path takes the views of one observation
        sparse_tokens, sparse_experts = RoutedEncoder(policy, static_graph=False)(x[b : b + 1])
        torch.testing.assert_close(sparse_tokens, tokens[b : b + 1], atol=1e-5, rtol=1e-5)
        assert torch.equal(sparse_experts, experts[b : b + 1])


def test_ver_export_cli_writes_checked_onnx_and_runner_uses_it(policy, tmp_path, capsys):
    from ver_core.cli.export import main

    policy.save_pretrained(tmp_path / "task")
    assert main(["--checkpoint", str(tmp_path / "task"), "--backend", "onnx"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (tmp_path / "task" / "export" / "encoder.onnx").is_file()
    assert report["max_abs_token_diff"] < 1e-4 and report["expert_match"] > 0.99
    # the encoder node's runner picks the exported file up from the checkpoint
    fn, chosen, msg = build_encoder(policy, "onnxruntime", tmp_path / "task")
    assert (chosen, msg) == ("onnxruntime", None)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    ref_tokens, ref_experts = RoutedEncoder(policy)(x)
    tokens, experts = fn(x)
    assert float((tokens - ref_tokens).abs().max()) < 1e-4
    assert float((experts == ref_experts).float().mean()) > 0.99  # ties may flip in fp32
    assert np.isfinite(tokens.numpy()).all()


def test_ver_export_cli_errors(tmp_path, capsys):
    from ver_core.cli.export import main

    assert main(["--checkpoint", str(tmp_path / "missing"), "--backend", "onnx"]) == 2
    assert "config.json is missing" in capsys.readouterr().err


def test_dense_student_exports_to_onnx(tmp_path, capsys):
    """The ablation's dense distilled student (moe_blocks=0) deploys like a library: no experts."""
    from ver_core.cli.export import main
    from ver_core.model import build_model
    from ver_core.policy import TaskConfig, TaskPolicy
    from ver_core.router import RouterConfig

    torch.manual_seed(0)
    cfg = TaskConfig(chunk_len=4, router=RouterConfig(routing="dense"))
    dense = TaskPolicy(cfg, build_model("ver_tiny", depth=4, moe_blocks=0))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    tokens, experts = RoutedEncoder(dense)(x)
    assert experts.shape == (2, 0, 196, 6) and experts.dtype == torch.long
    torch.testing.assert_close(tokens, dense.encode(x).tokens[:, 0])
    dense.save_pretrained(tmp_path / "task")
    assert main(["--checkpoint", str(tmp_path / "task"), "--backend", "onnx"]) == 0
    assert json.loads(capsys.readouterr().out)["max_abs_token_diff"] < 1e-4
    fn, chosen, _ = build_encoder(dense, "onnxruntime", tmp_path / "task")
    onnx_tokens, onnx_experts = fn(x[:1])
    assert chosen == "onnxruntime" and onnx_experts.shape == (1, 0, 196, 6)
    assert float((onnx_tokens - tokens[:1]).abs().max()) < 1e-4

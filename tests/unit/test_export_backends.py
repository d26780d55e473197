"""Encoder export: backend and precision fallback, the grouped static graph vs the sparse torch
path, ONNX Runtime vs torch, torch.export (one and two views, fp32 and bf16), ver-export,
TensorRT path refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ver_core.export import (
    BackendUnavailable,
    RoutedEncoder,
    backend_status,
    bf16_status,
    build_encoder,
    normalize_backend,
    select_backend,
    select_precision,
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
    encoder = RoutedEncoder(policy)  # the static graph batches them
    assert encoder.dispatch == "grouped" and encoder.static_graph
    tokens, experts = encoder(x)
    assert tokens.shape == (2, 197, 192) and experts.shape == (2, 3, 196, 2)
    torch.testing.assert_close(tokens, ref.tokens[:, 0], atol=1e-5, rtol=1e-5)
    assert torch.equal(experts, torch.stack([i[:, 0] for i in ref.expert_index], dim=1))
    dense_tokens, dense_experts = RoutedEncoder(policy, dispatch="dense")(x)
    torch.testing.assert_close(dense_tokens, tokens, atol=1e-5, rtol=1e-5)
    assert torch.equal(dense_experts, experts)
    for b in range(2):  # the sparse path takes the views of one observation
        sparse_tokens, sparse_experts = RoutedEncoder(policy, static_graph=False)(x[b : b + 1])
        torch.testing.assert_close(sparse_tokens, tokens[b : b + 1], atol=1e-5, rtol=1e-5)
        assert torch.equal(sparse_experts, experts[b : b + 1])


@pytest.fixture(scope="module")
def two_camera_policy():
    from ver_core.policy import TaskConfig, TaskPolicy

    torch.manual_seed(0)
    topics = ["/camera/camera/color/image_raw", "/wrist_camera/camera/color/image_raw"]
    cfg = TaskConfig(chunk_len=4, image_topics=topics, router_per_camera=True)
    return TaskPolicy.build(cfg)


@pytest.mark.parametrize(
    "views,dispatch,precision",
    [(1, "grouped", "fp32"), (2, "grouped", "fp32"), (1, "dense", "fp32"), (1, "grouped", "bf16")],
)
def test_torch_export_with_static_shapes(policy, two_camera_policy, views, dispatch, precision):
    """torch.export.export (the torch-tensorrt route) of the encoder for a fixed (V, 3, 224, 224)
    input: the exported program gives the eager encoder's outputs (grouped: data-dependent row
    counts inside, static shapes at the boundary; dense: static throughout, what TensorRT gets;
    bf16: the autocast region is exported with it)."""
    task = policy if views == 1 else two_camera_policy
    encoder = RoutedEncoder(task, precision=precision, dispatch=dispatch)
    x = torch.randn(views, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    program = torch.export.export(encoder, (x,))
    tokens, experts = program.module()(x)
    ref_tokens, ref_experts = encoder(x)
    assert tokens.shape == (views, 197, 192) and tokens.dtype == torch.float32
    assert experts.shape == (views, 3, 196, 2)
    torch.testing.assert_close(tokens, ref_tokens, atol=1e-5, rtol=1e-5)
    assert torch.equal(experts, ref_experts)


def test_precision_selection_falls_back_with_one_line():
    assert select_precision("fp32") == ("fp32", None)
    assert select_precision("bf16", status=lambda d: None) == ("bf16", None)
    chosen, msg = select_precision("bf16", status=lambda d: "no bf16 here")
    assert chosen == "fp32" and "no bf16 here" in msg and "running 'fp32'" in msg
    chosen, msg = select_precision("bf16", backend="onnxruntime", status=lambda d: None)
    assert chosen == "fp32" and "ONNX" in msg
    with pytest.raises(ValueError, match="precision must be one of"):
        select_precision("fp8")


def test_bf16_encoder_close_to_fp32_where_the_cpu_has_bf16(policy):
    """The torch backend at precision bf16 (this CPU: AVX512-BF16) vs fp32: tokens within 0.02
    mean / 0.3 max absolute error, >= 95% of expert choices equal; the ONNX backend says it
    runs fp32."""
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    built = build_encoder(policy, "torch", precision="bf16")
    if bf16_status() is not None:
        assert built.precision == "fp32" and "bf16" in built.message
        pytest.skip(f"no native bf16 here: {bf16_status()}")
    assert (built.backend, built.precision, built.message) == ("torch", "bf16", None)
    tokens, experts = built.fn(x)
    ref_tokens, ref_experts = build_encoder(policy, "torch").fn(x)
    err = (tokens - ref_tokens).abs()
    assert tokens.dtype == torch.float32 and float(err.mean()) < 0.02 and float(err.max()) < 0.3
    assert float((experts == ref_experts).float().mean()) > 0.95
    onnx = build_encoder(policy, "onnxruntime", precision="bf16")
    assert onnx.precision == "fp32" and "ONNX" in onnx.message


def test_ver_export_cli_writes_checked_onnx_and_runner_uses_it(policy, tmp_path, capsys):
    from ver_core.cli.export import main

    policy.save_pretrained(tmp_path / "task")
    assert main(["--checkpoint", str(tmp_path / "task"), "--backend", "onnx"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (tmp_path / "task" / "export" / "encoder.onnx").is_file()
    assert report["max_abs_token_diff"] < 1e-4 and report["expert_match"] > 0.99
    # the encoder node's runner picks the exported file up from the checkpoint
    fn, chosen, msg, _ = build_encoder(policy, "onnxruntime", tmp_path / "task")
    assert (chosen, msg) == ("onnxruntime", None)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    ref_tokens, ref_experts = RoutedEncoder(policy, static_graph=False)(x)  # the torch backend
    tokens, experts = fn(x)
    assert float((tokens - ref_tokens).abs().max()) < 5e-5
    assert float((experts == ref_experts).float().mean()) > 0.99  # ties may flip in fp32
    assert np.isfinite(tokens.numpy()).all()


def test_onnx_encoder_without_an_export_leaves_no_scratch_file(policy, tmp_path, monkeypatch):
    """A checkpoint with no `ver-export` output: the runner exports a scratch graph, loads it
    and removes it (each node start used to leave a 30 MB file in /tmp); the encoder still
    matches the torch backend."""
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    built = build_encoder(policy, "onnxruntime", tmp_path / "no_export")
    assert built.backend == "onnxruntime"
    assert list(scratch.iterdir()) == []
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    tokens, _ = built.fn(x)
    ref_tokens, _ = RoutedEncoder(policy, static_graph=False)(x)
    assert float((tokens - ref_tokens).abs().max()) < 5e-5


def test_onnx_graph_runs_only_the_chosen_experts(policy, tmp_path):
    """The exported graph is the grouped dispatch: per MoE layer one row selection (NonZero)
    and two matrix products per expert, no all-experts-wide product (the old dense export)."""
    import onnx

    from ver_core.export.onnx_runtime import export_onnx

    path = export_onnx(RoutedEncoder(policy), tmp_path / "encoder.onnx")
    nodes = onnx.load(str(path)).graph.node
    assert sum(n.op_type == "NonZero" for n in nodes) == 3 * 6  # L layers x E experts
    assert not any(n.op_type == "Einsum" for n in nodes)


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
    fn, chosen, _, _ = build_encoder(dense, "onnxruntime", tmp_path / "task")
    onnx_tokens, onnx_experts = fn(x[:1])
    assert chosen == "onnxruntime" and onnx_experts.shape == (1, 0, 196, 6)
    assert float((onnx_tokens - tokens[:1]).abs().max()) < 1e-4


def test_torch_backend_runs_the_dense_dispatch_on_a_gpu_and_the_same_tokens(policy):
    """On CUDA the torch backend dispatches every expert in one GEMM (launch-bound batch 1,
    bench/results/encoder_gpu.json); on a CPU only the chosen experts run. Both give the same
    tokens (checked here on the CPU: no GPU in CI)."""
    from ver_core.export.runner import torch_dispatch

    assert torch_dispatch("cpu") == "sparse"
    assert torch_dispatch("cuda") == torch_dispatch("cuda:1") == "dense"
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    sparse_tokens, sparse_experts = build_encoder(policy, "torch").fn(x)
    dense_tokens, dense_experts = RoutedEncoder(policy, dispatch="dense")(x)
    torch.testing.assert_close(dense_tokens, sparse_tokens, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dense_experts, sparse_experts)


def test_tensorrt_compiles_for_the_policys_views_and_resolution(monkeypatch):
    """compile_tensorrt asks torch-tensorrt for the input the encoder node will feed: (V, 3, S, S)
    with V the policy's cameras and S its model's resolution (a 160 px policy is not compiled
    for 224). torch-tensorrt itself is replaced at its import boundary: no TensorRT here."""
    from ver_core.export import tensorrt
    from ver_core.policy import TaskConfig, TaskPolicy

    seen = {}

    class FakeInput:
        def __init__(self, shape, dtype):
            seen["shape"], seen["dtype"] = tuple(shape), dtype

    class FakeTRT:
        Input = FakeInput

        @staticmethod
        def compile(module, **kw):
            seen["precisions"] = kw["enabled_precisions"]
            return module

    cameras = ["/camera/camera/color/image_raw", "/wrist_camera/camera/color/image_raw"]
    policy = TaskPolicy.build(
        TaskConfig(
            image_topics=cameras, image_size=64, model_overrides={"depth": 2, "moe_blocks": 1}
        )
    )
    monkeypatch.setattr(tensorrt, "_import_trt", lambda: FakeTRT)
    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *a, **k: self)
    tensorrt.compile_tensorrt(RoutedEncoder(policy, dispatch="dense"), precision="fp16")
    assert seen["shape"] == (2, 3, 64, 64) and seen["dtype"] == torch.float32
    assert seen["precisions"] == {torch.float32, torch.float16}
    tensorrt.compile_tensorrt(RoutedEncoder(policy, dispatch="dense"), image_size=96, batch=1)
    assert seen["shape"] == (1, 3, 96, 96)

"""The encoder/policy nodes' computation without ROS: RGB -> tokens -> scheduled, smoothed chunk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ver_core.deploy import LatencyStats, SmoothingConfig
from ver_core.deploy.overlay import routing_overlay
from ver_core.deploy.pipeline import ChunkPredictor, Perception, inference_threads, load_policy
from ver_core.export import bf16_status


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from ver_core.policy import TaskConfig, TaskPolicy

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("task")
    TaskPolicy.build(TaskConfig(chunk_len=6, control_rate_hz=10.0)).save_pretrained(path)
    return load_policy(path)


def test_perception_torch_backend_times_encode_and_route(policy):
    stats = LatencyStats()
    perception = Perception(policy, "torch", stats=stats)
    rgb = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    tokens, experts = perception([rgb])
    assert tokens.shape == (1, 197, 192) and tokens.dtype == np.float32
    assert experts.shape == (1, 3, 196, 2) and experts.max() < 6
    assert {"preprocess", "encode", "route"} <= set(stats.stages())
    ref = policy.encode(perception.preprocess([rgb]))
    np.testing.assert_allclose(tokens, ref.tokens[:, 0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="expected 1 views"):
        perception([rgb, rgb])
    overlay = perception.overlay(rgb, experts[0])
    assert overlay.shape == (224, 224, 3) and overlay.dtype == np.uint8


def test_chunk_predictor_schedules_against_observation_time(policy):
    # gripper "smooth": this checks the ensemble arithmetic on every dimension
    pred = ChunkPredictor(policy, SmoothingConfig(mode="ensemble", decay=0.0, gripper="smooth"))
    tokens = np.zeros((197, 192), np.float32)
    state = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.04])
    first = pred(tokens, state, stamp=100.0, now=100.05)
    assert first.stamp == 100.0 and first.actions.shape == (6, 8)
    np.testing.assert_allclose(first.offsets, np.arange(6) / 10.0)
    raw = policy.predict_chunk(
        torch.zeros(1, 197, 192), torch.tensor(state, dtype=torch.float32)[None]
    )
    np.testing.assert_allclose(first.actions, raw[0].double().numpy(), atol=1e-6)
    second = pred(tokens + 1.0, state, stamp=100.2, now=100.25)
    raw2 = policy.predict_chunk(
        torch.ones(1, 197, 192), torch.tensor(state, dtype=torch.float32)[None]
    )
    # overlapping points are the equal-weight mean of both chunks; the tail is the new chunk
    np.testing.assert_allclose(
        second.actions[0], (raw2[0, 0].numpy() + first.sample(100.2)) / 2, atol=1e-5
    )
    np.testing.assert_allclose(second.actions[-1], raw2[0, -1].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="state needs 8"):
        pred(tokens, state[:7], stamp=101.0)


@pytest.mark.parametrize("align", ["image", "state"])
def test_chunk_predictor_aligns_the_first_action_with_the_image_or_the_state(policy, align):
    """The head conditions on the newest joint state (measured at ``state_stamp``, after the
    frame's ``stamp``). With ``align`` "state" the chunk's first action is scheduled at that
    state's time, the stamp (the observation's age, for the staleness rules) unchanged; with
    "image" at the frame's time. The actions are the same either way."""
    pred = ChunkPredictor(policy, SmoothingConfig(mode="latest", align=align))
    tokens = np.zeros((197, 192), np.float32)
    state = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.04])
    chunk = pred(tokens, state, stamp=100.0, now=100.25, state_stamp=100.2)
    want = 100.2 if align == "state" else 100.0
    assert chunk.stamp == 100.0 and chunk.start_time == pytest.approx(want)
    np.testing.assert_allclose(np.diff(chunk.offsets), 0.1)
    raw = policy.predict_chunk(
        torch.zeros(1, 197, 192), torch.tensor(state, dtype=torch.float32)[None]
    )
    np.testing.assert_allclose(chunk.actions[:, :7], raw[0, :, :7].double().numpy(), atol=1e-6)
    # a state older than the frame never moves the chunk before the frame
    pred.reset()
    early = pred(tokens, state, stamp=100.0, now=100.25, state_stamp=99.9)
    assert early.start_time == pytest.approx(100.0)
    with pytest.raises(ValueError, match="align"):
        SmoothingConfig(align="arrival")


def test_inference_threads_leave_a_core_to_the_graph(monkeypatch):
    assert inference_threads(3) == 3
    for cores, want in ((1, 1), (2, 1), (4, 3), (16, 4)):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        assert inference_threads(0) == want


@pytest.mark.skipif(bf16_status() is not None, reason="no native bf16 on this machine")
@pytest.mark.parametrize("head", ["mlp", "diffusion"])
def test_bf16_perception_and_head_close_to_fp32(head):
    """precision bf16 end to end (encoder + head) vs fp32 on the same frame: tokens within 0.02
    mean absolute error, actions within 0.05 rad (or m) of the fp32 chunk (the head's inputs
    differ by the tokens' bf16 error; measured 0.003 and 0.011); outputs stay float32 / float64."""
    from ver_core.policy import TaskConfig, TaskPolicy

    torch.manual_seed(0)
    policy = TaskPolicy.build(TaskConfig(chunk_len=4, head=head)).eval()
    rgb = np.random.default_rng(2).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    state = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.04])
    out = {}
    for precision in ("fp32", "bf16"):
        perception = Perception(policy, "torch", precision=precision)
        predictor = ChunkPredictor(policy, precision=precision)
        assert (perception.precision, predictor.precision) == (precision, precision)
        tokens, _ = perception([rgb])
        torch.manual_seed(1)  # the diffusion head's initial noise
        out[precision] = tokens, predictor(tokens[0], state, stamp=10.0, now=10.0).actions
    assert out["bf16"][0].dtype == np.float32
    assert np.abs(out["bf16"][0] - out["fp32"][0]).mean() < 0.02
    np.testing.assert_allclose(out["bf16"][1], out["fp32"][1], atol=0.05)


def test_overlay_rejects_bad_grids():
    with pytest.raises(ValueError, match="square grid"):
        routing_overlay(np.zeros((224, 224, 3), np.uint8), np.zeros((10, 2), int))


def test_load_policy_errors(tmp_path):
    with pytest.raises(ValueError, match="checkpoint"):
        load_policy("")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_policy(tmp_path)


def test_perception_of_a_dense_student_has_no_experts_and_no_overlay():
    """The ablation's dense distilled student (moe_blocks=0) runs through the deployed encoder."""
    from ver_core.model import build_model
    from ver_core.policy import TaskConfig, TaskPolicy
    from ver_core.router import RouterConfig

    torch.manual_seed(0)
    cfg = TaskConfig(chunk_len=4, router=RouterConfig(routing="dense"))
    dense = TaskPolicy(cfg, build_model("ver_tiny", depth=3, moe_blocks=0)).eval()
    rgb = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    for backend in ("torch", "onnxruntime"):
        perception = Perception(dense, backend)
        tokens, experts = perception([rgb])
        assert perception.backend == backend
        assert tokens.shape == (1, 197, 192) and experts.shape == (1, 0, 196, 6)
        ref = dense.encode(perception.preprocess([rgb])).tokens[:, 0].numpy()
        np.testing.assert_allclose(tokens, ref, atol=1e-4)
        assert perception.overlay(rgb, experts[0]) is None

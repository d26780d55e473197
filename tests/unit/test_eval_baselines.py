"""Frozen EfficientNet-Lite0 baseline policy: shapes, loss, save/load; eval graph parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from ver_core.eval import EvalConfig
from ver_core.eval.baselines import FrozenFeaturePolicy
from ver_core.policy import NormStats, TaskConfig, TaskPolicy


def test_frozen_feature_policy_round_trip(tmp_path):
    stats = NormStats([0.1] * 8, [0.5] * 8, [-2.0] * 8, [2.0] * 8)
    policy = FrozenFeaturePolicy(TaskConfig(chunk_len=4, hidden_dim=32, neck_dim=16), stats)
    images = torch.randn(2, 3, 224, 224)
    feats = policy.encode(images)
    assert feats.tokens.shape == (2, 50, 1280) and feats.expert_index == []
    state = torch.zeros(2, 8)
    loss = policy.loss(feats.tokens, state, torch.zeros(2, 4, 8))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in policy.head.parameters())
    assert not any(p.requires_grad for p in policy.encoder.parameters())  # frozen
    actions = policy.predict_chunk(feats.tokens, state)
    assert actions.shape == (2, 4, 8)
    assert torch.all(actions >= -2.0) and torch.all(actions <= 2.0)
    policy.save_pretrained(tmp_path / "ck")
    assert "encoder" not in " ".join(policy.state_dict())  # encoder weights come from their package
    again = FrozenFeaturePolicy.from_pretrained(tmp_path / "ck")
    torch.testing.assert_close(again.predict_chunk(feats.tokens, state), actions)


def test_frozen_feature_policy_rejects_other_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        FrozenFeaturePolicy.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "ver-task"}')
    with pytest.raises(ValueError, match="format"):
        FrozenFeaturePolicy.from_pretrained(tmp_path)


def test_eval_graph_parameters(tmp_path):
    pytest.importorskip("rclpy")
    from ver_ros.eval_graph import graph_parameters
    from ver_ros.graph import default_config_path

    params = graph_parameters(
        default_config_path(), EvalConfig(seed=7, width=96, height=64), tmp_path, rtf=0.5
    )
    sim = params["sim_node"]["ros__parameters"]
    assert (sim["seed"], sim["width"], sim["height"], sim["realtime"], sim["max_rtf"]) == (
        7,
        96,
        64,
        False,
        0.5,
    )
    assert params["safety_node"]["ros__parameters"]["publish_while_holding"] is False
    for node in ("encoder_node", "policy_node", "safety_node"):
        assert Path(params[node]["ros__parameters"]["latency_log"]).parent == tmp_path
    yaml.safe_dump(params)  # loadable by ROS as a parameter file
    shipped = params["/**"]["ros__parameters"]["observation_budget_s"]
    assert shipped <= 0.25  # no override: the deployment config's budget
    slow = graph_parameters(default_config_path(), EvalConfig(observation_budget_s=0.4), tmp_path)
    assert slow["/**"]["ros__parameters"]["observation_budget_s"] == 0.4
    with pytest.raises(ValueError, match="observation_budget_s"):
        EvalConfig(observation_budget_s=0.0)
    with pytest.raises(ValueError, match="real-time factor"):
        graph_parameters(default_config_path(), EvalConfig(), tmp_path, rtf=2.0)
    # the encoder's backend is a launch option of the graph (it wins over the parameter file):
    # the evaluation passes it to ver-bringup, whose dry run shows what the encoder node gets.
    # (Session 18's first make demo set it in the parameter file only: the graph ran torch while
    # auto_rtf had timed ONNX Runtime, and the simulator ran too fast for the chain: 39/50.)
    import subprocess
    import sys

    from ver_ros.eval_graph import bringup_command, deployed_backend, encoder_backend_from_log
    from ver_ros.graph import LAUNCH_ARGUMENTS

    assert deployed_backend() == LAUNCH_ARGUMENTS["backend"][0]
    ckpt = TaskPolicy.build(
        TaskConfig(model_overrides={"depth": 3, "moe_blocks": 2, "img_size": 32})
    ).save_pretrained(tmp_path / "task")
    param_file = tmp_path / "params.yaml"
    param_file.write_text(yaml.safe_dump(params))
    for backend, expected in ((None, deployed_backend()), ("onnxruntime", "onnxruntime")):
        cmd = bringup_command(ckpt, param_file, backend)
        out = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, check=True)
        encoder = [line for line in out.stdout.splitlines() if "encoder_node" in line]
        assert encoder and f"encoder_node:backend:={expected}" in encoder[0], out.stdout
        assert cmd[0] == sys.executable
    log = tmp_path / "bringup.log"
    log.write_text("[encoder_node]: encoder ready: backend onnxruntime (fp32, 1 threads), ...\n")
    assert encoder_backend_from_log(log) == "onnxruntime"
    log.write_text("nothing started\n")
    assert encoder_backend_from_log(log) is None
    assert encoder_backend_from_log(tmp_path / "missing.log") is None


def test_auto_rtf_slows_the_simulator_only_as_much_as_the_graph_needs(tmp_path):
    """--rtf 0: the simulator runs at chain_sim_s(budget) / (encoder + policy seconds per
    observation) x real time, clamped to [0.2, 1] in steps of 0.05; the allowance follows the
    staleness budget, so that the observation behind the executing command stays inside it."""
    import ver_ros.eval_graph as eval_graph

    ckpt = TaskPolicy.build(
        TaskConfig(model_overrides={"depth": 3, "moe_blocks": 2, "img_size": 32})
    ).save_pretrained(tmp_path / "task")
    sim = eval_graph.chain_sim_s(0.4)
    rtf, seconds = eval_graph.auto_rtf(ckpt, budget_s=0.4)
    assert 0 < seconds < sim and rtf == 1.0  # a tiny model keeps up
    # timed on the backend the graph will run (here ONNX Runtime's exported graph)
    rtf, seconds = eval_graph.auto_rtf(ckpt, budget_s=0.4, backend="onnxruntime")
    assert 0 < seconds < sim and rtf == 1.0
    # the worst age at the gate: a frame interval + 2 chains at CONTENTION x their idle time
    assert 1 / 15 + 2 * eval_graph.CONTENTION * sim == pytest.approx(0.4)
    assert eval_graph.chain_sim_s(0.25) < sim  # a tighter budget slows the simulator more
    with pytest.raises(ValueError, match="frame interval"):
        eval_graph.chain_sim_s(0.05)
    assert eval_graph.rtf_for(sim / 0.37, sim) == 0.35  # rounded down to 0.05 steps
    assert eval_graph.rtf_for(sim / 0.5, sim) == 0.5
    assert eval_graph.rtf_for(sim * 100, sim) == 0.2  # never slower than 0.2 x real time
    assert eval_graph.rtf_for(sim / 3, sim) == 1.0  # never faster than real time
    # make demo's 0.4 s budget: encoder + policy 0.258 s idle (session 20's slow VM) -> 0.4;
    # 0.27 s (session 10's machine) -> 0.35
    assert eval_graph.rtf_for(0.258, sim) == 0.4
    assert eval_graph.rtf_for(0.27, sim) == 0.35


def test_baseline_features_read_the_first_view_of_demo_images():
    """DemoData images carry a view axis (N, V, s, s, 3); the baseline encodes view 0 only."""
    import numpy as np

    from ver_core.eval.baselines import _features

    class Probe:
        def features(self, x):  # (B, 3, S, S) -> one "token" per image: its mean
            return x.mean(dim=(1, 2, 3))[:, None, None]

    rng = np.random.default_rng(0)
    views = rng.integers(0, 255, (5, 2, 32, 32, 3), dtype=np.uint8)
    got = _features(Probe(), views, batch=2)
    want = _features(Probe(), np.ascontiguousarray(views[:, 0]), batch=2)
    assert got.shape == (5, 1, 1) and torch.equal(got, want)
    assert not torch.equal(got, _features(Probe(), np.ascontiguousarray(views[:, 1]), batch=2))


def test_the_evaluation_predictor_runs_the_baseline_on_its_first_view():
    """ver-eval's predictor over the baseline (bench_ablation's effnet row crashed here: the
    baseline has no ``model.config.img_size`` and got a view axis): two rendered views in, the
    chunk the first view alone gives out."""
    import numpy as np

    from ver_core.deploy import LatencyStats
    from ver_core.eval.evaluate import PolicyPredictor

    torch.manual_seed(0)
    policy = FrozenFeaturePolicy(TaskConfig(chunk_len=4, hidden_dim=32, neck_dim=16)).eval()
    rng = np.random.default_rng(0)
    views = rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    predictor = PolicyPredictor(policy)
    both = predictor(views, np.zeros(8), LatencyStats())
    first = predictor(views[0], np.zeros(8), LatencyStats())
    assert both.shape == (4, 8) and np.array_equal(both, first)
    second = predictor(views[1], np.zeros(8), LatencyStats())
    assert not np.array_equal(both, second)

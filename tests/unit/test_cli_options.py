"""Command lines generated from the config dataclasses: one source for every option, the
README's flags still parse, a config file for every command, the options saved beside outputs."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import field
from pathlib import Path

import pytest
import yaml

from ver_core.cli import eval as eval_cli
from ver_core.cli import export as export_cli
from ver_core.cli import export_dataset as dataset_cli
from ver_core.cli import options
from ver_core.cli import train_router as train_cli
from ver_core.data import TopicConfig
from ver_core.data.lerobot_export import ExportConfig
from ver_core.eval.evaluate import EvalConfig
from ver_core.policy import TaskConfig
from ver_core.router import RouterConfig
from ver_core.train import TrainConfig

COMMANDS = [
    (train_cli.TrainRouterCommand, train_cli.ALIASES),
    (eval_cli.EvalCommand, eval_cli.ALIASES),
    (export_cli.ExportCommand, None),
    (dataset_cli.ExportDatasetCommand, dataset_cli.ALIASES),
]


def parse(cls, argv, aliases=None):
    return options.parse(cls, argv, "test", "test", aliases)


def flags(cls) -> set[str]:
    """Every option a command's dataclasses define, as its flag."""
    out = set()
    for f in dataclasses.fields(cls):
        kind = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(kind):
            out |= flags(type(kind))
        elif f.name not in options.FREE_FORM:  # dicts: --model-override KEY=JSON, or --config
            out.add("--" + f.name.replace("_", "-"))
    return out


@pytest.mark.parametrize(("cls", "aliases"), COMMANDS)
def test_every_field_is_a_flag_and_the_parser_builds(cls, aliases, capsys):
    """Also the guard for new fields: a name used twice across a command's configs stops the
    parser from building, and this test fails naming it."""
    with pytest.raises(SystemExit) as e:
        parse(cls, ["--help"], aliases)
    assert e.value.code == 0
    text = capsys.readouterr().out
    missing = [f for f in sorted(flags(cls)) if f not in text]
    assert not missing, f"{cls.__name__}: no flag for {missing}"
    assert "--config" in text


def test_defaults_are_the_dataclasses_defaults():
    train, _ = parse(train_cli.TrainRouterCommand, ["--bag", "b", "--out", "o"], train_cli.ALIASES)
    assert train.train == TrainConfig() and train.task == TaskConfig()  # --steps 2000, not 1000
    ev, _ = parse(eval_cli.EvalCommand, ["--checkpoint", "c"], eval_cli.ALIASES)
    assert ev.eval == EvalConfig() and ev.eval.max_steps == EvalConfig.max_steps  # not 80
    ds, _ = parse(dataset_cli.ExportDatasetCommand, [], dataset_cli.ALIASES)
    assert ds.export == ExportConfig() and ds.topics == TopicConfig()
    assert ds.control_rate_hz == TaskConfig.control_rate_hz


def test_a_field_added_to_a_config_becomes_a_flag():
    extended = dataclasses.make_dataclass(
        "TrainConfigPlus", [("new_knob", int, field(default=7))], bases=(TrainConfig,)
    )
    command = dataclasses.make_dataclass(
        "Command", [("train", extended, field(default_factory=extended))]
    )
    cmd, given = parse(command, ["--new-knob", "3", "--steps", "5"])
    assert cmd.train.new_knob == 3 and cmd.train.steps == 5 and {"new_knob", "steps"} <= given


def test_readme_and_demo_flags_still_parse():
    argv = ["--bag", "demos", "--out", "runs/pick", "--library", "lib", "--head", "diffusion",
            "--steps", "300", "--head-steps", "3000", "--batch-size", "16", "--threads", "1",
            "--image-topic", "/camera/camera/color/image_raw",
            "--image-topic", "/wrist_camera/camera/color/image_raw", "--control-rate", "5",
            "--no-anneal", "--no-plots", "--no-progress", "--model-override=depth=3",
            "--model-override", "img_size=32", "--k-min", "1"]  # fmt: skip
    cmd, given = parse(train_cli.TrainRouterCommand, argv, train_cli.ALIASES)
    assert (cmd.bag, cmd.out, cmd.task.library, cmd.task.head) == (
        Path("demos"),
        Path("runs/pick"),
        "lib",
        "diffusion",
    )
    assert (cmd.train.steps, cmd.train.head_steps, cmd.train.batch_size, cmd.threads) == (
        300,
        3000,
        16,
        1,
    )
    assert cmd.task.image_topics == [
        "/camera/camera/color/image_raw",
        "/wrist_camera/camera/color/image_raw",
    ]
    assert cmd.task.control_rate_hz == 5.0 and cmd.task.router.anneal is False
    assert not cmd.train.plots and not cmd.train.progress and cmd.task.router.k_min == 1
    run = train_cli.resolve(cmd, given)
    assert run.task.model_overrides == {"depth": 3, "img_size": 32}
    assert run.task.router.anneal_steps == 150  # half of --steps unless given
    explicit = train_cli.resolve(
        *parse(train_cli.TrainRouterCommand, [*argv, "--anneal-steps", "40"], train_cli.ALIASES)
    )
    assert explicit.task.router.anneal_steps == 40
    ev, _ = parse(eval_cli.EvalCommand, ["--checkpoint", "runs/pick", "--episodes", "20", "--seed", "1000",
                                         "--through-ros", "--rtf", "0.5", "--out", "e"], eval_cli.ALIASES)  # fmt: skip
    assert (ev.eval.episodes, ev.eval.seed, ev.mode, ev.rtf) == (20, 1000, "through-ros", 0.5)
    ev, _ = parse(eval_cli.EvalCommand, ["--in-process", "--no-media"], eval_cli.ALIASES)
    assert ev.mode == "in-process" and ev.eval.media is False
    ex, _ = parse(
        export_cli.ExportCommand, ["--checkpoint", "runs/pick", "--backend", "onnx", "--no-check"]
    )
    assert (ex.checkpoint, ex.backend, ex.check) == (Path("runs/pick"), "onnx", False)


def test_config_file_then_flags(tmp_path):
    base = train_cli.TrainRouterCommand(
        bag=Path("demos"), out=Path("o"), train=TrainConfig(steps=300, lr=1e-3),
        task=TaskConfig(head="diffusion", router=RouterConfig(anneal_steps=77)),
    )  # fmt: skip
    path = options.save(base, tmp_path, "run")
    assert yaml.safe_load(path.read_text())["train"]["steps"] == 300
    cmd, given = parse(train_cli.TrainRouterCommand, ["--config", str(path), "--steps", "10"])
    assert cmd.train.steps == 10 and cmd.train.lr == 1e-3 and cmd.task.head == "diffusion"
    assert train_cli.resolve(cmd, given).task.router.anneal_steps == 77  # set in the file
    assert dataclasses.replace(cmd, config=None, train=base.train) == base


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: {stepz: 3}", "unknown options \\['stepz'\\] for TrainConfig"),
        ("task: {head: transformer}", "unknown head 'transformer'"),
        ("- a list", "must hold a mapping"),
    ],
)
def test_bad_config_files_are_named(tmp_path, capsys, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert train_cli.main(["--config", str(path)]) == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)
    assert train_cli.main(["--config", str(tmp_path / "missing.yaml")]) == 2


def test_topic_defaults_agree_between_data_and_task_configs():
    t, d = TaskConfig(), TopicConfig()
    assert (d.images, d.state, d.action, d.gripper) == (
        t.image_topics,
        t.state_topic,
        t.action_topic,
        t.gripper_topic,
    )
    assert (d.joint_names, d.finger_joint_names) == (t.joint_names, t.finger_joint_names)
    assert d.gripper_open_width == t.gripper_max_width


def test_export_writes_its_options_beside_the_onnx_file(tmp_path, capsys):
    import torch

    from ver_core.model import build_model
    from ver_core.policy import TaskPolicy

    torch.manual_seed(0)
    TaskPolicy(
        TaskConfig(chunk_len=4), build_model("ver_tiny", depth=3, moe_blocks=2, img_size=32)
    ).save_pretrained(tmp_path / "task")
    assert (
        export_cli.main(
            ["--checkpoint", str(tmp_path / "task"), "--backend", "onnx", "--opset", "17"]
        )
        == 0
    )
    saved = yaml.safe_load((tmp_path / "task" / "export" / "ver-export.yaml").read_text())
    assert saved["backend"] == "onnx" and saved["checkpoint"] == str(tmp_path / "task")
    assert json.loads(capsys.readouterr().out)["max_abs_token_diff"] < 1e-4


def test_eval_writes_its_options_beside_the_results(tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["--controller", "hold", "--episodes", "1", "--max-steps", "2", "--no-media",
            "--width", "64", "--height", "64", "--quiet", "--out", str(out)]  # fmt: skip
    assert eval_cli.main(argv) == 0
    saved = yaml.safe_load((out / "ver-eval.yaml").read_text())
    assert saved["controller"] == "hold" and saved["eval"]["max_steps"] == 2
    assert json.loads((out / "results.json").read_text())["episodes"] == 1
    again, _ = parse(eval_cli.EvalCommand, ["--config", str(out / "ver-eval.yaml")])
    assert again.eval == EvalConfig(episodes=1, max_steps=2, width=64, height=64, media=False)


def test_camera_calibration_comes_from_a_config_file(tmp_path):
    """A real rig's calibration (grasp-point detection) is a mapping per camera: given in
    --config, it reaches TaskConfig whole, and the flags still override other options."""
    calibration = {
        "camera": {
            "mount": "world",
            "pos": [1.6, 0.0, 1.0],
            "rot": [0, 0.4845, -0.8748, 1, 0, 0, 0, -0.8748, -0.4845],
            "intrinsics": [1.28, 1.28, 0.5, 0.5],
        }
    }
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump({"task": {"camera_calibration": calibration}}))
    argv = ["--config", str(path), "--bag", "b", "--out", "o", "--keypose", "--grasp-point"]
    cmd, _ = parse(train_cli.TrainRouterCommand, argv, train_cli.ALIASES)
    assert cmd.task.camera_calibration == calibration
    assert cmd.task.keypose and cmd.task.grasp_point

"""bench/bench_ablation.py: rows train with make demo's recipe, and the table's p-values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ver_core.eval.stats import fisher_exact_greater


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("bench_ablation")


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "ver-train-router.yaml"
    options = {
        "bag": "runs/demo/demos",
        "task": {"library": "assets/ver_tiny_sim_library", "action_mode": "keypose"},
        "train": {"steps": 100, "head_steps": 3000, "batch_size": 32},
        "cache_dir": "runs/demo/policy/cache",
    }
    path.write_text(yaml.safe_dump(options))
    return path


def test_rows_train_with_the_recipe_and_only_their_routing_changed(bench, recipe, tmp_path):
    args = bench.parse_args(["--recipe", str(recipe), "--work", str(tmp_path / "work")])
    options = bench.read_recipe(recipe)
    cmd = bench.train_command("single_mlp", args, options, tmp_path / "work" / "single_mlp")
    assert cmd[cmd.index("--config") + 1] == str(recipe)
    assert cmd[cmd.index("--routing") + 1] == "single"
    assert cmd[cmd.index("--head") + 1] == "mlp"
    # the recipe's steps; its demos and feature cache, made absolute (this recipe names no out
    # inside a checkout, so its relative paths are this checkout's)
    assert "--steps" not in cmd and "--head-steps" not in cmd
    assert cmd[cmd.index("--bag") + 1] == str(bench.ROOT / "runs/demo/demos")
    assert cmd[cmd.index("--cache-dir") + 1] == str(bench.ROOT / "runs/demo/policy/cache")
    noanneal = bench.train_command("noanneal_diffusion", args, options, tmp_path / "n")
    assert "--no-anneal" in noanneal and noanneal[noanneal.index("--head") + 1] == "diffusion"

    args = bench.parse_args(
        ["--recipe", str(recipe), "--steps", "7", "--head-steps", "9", "--demos", "d/"]
    )
    cmd = bench.train_command("ver_mlp", args, options, tmp_path / "v")
    assert cmd[cmd.index("--steps") + 1] == "7" and cmd[cmd.index("--head-steps") + 1] == "9"
    assert cmd[cmd.index("--bag") + 1] == "d"


def test_recipe_paths_resolve_against_the_recipes_own_checkout(bench, tmp_path):
    """A fresh clone's make demo recipe: relative paths point into that clone, not this one."""
    clone = tmp_path / "clone"
    policy = clone / "runs" / "demo" / "policy"
    policy.mkdir(parents=True)
    path = policy / "ver-train-router.yaml"
    options = {"bag": "runs/demo/demos", "out": "runs/demo/policy", "cache_dir": None}
    path.write_text(yaml.safe_dump(options))
    demos, cache = bench.recipe_paths(path, options)
    assert demos == clone.resolve() / "runs/demo/demos"
    assert cache == clone.resolve() / "runs/demo/policy/cache"  # ver-train-router's default
    # an explicit cache_dir, and absolute paths, are taken as they are
    options.update(cache_dir="runs/shared_cache", bag="/data/demos")
    assert bench.recipe_paths(path, options) == (
        Path("/data/demos"),
        clone.resolve() / "runs/shared_cache",
    )
    # every row but the dense one trains over that cache
    args = bench.parse_args(["--recipe", str(path)])
    cmd = bench.train_command("frame_mlp", args, options, tmp_path / "f")
    assert cmd[cmd.index("--cache-dir") + 1] == str(clone.resolve() / "runs/shared_cache")
    assert cmd[cmd.index("--bag") + 1] == "/data/demos"


def test_missing_recipe_or_dense_student_is_a_clear_error(bench, recipe, tmp_path):
    with pytest.raises(SystemExit, match="make demo"):
        bench.read_recipe(tmp_path / "absent.yaml")
    args = bench.parse_args(["--recipe", str(recipe), "--dense-library", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match="dense distilled student"):
        bench.train_command("dense_mlp", args, bench.read_recipe(recipe), tmp_path / "d")


def test_checkpoint_option_names_a_row(bench, recipe):
    args = bench.parse_args(["--checkpoint", "ver_mlp=runs/demo/policy"])
    assert args.checkpoint == [("ver_mlp", Path("runs/demo/policy"))]
    with pytest.raises(SystemExit):
        bench.parse_args(["--checkpoint", "nonsense=runs/x"])


def _row(successes: int, episodes: int) -> dict:
    return {
        "train_steps": 100,
        "head_steps": 3000,
        "batch_size": 32,
        "train_wall_s": 600.0,
        "eval": {
            "episodes": episodes,
            "successes": successes,
            "success_rate": successes / episodes,
            "ci95_low": 0.0,
            "ci95_high": 1.0,
            "mean_min_distance_m": 0.05,
        },
    }


def test_table_gives_each_rows_p_value_against_its_heads_ver_row(bench):
    results = {
        "rows": {
            "ver_mlp": _row(45, 50),
            "single_mlp": _row(30, 50),
            "average_diffusion": _row(20, 50),
        }
    }
    assert bench.p_vs_ver(results, "ver_mlp") is None
    assert bench.p_vs_ver(results, "single_mlp") == fisher_exact_greater(45, 50, 30, 50)
    assert bench.p_vs_ver(results, "average_diffusion") is None  # no VER diffusion row
    lines = bench.table(results).splitlines()
    single = next(line for line in lines if line.startswith("| fixed single expert"))
    assert f"| {fisher_exact_greater(45, 50, 30, 50):.3f} |" in single
    ver = next(line for line in lines if line.startswith("| VER"))
    assert "| 45/50 = 90% " in ver and "| - |" in ver


def test_table_shows_the_action_head_phase_and_the_members(bench):
    ensemble = {**_row(45, 50), "head_steps": 600, "action_head_steps": 3000, "members": 3}
    single = {**_row(40, 50), "head_steps": 600}
    lines = bench.table({"rows": {"ver_mlp": ensemble, "single_mlp": single}}).splitlines()
    ver = next(line for line in lines if line.startswith("| VER"))
    assert "| 100 + 600 + 3000 x 32, 3 members |" in ver
    one = next(line for line in lines if line.startswith("| fixed single expert"))
    assert "| 100 + 600 x 32 |" in one

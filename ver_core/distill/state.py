"""Trainer state as safetensors + json (never pickle): translators, optimizer, RNG, step."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

STATE_DIR = "trainer_state"


def optimizer_to_files(opt: torch.optim.Optimizer, names: list[str]) -> tuple[dict, dict]:
    """Optimizer state -> (tensors for safetensors, json-able metadata). ``names``: param order."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, slots in sd["state"].items():
        for slot, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{slot}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{slot}"] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return tensors, {"param_names": names, "param_groups": groups, "scalars": scalars}


def optimizer_from_files(
    opt: torch.optim.Optimizer, names: list[str], tensors: dict, meta: dict
) -> None:
    if meta["param_names"] != names:
        raise ValueError(
            "optimizer state does not match the model's parameters (different teachers or model?)"
        )
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, idx, slot = key.split(".", 2)
        state.setdefault(int(idx), {})[slot] = value
    for key, value in meta["scalars"].items():
        idx, slot = key.split(".", 1)
        state.setdefault(int(idx), {})[slot] = value
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_trainer_state(
    out: Path, translators: nn.Module, opt: torch.optim.Optimizer, names: list[str], meta: dict
) -> Path:
    """Write ``out/trainer_state/`` atomically (a temp dir swapped in when complete)."""
    final = Path(out) / STATE_DIR
    tmp = Path(out) / (STATE_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in translators.state_dict().items()},
        str(tmp / "translators.safetensors"),
    )
    tensors, opt_meta = optimizer_to_files(opt, names)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(opt_meta))
    (tmp / "state.json").write_text(json.dumps(meta, indent=2))
    # RNG files of other ranks (written beside the state by each rank) are carried over
    if final.exists():
        for f in final.glob("rng_rank*.safetensors"):
            shutil.copy2(f, tmp / f.name)
        shutil.rmtree(final)
    tmp.replace(final)
    return final


def save_rng(out: Path, rank: int) -> None:
    path = Path(out) / STATE_DIR
    path.mkdir(parents=True, exist_ok=True)
    save_file({"cpu": torch.get_rng_state()}, str(path / f"rng_rank{rank}.safetensors"))


def load_rng(out: Path, rank: int) -> bool:
    path = Path(out) / STATE_DIR / f"rng_rank{rank}.safetensors"
    if not path.is_file():
        return False
    torch.set_rng_state(load_file(str(path))["cpu"])
    return True


def load_trainer_state(out: Path) -> tuple[dict, dict, dict, dict]:
    """-> (translator state, optimizer tensors, optimizer meta, state meta)."""
    d = Path(out) / STATE_DIR
    if not (d / "state.json").is_file():
        raise FileNotFoundError(f"cannot resume: {d} has no state.json (no earlier run in {out})")
    try:
        return (
            load_file(str(d / "translators.safetensors")),
            load_file(str(d / "optimizer.safetensors")),
            json.loads((d / "optimizer.json").read_text()),
            json.loads((d / "state.json").read_text()),
        )
    except Exception as e:
        raise ValueError(f"cannot resume: trainer state in {d} is unreadable: {e}") from e

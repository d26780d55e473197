"""Command lines generated from the config dataclasses (with ``tyro``), one source per option.

A command is a dataclass whose fields are its options; the component configs it nests
(``TaskConfig``, ``TrainConfig``, ``EvalConfig``, ...) give their fields as flags of the same
name (``chunk_len`` -> ``--chunk-len``, nested prefixes dropped), with their defaults and the
comments beside them as help, so a field added to a config is an option at once. Every command
takes ``--config FILE.yaml`` (the options as a YAML mapping, nested like the dataclasses, e.g.
``{out: runs/x, train: {steps: 300}}``; flags override it) and writes the options it ran with
to ``<command>.yaml`` beside its output, which ``--config`` reads back.

Older spellings stay as aliases (``Aliases``): a renamed flag (``--control-rate`` for
``--control-rate-hz``), a flag standing for a value (``--through-ros`` for
``--mode through-ros``), or a repeatable flag gathered into a list (``--image-topic A
--image-topic B`` for ``--image-topics A B``).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import tyro
import yaml

T = TypeVar("T")


class ConfigFileError(ValueError):
    """A --config file that cannot be read into the command's options."""


@dataclass(frozen=True)
class Aliases:
    """``rename``: old flag -> the tokens it stands for; ``gather``: repeatable old flag -> the
    list flag that takes all its values."""

    rename: dict[str, tuple[str, ...]] = field(default_factory=dict)
    gather: dict[str, str] = field(default_factory=dict)

    def rewrite(self, argv: Sequence[str]) -> list[str]:
        out: list[str] = []
        gathered: dict[str, list[str]] = {}
        args = list(argv)
        i = 0
        while i < len(args):
            token = args[i]
            flag, eq, value = token.partition("=")
            if flag in self.gather:
                if eq:
                    gathered.setdefault(self.gather[flag], []).append(value)
                elif i + 1 < len(args):
                    gathered.setdefault(self.gather[flag], []).append(args[i + 1])
                    i += 1
            elif flag in self.rename:
                out += [*self.rename[flag], *([value] if eq else [])]
            else:
                out.append(token)
            i += 1
        for flag, values in gathered.items():
            out += [flag, *values]
        return out

    def describe(self) -> str:
        pairs = [f"{old} = {' '.join(new)}" for old, new in self.rename.items()]
        pairs += [f"{old} X {old} Y = {new} X Y" for old, new in self.gather.items()]
        return "; ".join(pairs)


def parse(
    cls: type[T],
    argv: Sequence[str] | None,
    prog: str,
    description: str,
    aliases: Aliases | None = None,
) -> tuple[T, set[str]]:
    """(the command's options, the names of the options set explicitly by a flag or the config
    file). Exits (SystemExit, code 2) on a bad flag or value, with tyro's message."""
    aliases = aliases or Aliases()
    args = aliases.rewrite(sys.argv[1:] if argv is None else argv)
    given = {a[2:].partition("=")[0].replace("-", "_") for a in args if a.startswith("--")}
    default = None
    path = _config_path(args)
    if path is not None:
        try:
            data = _read_yaml(path)
            default = from_dict(cls, {**data, "config": str(path)}, str(path))
        except ConfigFileError as e:
            print(f"{prog}: {e}", file=sys.stderr)
            raise SystemExit(2) from e
        given |= _leaves(data)
    if aliases.rename or aliases.gather:
        description = f"{description}\n\nAlso accepted: {aliases.describe()}."
    command = tyro.cli(
        cls,
        args=args,
        default=default,
        prog=prog,
        description=description,
        config=(tyro.conf.OmitArgPrefixes,),
    )
    return command, given


def _config_path(args: list[str]) -> Path | None:
    for i, a in enumerate(args):
        if a == "--config" and i + 1 < len(args) and args[i + 1] != "None":
            return Path(args[i + 1])
        if a.startswith("--config=") and a != "--config=None":
            return Path(a.split("=", 1)[1])
    return None


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigFileError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigFileError(f"--config {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"--config {path} must hold a mapping of options, not {type(data).__name__}"
        )
    return data


FREE_FORM = ("model_overrides", "camera_calibration")  # dict options: values, not nested options


def _leaves(data: dict) -> set[str]:
    out = set()
    for k, v in data.items():
        out |= _leaves(v) if isinstance(v, dict) and k not in FREE_FORM else {k}
    return out


def from_dict(cls: type[T], data: dict, source: str = "config") -> T:
    """A (nested) dataclass from a mapping; missing options keep their defaults. Raises
    ConfigFileError naming the option for an unknown one or a bad value."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigFileError(
            f"{source}: unknown options {unknown} for {cls.__name__} (known: {sorted(names)})"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kind = _strip(hints[name])
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = from_dict(kind, value, f"{source}: {name}")
        elif value is not None and Path in _members(kind):
            value = Path(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigFileError(f"{source}: {e}") from e


def _strip(kind: Any) -> Any:
    """Annotated[X, ...] -> X; X | None -> X when X is a dataclass."""
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    members = [m for m in _members(kind) if m is not type(None)]
    return members[0] if len(members) == 1 and dataclasses.is_dataclass(members[0]) else kind


def _members(kind: Any) -> tuple:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return (kind,)


def to_dict(command: Any) -> dict:
    """Options -> plain YAML-able data (paths as strings)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(command))


def save(command: Any, directory: Path, name: str) -> Path:
    """Write the options beside an output as ``<name>.yaml`` (readable back with --config)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    data = to_dict(command)
    data.pop("config", None)  # the file itself is the whole config
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path

"""The shell scripts behind `make demo` / `make test`: valid bash, and nothing but comments before
the first command (a comment line that lost its `#` ran as a command in every make demo)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "scripts").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_bash(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_header_is_comments_until_set_e(script):
    """Every line before `set -euo pipefail` is a comment or blank: a stray line there runs as a
    command, and before `set -e` its failure passes unnoticed."""
    lines = script.read_text().splitlines()
    assert lines[0].startswith("#!")
    first = next(i for i, line in enumerate(lines) if line.startswith("set -euo pipefail"))
    for number, line in enumerate(lines[1:first], start=2):
        assert line.startswith("#") or not line.strip(), f"{script.name}:{number}: {line!r}"

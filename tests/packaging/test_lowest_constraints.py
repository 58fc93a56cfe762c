"""``.ci/lowest_constraints.py``: the lowest-versions job pins what pyproject.toml declares, and refuses a floorless
requirement (a range with no floor cannot be tested)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".ci" / "lowest_constraints.py"


def _module():
    spec = importlib.util.spec_from_file_location("lowest_constraints", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_pins_are_the_declared_floors_with_extras_expanded() -> None:
    pins = _module().lowest_pins({"project": {
        "name": "pkg", "dependencies": ["numpy>=2.2", "Label_Studio-SDK >=2.1, <3", "rich>=13 ; python_version>'3'"],
        "optional-dependencies": {"a": ["torch>=2.1"], "b": ["torch>=2.3", "x[y]>=1.0"], "all": ["pkg[a,b]"]}}},
        ["all"])
    assert pins == ["label-studio-sdk==2.1", "numpy==2.2", "rich==13", "torch==2.3", "x==1.0"]


def test_a_requirement_without_a_floor_is_refused() -> None:
    with pytest.raises(SystemExit, match="no lower bound"):
        _module().lowest_pins({"project": {"name": "pkg", "dependencies": ["numpy"]}}, [])
    with pytest.raises(SystemExit, match="no extra 'nope'"):
        _module().lowest_pins({"project": {"name": "pkg", "dependencies": []}}, ["nope"])


def test_the_project_declares_a_floor_for_every_dependency() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "all", "dev", "ray", "bench"], capture_output=True, text=True,
                         check=True).stdout
    pins = dict(line.split("==") for line in out.splitlines() if line and not line.startswith("#"))
    assert pins["typer"] == "0.16.0" and pins["label-studio-sdk"] == "2.1" and "torch" in pins

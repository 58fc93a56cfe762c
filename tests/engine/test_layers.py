"""The import direction of docs/architecture.md, checked on every module's imports (including lazy ones).

Layers, bottom to top: ``annotate`` (the engine) → ``converters`` (formats and the Label Studio adapter) →
``backend`` → ``converters.cli``. A module may import its own layer and the layers below it, never above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

LAYERS = ["annotate", "converters", "backend", "converters.cli"]


def layer_of(module: str) -> int | None:
    """The layer index of a dotted module name of the toolkit, or None for third-party modules."""
    if module == "converters.cli" or module.startswith("converters.cli."):
        return LAYERS.index("converters.cli")
    top = module.split(".")[0]
    return LAYERS.index(top) if top in ("annotate", "converters", "backend") else None


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in the file, at any depth (function-level imports count too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def toolkit_files() -> list[Path]:
    return sorted(p for pkg in ("annotate", "converters", "backend") for p in (REPO / pkg).rglob("*.py"))


def test_the_layer_rule_is_checked_on_real_files() -> None:
    files = toolkit_files()
    assert len(files) > 50 and any(p.parts[-2] == "cli" for p in files)


@pytest.mark.parametrize("path", toolkit_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_a_layer_above_its_own(path: Path) -> None:
    own = layer_of(".".join(path.relative_to(REPO).with_suffix("").parts))
    assert own is not None
    upward = [f"line {line}: {module} ({LAYERS[layer_of(module)]})" for line, module in imported_modules(path)
              if layer_of(module) is not None and layer_of(module) > own]
    assert not upward, f"{path.relative_to(REPO)} ({LAYERS[own]}) imports a layer above it: {upward}"


def test_layer_of_reads_dotted_names() -> None:
    assert layer_of("annotate.geometry") == 0
    assert layer_of("converters.labelstudio.fetch") == 1
    assert layer_of("backend.engine") == 2
    assert layer_of("converters.cli.main") == 3
    assert layer_of("converters.cli") == 3
    assert layer_of("numpy") is None

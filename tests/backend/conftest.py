"""Fixtures of the backend tests: synthetic task images served as Label Studio local files, runtimes, clients."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from annotate.synthetic import Scene, make_scene
from backend.config import Settings
from tests.support.backend import runtime_clients
from tests.support.scenes import write_png


@pytest.fixture(scope="session")
def scene() -> Scene:
    return make_scene(seed=3, height=160, width=200, n_objects=4)


@pytest.fixture()
def files_root(tmp_path: Path, scene: Scene) -> Path:
    """A LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT with the scene as ``scenes/a.png`` and a corrupt ``scenes/bad.png``."""
    root = tmp_path / "files"
    write_png(root / "scenes" / "a.png", scene.image)
    (root / "scenes" / "bad.png").write_bytes(b"this is not an image")
    return root


@pytest.fixture()
def make_client(tmp_path: Path, files_root: Path) -> Iterator[Callable[..., object]]:
    """Build a Flask test client around a fresh runtime (models loaded before it returns)."""
    with runtime_clients() as make:
        yield lambda settings=None, **overrides: make(
            settings or Settings(model_dir=tmp_path / "model", local_files_root=str(files_root), **overrides))

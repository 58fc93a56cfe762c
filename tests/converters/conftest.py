"""Fixtures of the converter tests: synthetic Label Studio exports with exact masks, and the shared real
Label Studio server (re-exported from ``tests/labelstudio_server.py``) for the live-project test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.labelstudio_server import labelstudio_server  # noqa: F401  (re-exported session fixture)

SHARED_EXPORT = "derived/label_studio_brush_export_isaid.json"
SHARED_CONFIG = "derived/label_config.xml"


@pytest.fixture
def per_task_export(tmp_path: Path):
    """RRSIS-D set-up: 3 images, 6 tasks each (4 objects, 2 objects named twice)."""
    from converters.synthetic_export import write_synthetic_export

    return write_synthetic_export(tmp_path / "ls", n_images=3, tasks_per_image=6, layout="per-task", seed=3)


@pytest.fixture
def per_region_export(tmp_path: Path):
    """Expressions written while annotating: 3 image-only tasks, 4 brush regions each with 2 texts."""
    from converters.synthetic_export import write_synthetic_export

    return write_synthetic_export(tmp_path / "ls", n_images=3, layout="per-region", seed=11)

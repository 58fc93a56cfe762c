"""Fixtures shared by every test area: the real-data folder, tiny grounding models, synthetic Label Studio exports,
and the real Label Studio server (started on first use)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.support.labelstudio_server import labelstudio_server  # noqa: F401  (the one Label Studio server of a session)
from tests.support.tiny_grounders import save_tiny_grounding_dino, save_tiny_owlv2

from tests.support.data import SHARED_DATA

#: Test modules that need a model stack (torch: SAM, the grounding models). In the light install (``pip install .``,
#: CI's lowest-versions job) they are not collected; everything else runs there.
NEEDS_TORCH = [
    "engine/test_factory.py",
    "engine/test_grounding_concurrent_loading.py",
    "engine/test_grounding_models.py",
    "engine/test_grounding_training.py",
    "engine/test_sam.py",
    "engine/test_sam_clicks.py",
    "engine/test_noc_bench.py",
]
collect_ignore = NEEDS_TORCH if importlib.util.find_spec("torch") is None else []


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder (images with human ground truth, ``$PSLG_SHARED_DATA``): skipped when absent, except in CI
    (``CI=true`` or ``PSLG_REQUIRE_E2E=1``), where a missing folder fails the test instead of hiding it."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI", "").lower() == "true" or os.environ.get("PSLG_REQUIRE_E2E") == "1":
            pytest.fail(f"real data folder {SHARED_DATA} is absent, and CI requires the real-data tests to run")
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it is only beside the repository on project machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def gdino_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_grounding_dino(tmp_path_factory.mktemp("gdino") / "tiny-gdino")


@pytest.fixture(scope="session")
def owlv2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_owlv2(tmp_path_factory.mktemp("owlv2") / "tiny-owlv2")


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


@pytest.fixture(autouse=True)
def _model_logger_restored():
    """``pslg prelabel`` run in-process (CliRunner) quiets the model's per-task warnings for its process
    (``backend.prelabel.worker.quiet_task_warnings``); later tests in the same process must see them again."""
    import logging

    logger = logging.getLogger("pslg.backend.model")
    saved = logger.propagate, list(logger.handlers), logger.level, logger.disabled
    yield
    logger.propagate, logger.handlers[:], logger.level, logger.disabled = saved

"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PSLG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder (images with human ground truth, ``$PSLG_SHARED_DATA``): skipped when absent, except in CI
    (``CI=true`` or ``PSLG_REQUIRE_E2E=1``), where a missing folder fails the test instead of hiding it."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI", "").lower() == "true" or os.environ.get("PSLG_REQUIRE_E2E") == "1":
            pytest.fail(f"real data folder {SHARED_DATA} is absent, and CI requires the real-data tests to run")
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it is only beside the repository on project machines)")
    return SHARED_DATA

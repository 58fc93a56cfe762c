"""Tiny model directories shared by the grounding tests (built once per session, ~1 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_grounders import save_tiny_grounding_dino, save_tiny_owlv2


@pytest.fixture(scope="session")
def gdino_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_grounding_dino(tmp_path_factory.mktemp("gdino") / "tiny-gdino")


@pytest.fixture(scope="session")
def owlv2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_owlv2(tmp_path_factory.mktemp("owlv2") / "tiny-owlv2")

"""Issue 17 item 5: a corrupted learned version (truncated ``priors.npz``, unreadable ``store.json`` or
``current.json``, a card field of the wrong type) left the backend never ready; it now serves the newest version
that loads, or the defaults, and /health says why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from annotate.modelstore import ModelCard, ModelStore
from annotate.priors import PriorSample, ShapePriors
from backend.config import Settings
from backend.engine import LEARNED_KIND, Engine


def _commit(store: ModelStore, n: int) -> str:
    mask = np.zeros((40, 40), bool)
    mask[10:30, 15:25] = True
    priors = ShapePriors.fit([PriorSample(mask, (10, 5, 30, 35), "vehicle")] * 3, min_samples=1)
    staging = store.staging(f"learned-{n}")
    priors.save(staging)
    return store.commit(staging, ModelCard(kind=LEARNED_KIND, base="classical-defaults", samples=3)).name


def _truncate_npz(root: Path, version: str) -> None:
    npz = root / version / "priors.npz"
    npz.write_bytes(npz.read_bytes()[:40])


CORRUPTIONS = {
    "truncated priors.npz": (lambda root, v: _truncate_npz(root, v), "v0001"),
    "card field of the wrong type": (lambda root, v: (root / v / "card.json").write_text(
        json.dumps({**json.loads((root / v / "card.json").read_text()), "created_at": 5})), "v0001"),
    "store.json not JSON": (lambda root, v: (root / "store.json").write_text("{not json"), None),
    "store.json of the wrong shape": (lambda root, v: (root / "store.json").write_text('{"bad": [1]}'), None),
    "current.json not JSON": (lambda root, v: (root / "current.json").write_text("\x00\x01"), None),
    "current.json of the wrong shape": (lambda root, v: (root / "current.json").write_text(
        json.dumps({LEARNED_KIND: {"v": 2}})), None),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupt_learned_version_falls_back_and_the_backend_gets_ready(tmp_path: Path, corruption: str):
    root = tmp_path / "grounders"
    store = ModelStore(root)
    _commit(store, 1)
    newest = _commit(store, 2)
    store.rollback(newest)  # writes current.json
    corrupt, serves = CORRUPTIONS[corruption]
    corrupt(root, newest)
    engine = Engine(Settings(model_dir=tmp_path)).start()
    try:
        assert engine.wait_ready(120), engine.error
        health = engine.health()
        assert health["learned_fallback"], health
        if serves is None:  # the store itself cannot be trusted: the defaults are served
            assert engine.learned is None
        else:  # the newest version is broken: the one before it is served
            assert engine.learned is not None and f"-{serves}" in engine.learned.label
        image = np.zeros((40, 40, 3), np.uint8)
        from annotate.types import Prompt

        [result] = engine.run(image, [Prompt(box=(10, 10, 30, 30))], None)
        assert result.ok
    finally:
        engine.stop()

"""docs/serve-backend.md says what a weights-free backend answers to Start Training: the answer it really gives."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "serve-backend.md"


def test_weights_free_start_training_answer_matches_the_docs(make_client) -> None:
    client = make_client()
    answer = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).get_json()
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    section = text.split("**Weights-free backend and START_TRAINING.**", 1)[1].split("- **", 1)[0]
    assert "training skipped" not in text  # what the backend never answers
    documented = re.search(r'"training": "started \((.*?) \.\.\.\)"', section)
    assert documented is not None, section
    assert answer["status"] == "training" and answer["training"].startswith("started (")
    assert documented.group(1) in answer["training"], (documented.group(1), answer)

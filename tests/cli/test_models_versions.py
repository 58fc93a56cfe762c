"""`pslg models versions / rollback / mark-bad` on a model store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from annotate.modelstore import ModelCard, ModelStore
from converters.cli.main import app

runner = CliRunner()


@pytest.fixture()
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    for i, acc in enumerate((0.25, 0.5, 0.75)):
        staging = store.staging(f"grounding-{i}")
        (staging / "config.json").write_text("{}")
        parent = f"v{i:04d}" if i else None
        store.commit(staging, ModelCard(kind="grounding", base="hub/base", parent=parent, samples=10 * (i + 1),
                                        metrics={"val": {"acc@0.5": acc}}))
    return store


def test_versions_lists_every_version_and_marks_the_served_one(store: ModelStore) -> None:
    res = runner.invoke(app, ["models", "versions", str(store.root)])
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if "v000" in line and "grounding" in line]
    assert [r.split("│")[1].strip() for r in rows] == ["v0001", "v0002", "v0003"]
    assert "yes" in rows[2] and "yes" not in rows[0] and "0.750" in rows[2] and "30" in rows[2]


def test_rollback_and_mark_bad_change_what_is_served(store: ModelStore) -> None:
    res = runner.invoke(app, ["models", "rollback", str(store.root), "v0002"])
    assert res.exit_code == 0 and "now serving v0002" in res.output
    assert store.current("grounding").name == "v0002"
    assert json.loads((store.root / "current.json").read_text()) == {"grounding": "v0002"}

    res = runner.invoke(app, ["models", "mark-bad", str(store.root), "2", "--reason", "worse on val"])
    assert res.exit_code == 0 and "marked bad" in res.output
    assert store.current("grounding").name == "v0001"
    listing = runner.invoke(app, ["models", "versions", str(store.root)]).output
    assert "bad: worse on val" in listing
    assert runner.invoke(app, ["models", "mark-bad", str(store.root), "v0002", "--undo"]).exit_code == 0
    assert store.current("grounding").name == "v0002"


def test_errors_are_one_line_and_name_what_exists(store: ModelStore, tmp_path: Path) -> None:
    res = runner.invoke(app, ["models", "rollback", str(store.root), "v0009"])
    assert res.exit_code == 1 and "v0001, v0002, v0003" in res.output and "Traceback" not in res.output
    plain = tmp_path / "plain"
    plain.mkdir()
    res = runner.invoke(app, ["models", "versions", str(plain)])
    assert res.exit_code == 1 and "not a model store" in res.output


def test_a_backend_model_dir_points_to_the_store_inside_it(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "backend-data" / "grounders")  # where `pslg serve` keeps retrained versions
    staging = store.staging("grounding-0")
    (staging / "config.json").write_text("{}")
    store.commit(staging, ModelCard(kind="grounding", base="hub/base", parent=None, samples=5, metrics={}))
    res = runner.invoke(app, ["models", "versions", str(tmp_path / "backend-data")])
    assert res.exit_code == 0, res.output
    assert "using the model store inside it" in res.output and "v0001" in res.output
    rolled = runner.invoke(app, ["models", "rollback", str(tmp_path / "backend-data"), "v0001"])
    assert rolled.exit_code == 0 and store.current("grounding").name == "v0001"


def test_versions_shows_each_retrains_outcome_and_why_a_candidate_was_not_served(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "learned")
    served = "served v0001: +0.031 mIoU on 42 held-out corrections; airplane prior adopted, bridge kept"
    lost = "not served (v0002 stored): 48 held-out corrections; airplane kept, bridge kept"
    store.commit(store.staging("a"), ModelCard(kind="shape-priors", base="classical-defaults", metrics={"outcome": served}))
    store.commit(store.staging("b"), ModelCard(kind="shape-priors", base="classical-defaults", metrics={"outcome": lost}),
                 not_served="no class's learned prior beat what is served")
    res = runner.invoke(app, ["models", "versions", str(store.root)])
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if "shape-priors" in line]
    assert "yes" in rows[0] and "yes" not in rows[1] and "not served: no class" in rows[1]
    assert f"v0001: {served}" in res.output and f"v0002: {lost}" in res.output


def test_a_reason_with_terminal_escapes_is_printed_inert(store: ModelStore) -> None:
    """Issue 17 item 6: ``mark-bad --reason`` echoed (and stored) raw escape sequences, which drive a terminal."""
    reason = "worse\x1b[2J\x1b]0;owned\x07 on val\r\x9b31m"
    res = runner.invoke(app, ["models", "mark-bad", str(store.root), "3", "--reason", reason])
    assert res.exit_code == 0, res.output
    assert not any(c in res.output for c in "\x1b\x07\r\x9b") and "\\x1b[2J" in res.output
    stored = json.loads((store.root / "store.json").read_text())["bad"]["v0003"]
    assert not any(c in stored for c in "\x1b\x07\r\x9b") and stored.startswith("worse\\x1b[2J")
    (store.root / "store.json").write_text(json.dumps({"format": 1, "bad": {"v0002": "old\x1b[31mred"}}))
    listed = runner.invoke(app, ["models", "versions", str(store.root)])
    assert listed.exit_code == 0 and "\x1b" not in listed.output and "\\x1b[31m" in "".join(listed.output.split())

"""The versioned model store: atomic versions with cards, current/rollback/mark-bad per kind, staging, polling."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from annotate.modelstore import (CARD_FILE, ModelCard, ModelStore, ModelStoreError, is_store, read_card)


def _commit(store: ModelStore, kind: str = "grounding", payload: str = "w", **card) -> str:
    staging = store.staging(f"{kind}-{payload}")
    (staging / "weights.bin").write_text(payload)
    return store.commit(staging, ModelCard(kind=kind, base=card.pop("base", "hub/base"), **card)).name


def test_commit_numbers_versions_writes_cards_and_leaves_no_staging(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    assert store.versions() == [] and store.current("grounding") is None
    first = _commit(store, payload="a", samples=3, data_digest="abc", metrics={"val": {"acc@0.5": 0.5}})
    second = _commit(store, payload="b", parent="v0001", configured="/cfg")
    assert (first, second) == ("v0001", "v0002")
    assert is_store(store.root)
    assert not [p for p in store.root.iterdir() if p.name.startswith(".staging-")]
    card = read_card(store.root / "v0001")
    assert (card.kind, card.base, card.samples, card.data_digest, card.version) == ("grounding", "hub/base", 3, "abc", "v0001")
    assert card.created_at and card.label.startswith("grounding-v0001-") and card.label.endswith("Z")
    assert (store.root / "v0002" / "weights.bin").read_text() == "b"
    assert store.get("2").card.parent == "v0001" and store.get("v0002").card.configured == "/cfg"
    assert store.current("grounding").name == "v0002"


def test_rollback_then_a_new_version_becomes_current(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for p in "abc":
        _commit(store, payload=p)
    store.rollback("v0001")
    assert store.current("grounding").name == "v0001"
    assert [v.name for v in store.candidates("grounding")] == ["v0001"]  # versions after a rollback are not served
    assert json.loads((tmp_path / "current.json").read_text()) == {"grounding": "v0001"}
    assert _commit(store, payload="d") == "v0004"
    assert [v.name for v in store.candidates("grounding")] == ["v0004", "v0003", "v0002", "v0001"]


def test_mark_bad_skips_a_version_and_unmark_restores_it(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for p in "ab":
        _commit(store, payload=p)
    store.mark_bad("v0002", "worse on val")
    assert store.current("grounding").name == "v0001"
    assert store.get("v0002").bad == "worse on val"
    with pytest.raises(ModelStoreError, match="marked bad"):
        store.rollback("v0002")
    store.unmark("v0002")
    assert store.current("grounding").name == "v0002"


def test_kinds_share_the_lineage_but_have_their_own_current(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _commit(store, kind="grounding", payload="g1")
    _commit(store, kind="segmenter-priors", payload="p1")
    _commit(store, kind="grounding", payload="g2")
    assert store.current("grounding").name == "v0003" and store.current("segmenter-priors").name == "v0002"
    store.rollback("v0001")
    assert store.current("grounding").name == "v0001" and store.current("segmenter-priors").name == "v0002"
    assert [v.name for v in store.versions("segmenter-priors")] == ["v0002"]


def test_unknown_versions_and_broken_cards_are_reported(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _commit(store, payload="a")
    _commit(store, payload="b")
    with pytest.raises(ModelStoreError, match=r"no version 'v0009' \(versions: v0001, v0002\)"):
        store.rollback("v0009")
    (tmp_path / "v0002" / CARD_FILE).write_text("{broken")
    [v1, v2] = store.versions()
    assert v2.card is None and "unreadable model card" in v2.card_error
    assert store.current("grounding").name == "v0001"  # a version without a readable card is never served
    with pytest.raises(ModelStoreError, match="cannot be served"):
        store.rollback("v0002")


def test_staging_is_reused_to_resume_and_keys_are_checked(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    staging = store.staging("grounding-123")
    (staging / "state").write_text("epoch 1")
    assert store.staging("grounding-123") == staging and (staging / "state").read_text() == "epoch 1"
    assert store.versions() == []  # a staging directory is never a version
    with pytest.raises(ModelStoreError, match="staging key"):
        store.staging("../escape")
    with pytest.raises(ModelStoreError, match="not a staging directory"):
        store.commit(tmp_path.parent, ModelCard(kind="grounding", base="x"))


def test_concurrent_commits_take_distinct_numbers(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    names: list[str] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            names.append(_commit(ModelStore(tmp_path), payload=f"w{i}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(names) == [f"v{i:04d}" for i in range(1, 7)]
    payloads = {(store.root / n / "weights.bin").read_text() for n in names}
    assert payloads == {f"w{i}" for i in range(6)}


def test_state_token_changes_on_commit_rollback_and_mark(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _commit(store, payload="a")
    tokens = [store.state_token()]
    _commit(store, payload="b")
    tokens.append(store.state_token())
    store.rollback("v0001")
    tokens.append(store.state_token())
    store.mark_bad("v0002")
    tokens.append(store.state_token())
    assert len(set(tokens)) == len(tokens)
    assert store.state_token() == tokens[-1]  # stable while nothing changes


def test_a_model_directory_is_not_a_store(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert not is_store(model) and not is_store(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not is_store(empty)


def test_a_candidate_committed_as_not_served_is_kept_but_not_served_until_rolled_back_to(tmp_path):
    from annotate.modelstore import ModelCard, ModelStore

    store = ModelStore(tmp_path / "s")
    first = store.commit(store.staging("a"), ModelCard(kind="shape-priors", base="b"))
    lost = store.commit(store.staging("b"), ModelCard(kind="shape-priors", base="b"), not_served="lost on held-out pairs")
    assert lost.name == "v0002" and lost.not_served == "lost on held-out pairs"
    assert store.current("shape-priors").name == first.name
    assert [v.name for v in store.candidates("shape-priors")] == ["v0001"]
    store.rollback("v0002")  # the user's choice serves it anyway
    assert store.current("shape-priors").name == "v0002" and store.get("v0002").not_served is None

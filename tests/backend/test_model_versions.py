"""The backend follows its model store: new versions and rollbacks without a restart, fallback from a broken
version (reported on /health, /predict keeps working), and versions of another configuration never served."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest

from annotate.modelstore import ModelCard, ModelStore
from backend.model_source import configured_key
from tests.support.scenes import CONFIG, task_for
from tests.support.e2e import wait_for


@pytest.fixture(scope="module")
def tiny_grounder(tmp_path_factory) -> Path:
    from tests.support.tiny_grounders import save_tiny_grounding_dino

    return save_tiny_grounding_dino(tmp_path_factory.mktemp("tiny-gdino") / "model")


def add_version(store: ModelStore, model: Path, configured: str | None = None, tag: str = "x") -> str:
    """A new version holding ``model``'s files, as `pslg train grounding --out STORE` leaves it."""
    staging = store.staging(f"grounding-{tag}")
    shutil.copytree(model, staging, dirs_exist_ok=True)
    return store.commit(staging, ModelCard(kind="grounding", base=str(model), configured=configured)).name


def wait_until(predicate, what: str = "the backend to serve the expected version"):
    return wait_for(predicate, 60.0, what, interval=0.1)


def _predict(client, scene) -> dict:
    tasks = [task_for(scene, 0, 11, with_box=False)]
    answer = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG})
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def test_new_versions_and_rollbacks_are_served_without_restart(make_client, scene, tiny_grounder, tmp_path):
    store = ModelStore(tmp_path / "models")
    add_version(store, tiny_grounder, tag="a")
    client = make_client(grounding_model=str(store.root), device="cpu", model_poll_s=0.2)
    health = client.get("/health").get_json()
    v1_label = store.get("v0001").card.label
    assert v1_label in health["model_version"] and health["grounding"]["serving"] == "v0001"
    assert "fallback" not in health

    add_version(store, tiny_grounder, tag="b")  # what `pslg train grounding --out <store>` does
    v2_label = store.get("v0002").card.label
    wait_until(lambda: v2_label in client.get("/health").get_json()["model_version"])
    prediction = _predict(client, scene)
    assert v2_label in prediction["model_version"]
    assert all(v2_label in p["model_version"] and p["result"] for p in prediction["results"])

    store.rollback("v0001")  # `pslg models rollback <store> v0001`
    wait_until(lambda: v1_label in client.get("/health").get_json()["model_version"])
    versions = client.get("/versions").get_json()["versions"]
    assert [v1_label in v for v in versions] == [True, False] and v2_label in versions[1]


def test_setup_picks_up_a_new_version_when_polling_is_off(make_client, tiny_grounder, tmp_path):
    store = ModelStore(tmp_path / "models")
    add_version(store, tiny_grounder, tag="a")
    client = make_client(grounding_model=str(store.root), device="cpu", model_poll_s=0)
    add_version(store, tiny_grounder, tag="b")
    time.sleep(0.5)
    assert store.get("v0001").card.label in client.get("/health").get_json()["model_version"]  # no polling
    assert client.post("/setup", json={"project": "1", "schema": CONFIG}).status_code == 200
    wait_until(lambda: store.get("v0002").card.label in client.get("/health").get_json()["model_version"])


def test_an_unreadable_latest_version_falls_back_and_health_says_so(make_client, scene, tiny_grounder, tmp_path):
    store = ModelStore(tmp_path / "models")
    add_version(store, tiny_grounder, tag="a")
    add_version(store, tiny_grounder, tag="b")
    (store.root / "v0002" / "model.safetensors").write_bytes(b"truncated")  # e.g. a disk filled during a copy
    client = make_client(grounding_model=str(store.root), device="cpu", model_poll_s=0.2)
    health = client.get("/health").get_json()
    assert health["ready"] and health["grounding"]["serving"] == "v0001"
    assert health["fallback"]["wanted"] == "v0002" and health["fallback"]["serving"] == "v0001"
    assert "v0002" in health["fallback"]["error"]
    prediction = _predict(client, scene)  # served by the previous good version, not a 503
    assert store.get("v0001").card.label in prediction["model_version"] and prediction["results"][0]["result"]

    # the operator marks it bad: the store changes, the backend re-checks and the fallback note goes away
    store.mark_bad("v0002", "truncated weights")
    wait_until(lambda: "fallback" not in client.get("/health").get_json())
    assert client.get("/health").get_json()["grounding"]["serving"] == "v0001"


def test_every_version_broken_falls_back_to_the_base_model(make_client, tiny_grounder, tmp_path):
    store = ModelStore(tmp_path / "models")
    add_version(store, tiny_grounder, tag="a")
    (store.root / "v0001" / "config.json").write_text("{broken")
    client = make_client(grounding_model=str(store.root), device="cpu", model_poll_s=0)
    health = client.get("/health").get_json()
    assert health["ready"] and health["fallback"]["serving"] == str(tiny_grounder)
    assert health["grounding"]["serving"] == str(tiny_grounder)


def test_versions_trained_for_another_configuration_are_not_served(make_client, tiny_grounder, tmp_path, caplog):
    other = tmp_path / "other-model"
    shutil.copytree(tiny_grounder, other)
    model_dir = tmp_path / "model"
    grounders = ModelStore(model_dir / "grounders")
    add_version(grounders, tiny_grounder, configured=configured_key(str(other)), tag="other")
    with caplog.at_level(logging.WARNING, logger="pslg.backend.models"):
        client = make_client(grounding_model=str(tiny_grounder), device="cpu", model_poll_s=0)
    health = client.get("/health").get_json()
    assert health["grounding"]["serving"] == str(tiny_grounder) and "fallback" not in health
    assert "v0001" not in health["model_version"]
    assert any("not serving" in r.getMessage() and "v0001" in r.getMessage() for r in caplog.records)

    # a version trained under this configuration is served (as after an in-process retrain and a restart)
    add_version(grounders, tiny_grounder, configured=configured_key(str(tiny_grounder)), tag="ours")
    client = make_client(grounding_model=str(tiny_grounder), device="cpu", model_poll_s=0)
    assert client.get("/health").get_json()["grounding"]["serving"] == "v0002"


def test_an_empty_models_directory_serves_once_a_version_arrives(make_client, scene, tiny_grounder, tmp_path):
    store_dir = tmp_path / "models"
    store_dir.mkdir()
    client = make_client(grounding_model=str(store_dir), device="cpu", model_poll_s=0.2)
    health = client.get("/health").get_json()
    assert health["ready"] and health["grounding"]["serving"] is None and "note" in health["grounding"]
    add_version(ModelStore(store_dir), tiny_grounder)
    wait_until(lambda: client.get("/health").get_json()["grounding"]["serving"] == "v0001")
    assert _predict(client, scene)["results"][0]["result"]

"""Issue 9 item 3: memory bounds. Decoded images are cached by bytes, request bodies are capped
(MAX_CONTENT_LENGTH, also for chunked bodies), the per-(project, config) models are a bounded LRU, and the pixel
limit applies to the sizes an annotation declares before any brush RLE is decoded for training."""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest
import requests
from werkzeug.serving import make_server

from converters.labelstudio.fetch import LRUCache
from tests.security.conftest import CONFIG


def test_lru_cache_is_bounded_by_bytes():
    cache = LRUCache(size=100, max_bytes=1000)
    for i in range(10):
        cache.put(i, np.zeros(300, np.uint8))
    assert cache.nbytes == 900 and len(cache) == 3 and cache.get(9) is not None and cache.get(0) is None
    cache.put("huge", np.zeros(5000, np.uint8))  # larger than the whole budget: not kept, nothing evicted for it
    assert cache.get("huge") is None and len(cache) == 3
    cache.put(9, np.zeros(10, np.uint8))  # replacing an entry re-counts it
    assert cache.nbytes == 610


def test_decoded_images_are_bounded_by_bytes(make_app, tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for i in range(5):
        ok, buf = cv2.imencode(".png", np.full((600, 600, 3), 40 * i, np.uint8))
        (root / f"{i}.png").write_bytes(buf.tobytes())
    limit = 2_500_000  # two 600×600 RGB images (1.08 MB each)
    client = make_app(local_image_root=str(root), image_cache_bytes=limit)
    runtime = client.application.config["PSLG_RUNTIME"]
    for i in range(5):
        runtime.load_image(str(root / f"{i}.png"), project="1")
    assert runtime.images.nbytes <= limit and len(runtime.images) == 2
    assert runtime.images.get(("1", str(root / "4.png"))) is not None


def test_request_bodies_are_capped(make_app):
    client = make_app(max_request_bytes=100_000)
    body = {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "task": {"id": 1, "data": {"pad": "x" * 200_000}},
            "annotation": {"id": 1, "task": 1, "result": []}}
    r = client.post("/webhook", json=body)
    assert r.status_code == 413 and "PSLG_MAX_REQUEST_BYTES" in r.get_json()["error"]
    assert client.application.config["PSLG_RUNTIME"].store.count() == 0
    body["task"]["data"]["pad"] = "x"
    assert client.post("/webhook", json=body).status_code == 201


def test_chunked_bodies_without_a_length_are_capped_too(make_app):
    client = make_app(max_request_bytes=100_000)
    server = make_server("127.0.0.1", 0, client.application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        def chunks(pad: int):
            yield b'{"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"id": 1, "result": []},'
            yield b' "task": {"id": 1, "data": {"pad": "'
            for _ in range(pad):
                yield b"x" * 10_000
            yield b'"}}}'

        url = f"http://127.0.0.1:{server.server_port}/webhook"
        r = requests.post(url, data=chunks(50), headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 413 and "PSLG_MAX_REQUEST_BYTES" in r.json()["error"]
        assert client.application.config["PSLG_RUNTIME"].store.count() == 0
        r = requests.post(url, data=chunks(2), headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 201 and client.application.config["PSLG_RUNTIME"].store.count() == 1
    finally:
        server.shutdown()


def test_models_per_config_and_project_configs_are_bounded(make_app):
    client = make_app(max_projects=8)
    for i in range(40):
        config = CONFIG.replace('<Label value="building"/>', f'<Label value="building{i}"/>')
        r = client.post("/setup", json={"project": f"{i}.1", "schema": config})
        assert r.status_code == 200
    models = client.application.extensions["pslg_models"]
    configs = client.application.extensions["pslg_project_configs"]
    assert len(models) <= 8 and len(configs) <= 8
    # the most recent projects still work from their /setup config
    assert client.post("/predict", json={"project": "39.1", "tasks": [{"id": 1, "data": {}}]}).status_code == 200


def test_oversized_label_config_is_refused(make_app):
    client = make_app(max_label_config_bytes=10_000)
    big = CONFIG.replace("</View>", "<!--" + "x" * 20_000 + "--></View>")
    r = client.post("/predict", json={"tasks": [{"id": 1, "data": {}}], "label_config": big})
    assert r.status_code == 400 and "PSLG_MAX_LABEL_CONFIG_BYTES" in r.get_json()["error"]


@pytest.mark.parametrize(("width", "height", "message"), [
    (100_000, 100_000, "PSLG_MAX_PIXELS"),
    (-5, 100, "not positive integers"),
    (1e3, 100, "not positive integers"),
])
def test_declared_sizes_are_checked_before_brush_rle_is_ever_decoded(make_app, width, height, message):
    client = make_app(max_pixels=50_000_000)
    region = {"id": "r1", "from_name": "mask", "to_name": "image", "type": "brushlabels",
              "original_width": width, "original_height": height, "value": {"format": "rle", "rle": [0, 0, 0, 1]}}
    body = {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "task": {"id": 1, "data": {}},
            "annotation": {"id": 1, "task": 1, "result": [region]}}
    r = client.post("/webhook", data=json.dumps(body), content_type="application/json")
    assert r.status_code == 400 and message in r.get_json()["error"]
    bulk = {"action": "ANNOTATIONS_CREATED", "project": {"id": 1}, "task": [{"id": 1}],
            "annotation": [body["annotation"], {"id": 2, "task": 1, "result": []}]}
    answer = client.post("/webhook", json=bulk).get_json()
    assert message in answer["errors"][0]
    store = client.application.config["PSLG_RUNTIME"].store
    assert [a.annotation_id for a in store.annotations()] == [2]


def test_anonymous_setup_cannot_grow_the_kept_labeling_configs_without_bound(make_app):
    """/setup keeps each project's labeling config for training; past PSLG_MAX_PROJECTS new projects are refused
    (their configs are not stored), while a known project's config is still updated."""
    client = make_app(max_projects=3)
    store = client.application.config["PSLG_RUNTIME"].store
    for project in range(10):
        client.post("/setup", json={"project": f"{project}.1700000000", "schema": CONFIG.replace("vehicle", f"v{project}")})
    kept = [p for p in range(10) if store.get_meta(f"label_config:{p}") is not None]
    assert kept == [0, 1, 2]
    client.post("/setup", json={"project": "1.1700000000", "schema": CONFIG.replace("vehicle", "car")})
    assert "car" in store.get_meta("label_config:1")

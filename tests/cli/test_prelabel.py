"""`pslg prelabel` on a tasks file: predictions, per-task errors, resume, staleness, worker processes, Ray."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from annotate.geometry import mask_iou
from annotate.synthetic import make_scene
from backend.config import Settings
from backend.prelabel.checkpoint import Checkpoint
from backend.prelabel.job import run_prelabel
from backend.prelabel.sources import TaskFile, default_label_config
from backend.prelabel.worker import WorkerSpec
from converters.cli.main import app
from converters.labelstudio.brush import brush_rle_decode
from tests.support.scenes import write_png

SIZE = 192


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST", "LABEL_STUDIO_API_KEY", "PSLG_SAM_CHECKPOINT",
                 "PSLG_GROUNDING_MODEL", "PSLG_USE_MBO", "PSLG_USE_CFPG", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"):
        monkeypatch.delenv(name, raising=False)


def _project(tmp_path: Path, scenes: int = 2, missing: bool = True):
    """Tasks on ``scenes`` synthetic images served as Label Studio local files; optionally one broken task."""
    root = tmp_path / "files"
    tasks, truth = [], []
    for seed in range(scenes):
        scene = make_scene(seed=seed, height=SIZE, width=SIZE, n_objects=3)
        write_png(root / "img" / f"s{seed}.png", scene.image)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            tasks.append({"id": 100 + len(tasks), "data": {"image": f"/data/local-files/?d=img/s{seed}.png",
                                                            "expression": obj.expression,
                                                            "bbox": [x0, y0, x1 - x0, y1 - y0]}})
            truth.append(obj.mask)
    if missing:
        tasks.append({"id": 999, "data": {"image": "/data/local-files/?d=img/absent.png", "expression": "the car",
                                          "bbox": [1, 1, 20, 20]}})
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    return path, root, tasks, truth


def _invoke(*args: str):
    return CliRunner().invoke(app, ["prelabel", *args], env={"COLUMNS": "250"})


def _versions(out: Path) -> set[str]:
    return {p["model_version"] for t in json.loads(out.read_text()) for p in t.get("predictions", [])}


def _backend_version() -> str:
    from backend.engine import Engine

    engine = Engine(dataclasses.replace(Settings.from_env(), workers=1)).start()
    assert engine.wait_ready(60)
    return engine.model_version


def _masks(out: Path) -> dict[int, list[np.ndarray]]:
    found = {}
    for task in json.loads(out.read_text()):
        found[task["id"]] = [brush_rle_decode(r["value"]["rle"], r["original_height"], r["original_width"])
                             for p in task.get("predictions", []) for r in p["result"] if r["type"] == "brushlabels"]
    return found


def test_tasks_file_gets_one_prediction_per_task_and_lists_the_broken_one(tmp_path):
    tasks_json, root, tasks, truth = _project(tmp_path)
    out = tmp_path / "out.json"
    result = _invoke(str(tasks_json), "--out", str(out), "--local-files-root", str(root))
    assert result.exit_code == 1, result.output
    assert "task 999" in result.output and "absent.png" in result.output
    masks = _masks(out)
    assert masks[999] == []  # no prediction stored for the task that failed
    for task, gt in zip(tasks, truth):
        assert len(masks[task["id"]]) == 1
        assert mask_iou(masks[task["id"]][0], gt) > 0.5
    assert _versions(out) == {_backend_version()}  # exactly what `pslg serve` would record


def test_rerun_skips_finished_tasks_retries_failed_and_repredicts_stale(tmp_path, monkeypatch):
    tasks_json, root, tasks, _ = _project(tmp_path)
    out = tmp_path / "out.json"
    _invoke(str(tasks_json), "--out", str(out), "--local-files-root", str(root))
    first = json.loads(out.read_text())

    again = _invoke(str(tasks_json), "--out", str(out), "--local-files-root", str(root))
    # the failed task is retried (and fails again); the others are not predicted twice
    assert "0 predicted" in again.output and f"{len(tasks) - 1} already up to date, 1 failed" in again.output
    assert json.loads(out.read_text()) == first  # nothing re-predicted, nothing doubled

    write_png(root / "img" / "absent.png", make_scene(seed=9, height=SIZE, width=SIZE, n_objects=1).image)
    fixed = _invoke(str(tasks_json), "--out", str(out), "--local-files-root", str(root))
    assert fixed.exit_code == 0, fixed.output
    assert "1 predicted" in fixed.output
    assert len(_masks(out)[999]) == 1

    before = _versions(out)
    monkeypatch.setenv("PSLG_USE_MBO", "off")  # another pipeline: another model_version, every task is stale
    monkeypatch.setenv("PSLG_USE_CFPG", "off")
    stale = _invoke(str(tasks_json), "--out", str(out), "--local-files-root", str(root))
    assert f"{len(tasks)} predicted" in stale.output, stale.output
    after = _versions(out)
    assert after == {_backend_version()} and after != before


def test_chunks_keep_the_tasks_of_one_image_together():
    from backend.prelabel.job import make_chunks

    todo = [(f"{img}-{i}", {"data": {"image": img}}) for img, n in (("a", 3), ("b", 4), ("c", 2), ("d", 9))
            for i in range(n)]
    chunks = [[key for key, _ in chunk] for chunk in make_chunks(todo, chunk_size=5)]
    assert sorted(k for c in chunks for k in c) == sorted(k for k, _ in todo)  # every task exactly once
    assert all(len(c) <= 5 for c in chunks)
    for img in "abc":  # groups that fit a chunk are never split
        assert sum(any(k.startswith(img + "-") for k in c) for c in chunks) == 1
    assert sum(any(k.startswith("d-") for k in c) for c in chunks) == 2  # 9 tasks: split only as needed


def test_checkpoint_ignores_a_torn_last_line_and_appends_after_it(tmp_path):
    cp = Checkpoint(tmp_path / "p.jsonl")
    cp.append([{"task": "1", "model_version": "v1"}, {"task": "2", "model_version": "v1"}])
    with open(cp.path, "a") as fh:
        fh.write('{"task": "3", "model_ver')  # what SIGKILL during a write leaves
    assert cp.done("v1") == {"1", "2"}
    cp.append([{"task": "4", "model_version": "v1"}])
    assert cp.done("v1") == {"1", "2", "4"}
    assert cp.done("v2") == set()


def _run(tasks_json: Path, root: Path, tmp_path: Path, executor_factory):
    source = TaskFile(tasks_json)
    spec = WorkerSpec(settings=Settings(local_files_root=str(root)), label_config=default_label_config())
    executor = executor_factory(spec)
    try:
        cp = Checkpoint(tmp_path / f"{type(executor).__name__}.jsonl")
        report = run_prelabel(source, executor, cp, chunk_size=2, keep_predictions=True)
    finally:
        executor.close()
    masks = {key: brush_rle_decode(rec["prediction"]["result"][0]["value"]["rle"], SIZE, SIZE)
             for key, rec in cp.load().items()}
    return report, masks


def test_two_worker_processes_give_the_same_masks_as_one(tmp_path):
    from backend.prelabel.executors import InProcessExecutor, ProcessExecutor

    tasks_json, root, tasks, _ = _project(tmp_path, missing=False)
    one, masks_one = _run(tasks_json, root, tmp_path, InProcessExecutor)
    two, masks_two = _run(tasks_json, root, tmp_path, lambda spec: ProcessExecutor(spec, 2))
    assert one.predicted == two.predicted == len(tasks) and not two.errors
    assert masks_one.keys() == masks_two.keys()
    for key in masks_one:
        assert np.array_equal(masks_one[key], masks_two[key])


@pytest.mark.slow
def test_ray_actors_on_a_local_instance_give_the_same_masks(tmp_path):
    import ray  # installed by setup.sh (the [ray] extra): CI must run this test, not skip it

    from backend.prelabel.executors import InProcessExecutor, RayExecutor

    tasks_json, root, tasks, _ = _project(tmp_path, missing=False)
    _, masks_one = _run(tasks_json, root, tmp_path, InProcessExecutor)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        report, masks_ray = _run(tasks_json, root, tmp_path, lambda spec: RayExecutor(spec, None, actors=2))
    finally:
        ray.shutdown()
    assert report.predicted == len(tasks) and not report.errors
    for key in masks_one:
        assert np.array_equal(masks_one[key], masks_ray[key])


def test_usage_errors_are_one_line_and_name_the_problem(tmp_path):
    result = _invoke("--project", "3")
    assert result.exit_code == 2 and "--url" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = _invoke(str(bad), "--out", str(tmp_path / "o.json"))
    assert result.exit_code == 2 and "bad.json" in result.output


def test_cached_embeddings_spare_the_backend_its_first_encoder_pass(tmp_path):
    from annotate.image_io import load_image
    from annotate.types import Prompt
    from backend.engine import Engine
    from tests.support.tiny_models import save_tiny_sam_checkpoint

    tasks_json, root, tasks, _ = _project(tmp_path, scenes=1, missing=False)
    ckpt = save_tiny_sam_checkpoint(tmp_path / "tiny_sam.pth")
    cache = tmp_path / "embeddings"
    result = _invoke(str(tasks_json), "--out", str(tmp_path / "out.json"), "--local-files-root", str(root),
                     "--checkpoint", str(ckpt), "--model-type", "auto", "--cache-embeddings", str(cache))
    assert result.exit_code == 0, result.output
    assert len(list(cache.iterdir())) == 1  # one image, one embedding

    # what `pslg serve` does with PSLG_EMBEDDING_CACHE=DIR: a new engine, the task image loaded as the backend does
    engine = Engine(Settings(sam_checkpoint=str(ckpt), sam_model_type="auto", embedding_cache=cache)).start()
    assert engine.wait_ready(120), engine.error
    image = load_image((root / "img" / "s0.png").read_bytes(), name="s0.png")
    x, y, w, h = tasks[0]["data"]["bbox"]
    [answer] = engine.run(image.rgb, [Prompt(box=(x, y, x + w, y + h))], image.key)
    assert answer.ok
    info = engine.pipeline.segmenter.cache_info()
    assert info["misses"] == 0 and info["disk_hits"] == 1

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


def _labels_of(out: Path) -> dict:
    return {t.get("id", i): [r["value"]["brushlabels"] for p in t.get("predictions", []) for r in p["result"]
                             if r["type"] == "brushlabels"]
            for i, t in enumerate(json.loads(out.read_text()))}


def test_categories_match_labels_by_name_and_an_unknown_one_fails_listing_the_labels(tmp_path, monkeypatch):
    tasks_json, root, tasks, _ = _project(tmp_path, scenes=1, missing=False)
    spelled = ["Storage_Tanks", "vehicles", "harbor"]  # plural + case + underscore; plural; no such label
    for task, category in zip(tasks, spelled):
        task["data"]["category"] = category
    tasks_json.write_text(json.dumps(tasks))
    out = tmp_path / "out.json"
    res = _invoke(str(tasks_json), "--out", str(out), "--local-files-root", str(root), "--workers", "1")
    assert res.exit_code == 1, res.output
    labels = _labels_of(out)
    assert labels[tasks[0]["id"]] == [["storage_tank"]] and labels[tasks[1]["id"]] == [["vehicle"]]
    assert labels[tasks[2]["id"]] == []  # never silently the config's first label
    failed = [line for line in res.output.splitlines() if line.startswith(f"task {tasks[2]['id']} (#2): ")]
    assert len(failed) == 1, res.output
    assert "'harbor'" in failed[0] and "vehicle, building, storage_tank, roundabout" in failed[0]
    assert "labels: 2 by category name, 0 by label map, 1 failed (category not a label: harbor)" in res.output

    # an explicit map labels it; PSLG_LABEL_MAP does the same as --label-map
    monkeypatch.setenv("PSLG_LABEL_MAP", "harbors=building")
    mapped = _invoke(str(tasks_json), "--out", str(out), "--local-files-root", str(root), "--workers", "1")
    assert mapped.exit_code == 0, mapped.output
    assert _labels_of(out)[tasks[2]["id"]] == [["building"]]
    assert "0 by category name, 1 by label map, 0 failed" in mapped.output

    bad = _invoke(str(tasks_json), "--out", str(out), "--label-map", "harbor")
    assert bad.exit_code == 2 and "'harbor' is not CATEGORY=LABEL" in bad.output


def test_progress_file_is_removed_after_a_complete_run_and_kept_while_tasks_fail(tmp_path):
    tasks_json, root, tasks, _ = _project(tmp_path, scenes=1)
    out = tmp_path / "out.json"
    progress = Path(f"{out}.progress.jsonl")
    failed = _invoke(str(tasks_json), "--out", str(out), "--local-files-root", str(root), "--workers", "1")
    assert failed.exit_code == 1 and progress.is_file(), failed.output
    write_png(root / "img" / "absent.png", make_scene(seed=9, height=SIZE, width=SIZE, n_objects=1).image)
    done = _invoke(str(tasks_json), "--out", str(out), "--local-files-root", str(root), "--workers", "1")
    assert done.exit_code == 0 and "1 predicted" in done.output, done.output
    assert not progress.exists()
    assert all(len(m) == 1 for m in _masks(out).values())


def test_a_progress_file_of_other_tasks_with_the_same_ids_attaches_nothing(tmp_path):
    first_json, root, first, _ = _project(tmp_path, scenes=1)  # the broken task keeps the progress file
    out = tmp_path / "out.json"
    assert _invoke(str(first_json), "--out", str(out), "--local-files-root", str(root), "--workers", "1").exit_code == 1
    # another tasks file, same ids, other objects (scene 5) and the same --out / progress file
    scene = make_scene(seed=5, height=SIZE, width=SIZE, n_objects=3)
    write_png(root / "img" / "other.png", scene.image)
    second = [{"id": t["id"], "data": {"image": "/data/local-files/?d=img/other.png", "expression": o.expression,
                                       "bbox": [o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1]]}}
              for t, o in zip(first, scene.objects)]
    second_json = tmp_path / "second.json"
    second_json.write_text(json.dumps(second))
    res = _invoke(str(second_json), "--out", str(out), "--local-files-root", str(root), "--workers", "1",
                  "--progress-file", f"{out}.progress.jsonl")
    assert res.exit_code == 0, res.output
    assert f"{len(second)} predicted, 0 already up to date" in res.output
    masks = _masks(out)
    for task, obj in zip(second, scene.objects):
        assert len(masks[task["id"]]) == 1 and mask_iou(masks[task["id"]][0], obj.mask) > 0.5


def test_tasks_without_ids_fail_one_line_each_with_their_position(tmp_path):
    tasks_json, root, tasks, _ = _project(tmp_path, scenes=1)
    bare = [{"data": t["data"]} for t in tasks]  # what `pslg import` writes
    tasks_json.write_text(json.dumps(bare))
    res = _invoke(str(tasks_json), "--out", str(tmp_path / "o.json"), "--local-files-root", str(root), "--workers", "1")
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.startswith("task ")]
    assert lines == [line for line in lines if line.startswith(f"task #{len(bare) - 1}: ")] and len(lines) == 1, res.output
    assert "absent.png" in lines[0] and "None" not in res.output


def test_plain_path_images_are_read_from_local_image_root(tmp_path):
    tasks_json, root, tasks, truth = _project(tmp_path, scenes=1, missing=False)
    for task in tasks:
        task["data"]["image"] = task["data"]["image"].split("?d=", 1)[1]  # "img/s0.png", a plain path
    tasks_json.write_text(json.dumps(tasks))
    out = tmp_path / "out.json"
    without = _invoke(str(tasks_json), "--out", str(out), "--workers", "1")
    assert without.exit_code == 1
    res = _invoke(str(tasks_json), "--out", str(out), "--local-image-root", str(root), "--workers", "1")
    assert res.exit_code == 0, res.output
    masks = _masks(out)
    for task, gt in zip(tasks, truth):
        assert mask_iou(masks[task["id"]][0], gt) > 0.5


def test_workers_default_to_the_cores(tmp_path, monkeypatch):
    import converters.cli.prelabel as prelabel_cli

    seen = {}

    def record(spec, workers, ray, ray_actors, ray_gpus):
        seen["workers"] = workers
        raise KeyboardInterrupt  # stop before any model loads

    monkeypatch.setattr(prelabel_cli, "_executor", record)
    monkeypatch.setattr(prelabel_cli.os, "cpu_count", lambda: 6)
    tasks_json = tmp_path / "t.json"
    tasks_json.write_text(json.dumps([{"data": {"image": "a.png", "bbox": [0, 0, 4, 4]}}]))
    res = _invoke(str(tasks_json), "--out", str(tmp_path / "o.json"))
    assert res.exit_code == 130 and "interrupted" in res.output
    assert seen["workers"] == 6
    _invoke(str(tasks_json), "--out", str(tmp_path / "o.json"), "--workers", "1")
    assert seen["workers"] == 1


def _children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigterm_stops_the_worker_processes_and_says_interrupted(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    tasks_json, root, tasks, _ = _project(tmp_path, scenes=2, missing=False)
    # enough tasks that the job is still running when the signal comes, however idle the machine (600 took 1.8 s)
    many = [{"id": 1000 + i, "data": dict(tasks[i % len(tasks)]["data"])} for i in range(30000)]
    tasks_json.write_text(json.dumps(many))
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "converters.cli.main", "prelabel", str(tasks_json), "--out",
                             str(tmp_path / "o.json"), "--local-files-root", str(root), "--workers", "2",
                             "--chunk-size", "300"],  # long chunks: the workers are busy when the signal comes
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(repo), "COLUMNS": "200"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            workers = [c for c in _children(proc.pid) if b"spawn_main" in _cmdline(c)]
            if len(workers) == 2:
                break
            time.sleep(0.2)
        time.sleep(3)  # models loaded, chunks under way
        assert len(workers) == 2, "the two worker processes never started"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err, err[-2000:]
    time.sleep(1)
    assert not any(_alive(w) for w in workers), "a worker process outlived the interrupted command"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_of_a_killed_command_do_not_linger(tmp_path):
    """SIGKILL runs no cleanup at all: the workers still go (the kernel signals them when their parent dies)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    tasks_json, root, tasks, _ = _project(tmp_path, scenes=1, missing=False)
    tasks_json.write_text(json.dumps([{"id": 1000 + i, "data": dict(tasks[i % len(tasks)]["data"])} for i in range(20000)]))
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "converters.cli.main", "prelabel", str(tasks_json), "--out",
                             str(tmp_path / "o.json"), "--local-files-root", str(root), "--workers", "2"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(repo)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and len(workers) < 2:
            workers = [c for c in _children(proc.pid) if b"spawn_main" in _cmdline(c)]
            time.sleep(0.2)
        assert len(workers) == 2, "the two worker processes never started"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "a worker process outlived its killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers:  # never leave a stray process behind, whatever failed
            if _alive(w):
                os.kill(w, signal.SIGKILL)

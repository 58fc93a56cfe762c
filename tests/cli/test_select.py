"""`pslg select` on a tasks file: the batch, its order, its rationale, the per-image cap, bad tasks."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from converters.cli.main import app


def _task(tid: int, image: str, score=None, label="plane", x=10.0, labelled=False) -> dict:
    box = {"id": f"b{tid}", "type": "rectanglelabels", "from_name": "box", "to_name": "image",
           "value": {"x": x, "y": 20.0, "width": 10.0, "height": 8.0, "rectanglelabels": [label]}}
    task = {"id": tid, "data": {"image": image, "expression": f"the {label}"}, "annotations": [], "predictions": []}
    if score is not None:
        task["predictions"] = [{"id": tid, "model_version": "pslg:x", "score": score, "result": [box],
                                "created_at": "2026-01-01T00:00:00"}]
    if labelled:
        task["annotations"] = [{"id": 100 + tid, "result": [box]}]
    return task


def _run(tmp_path, tasks, *args):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    out = tmp_path / "batch.json"
    result = CliRunner().invoke(app, ["select", str(path), "--out", str(out), *args])
    return result, (json.loads(out.read_text()) if out.exists() else None)


def test_uncertain_first_with_a_cap_and_labelled_tasks_left_out(tmp_path):
    tasks = [_task(1, "a.png", 0.9), _task(2, "a.png", 0.2, x=50), _task(3, "a.png", 0.25, x=50),
             _task(4, "b.png", 0.4), _task(5, "c.png", 0.1, labelled=True), _task(6, "b.png", 0.8, label="ship")]
    result, batch = _run(tmp_path, tasks, "--size", "3", "--per-image-cap", "1", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert batch["task_ids"][0] == 2 and 5 not in batch["task_ids"] and len(batch["task_ids"]) == 2  # a.png, b.png: one each
    images = [t["image"] for t in batch["tasks"]]
    assert len(set(images)) == len(images)  # the cap: one per image
    assert batch["tasks"][0]["predicted_iou"] == 0.2 and batch["tasks"][0]["strategy"] == "uncertainty+diversity"
    again, batch2 = _run(tmp_path, tasks, "--size", "3", "--per-image-cap", "1", "--seed", "0")
    assert batch2["task_ids"] == batch["task_ids"]


def test_cold_start_is_stratified_and_bad_tasks_are_named(tmp_path):
    # pre-labelled (scored by today's score) but nothing corrected yet: a cold start
    tasks = [_task(i, f"{i}.png", score=0.1 * i, label=("plane", "ship")[i % 2]) for i in range(1, 9)]
    tasks += [{"id": 99, "data": {}}]
    result, batch = _run(tmp_path, tasks, "--size", "4", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "task 99: no image under data.image" in result.output
    strata = [t["stratum"] for t in batch["tasks"]]
    assert sorted(strata[:2]) == ["plane", "ship"] and sorted(strata[2:]) == ["plane", "ship"]
    assert batch["task_ids"] != [1, 2, 3, 4] and all("stratified" in t["strategy"] for t in batch["tasks"])


def test_a_broken_tasks_file_is_one_clear_error(tmp_path):
    path = tmp_path / "tasks.json"
    path.write_text("{not json")
    result = CliRunner().invoke(app, ["select", str(path)])
    assert result.exit_code != 0 and "tasks.json" in result.output

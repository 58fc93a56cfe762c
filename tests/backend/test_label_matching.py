"""Batch /predict labels each task by its category's name, or fails it: never silently the config's first label."""

from __future__ import annotations

from backend.config import Settings
from tests.support.scenes import CONFIG, task_for


def _labels(result: dict) -> list[list[str]]:
    return [r["value"]["brushlabels"] for r in result["result"] if r["type"] == "brushlabels"]


def test_categories_by_name_unmatched_fails_and_the_map_labels_it(make_client, scene, files_root, tmp_path, caplog):
    tasks = [task_for(scene, i, 50 + i) for i in range(4)]
    for task, category in zip(tasks, ["Roundabouts", "storage tank", "harbor", None]):
        if category:
            task["data"]["category"] = category
    client = make_client()
    with caplog.at_level("WARNING"):
        results = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG}).get_json()["results"]
    assert _labels(results[0]) == [["roundabout"]] and _labels(results[1]) == [["storage_tank"]]
    assert results[2]["result"] == [] and "'harbor'" in results[2]["error"]
    assert "vehicle, building, storage_tank, roundabout" in results[2]["error"]
    assert len(_labels(results[3])) == 1  # no category: a label from the expression or the config
    assert any("task 52" in m and "harbor" in m for m in caplog.messages)
    assert any("1 task(s) of this batch failed on their category" in m for m in caplog.messages)

    mapped = make_client(Settings(model_dir=tmp_path / "model2", local_files_root=str(files_root),
                                  label_map="harbour=building,harbor=building"))
    results = mapped.post("/predict", json={"tasks": tasks, "label_config": CONFIG}).get_json()["results"]
    assert _labels(results[2]) == [["building"]]

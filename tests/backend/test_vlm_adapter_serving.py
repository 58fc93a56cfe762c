"""The backend serves a model store whose current version is a LoRA adapter of a vision-language grounder
(base + adapter), reports its version, and pre-labels with the box the model answers."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("peft")

from annotate.grounding.training import TrainConfig, train_grounder  # noqa: E402
from annotate.modelstore import ModelStore  # noqa: E402
from tests.support.scenes import CONFIG, task_for  # noqa: E402


def test_a_store_whose_current_version_is_a_lora_adapter_is_served(make_client, scene, tmp_path) -> None:
    from annotate.grounding.evaluation import GroundingSample
    from tests.support.scenes import write_png
    from tests.support.tiny_vlms import force_answer, save_tiny_florence2

    height, width = scene.image.shape[:2]
    target = scene.objects[0]
    base = save_tiny_florence2(tmp_path / "florence")
    bins = [int(v / s * 1000) for v, s in zip(target.box, (width, height, width, height))]
    force_answer(base, "x" + "".join(f"<loc_{b}>" for b in bins))  # the base answers the object's box
    write_png(tmp_path / "train.png", scene.image)
    samples = [GroundingSample(tmp_path / "train.png", o.expression, tuple(map(float, o.box)), ref_id=i)
               for i, o in enumerate(scene.objects)]
    store = tmp_path / "models"
    result = train_grounder(samples, [], str(base), store, TrainConfig(epochs=1, batch_size=2), device="cpu",
                            progress=False, log=lambda _: None)
    assert (result.path / "adapter_config.json").is_file()
    label = ModelStore(store).get("v0001").card.label

    client = make_client(grounding_model=str(store), device="cpu", model_poll_s=0)
    health = client.get("/health").get_json()
    assert health["grounding"]["serving"] == "v0001" and label in health["model_version"]
    assert "fallback" not in health

    answer = client.post("/predict", json={"tasks": [task_for(scene, 0, 7, with_box=False)], "label_config": CONFIG})
    assert answer.status_code == 200, answer.get_json()
    (prediction,) = answer.get_json()["results"]
    assert label in prediction["model_version"] and prediction["result"]
    boxes = [r["value"] for r in prediction["result"] if r["type"] == "rectanglelabels"]
    assert len(boxes) == 1  # the labeling config asks for the box: it is the model's answer (percent of the image)
    x0, y0, x1, y1 = target.box
    assert boxes[0]["x"] == pytest.approx(100 * x0 / width, abs=1.0)
    assert boxes[0]["y"] == pytest.approx(100 * y0 / height, abs=1.0)
    assert boxes[0]["width"] == pytest.approx(100 * (x1 - x0) / width, abs=1.0)


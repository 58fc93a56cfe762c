"""Fine-tuning through the real transformers training path: loss, accuracy, versions, resume, bad items."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from annotate.grounding import GroundingError, load_grounder
from annotate.grounding.evaluation import evaluate_boxes, samples_from_records
from annotate.grounding.training import TrainConfig, train_grounder
from annotate.modelstore import ModelStore
from converters.rrsis import read_rrsis
from tests.support.tiny_grounders import FIXED_BOX, write_fixed_layout_rrsis

# Enough steps for the 0.5 M-parameter model to move its chosen box onto the object (1 step per epoch): measured
# over seeds 0-4, train Acc@0.5 0.5-1.0 at 120 epochs (0-1.0 at 40-80 epochs, too close to chance to test).
FAST = TrainConfig(epochs=120, lr=5e-3, batch_size=4, seed=0, grad_clip=1.0, train_backbones=True)


def _chance_acc50(boxes: list, width: int, height: int, seed: int = 0, draws: int = 4000) -> float:
    """Acc@0.5 of a box of the right size dropped uniformly at random in the image (what guessing gets)."""
    from annotate.metrics import box_iou

    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(draws):
        x0, y0, x1, y1 = boxes[rng.integers(len(boxes))]
        w, h = x1 - x0, y1 - y0
        px, py = rng.uniform(0, width - w), rng.uniform(0, height - h)
        hits += box_iou((px, py, px + w, py + h), (x0, y0, x1, y1)) >= 0.5
    return hits / draws


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixed_layout_rrsis(tmp_path_factory.mktemp("fixed") / "data", {"train": 4, "val": 2})


@pytest.fixture(scope="module")
def trained(data: Path, gdino_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("models")
    train = samples_from_records(read_rrsis(data, "train"))
    val = samples_from_records(read_rrsis(data, "val"))
    result = train_grounder(train, val, gdino_dir, out, FAST, device="cpu", data_root=str(data), progress=False,
                            log=lambda m: None)
    return result, out, train


def test_fine_tuning_lowers_loss_and_beats_chance(trained, gdino_dir: Path) -> None:
    result, _, train = trained
    assert len(result.history) == FAST.epochs
    assert np.mean(result.history[-5:]) < 0.25 * result.history[0]
    before = evaluate_boxes(load_grounder(gdino_dir, device="cpu"), train)
    after = evaluate_boxes(load_grounder(result.path, device="cpu"), train)  # the reloaded, saved weights
    chance = _chance_acc50([s.box for s in train], 128, 128)
    assert after.acc50 > max(chance, before.acc50)
    assert after.mean_iou > before.mean_iou + 0.2
    assert after.n == len(train) and not after.errors


def test_version_directory_contents(trained, data: Path, gdino_dir: Path) -> None:
    result, out, train = trained
    path = result.path
    assert path.parent == out and path.name == "v0001" and result.version.startswith("grounding-v0001-")
    for name in ("config.json", "model.safetensors", "metrics.json", "train_data.json", "MODEL_CARD.md",
                 "pslg_grounder.json", "tokenizer.json", "processor_config.json", "card.json"):
        assert (path / name).is_file(), name
    assert not (path / "training_state.pt").exists()
    meta = json.loads((path / "pslg_grounder.json").read_text())
    assert meta["base"] == str(gdino_dir.resolve())
    card = json.loads((path / "card.json").read_text())
    assert card["kind"] == "grounding" and card["version"] == "v0001" and card["parent"] is None
    assert card["base"] == str(gdino_dir.resolve()) and card["samples"] == len(train) and card["data_digest"]
    assert card["metrics"]["val"]["n"] == 2
    assert meta["train"]["epochs"] == FAST.epochs and meta["history"] == result.history
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["val"]["n"] == 2 and set(metrics["val"]["per_category"]) == {"building"}
    seen = json.loads((path / "train_data.json").read_text())["samples"]
    assert sorted(s["ref_id"] for s in seen) == sorted(s.ref_id for s in train)
    assert seen[0]["box"] == list(FIXED_BOX)
    assert load_grounder(path, device="cpu").model_version == result.version
    assert load_grounder(out, device="cpu").model_version == result.version  # the store serves its current version


def test_retrain_makes_a_new_version_and_the_old_one_still_loads(trained, data: Path) -> None:
    first, out, train = trained
    second = train_grounder(train, [], first.path, out, TrainConfig(epochs=1, lr=1e-4, seed=1), device="cpu",
                            progress=False, log=lambda m: None)
    assert second.path.name == "v0002" and second.version.startswith("grounding-v0002-")
    store = ModelStore(out)
    assert [v.name for v in store.versions()] == ["v0001", "v0002"] and store.current("grounding").name == "v0002"
    assert store.get("v0002").card.parent == "v0001"
    meta = json.loads((second.path / "pslg_grounder.json").read_text())
    assert meta["base_version"] == "v0001"
    old, new = load_grounder(first.path, device="cpu"), load_grounder(second.path, device="cpu")
    assert old.model_version == first.version and new.model_version == second.version
    image = np.zeros((128, 128, 3), np.uint8)
    assert old.ground(image, "the building in the center") and new.ground(image, "the building in the center")


def test_interrupted_run_resumes_from_the_last_epoch(data: Path, gdino_dir: Path, tmp_path: Path) -> None:
    train = samples_from_records(read_rrsis(data, "train"))
    config = TrainConfig(epochs=2, lr=1e-3, batch_size=2, seed=0)

    class Stop(Exception):
        pass

    def stop_after_first_epoch(message: str) -> None:
        if message.startswith("epoch 1/"):
            raise Stop

    with pytest.raises(Stop):
        train_grounder(train, [], gdino_dir, tmp_path, config, device="cpu", progress=False, log=stop_after_first_epoch)
    [partial] = [p for p in tmp_path.iterdir() if p.name.startswith(".staging-")]
    assert (partial / "training_state.pt").is_file() and not ModelStore(tmp_path).versions()
    # the checkpoint is written before the epoch is logged, so it holds epoch 1
    logs: list[str] = []
    resumed = train_grounder(train, [], gdino_dir, tmp_path, config, device="cpu", progress=False, log=logs.append)
    assert resumed.resumed_from_epoch == 1 and any(m.startswith("resuming") for m in logs)
    assert resumed.path.name == "v0001" and not partial.exists()
    fresh = train_grounder(train, [], gdino_dir, tmp_path / "fresh", config, device="cpu", progress=False,
                           log=lambda m: None)
    assert resumed.history == pytest.approx(fresh.history, rel=1e-4)  # seeded: resuming changes nothing


def test_bad_items_are_skipped_and_named(data: Path, gdino_dir: Path, tmp_path: Path) -> None:
    train = samples_from_records(read_rrsis(data, "train"))
    train[0].image_path = tmp_path / "gone.png"
    train[1].expression = "  "
    logs: list[str] = []
    result = train_grounder(train, [], gdino_dir, tmp_path, TrainConfig(epochs=1), device="cpu", progress=False,
                            log=logs.append)
    assert len(result.skipped) == 2
    assert any("gone.png" in m for m in logs) and any("empty" in m for m in logs)
    seen = json.loads((result.path / "train_data.json").read_text())["samples"]
    assert len(seen) == len(train) - 2


def test_owlv2_base_and_empty_data_are_refused(data: Path, owlv2_dir: Path, gdino_dir: Path, tmp_path: Path) -> None:
    train = samples_from_records(read_rrsis(data, "train"))
    with pytest.raises(GroundingError, match="owlv2"):
        train_grounder(train, [], owlv2_dir, tmp_path, TrainConfig(epochs=1), device="cpu", progress=False)
    with pytest.raises(GroundingError, match="no usable training"):
        train_grounder([], [], gdino_dir, tmp_path, TrainConfig(epochs=1), device="cpu", progress=False)


class _PlantedCode:
    """Unpickling this runs ``exec`` (what a planted checkpoint would do with ``os.system``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_a_planted_checkpoint_runs_no_code_and_the_run_starts_over(data: Path, gdino_dir: Path, tmp_path: Path) -> None:
    """Issue 17 item 3: ``training_state.pt`` was read with ``torch.load(weights_only=False)``."""
    import torch

    train = samples_from_records(read_rrsis(data, "train"))
    config = TrainConfig(epochs=1, lr=1e-3, batch_size=2, seed=0)

    class Stop(Exception):
        pass

    def stop_at_first_epoch(message: str) -> None:
        if message.startswith("epoch 1/"):
            raise Stop

    with pytest.raises(Stop):
        train_grounder(train, [], gdino_dir, tmp_path / "store", config, device="cpu", progress=False,
                       log=stop_at_first_epoch)
    [partial] = [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".staging-")]
    marker = tmp_path / "code-ran"
    torch.save({"epoch": 1, "payload": _PlantedCode(marker)}, partial / "training_state.pt")
    logs: list[str] = []
    result = train_grounder(train, [], gdino_dir, tmp_path / "store", config, device="cpu", progress=False,
                            log=logs.append)
    assert not marker.exists()
    assert result.resumed_from_epoch == 0 and result.path.name == "v0001"
    assert any(m.startswith("not resuming from training_state.pt") for m in logs), logs

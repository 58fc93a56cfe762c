"""`pslg train grounding`, `pslg eval` and `pslg segment --text --grounding` end to end with tiny models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from converters.cli.main import app
from tests.support.tiny_grounders import write_synthetic_rrsis

runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_rrsis(tmp_path_factory.mktemp("rrsis") / "data", {"train": 3, "val": 2, "test": 2}, n_objects=2)


@pytest.fixture(scope="module")
def trained_dir(dataset: Path, gdino_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    res = runner.invoke(app, ["train", "grounding", "--data", str(dataset), "--base", str(gdino_dir), "--out", str(out),
                              "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    [version] = [p for p in out.iterdir() if p.is_dir()]
    assert re.search(rf"model version: \S*{re.escape(version.name)}", res.output)
    assert res.output.strip().splitlines()[-1] == str(version)
    assert "val box Acc@0.5" in res.output
    return version


def test_eval_with_a_trained_grounder_writes_the_rrsis_table(trained_dir: Path, dataset: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "eval.json"
    res = runner.invoke(app, ["eval", "--data", str(dataset), "--split", "test", "--grounding", str(trained_dir),
                              "--device", "cpu", "--out", str(report_path), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "Pr@0.5" in res.output and "480×480" in res.output
    report = json.loads(report_path.read_text())
    overall = report["overall"]
    assert overall["n"] == 4  # 2 test images × 2 objects × 1 sentence
    for protocol in ("native", "480"):
        row = overall[protocol]
        assert set(row["precision"]) == {"0.5", "0.6", "0.7", "0.8", "0.9"}
        assert 0.0 <= row["miou"] <= 1.0 and 0.0 <= row["oiou"] <= 1.0
    assert 0.0 <= overall["box"]["acc@0.5"] <= 1.0
    assert sum(r["n"] for r in report["per_category"].values()) == 4
    assert report["settings"]["model_version"].count(trained_dir.name) == 1


def test_eval_oracle_box_isolates_stage_two(dataset: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "oracle.json"
    res = runner.invoke(app, ["eval", "--data", str(dataset), "--split", "test", "--oracle-box", "--no-mbo", "--no-cfpg",
                              "--out", str(report_path), "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads(report_path.read_text())
    # ground-truth boxes around flat-coloured synthetic objects: the weights-free segmenter gets them nearly right
    assert report["overall"]["native"]["miou"] > 0.8
    assert "box" not in report["overall"] and report["settings"]["cfpg"] is False and report["settings"]["mbo"] is False


def test_eval_needs_a_grounder_or_oracle_boxes(dataset: Path) -> None:
    res = runner.invoke(app, ["eval", "--data", str(dataset), "--split", "test"])
    assert res.exit_code == 2 and "--oracle-box" in res.output
    res = runner.invoke(app, ["eval", "--data", str(dataset / "nowhere"), "--oracle-box"])
    assert res.exit_code == 2 and "cannot read" in res.output


def test_train_refuses_a_missing_base(dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("transformers")  # the light install names the missing [grounding] extra first
    res = runner.invoke(app, ["train", "grounding", "--data", str(dataset), "--base", str(tmp_path / "no-model"),
                              "--out", str(tmp_path / "m"), "--epochs", "1", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 2 and "no-model" in res.output


def test_segment_text_to_mask_with_a_trained_grounder(trained_dir: Path, dataset: Path, tmp_path: Path) -> None:
    from tests.support.tiny_models import save_tiny_sam_checkpoint

    image = next((dataset / "images" / "rrsisd" / "JPEGImages").glob("*.png"))
    ckpt = save_tiny_sam_checkpoint(tmp_path / "tiny_sam.pth")
    out = tmp_path / "seg"
    res = runner.invoke(app, ["segment", str(image), "--text", "the vehicle at the top left", "--grounding",
                              str(trained_dir), "--checkpoint", str(ckpt), "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    [record] = json.loads((out / "results.json").read_text())
    assert record["error"] is None and record["grounding_score"] is not None
    assert trained_dir.name in record["model_version"]
    assert (out / "mask.png").is_file()
    # --prompts entries with only text work too, next to a failing one
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"text": "the roundabout on the right"}, {"text": "   "}]))
    res = runner.invoke(app, ["segment", str(image), "--prompts", str(prompts), "--grounding", str(trained_dir),
                              "--device", "cpu", "--out", str(tmp_path / "seg2")])
    records = json.loads((tmp_path / "seg2" / "results.json").read_text())
    assert res.exit_code == 1 and records[0]["error"] is None and records[1]["error"]


@pytest.mark.shared_data
def test_eval_on_the_rrsisd_style_fixture(shared_data: Path, gdino_dir: Path, tmp_path: Path) -> None:
    """Real RS images and expressions (RRSIS-D layout, 2 val refs): oracle boxes, then a (random) grounder."""
    fixture = shared_data / "derived" / "rrsisd_style_fixture"
    sources = [shared_data / "geopixel/data/GeoPixelD/train/P0224_0_800_0_800.png",
               shared_data / "rsvg_pytorch/RSVGD/JPEGImages/00001.jpg"]
    if not fixture.is_dir() or not all(p.is_file() for p in sources):
        pytest.skip("RRSIS-D-style fixture or its images are absent")
    images = tmp_path / "images"
    images.mkdir()
    for p in sources:
        (images / p.name).symlink_to(p)
    oracle = tmp_path / "oracle.json"
    res = runner.invoke(app, ["eval", "--data", str(fixture), "--image-root", str(images), "--split", "val", "--oracle-box",
                              "--out", str(oracle), "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads(oracle.read_text())
    assert report["overall"]["n"] == 2 and set(report["per_category"]) == {"tennis_court", "golffield"}
    assert report["overall"]["native"]["miou"] > 0.3  # a ground-truth box around the object, weights-free stage 2
    grounded = tmp_path / "grounded.json"
    res = runner.invoke(app, ["eval", "--data", str(fixture), "--image-root", str(images), "--split", "val", "--grounding",
                              str(gdino_dir), "--device", "cpu", "--out", str(grounded), "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads(grounded.read_text())
    assert report["overall"]["n"] == 2 and not report["errors"]
    assert 0.0 <= report["overall"]["box"]["acc@0.5"] <= 1.0

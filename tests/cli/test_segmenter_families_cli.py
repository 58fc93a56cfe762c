"""SAM 2.1 / SAM-HQ / EdgeTAM (``--checkpoint DIR``) and SAM 3 (``--one-stage DIR``) through `pslg segment`,
`pslg eval` and `pslg models list`, with tiny real architectures saved like hub checkpoints."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
from tests.support.tiny_hf_segmenters import BUILDERS, save_tiny_sam3  # noqa: E402

from annotate.synthetic import make_scene  # noqa: E402
from converters.cli.main import app  # noqa: E402
from tests.support.tiny_grounders import write_synthetic_rrsis  # noqa: E402

runner = CliRunner()
FAMILIES = [f for f in sorted(BUILDERS) if f != "edgetam" or importlib.util.find_spec("timm") is not None]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    dirs = {family: BUILDERS[family](root / family) for family in FAMILIES}
    dirs["sam3"] = save_tiny_sam3(root / "sam3")
    return dirs


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory) -> Path:
    scene = make_scene(seed=3, height=120, width=160, n_objects=3)
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    cv2.imwrite(str(path), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_synthetic_rrsis(tmp_path_factory.mktemp("rrsis") / "data", {"test": 2}, size=96, n_objects=2)


@pytest.mark.parametrize("family", FAMILIES)
def test_segment_with_each_family(models, scene_png, tmp_path, family) -> None:
    out = tmp_path / "out"
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"box": [20, 20, 90, 80]}, {"box": [20, 20, 90, 80], "points": [[30, 30]],
                                                                "point_labels": [0]}]))
    res = runner.invoke(app, ["segment", str(scene_png), "--checkpoint", str(models[family]), "--prompts", str(prompts),
                              "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    records = json.loads((out / "results.json").read_text())
    assert [r["error"] for r in records] == [None, None]
    assert records[0]["model_version"].startswith(family.replace("_", "") + "-")
    assert "cfpg-on" in records[0]["model_version"] and "mbo-on" in records[0]["model_version"]
    for rec in records:
        mask = cv2.imread(str(out / rec["mask_file"]), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (120, 160)


def test_segment_one_stage_text(models, scene_png, tmp_path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["segment", str(scene_png), "--one-stage", str(models["sam3"]),
                              "--text", "the storage tank at the top left", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    [rec] = json.loads((out / "results.json").read_text())
    assert rec["error"] is None and rec["box"] is not None and rec["model_version"].startswith("sam3-")
    assert (out / "mask.png").is_file()


def test_one_stage_refusals(models, scene_png, tmp_path) -> None:
    res = runner.invoke(app, ["segment", str(scene_png), "--one-stage", str(models["sam3"]), "--grounding", "x/y",
                              "--text", "a ship", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not both" in res.output
    res = runner.invoke(app, ["segment", str(scene_png), "--checkpoint", str(models["sam3"]), "--box", "1,1,20,20",
                              "--device", "cpu", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--one-stage" in res.output
    res = runner.invoke(app, ["segment", str(scene_png), "--box", "1,1,20,20", "--precision", "fp8",
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "unknown precision" in res.output


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_oracle_box_with_each_family(models, dataset, tmp_path, family) -> None:
    report = tmp_path / "eval.json"
    res = runner.invoke(app, ["eval", "--data", str(dataset), "--split", "test", "--oracle-box", "--checkpoint",
                              str(models[family]), "--device", "cpu", "--out", str(report), "--no-progress"])
    assert res.exit_code == 0, res.output
    data = json.loads(report.read_text())
    assert data["overall"]["n"] == 4 and 0.0 <= data["overall"]["native"]["miou"] <= 1.0
    assert data["settings"]["model_version"].startswith(family.replace("_", ""))


def test_eval_one_stage(models, dataset, tmp_path) -> None:
    report = tmp_path / "eval.json"
    res = runner.invoke(app, ["eval", "--data", str(dataset), "--split", "test", "--one-stage", str(models["sam3"]),
                              "--device", "cpu", "--out", str(report), "--no-progress"])
    assert res.exit_code == 0, res.output
    data = json.loads(report.read_text())
    assert data["overall"]["n"] == 4 and "box" in data["overall"]
    assert data["settings"]["one_stage"] == str(models["sam3"]) and data["settings"]["model_version"].startswith("sam3-")


def test_models_list_shows_the_families() -> None:
    res = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for text in ("SAM 2", "SAM-HQ", "EdgeTAM", "SAM 3", "facebook/sam2.1-hiera-tiny", "--one-stage"):
        assert text in res.output, text

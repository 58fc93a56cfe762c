"""`pslg eval` on a dataset with multi-object and no-target refs: gIoU, cIoU, N-acc and T-acc beside the RRSIS
table (which then covers the one-object refs), with answers known in advance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from converters.cli.main import app
from converters.model import ImageItem, ObjectItem, Referral
from converters.rrsis import write_rrsis
from tests.support.scenes import write_png

runner = CliRunner()


def _square(y0: int, x0: int, size: int = 16) -> np.ndarray:
    m = np.zeros((64, 64), bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One image of three white squares on black: a one-object ref, a two-object ref and two no-target ones."""
    root = tmp_path_factory.mktemp("generalized")
    squares = [_square(4, 4), _square(4, 44), _square(44, 24)]
    rgb = np.zeros((64, 64, 3), np.uint8)
    for m in squares:
        rgb[m] = 255
    path = write_png(root / "src" / "a.png", rgb)
    objects = [ObjectItem(squares[0], "tank", ["the square at the top left"]), ObjectItem(squares[1], "tank"),
               ObjectItem(squares[2], "tank")]
    item = ImageItem(source="a.png", path=path, width=64, height=64, split="test", where="scene", objects=objects,
                     referrals=[Referral(["the two lower squares"], [1, 2]),
                                Referral(["the red ship", "a bridge"], [])])
    report = write_rrsis(root / "data", [item])
    assert report.ok, report.errors
    return root / "data"


def _eval(dataset: Path, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "eval.json"
    res = runner.invoke(app, ["eval", "--data", str(dataset), "--out", str(out), "--no-progress", "--device", "cpu",
                              *args])
    assert res.exit_code == 0, res.output
    assert "gIoU" in res.output and "N-acc" in res.output and "one-object refs" in res.output
    return json.loads(out.read_text())


def test_oracle_boxes_answer_every_kind_of_expression(dataset: Path, tmp_path: Path) -> None:
    report = _eval(dataset, tmp_path, "--oracle-box", "--no-mbo", "--no-cfpg")
    g = report["overall"]["generalized"]
    assert (g["n"], g["no_target"], g["n_acc"], g["t_acc"]) == (4, 2, 1.0, 1.0)
    assert g["giou"] > 0.75 and g["ciou"] > 0.6  # flat white squares in their own boxes
    single = report["overall"]["native"]
    assert single["n"] == 1  # the RRSIS table: the one-object ref only
    # gIoU = (1 + 1 for the two right empty answers + the one-object IoU + the two-object IoU) / 4
    multi_iou = 4 * g["giou"] - 2 - single["miou"]
    assert 0.6 < multi_iou <= 1.0
    assert report["generalized_data"] is True


def test_a_grounder_that_finds_nothing_gets_exactly_the_no_target_share(dataset: Path, gdino_dir: Path,
                                                                       tmp_path: Path) -> None:
    # no candidate can reach a threshold above 1: every expression is answered "no target"
    report = _eval(dataset, tmp_path, "--grounding", str(gdino_dir), "--target-threshold", "1.5")
    g = report["overall"]["generalized"]
    assert (g["giou"], g["ciou"], g["n_acc"], g["t_acc"]) == (0.5, 0.0, 1.0, 0.0)
    assert report["overall"]["native"]["miou"] == 0.0 and report["settings"]["target_threshold"] == 1.5

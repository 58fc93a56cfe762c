"""Issue 17 item 6: ``pslg validate`` gave a traceback on negative or huge uncompressed RLE counts and on records
of the wrong type; every one is now a one-line error naming the record (and ``stats`` skips it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import pslg


def _coco(path: Path, images=None, annotations=None, categories=None) -> Path:
    path.write_text(json.dumps({
        "images": images if images is not None else [{"id": 1, "file_name": "a.png", "width": 4, "height": 3}],
        "categories": categories if categories is not None else [{"id": 1, "name": "car"}],
        "annotations": annotations if annotations is not None else []}))
    return path


GOOD = {"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [3, 4], "counts": [2, 3, 7]}}

CASES = {
    "negative counts": ([dict(GOOD, id=7, segmentation={"size": [3, 4], "counts": [-5, 17]})], "annotation 7"),
    "huge counts": ([dict(GOOD, id=7, segmentation={"size": [3, 4], "counts": [10**30, 12 - 10**30]})], "annotation 7"),
    "400-digit count": ([dict(GOOD, id=7, segmentation={"size": [3, 4], "counts": [int("9" * 400)]})], "annotation 7"),
    "string counts": ([dict(GOOD, id=7, segmentation={"size": [3, 4], "counts": ["2", 10]})], "annotation 7"),
    "annotation not an object": (["just a string"], "annotations[1]"),
    "list id": ([dict(GOOD, id=[7])], "annotations[1]"),
    "size of strings": ([dict(GOOD, id=7, segmentation={"size": ["3", {}], "counts": "PPa0"})], "annotation 7"),
    "bbox of strings": ([dict(GOOD, id=7, bbox=["a", {}, 1, 2])], "annotation 7"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_bad_annotation_is_one_line(tmp_path: Path, case: str):
    annotations, where = CASES[case]
    path = _coco(tmp_path / "annotations.json", annotations=[GOOD] + annotations)
    result = pslg("validate", path, "--no-images")
    assert result.exit_code == 1, result.output
    assert where in result.output and isinstance(result.exception, SystemExit), result.output  # no traceback
    assert pslg("stats", path).exit_code == 0


@pytest.mark.parametrize(("images", "categories", "where"), [
    (["x"], None, "images[0]"), ([{"id": 1, "file_name": "a.png", "width": "4", "height": 3}], None, "image 1"),
    ([{"id": {}, "width": 4, "height": 3}], None, "images[0]"), (None, [7], "categories[0]"),
])
def test_bad_image_and_category_records_are_one_line(tmp_path: Path, images, categories, where):
    path = _coco(tmp_path / "annotations.json", images=images, categories=categories, annotations=[GOOD])
    result = pslg("validate", path, "--no-images")
    assert result.exit_code == 1 and where in result.output and isinstance(result.exception, SystemExit), result.output
    assert pslg("stats", path).exit_code == 0


def test_a_file_that_is_not_a_coco_object_is_one_line(tmp_path: Path):
    path = tmp_path / "annotations.json"
    path.write_text("[1, 2]")
    result = pslg("validate", path)
    assert result.exit_code == 2 and "not a COCO object" in result.output and isinstance(result.exception, SystemExit)

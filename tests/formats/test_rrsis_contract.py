"""The RRSIS-D files as the loaders that train on them read them: every annotation carries ``categories_id``
(what RRSIS-D ships and its loaders index) equal to ``category_id``, an image never lands in two splits (the
conflicting task is reported by name and the rest is written), and an expression is one sentence of its ref
however often the tasks repeat it."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from converters.model import ImageItem, ObjectItem
from converters.rrsis import write_rrsis
from tests.support.scenes import write_png


def _image(tmp_path: Path, name: str = "a.png") -> Path:
    return write_png(tmp_path / "src" / name, np.full((40, 50, 3), 100, np.uint8))


def _mask(y0: int, x0: int, size: int = 10) -> np.ndarray:
    m = np.zeros((40, 50), bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


def _item(path: Path, objects: list[ObjectItem], split=None, where="task 1") -> ImageItem:
    return ImageItem(source=path.name, path=path, width=50, height=40, objects=objects, split=split, where=where)


def _read(root: Path) -> tuple[list[dict], dict]:
    refs = pickle.loads((root / "rrsisd" / "refs(unc).p").read_bytes())
    return refs, json.loads((root / "rrsisd" / "instances.json").read_text())


def test_annotations_carry_categories_id_equal_to_category_id(tmp_path):
    path = _image(tmp_path)
    objects = [ObjectItem(_mask(2, 2), "vehicle", ["the car on the left"]),
               ObjectItem(_mask(20, 30), "building", ["the building on the right"])]
    report = write_rrsis(tmp_path / "out", [_item(path, objects)])
    assert report.ok, report.errors
    refs, instances = _read(tmp_path / "out")
    names = {c["id"]: c["name"] for c in instances["categories"]}
    anns = {a["id"]: a for a in instances["annotations"]}
    assert len(anns) == 2
    for a in anns.values():
        assert a["categories_id"] == a["category_id"]
    assert {names[anns[r["ann_id"]]["categories_id"]] for r in refs} == {"vehicle", "building"}
    assert all(r["category_id"] == anns[r["ann_id"]]["categories_id"] for r in refs)


def test_an_image_in_two_splits_is_reported_and_the_rest_is_written(tmp_path):
    path = _image(tmp_path)
    other = _image(tmp_path, "b.png")
    items = [_item(path, [ObjectItem(_mask(2, 2), "vehicle", ["the car"])], split="train", where="task 1"),
             _item(path, [ObjectItem(_mask(20, 30), "vehicle", ["the other car"])], split="val", where="task 2"),
             _item(other, [ObjectItem(_mask(5, 5), "vehicle", ["a third car"])], split="val", where="task 3")]
    report = write_rrsis(tmp_path / "out", items)
    assert [e.where for e in report.errors] == ["task 2"]
    assert "two splits" in report.errors[0].message and "a.png" in report.errors[0].message
    refs, _ = _read(tmp_path / "out")
    by_file: dict[str, set[str]] = {}
    for r in refs:
        by_file.setdefault(r["file_name"], set()).add(r["split"])
    assert all(len(splits) == 1 for splits in by_file.values())
    assert sorted(s["raw"] for r in refs for s in r["sentences"]) == ["a third car", "the car"]


def test_repeated_expressions_are_one_sentence(tmp_path):
    path = _image(tmp_path)
    mask = _mask(2, 2)
    items = [_item(path, [ObjectItem(mask, "vehicle", ["the red car", "the red car ", "the car at the top"])]),
             # another task naming the same object with the same words
             _item(path, [ObjectItem(mask.copy(), "vehicle", ["the red car"])], where="task 2")]
    report = write_rrsis(tmp_path / "out", items)
    assert report.ok, report.errors
    refs, _ = _read(tmp_path / "out")
    assert len(refs) == 1
    [ref] = refs
    assert [s["raw"] for s in ref["sentences"]] == ["the red car", "the car at the top"]
    assert len(ref["sent_ids"]) == len(set(ref["sent_ids"])) == 2

"""Round trips keep masks pixel-identical (and brush RLE byte-identical): LS → COCO → LS and LS → RRSIS → LS,
on the real iSAID brush export (190 masks, ../shared/data) and on synthetic exports."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tests.support.data import SHARED_CONFIG, SHARED_EXPORT
from tests.support.cli import coco_masks, digest, pslg
from tests.support.refer_loader import REFER


def _regions(tasks: list[dict], key: str = "annotations") -> dict[str, list[dict]]:
    """image file name → brush regions of all its tasks."""
    out: dict[str, list[dict]] = defaultdict(list)
    for t in tasks:
        name = Path(t["data"]["image"].split("d=")[-1]).name
        for env in t.get(key) or []:
            out[name] += [r for r in env["result"] if r["type"] == "brushlabels"]
    return out


def _rle_set(regions: list[dict]) -> set[tuple]:
    return {(tuple(r["value"]["rle"]), r["value"]["brushlabels"][0]) for r in regions}


@pytest.mark.shared_data
def test_real_export_ls_coco_ls(shared_data, tmp_path):
    from label_studio_sdk.converter.brush import decode_rle

    export = shared_data / SHARED_EXPORT
    original = json.loads(export.read_text())
    r = pslg("export", "coco", export, "--out", tmp_path / "coco", "--image-root", shared_data,
             "--config", shared_data / SHARED_CONFIG)
    assert r.exit_code == 0, r.output
    # every mask equals the sdk's own decoding of the original RLE (independent reference)
    got = coco_masks(tmp_path / "coco" / "annotations.json")
    assert sum(len(v) for v in got.values()) == 190
    for name, regions in _regions(original).items():
        want = {}
        for reg in regions:
            h, w = reg["original_height"], reg["original_width"]
            want[digest(decode_rle(reg["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0)] = reg["value"]["brushlabels"][0]
        assert {digest(m): c for m, c, _ in got[name]} == want
    r = pslg("import", "coco", tmp_path / "coco", "--out", tmp_path / "tasks.json", "--as", "annotations")
    assert r.exit_code == 0, r.output
    back = json.loads((tmp_path / "tasks.json").read_text())
    assert len(back) == len(original)
    before, after = _regions(original), _regions(back)
    assert set(before) == set(after)
    for name in before:
        assert _rle_set(after[name]) == _rle_set(before[name])  # byte-identical brush RLE, same labels


@pytest.mark.shared_data
def test_real_export_ls_rrsis_ls(shared_data, tmp_path):
    from converters.labelstudio.brush import brush_rle_decode

    export = shared_data / SHARED_EXPORT
    original = json.loads(export.read_text())
    out = tmp_path / "rr"
    r = pslg("export", "rrsis", export, "--out", out, "--image-root", shared_data, "--missing-expression", "label")
    assert r.exit_code == 0, r.output
    refer = REFER(str(out), "rrsisd", "unc")
    masks = defaultdict(set)
    for ref in refer.loadRefs(refer.getRefIds()):
        masks[refer.Imgs[ref["image_id"]]["file_name"]].add(digest(refer.getMask(ref)["mask"].astype(bool)))
        assert ref["sentences"][0]["raw"] == refer.Cats[ref["category_id"]].replace("_", " ").lower()
    before = _regions(original)
    for name, regions in before.items():
        assert masks[name] == {digest(brush_rle_decode(g["value"]["rle"], g["original_height"], g["original_width"]))
                               for g in regions}
    r = pslg("import", "rrsis", out, "--out", tmp_path / "tasks.json")
    assert r.exit_code == 0, r.output
    back = json.loads((tmp_path / "tasks.json").read_text())
    assert len(back) == 190  # one task per expression
    assert all(t["data"]["expression"] and len(t["predictions"][0]["result"]) == 1 for t in back)
    after = _regions(back, "predictions")
    for name in before:
        assert _rle_set(after[name]) == _rle_set(before[name])


def test_synthetic_per_region_ls_coco_ls_keeps_expressions(per_region_export, tmp_path):
    export, truth = per_region_export
    r = pslg("export", "coco", export, "--out", tmp_path / "coco", "--image-root", export.parent)
    assert r.exit_code == 0, r.output
    r = pslg("import", "coco", tmp_path / "coco", "--out", tmp_path / "tasks.json", "--as", "annotations")
    assert r.exit_code == 0, r.output
    original, back = json.loads(export.read_text()), json.loads((tmp_path / "tasks.json").read_text())
    before, after = _regions(original), _regions(back)
    assert {k: _rle_set(v) for k, v in before.items()} == {k: _rle_set(v) for k, v in after.items()}
    assert _texts(back) == _texts(original)  # per-region expressions survive (COCO "expressions" field)


def _texts(tasks: list[dict]) -> dict[tuple, list[str]]:
    """(image, brush RLE) → expressions of that region."""
    out = {}
    for t in tasks:
        for env in t.get("annotations") or []:
            texts = {r["id"]: r["value"]["text"] for r in env["result"] if r["type"] == "textarea"}
            for r in env["result"]:
                if r["type"] == "brushlabels":
                    out[(Path(t["data"]["image"]).name, tuple(r["value"]["rle"]))] = texts.get(r["id"])
    return out


def test_synthetic_per_task_ls_rrsis_ls_rrsis(per_task_export, tmp_path):
    """LS → RRSIS → LS (one task per expression) → RRSIS again: same masks, same sentences."""
    from converters.rrsis import read_rrsis

    export, truth = per_task_export
    r = pslg("export", "rrsis", export, "--out", tmp_path / "rr1", "--image-root", export.parent)
    assert r.exit_code == 0, r.output
    r = pslg("import", "rrsis", tmp_path / "rr1", "--out", tmp_path / "tasks.json", "--as", "annotations")
    assert r.exit_code == 0, r.output
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert len(tasks) == sum(len(t.expressions) for t in truth)
    assert _regions(tasks).keys() == _regions(json.loads(export.read_text())).keys()
    for a, b in zip(sorted(_rle_set(v) for v in _regions(tasks).values()),
                    sorted(_rle_set(v) for v in _regions(json.loads(export.read_text())).values())):
        assert a == b
    r = pslg("export", "rrsis", tmp_path / "tasks.json", "--out", tmp_path / "rr2")
    assert r.exit_code == 0, r.output
    one = {(x.image_path.name, digest(x.load_mask())): (x.sentences, x.split) for x in read_rrsis(tmp_path / "rr1")}
    two = {(x.image_path.name, digest(x.load_mask())): (x.sentences, x.split) for x in read_rrsis(tmp_path / "rr2")}
    assert one == two and len(one) == len(truth)
    assert all(np.any(t.mask) for t in truth)

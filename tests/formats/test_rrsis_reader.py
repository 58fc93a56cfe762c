"""``read_rrsis`` (the contract other areas use), the RRSIS-D quirks, import to tasks, validate and stats."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from annotate.synthetic import make_scene
from converters.rrsis import assign_split, parse_ratios, read_rrsis, tokenize
from tests.support.cli import digest, pslg


def _quirky_dataset(root: Path) -> list[tuple[str, np.ndarray, str, str]]:
    """An RRSIS-D-like dataset as the real files are: categories_id, 0-based category ids, segmentation as a
    list with one RLE dict, bbox as x1,y1,x2,y2 (one annotation with a polygon instead)."""
    (root / "rrsisd").mkdir(parents=True)
    img_dir = root / "images" / "rrsisd" / "JPEGImages"
    img_dir.mkdir(parents=True)
    images, anns, refs, truth = [], [], [], []
    cats = [{"id": 0, "name": "vehicle"}, {"id": 1, "name": "building"}, {"id": 2, "name": "storage_tank"},
            {"id": 3, "name": "roundabout"}]
    cid = {c["name"]: c["id"] for c in cats}
    sent_id = 0
    for i in range(2):
        scene = make_scene(seed=20 + i, height=200, width=240)
        name = f"{i:05d}.jpg"
        cv2.imwrite(str(img_dir / name), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        images.append({"id": i, "file_name": name, "height": 200, "width": 240})
        for o in scene.objects:
            aid = len(anns)
            if aid == 1:  # a polygon annotation (a vehicle rectangle is exactly a polygon)
                cs, _ = cv2.findContours(o.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                segm = [[float(v) for v in cs[0].reshape(-1)]]
                mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segm, 200, 240))).astype(bool)
            else:
                rle = mask_utils.encode(np.asfortranarray(o.mask.astype(np.uint8)))
                segm = [{"size": rle["size"], "counts": rle["counts"].decode()}]
                mask = o.mask
            x0, y0, x1, y1 = o.box
            anns.append({"id": aid, "image_id": i, "categories_id": cid[o.category], "segmentation": segm,
                         "bbox": [x0, y0, x1, y1], "area": 1.0, "iscrowd": 0})
            refs.append({"ref_id": aid, "ann_id": aid, "image_id": i, "category_id": cid[o.category],
                         "split": "train" if i == 0 else "test", "file_name": name,
                         "sent_ids": [sent_id], "sentences": [{"sent_id": sent_id, "raw": o.expression,
                                                               "sent": o.expression, "tokens": o.expression.split()}]})
            sent_id += 1
            truth.append((name, mask, o.category, o.expression))
    (root / "rrsisd" / "instances.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                                 "categories": cats}))
    with open(root / "rrsisd" / "refs(unc).p", "wb") as fh:
        pickle.dump(refs, fh, protocol=2)
    return truth


def test_read_rrsis_accepts_rrsisd_quirks(tmp_path):
    truth = _quirky_dataset(tmp_path)
    records = read_rrsis(tmp_path)
    assert len(records) == len(truth)
    for rec, (name, mask, cat, expr) in zip(records, truth):
        assert rec.image_path == tmp_path / "images" / "rrsisd" / "JPEGImages" / name and rec.image_path.is_file()
        assert np.array_equal(rec.load_mask(), mask)
        assert rec.category == cat and rec.sentences == [expr]
        ys, xs = np.nonzero(mask)
        assert rec.bbox_xyxy == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)  # recomputed, not the file's
        assert (rec.width, rec.height) == (240, 200)
    assert {r.split for r in read_rrsis(tmp_path, "test")} == {"test"}
    assert len(read_rrsis(tmp_path, "train")) + len(read_rrsis(tmp_path, "test")) == len(truth)
    assert read_rrsis(tmp_path / "rrsisd", "val") == []  # dataset folder itself works too


def test_import_rrsis_quirky_dataset_one_task_per_expression(tmp_path):
    from converters.labelstudio.brush import brush_rle_decode

    truth = _quirky_dataset(tmp_path / "ds")
    r = pslg("import", "rrsis", tmp_path / "ds", "--out", tmp_path / "tasks.json",
             "--document-root", tmp_path)
    assert r.exit_code == 0, r.output
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert len(tasks) == len(truth)
    for t, (name, mask, cat, expr) in zip(tasks, truth):
        assert t["data"]["image"] == f"/data/local-files/?d=ds/images/rrsisd/JPEGImages/{name}"
        assert t["data"]["expression"] == expr and t["data"]["category"] == cat
        region = t["predictions"][0]["result"][0]
        assert region["value"]["brushlabels"] == [cat]
        assert np.array_equal(brush_rle_decode(region["value"]["rle"], 200, 240), mask)
        x, y, w, h = t["data"]["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_validate_flags_problems_and_passes_clean(tmp_path):
    _quirky_dataset(tmp_path)
    r = pslg("validate", tmp_path)
    assert r.exit_code == 1
    assert "looks like x1,y1,x2,y2" in r.output or "is not inside" in r.output or "differs" in r.output
    inst_path = tmp_path / "rrsisd" / "instances.json"
    inst = json.loads(inst_path.read_text())
    for a in inst["annotations"]:  # fix the boxes: only what we break below must be reported
        x0, y0, x1, y1 = a["bbox"]
        a["bbox"] = [x0, y0, x1 - x0, y1 - y0]
    inst_path.write_text(json.dumps(inst))
    r = pslg("validate", tmp_path)
    assert r.exit_code == 0, r.output
    inst["annotations"].append(dict(inst["annotations"][0]))  # duplicate id
    inst["annotations"][2]["segmentation"] = [{"size": [10, 10], "counts": "abc"}]  # wrong size
    inst["images"][0]["width"] = 250  # disagrees with the file
    inst_path.write_text(json.dumps(inst))
    refs = pickle.loads((tmp_path / "rrsisd" / "refs(unc).p").read_bytes())
    refs[1]["split"] = "test"  # image 0 now in train and test
    refs[2]["ann_id"] = 999
    (tmp_path / "rrsisd" / "refs(unc).p").write_bytes(pickle.dumps(refs))
    r = pslg("validate", tmp_path)
    assert r.exit_code == 1
    out = r.output
    assert "duplicate annotation id" in out
    assert "annotation 2: mask does not decode" in out
    assert "file is 240x200, images[] says 250x200" in out
    assert "in two splits" in out
    assert "ann_id 999 is not in annotations[]" in out


def test_stats_counts(tmp_path):
    from converters.checks import open_dataset, stats

    truth = _quirky_dataset(tmp_path)
    s = stats(open_dataset(tmp_path))
    assert s["per_split"] == {"train": 4, "test": 4}
    assert s["images_per_split"] == {"train": 1, "test": 1}
    assert sum(sum(v.values()) for v in s["per_category"].values()) == len(truth)
    assert s["per_category"]["roundabout"] == {"train": 1, "test": 1}
    assert sum(s["area_histogram"].values()) == len(truth)
    lengths = [len(tokenize(e)) for *_, e in truth]
    assert s["expression_tokens"]["max"] == max(lengths) and s["expression_tokens"]["min"] == min(lengths)
    r = pslg("stats", tmp_path)
    assert r.exit_code == 0 and "roundabout" in r.output and "mask area" in r.output


@pytest.mark.shared_data
def test_read_shared_fixture(shared_data):
    recs = read_rrsis(shared_data / "derived" / "rrsisd_style_fixture")
    assert [r.sentences for r in recs] == [["tennis court at right"], ["A green and brown golf field"]]
    assert [r.category for r in recs] == ["tennis_court", "golffield"]
    assert recs[1].bbox_xyxy == (133.0, 237.0, 684.0, 672.0)
    assert recs[1].load_mask().sum() == 551 * 435


def test_tokenize_and_splits():
    assert tokenize("The T-shaped building, at the top-left!") == ["the", "t-shaped", "building", "at", "the",
                                                                    "top-left"]
    assert parse_ratios("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    with pytest.raises(ValueError):
        parse_ratios("1,-1")
    names = [f"img{i}.png" for i in range(2000)]
    splits = [assign_split(n, (0.8, 0.1, 0.1), 0) for n in names]
    assert splits == [assign_split(n, (0.8, 0.1, 0.1), 0) for n in names]
    frac = splits.count("train") / len(splits)
    assert 0.75 < frac < 0.85 and splits.count("test") > 100
    assert splits != [assign_split(n, (0.8, 0.1, 0.1), 1) for n in names]


def test_import_coco_reads_rrsisd_instances_with_quirks(tmp_path):
    """The RRSIS-D instances.json read as COCO: categories_id, 0-based ids, RLE in a list, polygons."""
    from converters.labelstudio.brush import brush_rle_decode

    truth = _quirky_dataset(tmp_path)
    r = pslg("import", "coco", tmp_path / "rrsisd" / "instances.json", "--out", tmp_path / "tasks.json",
             "--image-root", tmp_path / "images" / "rrsisd" / "JPEGImages", "--as", "annotations")
    assert r.exit_code == 0, r.output
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert len(tasks) == 2
    got = {(Path(t["data"]["image"]).name, digest(brush_rle_decode(g["value"]["rle"], 200, 240)),
            g["value"]["brushlabels"][0]) for t in tasks for g in t["annotations"][0]["result"]}
    assert got == {(name, digest(mask), cat) for name, mask, cat, _ in truth}


def test_write_rrsis_from_records_round_trips(tmp_path):
    """read_rrsis → write_rrsis (the contract pair) keeps masks, sentences, categories and splits."""
    from converters.rrsis import write_rrsis

    _quirky_dataset(tmp_path / "src")
    records = read_rrsis(tmp_path / "src")
    report = write_rrsis(tmp_path / "dst", records)
    assert report.ok, report.errors
    again = read_rrsis(tmp_path / "dst")
    key = lambda r: (r.image_path.name, digest(r.load_mask()))  # noqa: E731
    assert {key(r): (r.category, r.sentences, r.split) for r in again} == \
        {key(r): (r.category, r.sentences, r.split) for r in records}
    assert pslg("validate", tmp_path / "dst").exit_code == 0

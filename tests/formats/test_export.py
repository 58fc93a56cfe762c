"""Label Studio export → COCO / RRSIS on synthetic exports with exact masks, read back by pycocotools and by a
REFER-style loader; annotation selection, splits, bad input and atomic output."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from annotate.masks import mask_hole_count
from converters.export import ExportOptions, export_file
from converters.rrsis import assign_split, read_rrsis, tokenize
from tests.support.cli import coco_masks, digest, pslg
from tests.support.refer_loader import REFER


def _truth_by_image(truth):
    out: dict[str, dict[str, object]] = {}
    for t in truth:
        out.setdefault(t.image.name, {})[digest(t.mask)] = t
    return out


def test_export_coco_rle_is_lossless_with_holes(per_region_export, tmp_path):
    export, truth = per_region_export
    assert any((~t.mask).sum() and t.category == "roundabout" for t in truth)  # a mask with a hole
    r = pslg("export", "coco", export, "--out", tmp_path / "coco", "--image-root", export.parent)
    assert r.exit_code == 0, r.output
    got = coco_masks(tmp_path / "coco" / "annotations.json")
    want = _truth_by_image(truth)
    assert set(got) == set(want)
    for name, objs in got.items():
        assert {digest(m) for m, _, _ in objs} == set(want[name])  # pixel-identical, holes kept
        for m, cat, ann in objs:
            t = want[name][digest(m)]
            assert cat == t.category
            assert ann["iscrowd"] == 0 and ann["area"] == int(m.sum())
            ys, xs = np.nonzero(m)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert isinstance(ann["segmentation"]["counts"], str)
    # images copied byte for byte, not re-encoded
    for name in got:
        assert (tmp_path / "coco" / "images" / name).read_bytes() == (export.parent / "images" / name).read_bytes()


def test_export_coco_polygons(per_region_export, tmp_path):
    export, truth = per_region_export
    r = pslg("export", "coco", export, "--out", tmp_path / "coco", "--image-root", export.parent,
             "--format", "polygon", "--images", "none")
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    polygons = [a for a in data["annotations"] if isinstance(a["segmentation"], list)
                and isinstance(a["segmentation"][0], list)]
    assert polygons
    for a in data["annotations"]:  # only a mask with holes stays RLE (polygon readers disagree on holes)
        if a not in polygons:
            mask = mask_utils.decode(a["segmentation"]).astype(bool)
            assert mask_hole_count(mask) > 0 and "hole(s)" in r.output
    assert not (tmp_path / "coco" / "images").exists() or not any((tmp_path / "coco" / "images").iterdir())
    got = coco_masks(tmp_path / "coco" / "annotations.json")
    want = {t.image.name: t for t in truth if t.category == "vehicle"}
    for name, t in want.items():  # polygons are close but not exact (vertices at pixel centres)
        best = max(((m & t.mask).sum() / (m | t.mask).sum() for m, _, _ in got[name]))
        assert best > 0.8


def test_export_rrsis_loads_in_refer(per_task_export, tmp_path):
    export, truth = per_task_export
    out = tmp_path / "rr"
    r = pslg("export", "rrsis", export, "--out", out, "--image-root", export.parent, "--split-ratios", "0.5,0.25,0.25")
    assert r.exit_code == 0, r.output
    refer = REFER(str(out), "rrsisd", "unc")
    with open(out / "rrsisd" / "refs(unc).p", "rb") as fh:
        raw = fh.read()
    assert raw[1] <= 4  # pickle protocol byte
    want = _truth_by_image(truth)
    seen = 0
    split_of_image: dict[int, str] = {}
    for ref in refer.loadRefs(refer.getRefIds()):
        m = refer.getMask(ref)["mask"].astype(bool)
        img = refer.Imgs[ref["image_id"]]
        t = want[img["file_name"]][digest(m)]  # exact mask
        assert refer.Cats[ref["category_id"]] == t.category
        assert [s["raw"] for s in ref["sentences"]] == t.expressions  # both expressions of an object kept
        for s in ref["sentences"]:
            assert s["tokens"] == tokenize(s["raw"]) and s["sent"] == " ".join(s["tokens"])
        assert ref["sent_ids"] == [s["sent_id"] for s in ref["sentences"]]
        assert ref["split"] in ("train", "val", "test")
        assert split_of_image.setdefault(ref["image_id"], ref["split"]) == ref["split"]
        assert (Path(refer.IMAGE_DIR) / img["file_name"]).is_file()
        seen += 1
    assert seen == len(truth)
    # the contract reader gives the same objects
    records = read_rrsis(out)
    assert len(records) == len(truth)
    for rec in records:
        assert digest(rec.load_mask()) in want[rec.image_path.name]
        assert rec.image_path.is_file()
    assert r.exit_code == 0
    assert pslg("validate", out).exit_code == 0


def test_splits_are_deterministic_per_image_and_given_ones_kept(tmp_path):
    from converters.synthetic_export import write_synthetic_export

    export, truth = write_synthetic_export(tmp_path / "ls", n_images=12, tasks_per_image=2, seed=5)
    tasks = json.loads(export.read_text())
    tasks[0]["data"]["split"] = "test"
    tasks[1]["data"]["split"] = "test"  # same image as task 0
    export.write_text(json.dumps(tasks))
    opts = ExportOptions(image_root=export.parent, split_ratios=(0.6, 0.2, 0.2), seed=7)
    export_file("rrsis", export, tmp_path / "a", opts)
    export_file("rrsis", export, tmp_path / "b", opts)
    a = pickle.loads((tmp_path / "a" / "rrsisd" / "refs(unc).p").read_bytes())
    b = pickle.loads((tmp_path / "b" / "rrsisd" / "refs(unc).p").read_bytes())
    assert [(r["file_name"], r["split"]) for r in a] == [(r["file_name"], r["split"]) for r in b]
    by_image: dict[str, set] = {}
    for r in a:
        by_image.setdefault(r["file_name"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_image.values())
    assert by_image["scene_00000.png"] == {"test"}
    for name, s in by_image.items():
        if name != "scene_00000.png":
            assert s == {assign_split(name, (0.6, 0.2, 0.2), 7)}
    assert len({next(iter(s)) for s in by_image.values()}) >= 2


def _task(tid, image, rle_region, **ann):
    a = {"id": tid, "result": [rle_region], "was_cancelled": False, "ground_truth": False, "completed_by": 1,
         "updated_at": "2026-01-01T00:00:00Z"}
    a.update(ann)
    return a


def test_annotation_selection_and_skips(per_task_export, tmp_path):
    export, truth = per_task_export
    tasks = json.loads(export.read_text())
    other = tasks[1]["annotations"][0]["result"][0]  # a different object's region, same image
    t0 = tasks[0]
    first = t0["annotations"][0]
    first.update({"ground_truth": True, "updated_at": "2026-01-01T00:00:00Z",
                  "completed_by": {"id": 7, "email": "gt@example.com"}})
    newer = _task(900, None, other, updated_at="2026-02-01T00:00:00Z", completed_by={"id": 8, "email": "b@x.org"})
    t0["annotations"].append(newer)
    tasks[2]["annotations"][0]["was_cancelled"] = True
    tasks[3]["annotations"][0]["result"] = []
    tasks[4]["annotations"] = []
    export.write_text(json.dumps(tasks))
    masks_of = {}
    for sel in ("latest", "ground-truth", "annotator:gt@example.com", "annotator:8"):
        out = tmp_path / sel.replace(":", "_")
        r = pslg("export", "coco", export, "--out", out, "--image-root", export.parent, "--select", sel)
        assert r.exit_code == 0, r.output
        masks_of[sel] = coco_masks(out / "annotations.json")
        if sel == "latest":
            assert "cancelled annotation" in r.output and "empty annotation" in r.output
            assert "task without annotation" in r.output
    from converters.labelstudio.brush import brush_rle_decode

    m_first = brush_rle_decode(first["result"][0]["value"]["rle"], 256, 256)
    m_other = brush_rle_decode(other["value"]["rle"], 256, 256)
    name = Path(t0["data"]["image"]).name

    def has(sel, m):
        return digest(m) in {digest(x) for x, _, _ in masks_of[sel][name]}

    # task 0 contributes its GT annotation under ground-truth / annotator:gt, the newer one under latest
    assert has("ground-truth", m_first) and has("annotator:gt@example.com", m_first)
    assert has("latest", m_other) and has("annotator:8", m_other)
    assert not has("annotator:8", m_first)
    # only task 0 has a ground-truth annotation
    assert sum(len(v) for v in masks_of["ground-truth"].values()) == 1


def test_bad_items_are_reported_and_the_rest_exported(per_task_export, tmp_path):
    export, truth = per_task_export
    tasks = json.loads(export.read_text())
    tasks[0]["data"]["image"] = "images/missing.png"
    tasks[1]["annotations"][0]["result"][0]["original_width"] = 300
    tasks[2]["annotations"][0]["result"][0]["value"]["brushlabels"] = ["spaceship"]
    del tasks[3]["data"]["expression"]
    export.write_text(json.dumps(tasks))
    config = Path(__file__).resolve().parents[2] / "converters" / "configs" / "rrsis_expression_per_task.xml"
    out = tmp_path / "rr"
    r = pslg("export", "rrsis", export, "--out", out, "--image-root", export.parent, "--config", config)
    assert r.exit_code == 1
    assert "missing.png" in r.output and "task 1" in r.output
    assert "300x256 disagrees" in r.output
    assert "unknown label 'spaceship'" in r.output
    assert "without an expression" in r.output
    refs = pickle.loads((out / "rrsisd" / "refs(unc).p").read_bytes())
    assert sum(len(r["sentences"]) for r in refs) == len(tasks) - 4
    r2 = pslg("export", "rrsis", export, "--out", tmp_path / "rr2", "--image-root", export.parent, "--config", config,
              "--skip-errors")
    assert r2.exit_code == 0 and "4 item(s) failed" in r2.output


def test_malformed_json_says_where_and_keeps_earlier_tasks(per_task_export, tmp_path):
    export, truth = per_task_export
    text = export.read_text()
    lines = text.splitlines()
    lines[5] = lines[5].replace("\"data\": ", "\"data\": tru ", 1)  # break task #4 (line 6)
    export.write_text("\n".join(lines))
    out = tmp_path / "coco"
    r = pslg("export", "coco", export, "--out", out, "--image-root", export.parent)
    assert r.exit_code == 1
    assert "malformed JSON in task #4" in r.output and "line" in r.output
    data = json.loads((out / "annotations.json").read_text())
    assert len(data["annotations"]) == 4  # tasks 0–3 exported (4 distinct objects of image 0)


def test_output_is_atomic_on_interrupt(per_task_export, tmp_path, monkeypatch):
    export, truth = per_task_export
    from converters import writer as writer_mod

    calls = {"n": 0}
    real = writer_mod.DatasetWriter.add_object

    def interrupt(self, entry, obj, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, entry, obj, *args, **kwargs)

    monkeypatch.setattr(writer_mod.DatasetWriter, "add_object", interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        export_file("coco", export, out, ExportOptions(image_root=export.parent))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


@pytest.mark.parametrize("where", ["mkdir", "replace"])
@pytest.mark.parametrize("existing", [False, True])
def test_an_interrupt_next_to_making_or_renaming_the_staging_folder_leaves_nothing(tmp_path, monkeypatch, where,
                                                                                  existing):
    """A signal lands between bytecodes: right after the staging folder is made (before the name is even returned)
    or right before the rename into place, the staging folder must still go (a CI run under load hit the first)."""
    import os

    from converters import atomic

    real = {"mkdir": os.mkdir, "replace": os.replace}[where]

    def then_interrupt(path, *args, **kwargs):
        if where == "mkdir":
            real(path, *args, **kwargs)  # made, then the signal
        raise KeyboardInterrupt

    out = tmp_path / "out"
    if existing:
        out.mkdir()
    monkeypatch.setattr(atomic.os, where, then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        with atomic.staged_dir(out) as stage:
            (stage / "a.json").write_text("{}")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existing else [])
    if existing:
        assert list(out.iterdir()) == []


def test_existing_output_needs_overwrite(per_task_export, tmp_path):
    export, _ = per_task_export
    out = tmp_path / "coco"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = pslg("export", "coco", export, "--out", out, "--image-root", export.parent)
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert (out / "keep.txt").exists()
    r = pslg("export", "coco", export, "--out", out, "--image-root", export.parent, "--overwrite")
    assert r.exit_code == 0 and not (out / "keep.txt").exists() and (out / "annotations.json").is_file()


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child before exec: SIGINT back to its default, as in a terminal. A run started in the background by a
    non-interactive shell inherits SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_leaves_no_half_written_dataset(per_task_export, tmp_path):
    """A real SIGINT while the export is half read (it blocks on a named pipe): nothing is left behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    export, _ = per_task_export
    tasks = json.loads(export.read_text())
    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    code = "import sys; from converters.cli.main import app; sys.argv = ['pslg'] + sys.argv[1:]; app()"
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", code, "export", "coco", str(fifo), "--out", str(out),
                             "--image-root", str(export.parent)], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=_ctrl_c_as_in_a_terminal)
    try:
        with open(fifo, "w") as fh:
            fh.write("[" + ",\n".join(json.dumps(t) for t in tasks[:5]) + ",\n")
            fh.flush()
            deadline = time.monotonic() + 60
            staged = []
            while time.monotonic() < deadline:  # wait until the first tasks are converted (an image copied)
                staged = [p for p in tmp_path.glob(".out.partial-*/images/*")]
                if staged:
                    break
                time.sleep(0.05)
            assert staged, "the export never started converting"
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))


def test_export_from_stdin(per_task_export, tmp_path):
    export, truth = per_task_export
    out = tmp_path / "coco"
    from converters.cli.main import app
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, ["export", "coco", "-", "--out", str(out), "--image-root", str(export.parent)],
                           input=export.read_bytes())
    assert r.exit_code == 0, r.output
    assert len(coco_masks(out / "annotations.json")) == 3
    assert sum(len(v) for v in coco_masks(out / "annotations.json").values()) == len(truth)


@pytest.mark.parametrize("flag", ["--link", "--symlink"])
def test_images_linked_not_copied(per_task_export, tmp_path, flag):
    import os

    export, _ = per_task_export
    out = tmp_path / "rr"
    r = pslg("export", "rrsis", export, "--out", out, "--image-root", export.parent, flag)
    assert r.exit_code == 0, r.output
    files = sorted((out / "images" / "rrsisd" / "JPEGImages").iterdir())
    assert len(files) == 3
    for f in files:
        src = export.parent / "images" / f.name
        if flag == "--symlink":
            assert f.is_symlink() and f.resolve() == src.resolve()
        else:
            assert not f.is_symlink() and os.stat(f).st_ino == os.stat(src).st_ino

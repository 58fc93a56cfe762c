"""Every CLI failure is one clear line and leaves no half-written output (non-finite numbers, undecodable RLE,
existing/unwritable output folders, SIGTERM, exports where everything fails, stale segment files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import pslg, rgb_scene, square_mask, write_export

SIZE = 64


@pytest.fixture
def scene_png(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "scene.png"
    Image.fromarray(rgb_scene(SIZE)).save(path)
    return path


@pytest.fixture
def export(tmp_path: Path) -> Path:
    objects = [(square_mask(SIZE, 5, 5, 25, 25), "vehicle", "the vehicle on the left"),
               (square_mask(SIZE, 35, 30, 60, 50), "ship", "the ship on the right")]
    return write_export(tmp_path / "ls", [("a.png", rgb_scene(SIZE, 1), objects), ("b.png", rgb_scene(SIZE, 2), objects)])


def _one_line_error(output: str) -> None:
    assert "Traceback" not in output
    assert len([line for line in output.splitlines() if line.strip()]) == 1, output


# ---- 10: non-finite numbers
@pytest.mark.parametrize("box", ["nan,1,5,5", "1,inf,5,5", "1,1,1e400,5", "-inf,1,5,5"])
def test_segment_rejects_non_finite_box_in_one_line(scene_png: Path, tmp_path: Path, box: str) -> None:
    out = tmp_path / "out"
    res = pslg("segment", scene_png, "--box", box, "--out", out)
    assert res.exit_code == 2
    _one_line_error(res.output)
    assert "finite" in res.output and not out.exists()


def test_segment_rejects_non_finite_point(scene_png: Path, tmp_path: Path) -> None:
    res = pslg("segment", scene_png, "--point", "nan,3", "--out", tmp_path / "out")
    assert res.exit_code == 2 and "finite" in res.output and "Traceback" not in res.output


def test_prompts_file_with_non_finite_numbers_fails_those_prompts_and_writes_the_rest(scene_png: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.json"
    # Python's json reads NaN / Infinity / 1e400 as floats: they must be refused, not passed to the segmenter
    prompts.write_text('[{"box": [5, 5, 25, 25]}, {"box": [NaN, 1, 5, 5]}, {"box": [1, 1, 1e400, 5]},'
                       ' {"points": [[Infinity, 3]]}, {"box": [35, 30, 60, 50]}]')
    out = tmp_path / "out"
    res = pslg("segment", scene_png, "--prompts", prompts, "--out", out, "--quiet")
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    records = json.loads((out / "results.json").read_text())
    assert [r["error"] is None for r in records] == [True, False, False, False, True]
    assert all("finite" in r["error"] for r in records[1:4])
    assert sorted(p.name for p in out.glob("mask_*.png")) == ["mask_000.png", "mask_004.png"]
    assert (out / "overlay.png").is_file()


# ---- 11: validate decodes every RLE
@pytest.mark.parametrize("counts", ["garbage!!", "", "0T2", "1"])
def test_validate_rejects_rle_that_does_not_decode(tmp_path: Path, counts: str) -> None:
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
            "categories": [{"id": 1, "name": "vehicle"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 4,
                             "bbox": [0, 0, 2, 2], "segmentation": {"size": [10, 10], "counts": counts}}]}
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(coco))
    res = pslg("validate", path, "--no-images")
    assert res.exit_code == 1, res.output
    assert "annotation 1: mask does not decode" in res.output and "valid\n" not in res.output


# ---- 12: --out DIR is filled in place when it exists
def test_export_fills_an_existing_empty_folder_in_place(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "mount"
    out.mkdir()
    inode = out.stat().st_ino
    res = pslg("export", "coco", export, "--image-root", export.parent, "--out", out)
    assert res.exit_code == 0, res.output
    assert out.stat().st_ino == inode
    assert sorted(p.name for p in out.iterdir()) == ["annotations.json", "images"]
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_export_to_the_current_folder(export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    res = pslg("export", "rrsis", export, "--image-root", export.parent, "--out", ".")
    assert res.exit_code == 0, res.output
    assert Path.cwd() == here and os.path.samefile(os.getcwd(), here)  # the shell's folder still exists
    assert (here / "rrsisd" / "refs(unc).p").is_file()
    res = pslg("export", "rrsis", export, "--image-root", export.parent, "--out", ".", "--overwrite")
    assert res.exit_code == 0, res.output
    assert os.path.samefile(os.getcwd(), here)
    assert sorted(p.name for p in here.iterdir()) == ["images", "rrsisd"]


def test_export_refuses_a_non_empty_folder_without_overwrite(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = pslg("export", "coco", export, "--image-root", export.parent, "--out", out)
    assert res.exit_code == 2 and "not empty" in res.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# ---- 13: unwritable output → one line
def test_unwritable_outputs_are_one_line_errors(export: Path, scene_png: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "out"  # a folder below a file cannot be created, whoever runs the test (root included)
    for args in (("export", "coco", export, "--image-root", export.parent, "--out", out),
                 ("segment", scene_png, "--box", "5,5,25,25", "--out", out),
                 ("import", "coco", tmp_path / "coco", "--out", out / "tasks.json")):
        if args[0] == "import":
            assert pslg("export", "coco", export, "--image-root", export.parent, "--out", tmp_path / "coco").exit_code == 0
        res = pslg(*args)
        assert res.exit_code == 2, (args[0], res.output)
        _one_line_error(res.output)
        assert "cannot write to" in res.output and str(out) in res.output.replace("\n", "")


def test_unwritable_eval_report_is_a_one_line_error_before_evaluating(tmp_path: Path) -> None:
    from tests.support.cli import write_rrsis_dataset

    data = write_rrsis_dataset(tmp_path, {"test": 1})
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    res = pslg("eval", "--data", data, "--oracle-box", "--no-progress", "--out", blocker / "eval.json")
    assert res.exit_code == 2
    _one_line_error(res.output)
    assert "cannot write to" in res.output and "Pr@0.5" not in res.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        res = pslg("export", "coco", export, "--image-root", export.parent, "--out", out)
    finally:
        out.chmod(0o755)
    assert res.exit_code == 2 and "Permission denied" in res.output and "Traceback" not in res.output


# ---- 14: SIGTERM cleans up like Ctrl-C
def _signals_as_in_a_terminal() -> None:
    """In the child before exec: SIGINT back to its default, as in a terminal. A run started in the background by a
    non-interactive shell inherits SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_export_cleans_up_and_says_interrupted(export: Path, tmp_path: Path, sig: int) -> None:
    out = tmp_path / "out"
    code = "import sys; from converters.cli.main import app; sys.argv = ['pslg'] + sys.argv[1:]; app()"
    proc = subprocess.Popen([sys.executable, "-c", code, "export", "coco", "-", "--image-root", str(export.parent),
                             "--out", str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2],
                            preexec_fn=_signals_as_in_a_terminal)
    assert proc.stdin is not None
    data = export.read_bytes()
    proc.stdin.write(data[: len(data) // 2])  # half an export, then the stream stays open: the export waits
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]:
        assert time.monotonic() < deadline and proc.poll() is None, "the export never started staging"
        time.sleep(0.1)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=60)
    text = output.decode()
    assert proc.returncode == 130, text
    assert "interrupted" in text and "Traceback" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ls"]  # no output, no staging folder


# ---- 15: nothing to write → nothing written
@pytest.mark.parametrize("kind", ["coco", "rrsis"])
def test_export_where_every_task_fails_writes_nothing(export: Path, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    images = {p: p.read_bytes() for p in export.parent.glob("*.png")}
    for path in images:  # every task's image is missing, so every task fails
        path.unlink()
    res = pslg("export", kind, export, "--out", out, "--image-root", export.parent, "--skip-errors")
    assert res.exit_code == 1, res.output
    assert "nothing written" in res.output and "every task failed" in res.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ls"]
    for path, data in images.items():
        path.write_bytes(data)
    res = pslg("export", kind, export, "--out", out, "--image-root", export.parent)  # no --overwrite needed
    assert res.exit_code == 0, res.output


def test_rrsis_export_without_any_expression_writes_no_dataset(tmp_path: Path) -> None:
    objects = [(square_mask(SIZE, 5, 5, 25, 25), "vehicle", "")]
    export = write_export(tmp_path / "ls", [("a.png", rgb_scene(SIZE), objects)])
    out = tmp_path / "out"
    res = pslg("export", "rrsis", export, "--image-root", export.parent, "--out", out)
    assert res.exit_code == 1 and not out.exists()
    assert pslg("validate", out).exit_code == 2


# ---- 16: segment output folder describes this run only; errors keep their brackets
def test_segment_rerun_removes_stale_masks(scene_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    many = tmp_path / "many.json"
    many.write_text(json.dumps([{"box": [5, 5, 25, 25]}, {"box": [35, 30, 60, 50]}, {"box": [1, 40, 20, 60]}]))
    assert pslg("segment", scene_png, "--prompts", many, "--out", out, "--quiet").exit_code == 0
    assert len(list(out.glob("mask_*.png"))) == 3
    (out / "notes.txt").write_text("the user's own file")
    one = tmp_path / "one.json"
    one.write_text(json.dumps([{"box": [5, 5, 25, 25]}]))
    assert pslg("segment", scene_png, "--prompts", one, "--out", out, "--quiet").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["mask_000.png", "notes.txt", "overlay.png", "results.json"]
    assert pslg("segment", scene_png, "--box", "5,5,25,25", "--out", out, "--quiet").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["mask.png", "notes.txt", "overlay.png", "results.json"]


def test_segment_table_keeps_error_text_in_square_brackets(scene_png: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"box": [5, 5, 25, 25]}, {"box": [1, 2]}]))
    res = pslg("segment", scene_png, "--prompts", prompts, "--out", tmp_path / "out", env={"COLUMNS": "250"})
    assert res.exit_code == 1
    assert "box must be [x0, y0, x1, y1]" in res.output
    assert "got [1, 2]" in res.output


def test_validate_names_the_categories_that_exist(tmp_path: Path) -> None:
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
            "categories": [{"id": 1, "name": "vehicle"}, {"id": 2, "name": "ship"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "iscrowd": 0, "area": 4, "bbox": [0, 0, 2, 2],
                             "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}]}
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(coco))
    res = pslg("validate", path, "--no-images", env={"COLUMNS": "200"})
    assert res.exit_code == 1
    assert "category 7 is not in categories[] (it has: 1 (vehicle), 2 (ship))" in res.output

"""Issue 17 item 6: ``pslg segment --out .`` deleted a user's ``mask_000.png`` (even the input image) and
``mask.tif``; huge numbers in a prompts file gave a traceback. The output writer now touches only the files an
earlier run wrote (named by its results.json) and refuses to overwrite anything else."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from converters.cli.segment import EXIT_PROMPT_FAILED
from tests.support.cli import pslg


def _image(path: Path) -> bytes:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)).save(path)
    return path.read_bytes()


def test_a_users_files_in_the_output_folder_are_never_deleted(tmp_path: Path):
    image_bytes = _image(tmp_path / "mask_000.png")  # the input is named like an output
    (tmp_path / "mask.tif").write_bytes(b"a user's GeoTIFF")
    (tmp_path / "mask_007.png").write_bytes(b"another user file")
    r = pslg("segment", tmp_path / "mask_000.png", "--box", "4,4,30,30", "--out", tmp_path, "-q")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "mask_000.png").read_bytes() == image_bytes
    assert (tmp_path / "mask.tif").read_bytes() == b"a user's GeoTIFF"
    assert (tmp_path / "mask_007.png").read_bytes() == b"another user file"
    assert (tmp_path / "mask.png").is_file() and json.loads((tmp_path / "results.json").read_text())[0]["mask_file"] == "mask.png"


def test_overwriting_an_input_or_a_foreign_file_is_refused(tmp_path: Path):
    image_bytes = _image(tmp_path / "mask_000.png")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"box": [4, 4, 30, 30]}, {"box": [10, 10, 40, 40]}]))
    r = pslg("segment", tmp_path / "mask_000.png", "--prompts", prompts, "--out", tmp_path, "-q")
    assert r.exit_code == 2 and "an input of this run" in r.output and "Traceback" not in r.output
    assert (tmp_path / "mask_000.png").read_bytes() == image_bytes and not (tmp_path / "results.json").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "overlay.png").write_bytes(b"a user's picture")
    r = pslg("segment", tmp_path / "mask_000.png", "--box", "4,4,30,30", "--out", other, "-q")
    assert r.exit_code == 2 and "not written by an earlier pslg segment" in r.output
    assert (other / "overlay.png").read_bytes() == b"a user's picture"


def test_a_rerun_replaces_and_prunes_only_its_own_files(tmp_path: Path):
    _image(tmp_path / "scene.png")
    out = tmp_path / "out"
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"box": [4, 4, 30, 30]}, {"box": [10, 10, 40, 40]}, {"box": [0, 0, 20, 20]}]))
    assert pslg("segment", tmp_path / "scene.png", "--prompts", prompts, "--out", out, "-q").exit_code == 0
    (out / "mask_009.png").write_bytes(b"user")
    prompts.write_text(json.dumps([{"box": [4, 4, 30, 30]}]))
    r = pslg("segment", tmp_path / "scene.png", "--prompts", prompts, "--out", out, "-q")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["mask_000.png", "mask_009.png", "overlay.png", "results.json"]


def test_huge_numbers_in_prompts_are_a_clear_error(tmp_path: Path):
    _image(tmp_path / "scene.png")
    prompts = tmp_path / "p.json"
    prompts.write_text('[{"box": [1e300, 0, 1e301, 5]}, {"box": [' + "9" * 400 + ', 0, 10, 10]}, '
                       '{"points": [[' + "9" * 400 + ', 3]], "point_labels": [1]}, {"box": [4, 4, 30, 30]}]')
    r = pslg("segment", tmp_path / "scene.png", "--prompts", prompts, "--out", tmp_path / "out", "-q")
    assert r.exit_code == EXIT_PROMPT_FAILED and isinstance(r.exception, SystemExit), r.output  # no traceback
    records = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [bool(rec["error"]) for rec in records] == [True, True, True, False]
    assert all("within ±1e+09 px" in rec["error"] for rec in records[:3]) and len(records[1]["error"]) < 300
    r = pslg("segment", tmp_path / "scene.png", "--box", "0,0,1e300,4", "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "within ±1e+09 px" in r.output

"""Exports that the RRSIS loaders (REFER ``getMask`` as RMSIN uses it, PIL image loading) read exactly as we do:
masks with holes under ``--format polygon``, and sources that are not 8-bit RGB."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from converters.rrsis import read_rrsis
from tests.support.cli import pslg, rgb_scene, square_mask, write_export
from tests.support.refer_loader import REFER

SIZE = 64


def _ring() -> np.ndarray:
    mask = square_mask(SIZE, 10, 10, 40, 40)
    mask[20:30, 20:30] = False  # a hole
    return mask


def test_polygon_export_keeps_masks_with_holes_readable_the_same_way_by_every_reader(tmp_path: Path) -> None:
    solid = square_mask(SIZE, 45, 45, 60, 60)
    export = write_export(tmp_path / "ls", [("a.png", rgb_scene(SIZE), [(_ring(), "tank", "the ring tank"),
                                                                         (solid, "tank", "the small tank")])])
    out = tmp_path / "rr"
    res = pslg("export", "rrsis", export, "--image-root", export.parent, "--out", out, "--format", "polygon",
               "--split-ratios", "1")
    assert res.exit_code == 0, res.output
    assert "1 hole(s)" in res.output
    refer = REFER(str(out), "rrsisd", "unc")
    ours = {r.sentences[0]: r.load_mask() for r in read_rrsis(out)}
    for ref in refer.Refs.values():
        rmsin = refer.getMask(ref)["mask"] == 1  # RMSIN keeps the pixels where the rings sum to exactly 1
        np.testing.assert_array_equal(rmsin, ours[ref["sentences"][0]["raw"]])
    np.testing.assert_array_equal(ours["the ring tank"], _ring())  # the hole survives the round trip
    anns = {a["id"]: a for a in json.loads((out / "rrsisd" / "instances.json").read_text())["annotations"]}
    kinds = sorted("polygon" if isinstance(a["segmentation"][0], list) else "rle" for a in anns.values())
    assert kinds == ["polygon", "rle"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sources(tmp_path: Path) -> dict[str, Path]:
    """One file per pixel type RMSIN's loader cannot use as it is."""
    folder = tmp_path / "src"
    folder.mkdir(parents=True)
    rgb = rgb_scene(SIZE, 5)
    Image.fromarray(rgb).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    Image.fromarray((rgb[..., 1].astype(np.uint16) * 200)).save(folder / "deep.png")  # 16-bit grayscale
    Image.fromarray(rgb).save(folder / "plain.jpg", quality=95)
    import rasterio

    with rasterio.open(folder / "bands.tif", "w", driver="GTiff", width=SIZE, height=SIZE, count=5,
                       dtype="uint16") as ds:
        for b in range(5):
            ds.write((rgb[..., b % 3].astype(np.uint16) * 100 + b), b + 1)
    return {p.name: p for p in folder.iterdir()}


def test_rrsis_export_writes_8bit_rgb_for_every_source_and_keeps_originals(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    mask = square_mask(SIZE, 5, 5, 30, 30)
    export = write_export(tmp_path / "ls", [(name, Image.open(p), [(mask, "vehicle", f"the vehicle in {name}")])
                                            for name, p in sources.items() if name != "bands.tif"])
    tasks = json.loads(export.read_text())
    (export.parent / "bands.tif").write_bytes(sources["bands.tif"].read_bytes())
    tasks.append({**tasks[0], "id": 99, "data": {"image": "bands.tif", "expression": "the vehicle in bands"},
                  "annotations": [{**tasks[0]["annotations"][0], "id": 99}]})
    export.write_text(json.dumps(tasks))
    sources = {p.name: p for p in export.parent.iterdir() if p.suffix != ".json"}
    before = {name: _sha(p) for name, p in sources.items()}

    out = tmp_path / "rr"
    res = pslg("export", "rrsis", export, "--image-root", export.parent, "--out", out, "--split-ratios", "1")
    assert res.exit_code == 0, res.output
    written = {p.name: p for p in (out / "images" / "rrsisd" / "JPEGImages").iterdir()}
    assert set(written) == {"rgba.png", "gray.png", "deep.png", "plain.jpg", "bands.png"}
    for path in written.values():
        with Image.open(path) as im:
            assert im.mode == "RGB" and im.size == (SIZE, SIZE), path.name
    assert _sha(written["plain.jpg"]) == before["plain.jpg"]  # 8-bit RGB is copied byte for byte
    np.testing.assert_array_equal(np.asarray(Image.open(written["gray.png"])),
                                  np.repeat(np.asarray(Image.open(sources["gray.png"]))[..., None], 3, axis=2))
    assert {name: _sha(p) for name, p in sources.items()} == before  # originals untouched
    refer = REFER(str(out), "rrsisd", "unc")
    assert sorted(img["file_name"] for img in refer.Imgs.values()) == sorted(written)
    assert "images converted to 8-bit RGB 4" in res.output.replace("\n", " ")


@pytest.mark.parametrize("mode", ["link", "symlink"])
def test_converted_sources_are_written_even_when_linking(tmp_path: Path, mode: str) -> None:
    mask = square_mask(SIZE, 5, 5, 30, 30)
    export = write_export(tmp_path / "ls", [("gray.png", rgb_scene(SIZE)[..., 0], [(mask, "vehicle", "the vehicle")])])
    out = tmp_path / "rr"
    res = pslg("export", "rrsis", export, "--image-root", export.parent, "--out", out, "--images", mode)
    assert res.exit_code == 0, res.output
    path = out / "images" / "rrsisd" / "JPEGImages" / "gray.png"
    assert not path.is_symlink() and Image.open(path).mode == "RGB"
    assert Image.open(export.parent / "gray.png").mode == "L"

"""The in-process ``pslg`` runner, and tiny Label Studio exports and RRSIS datasets written on the fly (exact masks,
any pixel type), with mask digests and pycocotools read-back for the CLI and format tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from converters.cli.main import app
from converters.labelstudio import brush_region


def pslg(*args: object, env: Optional[dict] = None):
    """Run ``pslg`` in-process and return click's Result; exceptions become a non-zero exit with a traceback."""
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def square_mask(size: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def write_export(folder: Path, images: Sequence[tuple[str, np.ndarray | Image.Image, list[tuple[np.ndarray, str, str]]]],
                 ) -> Path:
    """``export.json`` with one task per (image, object): ``images`` holds (file name, pixels, [(mask, label,
    expression)]); pixels are written with PIL as they are (mode, bit depth), so any source type can be tested."""
    folder.mkdir(parents=True, exist_ok=True)
    tasks = []
    for name, pixels, objects in images:
        im = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
        im.save(folder / name)
        for mask, label, expression in objects:
            tid = len(tasks) + 1
            tasks.append({"id": tid, "data": {"image": name, "expression": expression},
                          "annotations": [{"id": tid, "was_cancelled": False, "ground_truth": False,
                                           "result": [brush_region(mask, label, region_id=f"r{tid}")],
                                           "completed_by": 1, "updated_at": "2026-01-01T00:00:00Z"}]})
    export = folder / "export.json"
    export.write_text(json.dumps(tasks), encoding="utf-8")
    return export


def rgb_scene(size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (size, size, 3), dtype=np.uint8)


def write_rrsis_dataset(root: Path, splits: dict[str, int], categories: Sequence[str] = ("vehicle",),
                        size: int = 64) -> Path:
    """An RRSIS-layout dataset through ``pslg export rrsis`` itself: one object per image, images in ``splits``."""
    images = []
    k = 0
    for split, n in splits.items():
        for i in range(n):
            cat = categories[k % len(categories)]
            x0 = 8 + 4 * (k % 5)
            images.append((f"{split}_{i}.png", rgb_scene(size, k),
                           [(square_mask(size, x0, 10, x0 + 20, 40), cat, f"the {cat} number {k}")]))
            k += 1
    export = write_export(root / "ls", images)
    # splits come from the file names: export with ratios that put everything in train, then rewrite the refs
    res = pslg("export", "rrsis", export, "--image-root", export.parent, "--out", root / "data", "--split-ratios", "1")
    assert res.exit_code == 0, res.output
    import pickle

    refs_path = root / "data" / "rrsisd" / "refs(unc).p"
    refs = pickle.loads(refs_path.read_bytes())
    for ref in refs:
        ref["split"] = ref["file_name"].split("_", 1)[0]
    refs_path.write_bytes(pickle.dumps(refs, protocol=4))
    return root / "data"



def digest(mask: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(mask.astype(bool)).tobytes() + str(mask.shape).encode()).hexdigest()


def coco_masks(annotations: Path) -> dict[str, list[tuple[np.ndarray, str, dict]]]:
    """file_name → [(mask, category name, annotation)] decoded by pycocotools' own COCO.annToMask."""
    from pycocotools.coco import COCO

    coco = COCO(str(annotations))
    out: dict[str, list] = {}
    for img in coco.dataset["images"]:
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])):
            out.setdefault(img["file_name"], []).append(
                (coco.annToMask(ann).astype(bool), coco.cats[ann["category_id"]]["name"], ann))
    return out

"""Small helpers shared by the converter tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from converters.cli.main import app


def pslg(*args: object):
    """Run ``pslg`` in-process; returns click's Result (``exit_code``, ``output``)."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


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

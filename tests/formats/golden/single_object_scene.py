"""A fixed one-object-per-expression scene whose RRSIS files are kept in this folder as written before
generalized expressions existed (``rrsisd/refs(unc).p``, ``rrsisd/instances.json``): today's writer must give
the same bytes, so RMSIN keeps loading one-object datasets. Depends only on numpy, Pillow and
``converters.model`` so the same items can be written by any version of the writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from converters.model import ImageItem, ObjectItem


def _mask(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def scene_items(folder: Path) -> list[ImageItem]:
    """Two images, three categories, a hole, a repeated object and a repeated sentence, explicit splits."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    items = []
    for name, (h, w) in (("a.png", (40, 50)), ("b.png", (32, 32))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB").save(folder / name)
    a, b = folder / "a.png", folder / "b.png"
    ring = _mask(40, 50, 5, 5, 25, 25)
    ring[10:20, 10:20] = False
    items.append(ImageItem(source="a.png", path=a, width=50, height=40, split="train", where="task 1", objects=[
        ObjectItem(_mask(40, 50, 30, 30, 38, 48), "vehicle", ["The white car, bottom right!", "a car"], where="r1"),
        ObjectItem(ring, "storage_tank", ["the ring-shaped tank"], where="r2")]))
    items.append(ImageItem(source="a.png", path=a, width=50, height=40, split="train", where="task 2", objects=[
        ObjectItem(_mask(40, 50, 30, 30, 38, 48), "vehicle", ["a car", "the car's roof"], where="r3")]))
    items.append(ImageItem(source="b.png", path=b, width=32, height=32, split="val", where="task 3", objects=[
        ObjectItem(_mask(32, 32, 0, 0, 32, 4), "building", ["the long building on the left"], where="r4")]))
    return items

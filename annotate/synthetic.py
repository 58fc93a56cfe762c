"""Synthetic aerial-like scenes with exact masks, for tests, demos and benchmarks that need no data.

A scene is a textured background (smooth colour gradient + noise, like fields and roads seen from above) with
objects of a few kinds drawn on it: rotated rectangles ("vehicle", "building"), discs ("storage_tank") and a
ring with a hole ("roundabout"). Every object's mask is known exactly, and each gets a referring expression
that names its kind and where it lies, so the scenes also exercise text prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from annotate.types import Box

KINDS: tuple[str, ...] = ("vehicle", "building", "storage_tank", "roundabout")


@dataclass
class SceneObject:
    """One object of a synthetic scene with its exact mask."""

    mask: np.ndarray
    box: Box
    category: str
    expression: str


@dataclass
class Scene:
    image: np.ndarray
    objects: list[SceneObject]


def _where(cx: float, cy: float, w: int, h: int) -> str:
    vertical = "top" if cy < h / 3 else ("bottom" if cy > 2 * h / 3 else "middle")
    horizontal = "left" if cx < w / 3 else ("right" if cx > 2 * w / 3 else "center")
    if vertical == "middle" and horizontal == "center":
        return "in the center"
    if vertical == "middle":
        return f"on the {horizontal}"
    if horizontal == "center":
        return f"at the {vertical}"
    return f"at the {vertical} {horizontal}"


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(70, 130, size=3).astype(np.float32)
    tilt = rng.uniform(-30, 30, size=(2, 3)).astype(np.float32)
    img = base[None, None, :] + (xx[..., None] / w) * tilt[0] + (yy[..., None] / h) * tilt[1]
    noise = rng.normal(0, 6, size=(h, w, 3)).astype(np.float32)
    img += cv2.GaussianBlur(noise, (0, 0), 1.5) * 2.0
    # a road crossing the scene: long thin structures are the usual distractors around vehicles
    road_y = int(rng.integers(h // 4, 3 * h // 4))
    cv2.line(img, (0, road_y), (w - 1, road_y + int(rng.integers(-h // 8, h // 8))), (150, 150, 150), max(3, h // 40))
    return img


def _draw(kind: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    scale = min(h, w)
    cx = float(rng.uniform(0.15, 0.85) * w)
    cy = float(rng.uniform(0.15, 0.85) * h)
    if kind in ("vehicle", "building"):
        length = rng.uniform(0.06, 0.10) * scale if kind == "vehicle" else rng.uniform(0.12, 0.2) * scale
        width = length * (rng.uniform(0.4, 0.55) if kind == "vehicle" else rng.uniform(0.6, 1.0))
        angle = float(rng.uniform(0, 180))
        pts = cv2.boxPoints(((cx, cy), (length, width), angle)).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    elif kind == "storage_tank":
        cv2.circle(mask, (int(cx), int(cy)), int(rng.uniform(0.04, 0.08) * scale), 1, -1)
    elif kind == "roundabout":
        outer = int(rng.uniform(0.08, 0.12) * scale)
        cv2.circle(mask, (int(cx), int(cy)), outer, 1, -1)
        cv2.circle(mask, (int(cx), int(cy)), int(outer * 0.45), 0, -1)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return mask.astype(bool)


def make_scene(
    seed: int = 0,
    height: int = 256,
    width: int = 256,
    n_objects: int = 4,
    kinds: tuple[str, ...] = KINDS,
) -> Scene:
    """Draw a scene with ``n_objects`` non-overlapping objects of the given ``kinds``.

    Objects get colours well apart from the background (as vehicles and tanks usually are), with a little
    shading so the segmenters cannot rely on perfectly flat regions.
    """
    rng = np.random.default_rng(seed)
    img = _background(rng, height, width)
    occupied = np.zeros((height, width), bool)
    objects: list[SceneObject] = []
    attempts = 0
    while len(objects) < n_objects and attempts < 200:
        attempts += 1
        kind = kinds[len(objects) % len(kinds)]
        mask = _draw(kind, rng, height, width)
        if not mask.any() or (cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & occupied).any():
            continue
        ys, xs = np.nonzero(mask)
        if xs.min() == 0 or ys.min() == 0 or xs.max() == width - 1 or ys.max() == height - 1:
            continue
        bg_mean = img[mask].mean(axis=0)
        colour = rng.uniform(0, 255, size=3).astype(np.float32)
        while np.abs(colour - bg_mean).sum() < 150:
            colour = rng.uniform(0, 255, size=3).astype(np.float32)
        shade = np.linspace(-12, 12, width, dtype=np.float32)[None, :, None]
        filled = colour[None, None, :] + shade + rng.normal(0, 4, size=(height, width, 3)).astype(np.float32)
        img[mask] = filled[mask]
        occupied |= mask
        box: Box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        where = _where(float(xs.mean()), float(ys.mean()), width, height)
        objects.append(SceneObject(mask=mask, box=box, category=kind, expression=f"the {kind.replace('_', ' ')} {where}"))
    image = np.clip(img, 0, 255).astype(np.uint8)
    return Scene(image=image, objects=objects)

"""Per-category shape priors learned from corrected masks: what an object of a class covers inside its box.

Why: the classical segmenter's hand-made prior (a box with its corners cut, or the rectangle/ellipse fitted to
the colour segmentation) describes vehicles and tanks; an airplane is a cross, a harbour a comb, a bridge a thin
band. Corrections say what each class looks like, in the one frame every prompt shares: the box. A prior is the
mean of the corrected masks resampled to a ``grid``×``grid`` box-normalised raster, so it is independent of the
object's size and of the box's aspect.

Rotation-aware: an elongated object inside an axis-aligned box lies along one of its two diagonals, and which
one is a property of the instance, not of the class. Each training mask is therefore put in a canonical
orientation first (flipped so that its principal axis runs along the "\\" diagonal; its 180° turn, which keeps
that diagonal, is added too), and when the prior is applied it is flipped back to the diagonal the colour
segmentation of that instance follows. Masks too round to have a diagonal are added in both orientations.

Calibration: each category's threshold (the share of training masks that must cover a pixel) is the one that
maximises the mean IoU of the thresholded prior with the training masks; ``fit_iou`` records that IoU so the
segmenter can tell a prior that describes its class well (a tank) from one that does not (a harbour).

A prior set is a small directory (``priors.npz`` + ``priors.json``) so the model store can version it beside
the grounding models (kind ``"shape-priors"``).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import cv2
import numpy as np

from annotate.atomic import atomic_write_bytes, atomic_write_text
from annotate.types import Box

KIND = "shape-priors"
#: The pooled prior of every category, used for a category that has too few samples of its own.
ANY = "*"
PRIORS_NPZ = "priors.npz"
PRIORS_JSON = "priors.json"
FORMAT = 1
_LEVELS = tuple(np.round(np.arange(0.15, 0.81, 0.05), 2))
#: Below this |correlation| of x and y in the box frame a mask has no diagonal (round or axis-aligned).
_DIAGONAL_MIN = 0.15


@dataclass(frozen=True)
class PriorSample:
    """One corrected object: its mask (image-sized or any size, in the frame of ``box``), its box, its class."""

    mask: np.ndarray
    box: Box
    category: str


@dataclass
class CategoryPrior:
    """The learned prior of one category."""

    template: np.ndarray  #: grid×grid float32 in [0, 1], canonical orientation ("\\" diagonal)
    level: float  #: calibrated threshold of the template
    samples: int
    fit_iou: float  #: mean IoU of ``template >= level`` with its training masks (box-normalised)

    def probability(self, width: int, height: int, diagonal: int = 1) -> np.ndarray:
        """The template resampled to a ``height``×``width`` box; ``diagonal`` −1 flips it to the "/" diagonal."""
        t = self.template if diagonal >= 0 else self.template[:, ::-1]
        return cv2.resize(np.ascontiguousarray(t), (max(1, int(width)), max(1, int(height))), interpolation=cv2.INTER_LINEAR)

    def mask(self, width: int, height: int, diagonal: int = 1) -> np.ndarray:
        return self.probability(width, height, diagonal) >= self.level


def box_normalised(mask: np.ndarray, box: Box, grid: int) -> Optional[np.ndarray]:
    """``mask`` inside ``box`` resampled to grid×grid floats (share of each cell covered); None when empty."""
    m = np.asarray(mask, bool)
    h, w = m.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    xi0, yi0 = int(np.clip(np.floor(x0), 0, w)), int(np.clip(np.floor(y0), 0, h))
    xi1, yi1 = int(np.clip(np.ceil(x1), 0, w)), int(np.clip(np.ceil(y1), 0, h))
    if xi1 - xi0 < 1 or yi1 - yi0 < 1:
        return None
    crop = m[yi0:yi1, xi0:xi1].astype(np.float32)
    if not crop.any():
        return None
    return cv2.resize(crop, (grid, grid), interpolation=cv2.INTER_AREA)


def diagonal_of(cells: np.ndarray) -> int:
    """+1 when the mass of ``cells`` runs along the "\\" diagonal of its frame, −1 for "/", 0 for neither."""
    weights = np.asarray(cells, np.float64)
    total = weights.sum()
    if total <= 0:
        return 0
    h, w = weights.shape
    ys, xs = np.mgrid[0:h, 0:w]
    xs = (xs + 0.5) / w
    ys = (ys + 0.5) / h
    mx, my = (weights * xs).sum() / total, (weights * ys).sum() / total
    cxx = (weights * (xs - mx) ** 2).sum() / total
    cyy = (weights * (ys - my) ** 2).sum() / total
    cxy = (weights * (xs - mx) * (ys - my)).sum() / total
    corr = cxy / max(np.sqrt(cxx * cyy), 1e-12)
    if abs(corr) < _DIAGONAL_MIN:
        return 0
    return 1 if corr > 0 else -1


def _canonical_views(cells: np.ndarray) -> list[np.ndarray]:
    """The views of one training mask that enter the mean (see the module docstring)."""
    d = diagonal_of(cells)
    if d == 0:
        base = [cells, cells[:, ::-1]]
    else:
        base = [cells if d > 0 else cells[:, ::-1]]
    return [v for b in base for v in (b, b[::-1, ::-1])]


def _calibrate(template: np.ndarray, targets: list[np.ndarray]) -> tuple[float, float]:
    """The threshold maximising mean IoU of ``template >= level`` with ``targets`` (cells ≥ 0.5), and that IoU."""
    binary = [t >= 0.5 for t in targets]
    best = (0.5, -1.0)
    for level in _LEVELS:
        pred = template >= level
        ious = []
        for t in binary:
            union = np.count_nonzero(pred | t)
            ious.append(np.count_nonzero(pred & t) / union if union else 1.0)
        score = float(np.mean(ious))
        if score > best[1] + 1e-9:
            best = (float(level), score)
    return best


class ShapePriors:
    """Learned per-category priors (plus the pooled ``ANY`` prior)."""

    def __init__(self, categories: dict[str, CategoryPrior], grid: int = 32, min_samples: int = 3) -> None:
        self.categories = dict(categories)
        self.grid = int(grid)
        self.min_samples = int(min_samples)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}:{v.samples}" for k, v in sorted(self.categories.items()))
        return f"ShapePriors({parts})"

    @classmethod
    def fit(cls, samples: Iterable[PriorSample], grid: int = 32, min_samples: int = 3) -> "ShapePriors":
        """Priors of every category with at least ``min_samples`` usable masks, and the pooled ``ANY`` prior."""
        views: dict[str, list[np.ndarray]] = {}
        targets: dict[str, list[np.ndarray]] = {}
        for sample in samples:
            cells = box_normalised(sample.mask, sample.box, grid)
            if cells is None:
                continue
            v = _canonical_views(cells)
            for key in (str(sample.category), ANY):
                views.setdefault(key, []).extend(v)
                targets.setdefault(key, []).append(v[0])
        fitted: dict[str, CategoryPrior] = {}
        for key, vs in views.items():
            n = len(targets[key])
            if n < min_samples:
                continue
            template = np.mean(vs, axis=0).astype(np.float32)
            level, fit_iou = _calibrate(template, targets[key])
            fitted[key] = CategoryPrior(template, level, n, fit_iou)
        return cls(fitted, grid, min_samples)

    def get(self, category: Optional[str]) -> Optional[CategoryPrior]:
        """The prior of ``category``; the pooled one for an unknown category (None when there is none)."""
        if category is not None and str(category) in self.categories:
            return self.categories[str(category)]
        return self.categories.get(ANY)

    @property
    def digest(self) -> str:
        """A short content hash: part of the segmenter's model version, so new priors re-predict."""
        h = hashlib.sha256()
        for key in sorted(self.categories):
            c = self.categories[key]
            h.update(key.encode())
            h.update(np.round(c.template, 4).tobytes())
            h.update(f"{c.level:.3f}".encode())
        return h.hexdigest()[:10]

    # --- persistence ---------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``priors.npz`` (templates) and ``priors.json`` (levels, counts) into ``directory`` atomically."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.categories)
        buf = io.BytesIO()
        np.savez_compressed(buf, **{f"t{i}": self.categories[k].template for i, k in enumerate(keys)})
        atomic_write_bytes(out / PRIORS_NPZ, buf.getvalue())
        meta = {
            "format": FORMAT, "grid": self.grid, "min_samples": self.min_samples,
            "categories": [{"name": k, "array": f"t{i}", "level": self.categories[k].level,
                            "samples": self.categories[k].samples, "fit_iou": self.categories[k].fit_iou}
                           for i, k in enumerate(keys)],
        }
        atomic_write_text(out / PRIORS_JSON, json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> "ShapePriors":
        """Read a directory written by :meth:`save`; ``ValueError`` naming the file when it is not one."""
        d = Path(directory)
        try:
            meta = json.loads((d / PRIORS_JSON).read_text(encoding="utf-8"))
            with np.load(d / PRIORS_NPZ, allow_pickle=False) as arrays:
                cats = {}
                for entry in meta["categories"]:
                    template = np.asarray(arrays[entry["array"]], np.float32)
                    if template.shape != (meta["grid"], meta["grid"]):
                        raise ValueError(f"template {entry['name']!r} has shape {template.shape}")
                    cats[str(entry["name"])] = CategoryPrior(template, float(entry["level"]), int(entry["samples"]),
                                                             float(entry["fit_iou"]))
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{d}: not a shape-prior directory ({exc})") from exc
        return cls(cats, int(meta["grid"]), int(meta.get("min_samples", 3)))


def is_priors_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / PRIORS_JSON).is_file() and (p / PRIORS_NPZ).is_file()

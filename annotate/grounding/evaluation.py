"""Stage-1 quality: does the grounder's chosen box match the ground-truth box?

Box Acc@0.5 (share of expressions whose chosen box has IoU ≥ 0.5 with the truth: the usual visual-grounding
metric) and mean box IoU, overall and per category. A failing item (unreadable image, empty expression) counts as
a miss with IoU 0 and is listed in ``errors``, so one bad file neither stops the evaluation nor flatters it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from annotate.grounding.base import Grounder, GroundingError
from annotate.types import Box

#: The IoU at which a box counts as correct (Acc@0.5).
ACC_IOU: float = 0.5


@dataclass
class GroundingSample:
    """One (image, expression, box) triple: what stage 1 learns from and is measured on."""

    image_path: Path
    expression: str
    box: Box
    category: str = ""
    ref_id: Any = None


def samples_from_records(records: Iterable[Any]) -> list[GroundingSample]:
    """One sample per sentence of each RRSIS ref (duck-typed: ``image_path``, ``sentences``, ``bbox_xyxy``, ...).

    Generalized refs (several objects or none: ``generalized`` true) are left out: stage 1 learns and is scored
    on one box per expression.
    """
    samples: list[GroundingSample] = []
    for rec in records:
        if getattr(rec, "generalized", False) or getattr(rec, "bbox_xyxy", None) is None:
            continue
        for sentence in getattr(rec, "sentences", []) or []:
            samples.append(
                GroundingSample(
                    image_path=Path(rec.image_path), expression=str(sentence), box=tuple(float(v) for v in rec.bbox_xyxy),
                    category=str(getattr(rec, "category", "") or ""), ref_id=getattr(rec, "ref_id", None),
                )
            )
    return samples


def load_rgb(path: Path) -> np.ndarray:
    """The RGB uint8 pixels of an image file (GeoTIFF and 16-bit included), through the toolkit's image loader."""
    from annotate.image_io import load_image

    return load_image(path).rgb


@dataclass
class BoxScores:
    """Stage-1 scores over a set of expressions."""

    acc50: float
    mean_iou: float
    n: int
    per_category: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"acc@0.5": self.acc50, "mean_iou": self.mean_iou, "n": self.n,
                "per_category": self.per_category, "errors": list(self.errors)}


def summarise(ious: Sequence[float], categories: Sequence[str], errors: Sequence[str] = ()) -> BoxScores:
    """Acc@0.5, mean IoU and per-category rows from per-expression box IoUs."""
    arr = np.asarray(ious, dtype=np.float64)
    by_cat: dict[str, list[float]] = defaultdict(list)
    for value, cat in zip(ious, categories):
        by_cat[cat or "(none)"].append(float(value))
    per_category = {
        cat: {"acc@0.5": float(np.mean(np.asarray(v) >= ACC_IOU)), "mean_iou": float(np.mean(v)), "n": len(v)}
        for cat, v in sorted(by_cat.items())
    }
    return BoxScores(
        acc50=float(np.mean(arr >= ACC_IOU)) if arr.size else 0.0,
        mean_iou=float(arr.mean()) if arr.size else 0.0,
        n=int(arr.size),
        per_category=per_category,
        errors=list(errors),
    )


def evaluate_boxes(
    grounder: Grounder,
    samples: Sequence[GroundingSample],
    progress: Optional[Callable[[Iterable], Iterable]] = None,
    image_loader: Callable[[Path], np.ndarray] = load_rgb,
) -> BoxScores:
    """Ground every sample's expression and compare the chosen box with the truth."""
    from annotate.metrics import box_iou

    ious: list[float] = []
    cats: list[str] = []
    errors: list[str] = []
    cache: dict[Path, np.ndarray] = {}
    items: Iterable[GroundingSample] = progress(samples) if progress else samples
    for sample in items:
        iou = 0.0
        try:
            if sample.image_path not in cache:
                cache.clear()  # samples of one image are adjacent in RRSIS order: keep only the current image
                cache[sample.image_path] = image_loader(sample.image_path)
            candidates = grounder.ground(cache[sample.image_path], sample.expression, top_k=1)
            if candidates:
                iou = box_iou(candidates[0].box, sample.box)
        except (GroundingError, OSError, ValueError) as exc:
            errors.append(f"ref {sample.ref_id} ({sample.image_path.name}, {sample.expression!r}): {exc}")
        ious.append(iou)
        cats.append(sample.category)
    return summarise(ious, cats, errors)

"""Which tasks to annotate next: uncertainty plus diversity, a per-image cap, stratified random at cold start.

Why both: the most uncertain pre-labels (lowest predicted IoU, smallest grounding margin) are where a
correction teaches the most and saves the most review, but the most uncertain tasks are often near copies of
each other (the twenty harbours of one image); a batch that also covers the feature space teaches more per
correction. The batch is built greedily: each pick maximises its uncertainty times a diversity factor, its
distance (in standardised cheap features) to everything already picked or labelled — uncertainty-weighted
k-center greedy. A per-image cap keeps one image from filling the batch. Before the quality estimate is
fitted (no corrections yet) the uncertainties mean nothing, so the batch is a stratified random sample: the
strata (categories) take turns, each in a seeded random order.

Deterministic: the same candidates and seed give the same batch in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

#: Weight of the grounding margin's uncertainty beside 1 − predicted IoU (when a grounder chose the box).
MARGIN_WEIGHT = 0.5


@dataclass
class Candidate:
    """One task that could be annotated next."""

    task_id: Any
    image: str  #: the image it is on (the per-image cap counts these)
    features: Sequence[float]  #: cheap image / region features (diversity)
    predicted_iou: Optional[float] = None  #: the quality estimate of its pre-label; None when not estimated
    grounding_margin: Optional[float] = None
    stratum: str = ""  #: its category, for the stratified cold start


@dataclass
class Choice:
    task_id: Any
    rank: int
    rationale: dict[str, Any] = field(default_factory=dict)


def uncertainty(c: Candidate) -> Optional[float]:
    """1 − predicted IoU, raised by a small grounding margin; None without a quality estimate."""
    if c.predicted_iou is None:
        return None
    u = 1.0 - float(np.clip(c.predicted_iou, 0.0, 1.0))
    if c.grounding_margin is not None:
        u = (u + MARGIN_WEIGHT * (1.0 - float(np.clip(c.grounding_margin, 0.0, 1.0)))) / (1.0 + MARGIN_WEIGHT)
    return u


def _standardise(x: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    both = np.concatenate([x, ref]) if len(ref) else x
    mean, std = both.mean(axis=0), both.std(axis=0)
    std[std < 1e-9] = 1.0
    return (x - mean) / std, ((ref - mean) / std if len(ref) else ref)


def select_batch(candidates: Sequence[Candidate], size: int, per_image_cap: Optional[int] = None, seed: int = 0,
                 labelled_features: Optional[Sequence[Sequence[float]]] = None) -> list[Choice]:
    """Up to ``size`` candidates in the order to annotate them, each with why it was chosen."""
    if size <= 0 or not candidates:
        return []
    cap = per_image_cap if per_image_cap and per_image_cap > 0 else None
    rng = np.random.default_rng(seed)
    if any(uncertainty(c) is None for c in candidates):
        return _stratified(candidates, size, cap, rng)
    x = np.asarray([list(c.features) for c in candidates], np.float64).reshape(len(candidates), -1)
    ref = np.asarray(labelled_features if labelled_features is not None else [], np.float64).reshape(-1, x.shape[1])
    x, ref = _standardise(x, ref)
    u = np.array([uncertainty(c) for c in candidates], np.float64)
    # distance to the nearest labelled / chosen point; with nothing labelled every point starts equally far
    nearest = (np.min(np.linalg.norm(x[:, None, :] - ref[None, :, :], axis=2), axis=1) if len(ref)
               else np.full(len(x), np.inf))
    jitter = rng.random(len(x)) * 1e-9  # seeded tie-break
    per_image: dict[str, int] = {}
    chosen: list[Choice] = []
    available = np.ones(len(x), bool)
    while len(chosen) < size and available.any():
        finite = nearest[np.isfinite(nearest) & available]
        scale = finite.max() if len(finite) and finite.max() > 0 else 1.0
        diversity = np.where(np.isfinite(nearest), nearest / scale, 1.0)
        value = u * (0.5 + 0.5 * diversity) + jitter
        value[~available] = -np.inf
        i = int(np.argmax(value))
        c = candidates[i]
        available[i] = False
        if cap is not None and per_image.get(c.image, 0) >= cap:
            continue
        per_image[c.image] = per_image.get(c.image, 0) + 1
        chosen.append(Choice(c.task_id, len(chosen) + 1, {
            "strategy": "uncertainty+diversity", "uncertainty": round(float(u[i]), 4),
            "predicted_iou": None if c.predicted_iou is None else round(float(c.predicted_iou), 4),
            "grounding_margin": None if c.grounding_margin is None else round(float(c.grounding_margin), 4),
            "diversity": round(float(diversity[i]), 4), "image": c.image,
        }))
        nearest = np.minimum(nearest, np.linalg.norm(x - x[i], axis=1))
    return chosen


def _stratified(candidates: Sequence[Candidate], size: int, cap: Optional[int], rng: np.random.Generator) -> list[Choice]:
    strata: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        strata.setdefault(c.stratum, []).append(i)
    order = {k: list(rng.permutation(v)) for k, v in sorted(strata.items())}
    keys = list(order)
    per_image: dict[str, int] = {}
    chosen: list[Choice] = []
    while len(chosen) < size and any(order.values()):
        for k in keys:
            while order[k]:
                i = int(order[k].pop(0))
                c = candidates[i]
                if cap is not None and per_image.get(c.image, 0) >= cap:
                    continue
                per_image[c.image] = per_image.get(c.image, 0) + 1
                chosen.append(Choice(c.task_id, len(chosen) + 1, {
                    "strategy": "stratified-random (cold start: no quality estimate yet)", "stratum": k,
                    "image": c.image}))
                break
            if len(chosen) >= size:
                break
    return chosen


def region_features(box: Sequence[float], image_size: tuple[int, int], score: Optional[float] = None,
                    category_index: Optional[int] = None, categories: int = 0,
                    mean_rgb: Optional[Sequence[float]] = None) -> list[float]:
    """Cheap diversity features of a region: log relative area, aspect, centre, score, colour, category one-hot."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = image_size
    bw, bh = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    f = [float(np.log(bw * bh / max(1.0, w * h))), min(bw, bh) / max(bw, bh), (x0 + x1) / 2 / max(w, 1),
         (y0 + y1) / 2 / max(h, 1), 0.5 if score is None else float(score)]
    f += [float(v) / 255.0 for v in (mean_rgb if mean_rgb is not None else (0.0, 0.0, 0.0))]
    if categories:
        one_hot = [0.0] * categories
        if category_index is not None and 0 <= category_index < categories:
            one_hot[category_index] = 1.0
        f += one_hot
    return f

"""The quality estimate: a pre-label's predicted IoU with the mask its reviewer will accept.

Why: the score a reviewer sorts on should order the pre-labels by how much correcting they need. The
segmenter's own confidence does so poorly on some images, but the pipeline already knows more: the
segmenter's evidence (SAM's IoU prediction, the classical segmenter's shape agreement), the grounding score
and its margin over the runner-up, how well the mask's bounding box agrees with the prompt box, how much of
the box it fills, how much MBO had to change it, the box's size and aspect. Stored (pre-label, correction)
pairs give the target, the IoU of the two masks.

The model is a ridge regression on those features followed by an isotonic calibration of its output to IoU
(scikit-learn): few parameters, so a few dozen corrections are enough, monotone, and stored as plain JSON
(no pickles in the model store). Before ``min_pairs`` pairs exist it is not fitted and ``fallback_score`` is used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from annotate.atomic import atomic_write_text
from annotate.geometry import box_iou, mask_box
from annotate.types import Box, PromptResult

KIND = "quality"
QUALITY_JSON = "quality.json"
#: The features read, in order; a missing feature takes its neutral value.
FEATURES: tuple[str, ...] = (
    "segmenter_score", "grounding_score", "grounding_margin", "box_agreement", "box_fill", "mbo_change",
    "box_area_log", "box_aspect",
)
NEUTRAL: dict[str, float] = {"grounding_score": 1.0, "grounding_margin": 1.0, "mbo_change": 0.0}
#: how much better (cross-validated Spearman rho on the stored pairs) a fitted estimate must rank than the served
#: score before it replaces it (the backend's retrain and bench/active_loop.py)
ADOPT_MARGIN = 0.02


def mask_box_features(mask: Optional[np.ndarray], box: Box, image_shape: tuple[int, int]) -> dict[str, float]:
    """How a mask sits in its prompt box: bounding-box IoU, share of the box filled, box size and aspect."""
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    h, w = image_shape
    out = {"box_area_log": math.log(bw * bh / max(1.0, float(h * w))), "box_aspect": min(bw, bh) / max(bw, bh)}
    mb = mask_box(mask) if mask is not None else None
    if mb is None:
        out.update(box_agreement=0.0, box_fill=0.0)
        return out
    out["box_agreement"] = float(box_iou(mb, (x0, y0, x1, y1)))
    out["box_fill"] = float(np.count_nonzero(mask)) / (bw * bh)
    return out


def feature_vector(features: Mapping[str, float]) -> np.ndarray:
    return np.array([float(features.get(k, NEUTRAL.get(k, 0.0))) for k in FEATURES], np.float64)


def fallback_score(result: PromptResult) -> float:
    """The score before a quality estimate is fitted: a continuous estimate from the evidence the pipeline has.

    The segmenter's confidence (SAM's IoU prediction, the classical segmenter's shape agreement) × the grounding
    score (when a grounder chose the box) × how well the mask's bounding box agrees with the prompt box × how
    little MBO had to change the mask. Why the last two: the classical segmenter answers every prompt whose
    colour evidence collapsed with the same confidence, so on its own it ties many tasks (43 % of the NWPU
    dev pre-labels), and a reviewer sorting by score gets no order among them. Each factor is an agreement in
    [0, 1] that can only lower confidence, so there are no weights to tune; a missing feature counts as 1.
    bench/active_loop.py reports Spearman ρ(score, IoU) and the share of tied scores.
    """
    score = float(result.score)
    if result.grounding_score is not None:
        score *= float(result.grounding_score)
    features = result.features or {}
    if "box_agreement" in features:
        score *= float(features["box_agreement"])
    if "mbo_change" in features:
        score *= 1.0 - float(features["mbo_change"])
    return float(min(max(score, 0.0), 1.0))


@dataclass
class QualityModel:
    """Predicted IoU from pre-label features; ``None`` coefficients mean "not fitted: use the fallback score"."""

    mean: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None
    coef: Optional[np.ndarray] = None
    intercept: float = 0.0
    iso_x: Optional[np.ndarray] = None
    iso_y: Optional[np.ndarray] = None
    pairs: int = 0
    #: Spearman ρ of the fitted prediction with IoU by leave-fold-out on the fitting pairs (how well it ranks)
    cv_spearman: Optional[float] = None

    @property
    def fitted(self) -> bool:
        return self.coef is not None

    @classmethod
    def fit(cls, features: Sequence[Mapping[str, float]], ious: Sequence[float], min_pairs: int = 20,
            alpha: float = 1.0, seed: int = 0) -> "QualityModel":
        """Fit on (pre-label features, IoU with its correction) pairs; unfitted below ``min_pairs`` pairs."""
        if len(features) != len(ious):
            raise ValueError(f"{len(features)} feature rows but {len(ious)} IoUs")
        if len(ious) < max(3, min_pairs):
            return cls(pairs=len(ious))
        x = np.stack([feature_vector(f) for f in features])
        y = np.clip(np.asarray(ious, np.float64), 0.0, 1.0)
        model = cls._fit_arrays(x, y, alpha)
        model.pairs = len(y)
        model.cv_spearman = _cv_spearman(x, y, alpha, seed)
        return model

    @classmethod
    def _fit_arrays(cls, x: np.ndarray, y: np.ndarray, alpha: float) -> "QualityModel":
        from sklearn.isotonic import IsotonicRegression
        from sklearn.linear_model import Ridge

        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        ridge = Ridge(alpha=alpha).fit((x - mean) / scale, y)
        raw = ridge.predict((x - mean) / scale)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
        return cls(mean=mean, scale=scale, coef=np.asarray(ridge.coef_, np.float64), intercept=float(ridge.intercept_),
                   iso_x=np.asarray(iso.X_thresholds_, np.float64), iso_y=np.asarray(iso.y_thresholds_, np.float64))

    def _raw(self, x: np.ndarray) -> np.ndarray:
        assert self.mean is not None and self.scale is not None and self.coef is not None
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept

    def predict_features(self, features: Mapping[str, float]) -> Optional[float]:
        """Predicted IoU in [0, 1]; None when the model is not fitted."""
        if not self.fitted:
            return None
        raw = self._raw(feature_vector(features)[None, :])
        # the isotonic step is flat between thresholds: the raw value breaks ties so the order stays strict
        assert self.iso_x is not None and self.iso_y is not None
        calibrated = float(np.interp(raw[0], self.iso_x, self.iso_y)) if len(self.iso_x) > 1 else float(self.iso_y[0])
        tie_break = 1e-3 * math.tanh(float(raw[0]))
        return float(min(max(calibrated + tie_break, 0.0), 1.0))

    def score(self, result: PromptResult) -> float:
        """The prediction's ``score``: predicted IoU when fitted, else today's score."""
        predicted = self.predict_features(result.features) if result.ok else None
        return fallback_score(result) if predicted is None else predicted

    # --- persistence ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        def arr(a: Optional[np.ndarray]) -> Optional[list[float]]:
            return None if a is None else [float(v) for v in a]

        return {"format": 1, "features": list(FEATURES), "mean": arr(self.mean), "scale": arr(self.scale),
                "coef": arr(self.coef), "intercept": self.intercept, "iso_x": arr(self.iso_x), "iso_y": arr(self.iso_y),
                "pairs": self.pairs, "cv_spearman": self.cv_spearman}

    @classmethod
    def from_dict(cls, data: Mapping) -> "QualityModel":
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"quality model features {data.get('features')} are not {list(FEATURES)}")

        def arr(key: str) -> Optional[np.ndarray]:
            value = data.get(key)
            return None if value is None else np.asarray(value, np.float64)

        return cls(mean=arr("mean"), scale=arr("scale"), coef=arr("coef"), intercept=float(data.get("intercept", 0.0)),
                   iso_x=arr("iso_x"), iso_y=arr("iso_y"), pairs=int(data.get("pairs", 0)),
                   cv_spearman=data.get("cv_spearman"))

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / QUALITY_JSON, json.dumps(self.to_dict(), indent=2))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> "QualityModel":
        path = Path(directory) / QUALITY_JSON
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a quality model ({exc})") from exc


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's ρ (average ranks for ties); 0 when either side is constant."""
    from scipy.stats import spearmanr

    if len(a) < 2 or np.ptp(np.asarray(a, float)) == 0 or np.ptp(np.asarray(b, float)) == 0:
        return 0.0
    rho = spearmanr(a, b).statistic
    return 0.0 if not np.isfinite(rho) else float(rho)


def _cv_spearman(x: np.ndarray, y: np.ndarray, alpha: float, seed: int, folds: int = 5) -> Optional[float]:
    if len(y) < 2 * folds:
        return None
    order = np.random.default_rng(seed).permutation(len(y))
    pred = np.empty(len(y))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        model = QualityModel._fit_arrays(x[train], y[train], alpha)
        pred[test] = model._raw(x[test])
    return spearman(pred, y)

"""The quality estimate's calibration: its output reads as an IoU, also when IoU is not linear in the features.

``tests/engine/test_quality.py`` uses a linear target, where a ridge regression alone is already calibrated;
here the IoU is a step of the box agreement (a pre-label either found the object or found something else), the
shape real pre-labels have, so only the isotonic step turns the regression's output into IoU values.
"""

from __future__ import annotations

import numpy as np

from annotate.quality import QualityModel, spearman


def _step_pairs(n: int, seed: int) -> tuple[list[dict], list[float]]:
    rng = np.random.default_rng(seed)
    feats, ious = [], []
    for _ in range(n):
        agree = rng.uniform(0.2, 1.0)
        iou = (0.95 if agree > 0.7 else 0.3) + rng.normal(0, 0.01)
        feats.append({"segmenter_score": rng.uniform(0, 1), "box_agreement": agree, "box_fill": rng.uniform(0.4, 1.0),
                      "mbo_change": rng.uniform(0, 0.1), "box_area_log": -6.0, "box_aspect": 0.7})
        ious.append(float(np.clip(iou, 0, 1)))
    return feats, ious


def test_predicted_iou_is_calibrated_on_a_non_linear_target() -> None:
    model = QualityModel.fit(*_step_pairs(120, 0))
    feats, ious = _step_pairs(80, 1)
    predicted = np.array([model.predict_features(f) for f in feats])
    truth = np.array(ious)
    assert spearman(predicted, truth) > 0.6  # within each level the IoU is noise: ranks are mostly the step
    # calibrated: the prediction is the IoU to expect, not just a rank (a linear fit is off by ~0.1 here)
    assert np.mean(np.abs(predicted - truth)) < 0.06
    good = predicted[truth > 0.6]
    bad = predicted[truth < 0.6]
    assert np.median(good) > 0.88 and np.median(bad) < 0.38

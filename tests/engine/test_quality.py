"""The quality estimate (annotate.quality): predicted IoU from pre-label features."""

from __future__ import annotations

import numpy as np
import pytest

from annotate.pipeline import Pipeline
from annotate.quality import QualityModel, fallback_score, mask_box_features, spearman
from annotate.segmenters.classical import ClassicalSegmenter
from annotate.types import Prompt, PromptResult


def _pairs(n: int, seed: int) -> tuple[list[dict], list[float]]:
    """Pre-labels whose IoU depends on box agreement and MBO change, while the segmenter's score is noise."""
    rng = np.random.default_rng(seed)
    feats, ious = [], []
    for _ in range(n):
        agree = rng.uniform(0.3, 1.0)
        change = rng.uniform(0.0, 0.4)
        iou = float(np.clip(0.9 * agree - 0.6 * change + rng.normal(0, 0.03), 0, 1))
        feats.append({"segmenter_score": rng.uniform(0, 1), "box_agreement": agree, "mbo_change": change,
                      "box_fill": rng.uniform(0.4, 1.0), "box_area_log": -6.0, "box_aspect": 0.7})
        ious.append(iou)
    return feats, ious


def test_estimator_ranks_held_out_prelabels():
    feats, ious = _pairs(80, 0)
    model = QualityModel.fit(feats, ious)
    assert model.fitted and model.pairs == 80 and model.cv_spearman is not None and model.cv_spearman > 0.8
    test_feats, test_ious = _pairs(60, 1)
    predicted = [model.predict_features(f) for f in test_feats]
    assert all(0.0 <= p <= 1.0 for p in predicted)
    assert spearman(predicted, test_ious) > 0.85
    # today's score (the segmenter's own, noise here) does not rank them
    assert abs(spearman([f["segmenter_score"] for f in test_feats], test_ious)) < 0.3
    assert np.mean(np.abs(np.array(predicted) - np.array(test_ious))) < 0.1


def test_unfitted_model_falls_back_to_todays_score():
    feats, ious = _pairs(10, 0)
    model = QualityModel.fit(feats, ious, min_pairs=20)
    assert not model.fitted and model.predict_features(feats[0]) is None
    result = PromptResult(mask=np.ones((4, 4), bool), score=0.8, box=(0, 0, 4, 4), grounding_score=0.5)
    assert model.score(result) == pytest.approx(0.4) == fallback_score(result)


def test_the_score_before_fitting_orders_pre_labels_the_segmenter_scores_alike():
    """Collapsed classical segmentations all get the segmenter's fallback confidence (0.1); the score still orders
    them by how the mask sits in its box and how much MBO changed it, instead of tying them."""
    def result(agreement: float, mbo_change: float) -> PromptResult:
        return PromptResult(mask=np.ones((4, 4), bool), score=0.1, box=(0, 0, 4, 4),
                            features={"segmenter_score": 0.1, "box_agreement": agreement, "mbo_change": mbo_change})

    scores = [fallback_score(result(a, m)) for a, m in ((0.9, 0.05), (0.9, 0.3), (0.6, 0.05), (0.3, 0.0))]
    assert len(set(scores)) == 4 and scores[0] == max(scores) and scores[3] == min(scores)
    assert scores[0] == pytest.approx(0.1 * 0.9 * 0.95)


def test_save_load_roundtrip(tmp_path):
    feats, ious = _pairs(40, 2)
    model = QualityModel.fit(feats, ious)
    model.save(tmp_path)
    loaded = QualityModel.load(tmp_path)
    assert [loaded.predict_features(f) for f in feats[:5]] == [model.predict_features(f) for f in feats[:5]]
    (tmp_path / "quality.json").write_text('{"features": ["other"]}')
    with pytest.raises(ValueError, match="not a quality model"):
        QualityModel.load(tmp_path)


def test_pipeline_exposes_the_features():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 60, size=(96, 96, 3)).astype(np.uint8)
    rgb[30:60, 20:70] = (200, 40, 40)
    [res] = Pipeline(ClassicalSegmenter()).run(rgb, [Prompt(box=(18, 28, 72, 62))], image_key="k")
    f = res.features
    assert {"segmenter_score", "box_agreement", "box_fill", "mbo_change", "box_area_log", "box_aspect"} <= f.keys()
    assert f["segmenter_score"] == pytest.approx(res.score)
    assert f["box_agreement"] == pytest.approx(mask_box_features(res.mask, res.box, (96, 96))["box_agreement"])
    assert f["box_agreement"] > 0.7 and 0.0 <= f["mbo_change"] < 0.5

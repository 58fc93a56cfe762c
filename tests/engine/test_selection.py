"""Choosing the next batch (annotate.selection)."""

from __future__ import annotations

import numpy as np

from annotate.selection import Candidate, select_batch


def _pool(n: int = 60, seed: int = 0, scored: bool = True) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append(Candidate(task_id=i, image=f"img{i % 6}", features=list(rng.normal(size=4)),
                             predicted_iou=float(rng.uniform(0.3, 0.95)) if scored else None,
                             stratum=("plane", "ship", "tank")[i % 3]))
    return out


def test_deterministic_with_a_seed_and_respects_the_cap():
    pool = _pool()
    a = select_batch(pool, 12, per_image_cap=2, seed=3)
    b = select_batch(pool, 12, per_image_cap=2, seed=3)
    assert [c.task_id for c in a] == [c.task_id for c in b] and len(a) == 12
    per_image: dict[str, int] = {}
    for c in a:
        per_image[c.rationale["image"]] = per_image.get(c.rationale["image"], 0) + 1
    assert max(per_image.values()) <= 2
    assert [c.rank for c in a] == list(range(1, 13))


def test_most_uncertain_first_and_spread_out():
    pool = _pool()
    batch = select_batch(pool, 10, seed=0)
    first = pool[batch[0].task_id]
    assert first.predicted_iou == min(c.predicted_iou for c in pool)
    chosen_u = [1 - pool[c.task_id].predicted_iou for c in batch]
    assert np.mean(chosen_u) > np.mean([1 - c.predicted_iou for c in pool]) + 0.1
    # two identical, equally uncertain candidates: diversity keeps the second out of a small batch
    twins = [Candidate("a", "i1", [0, 0], 0.2), Candidate("b", "i2", [0, 0], 0.2), Candidate("c", "i3", [5, 5], 0.3)]
    assert {c.task_id for c in select_batch(twins, 2)} == {"c", "a"} or {c.task_id for c in select_batch(twins, 2)} == {"c", "b"}


def test_cold_start_is_stratified_random():
    pool = _pool(scored=False)
    batch = select_batch(pool, 6, seed=1)
    strata = [pool[c.task_id].stratum for c in batch]
    assert sorted(strata[:3]) == ["plane", "ship", "tank"] and sorted(strata[3:]) == ["plane", "ship", "tank"]
    assert all("stratified" in c.rationale["strategy"] for c in batch)
    other = select_batch(pool, 6, seed=2)
    assert [c.task_id for c in other] != [c.task_id for c in batch]

"""The next batch as a project lead relies on it: what is already labelled counts as covered (a near copy of a
labelled task is not worth a correction), and the per-image cap holds at cold start too (before any quality
estimate exists, when the batch is a stratified random sample)."""

from __future__ import annotations

from collections import Counter

from annotate.selection import Candidate, select_batch


def test_a_near_copy_of_a_labelled_task_comes_after_an_equally_uncertain_new_one() -> None:
    pool = [
        Candidate("copy", "img-a", [0.0, 0.0], predicted_iou=0.30),  # slightly more uncertain, but already covered
        Candidate("new", "img-b", [6.0, 6.0], predicted_iou=0.32),
        Candidate("other", "img-c", [3.0, -3.0], predicted_iou=0.9),
    ]
    labelled = [[0.05, -0.05], [0.0, 0.1]]
    with_labels = select_batch(pool, 2, labelled_features=labelled)
    assert [c.task_id for c in with_labels][0] == "new"
    assert with_labels[0].rationale["diversity"] > 0.9
    # without anything labelled the most uncertain one leads (the labelled set is what changed the order)
    assert select_batch(pool, 2)[0].task_id == "copy"


def test_per_image_cap_holds_at_cold_start() -> None:
    # no quality estimate yet: a stratified random sample, still at most ``cap`` tasks per image
    pool = [Candidate(i, f"img{i % 3}", [float(i)], predicted_iou=None, stratum=("plane", "ship")[i % 2])
            for i in range(30)]
    for cap in (1, 2):
        batch = select_batch(pool, 10, per_image_cap=cap, seed=1)
        assert batch and batch[0].rationale["strategy"].startswith("stratified")
        counts = Counter(pool[c.task_id].image for c in batch)
        assert max(counts.values()) <= cap
        assert len(batch) == 3 * cap  # three images: the cap, not the size, ends the batch

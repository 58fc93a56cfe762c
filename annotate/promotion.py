"""Promotion by validation: a retrain's learned shape priors are served only where held-out corrections say so.

Why: a few corrections are a noisy sample of a class. Averaged over every class the learned priors help (the
loop benchmark), but fitted on a handful of mostly unchanged pre-labels they made other tasks of the same
project worse. So a retrain produces a *candidate*, and every class keeps what it is served now (the hand-made
prior, or the learned prior an earlier version adopted) until the candidate's learned prior for that class wins
on stored (prompt box, corrected mask) pairs it was not fitted on.

How the held-out figures are made:

* **hand-made**: every pair segmented without learned priors (nothing is fitted, so nothing leaks);
* **served**: every pair segmented with the served version's priors (those were fitted on older pairs, some of
  which are among these: the estimate can only favour keeping what is served);
* **learned**: k-fold cross-validation grouped by image (``folds`` folds, at most one per image; by pair when all
  pairs lie on one image): priors fitted on the other folds' corrections, the fold's pairs segmented with them.

A class switches (to its newly learned prior, or back to the hand-made one) only with at least ``min_samples``
held-out pairs of its own and a gain of at least ``margin`` mIoU over what it is served now; otherwise it keeps
the served choice. The candidate is therefore never worse than the served version on the held-out pairs, per
class and overall, and it is promoted only when some class changed. Without a class of its own, a category keeps
the hand-made prior: there is no pooled prior of all classes (it carried one class's shape onto another).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from annotate.geometry import mask_iou
from annotate.priors import ANY, PriorSample, ShapePriors
from annotate.types import Box

#: Held-out pairs a class needs before its prior may change (PSLG_ADOPT_MIN_SAMPLES in the backend).
ADOPT_MIN_SAMPLES = 5
#: The held-out mIoU gain a class's new choice needs over its served one.
ADOPT_MARGIN = 0.005
FOLDS = 5

HAND, SERVED, LEARNED = "hand-made", "served", "learned"


@dataclass(frozen=True)
class Pair:
    """One stored correction: the image it lies on (folds never split one), its prompt box, class and mask."""

    group: str
    box: Box
    category: str
    truth: np.ndarray


#: ``segment(priors or None, pairs)`` → one mask per pair, in order (the served pipeline with those priors).
Segment = Callable[[Optional[ShapePriors], Sequence[Pair]], list]


@dataclass
class ClassDecision:
    """What one class is served before and after the candidate, with the held-out mIoU of each option."""

    category: str
    n: int
    hand: float
    served: float  #: held-out mIoU of what is served now (equal to ``hand`` when the class has no learned prior)
    learned: Optional[float]  #: cross-validated mIoU of a newly learned prior (None: no fold could fit one)
    was: str  #: ``hand-made`` or ``learned``: what the served version uses for this class
    choice: str  #: ``hand-made``, ``served`` (its learned prior kept) or ``learned`` (the new prior)
    reason: str

    @property
    def after(self) -> float:
        return {HAND: self.hand, SERVED: self.served, LEARNED: self.learned}[self.choice]  # type: ignore[return-value]

    @property
    def changed(self) -> bool:
        return self.choice != SERVED and not (self.choice == HAND and self.was == HAND)

    def to_dict(self) -> dict:
        return {"n": self.n, "hand_miou": round(self.hand, 4), "served_miou": round(self.served, 4),
                "learned_miou": None if self.learned is None else round(self.learned, 4), "was": self.was,
                "choice": self.choice, "changed": self.changed, "reason": self.reason}


@dataclass
class Validation:
    """The candidate's held-out comparison with the served version, and the priors it would serve."""

    pairs: int
    folds: int
    before: float  #: held-out mIoU of the served version
    after: float  #: held-out mIoU of the candidate
    classes: dict[str, ClassDecision] = field(default_factory=dict)
    priors: Optional[ShapePriors] = None  #: the candidate's priors (adopted classes only); None when none is adopted
    min_samples: int = ADOPT_MIN_SAMPLES

    @property
    def changed(self) -> bool:
        return any(d.changed for d in self.classes.values())

    @property
    def no_worse(self) -> bool:
        """The promotion rule: no worse than the served version overall and per class (on held-out pairs)."""
        return self.after >= self.before - 1e-9 and all(d.after >= d.served - 1e-9 for d in self.classes.values())

    @property
    def gain(self) -> float:
        return self.after - self.before

    def class_summary(self) -> str:
        """``airplane prior adopted, bridge kept (2 < 5 held-out)``: one phrase per class, changed ones first."""
        words = []
        for d in sorted(self.classes.values(), key=lambda d: (not d.changed, d.category)):
            if d.choice == LEARNED:
                words.append(f"{d.category} prior {'updated' if d.was == LEARNED else 'adopted'}")
            elif d.changed:
                words.append(f"{d.category} back to the hand-made prior")
            elif d.n < self.min_samples:
                words.append(f"{d.category} kept ({d.n} < {self.min_samples} held-out)")
            else:
                words.append(f"{d.category} kept")
        return ", ".join(words) if words else "no class"

    def to_dict(self) -> dict:
        return {"pairs": self.pairs, "folds": self.folds, "before_miou": round(self.before, 4),
                "after_miou": round(self.after, 4), "min_samples": self.min_samples,
                "classes": {k: v.to_dict() for k, v in sorted(self.classes.items())}}


def fold_ids(groups: Sequence[str], folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """The fold of each pair: images dealt to ``folds`` folds (leave-one-image-out with fewer images);
    pairs dealt directly when they all lie on one image."""
    n = len(groups)
    names = sorted(set(groups))
    rng = np.random.default_rng(seed)
    if len(names) >= 2:
        k = min(folds, len(names))
        order = rng.permutation(len(names))
        of_group = {names[g]: i % k for i, g in enumerate(order)}
        return np.array([of_group[g] for g in groups], int)
    k = min(folds, n)
    out = np.empty(n, int)
    out[rng.permutation(n)] = np.arange(n) % max(k, 1)
    return out


def _only_classes(priors: ShapePriors) -> ShapePriors:
    """``priors`` without the pooled prior: a class without its own prior gets the hand-made one."""
    return ShapePriors({k: v for k, v in priors.categories.items() if k != ANY}, priors.grid, priors.min_samples)


def _ious(masks: Sequence, pairs: Sequence[Pair]) -> np.ndarray:
    return np.array([mask_iou(np.asarray(m, bool), p.truth) if m is not None else 0.0 for m, p in zip(masks, pairs)],
                    np.float64)


def validate_priors(pairs: Sequence[Pair], segment: Segment, served: Optional[ShapePriors] = None,
                    min_samples: int = ADOPT_MIN_SAMPLES, margin: float = ADOPT_MARGIN, folds: int = FOLDS,
                    prior_min_samples: int = 3, seed: int = 0) -> Validation:
    """Compare a candidate fitted on ``pairs`` with the ``served`` priors on held-out pairs; decide per class.

    ``prior_min_samples`` is what fitting a class's template needs (``ShapePriors.fit``); ``min_samples`` is what
    changing a class's served choice needs (held-out pairs of that class).
    """
    pairs = list(pairs)
    n = len(pairs)
    if n == 0:
        return Validation(0, 0, 0.0, 0.0, priors=served, min_samples=min_samples)
    hand = _ious(segment(None, pairs), pairs)
    served_iou = _ious(segment(served, pairs), pairs) if served is not None and served.categories else hand.copy()
    learned = hand.copy()
    has_learned = np.zeros(n, bool)
    fold = fold_ids([p.group for p in pairs], folds, seed)
    k = int(fold.max()) + 1
    for f in range(k):
        test = np.flatnonzero(fold == f)
        train = np.flatnonzero(fold != f)
        if len(train) == 0 or len(test) == 0:
            continue
        fitted = _only_classes(ShapePriors.fit((PriorSample(pairs[i].truth, pairs[i].box, pairs[i].category)
                                                for i in train), min_samples=prior_min_samples))
        usable = [i for i in test if pairs[i].category in fitted.categories]
        if not usable:
            continue
        learned[usable] = _ious(segment(fitted, [pairs[i] for i in usable]), [pairs[i] for i in usable])
        has_learned[usable] = True
    full = _only_classes(ShapePriors.fit((PriorSample(p.truth, p.box, p.category) for p in pairs),
                                         min_samples=prior_min_samples))
    cats = np.array([p.category for p in pairs])
    decisions: dict[str, ClassDecision] = {}
    kept = {}
    after = served_iou.copy()
    for c in sorted({str(p.category) for p in pairs}):
        idx = np.flatnonzero(cats == c)
        served_prior = served.get(c) if served is not None else None
        was = LEARNED if served_prior is not None else HAND
        h, s = float(hand[idx].mean()), float(served_iou[idx].mean())
        new = float(learned[idx].mean()) if has_learned[idx].any() and c in full.categories else None
        options = {HAND: h} if was == LEARNED else {}
        if new is not None:
            options[LEARNED] = new
        choice, reason = SERVED, "no option beats it"
        if len(idx) < min_samples:
            reason = f"{len(idx)} held-out pairs < {min_samples}"
        elif options:
            best = max(options, key=options.get)  # type: ignore[arg-type]
            if options[best] >= s + margin:
                choice, reason = best, f"{options[best]:.3f} vs {s:.3f} held-out mIoU"
            else:
                reason = f"best option {best} {options[best]:.3f} vs served {s:.3f} (margin {margin})"
        elif new is None:
            reason = "no fold had enough corrections of this class to fit a prior"
        if choice == SERVED and was == HAND:
            choice = HAND
        decisions[c] = ClassDecision(c, len(idx), h, s, new, was, choice, reason)
        if choice == LEARNED:
            kept[c] = full.categories[c]
            after[idx] = learned[idx]
        elif choice == SERVED and served_prior is not None:
            kept[c] = served_prior
        elif choice == HAND:
            after[idx] = hand[idx]
    if served is not None:  # classes without stored pairs keep their served prior
        for c, prior in served.categories.items():
            if c != ANY and c not in decisions:
                kept[c] = prior
    priors = ShapePriors(kept, full.grid, prior_min_samples) if kept else None
    return Validation(n, k, float(served_iou.mean()), float(after.mean()), decisions, priors, min_samples)


def pipeline_segment(pipeline, image_of: Callable[[str], np.ndarray]) -> Segment:
    """A ``segment`` for :func:`validate_priors`: ``pipeline`` (the served one: its CFPG/MBO switches and
    segmenter parameters) with a classical segmenter holding the priors; ``image_of(group)`` gives the pixels."""
    from annotate.segmenters.classical import ClassicalSegmenter
    from annotate.types import Prompt

    base = pipeline.segmenter

    def segment(priors: Optional[ShapePriors], pairs: Sequence[Pair]) -> list:
        segmenter = ClassicalSegmenter(params=base.params, click_params=base.click_params, priors=priors)
        pipe = pipeline.with_parts(segmenter=segmenter)
        out: list = [None] * len(pairs)
        by_image: dict[str, list[int]] = {}
        for i, p in enumerate(pairs):
            by_image.setdefault(p.group, []).append(i)
        for group, idx in by_image.items():
            image = image_of(group)
            results = pipe.run(image, [Prompt(box=pairs[i].box, category=pairs[i].category) for i in idx],
                               image_key=group)
            for i, r in zip(idx, results):
                out[i] = r.mask if r.ok else None
        return out

    return segment

"""Choosing the one box a referring expression names: detector scores re-ranked by spatial cues.

Open-vocabulary detectors answer "where are storage tanks?", not "which storage tank is at the top left?": they
score every tank about the same. Remote-sensing expressions carry their disambiguation in a few words about
position ("at the top left", "on the right", "northern") and size ("largest", "smallest"). A small,
deterministic rule set reads those words and scores each candidate by how well its box fits them; the final score
mixes the detector score with that spatial fit:

    final = detector_score × ((1 − w) + w × spatial_fit),   w = SPATIAL_WEIGHT (0.5), spatial_fit ∈ [0, 1]

so the final score stays in [0, 1], a candidate the detector does not believe in (score ≈ 0) is never promoted by
its position alone, and an expression without cues keeps the detector's ranking unchanged.

Category names are not cues: "large vehicle" and "small vehicle" are iSAID / DOTA classes, and an expression made
from a label (``pslg export --missing-expression label``) names the class, not the largest or smallest member of
it. Such phrases are removed before the cue words are read; superlatives ("the largest small vehicle") still count.
Callers turn re-ranking off with ``weight=0`` (``--no-spatial`` on the CLI).

Generalized expressions (NWPU-Refer, gRefCOCO) may name several objects or none. After re-ranking,
``select_targets`` keeps the candidates above a score threshold: one when the expression names one object, all
of them (or the first N of a numeral) when it names many (``parse_cardinality``: plurals, "all", numerals), and
none when no candidate passes: the expression's answer is then "no target".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from annotate.grounding.base import GroundingCandidate

#: How much the spatial fit can change a candidate's score (0 = ignore cues, 1 = cues can zero a score).
SPATIAL_WEIGHT: float = 0.5

_WORD = re.compile(r"[a-z]+")

# word → cue; compass words are how RS annotators often say it (north is up in orthorectified imagery)
_CUE_WORDS: dict[str, str] = {
    "left": "left", "leftmost": "left", "west": "left", "western": "left", "westernmost": "left",
    "right": "right", "rightmost": "right", "east": "right", "eastern": "right", "easternmost": "right",
    "top": "top", "upper": "top", "topmost": "top", "uppermost": "top", "north": "top", "northern": "top",
    "northernmost": "top",
    "bottom": "bottom", "lower": "bottom", "bottommost": "bottom", "lowest": "bottom", "south": "bottom",
    "southern": "bottom", "southernmost": "bottom",
    "center": "center", "centre": "center", "middle": "center", "central": "center",
    "largest": "largest", "biggest": "largest", "large": "largest", "big": "largest",
    "smallest": "smallest", "small": "smallest", "tiny": "smallest", "little": "smallest",
}


#: Class names of the common remote-sensing datasets that contain a cue word; they name a class, not a size.
CATEGORY_PHRASES: frozenset[str] = frozenset({
    "large vehicle", "small vehicle", "large vehicles", "small vehicles", "small car", "small cars",
    "big truck", "large ship", "small ship", "small boat",
})

_SEPARATORS = re.compile(r"[_\-]+")


def _normalise(text: str) -> str:
    """Lower case, ``_`` and ``-`` as spaces, single spaces: "Large_Vehicle" and "large vehicle" compare equal."""
    return " ".join(_SEPARATORS.sub(" ", text.lower()).split())


def strip_category_phrases(expression: str, categories: Iterable[str] = ()) -> str:
    """``expression`` (normalised) without the category names in it, longest first, matched on word boundaries."""
    text = f" {_normalise(expression)} "
    phrases = {_normalise(c) for c in categories} | CATEGORY_PHRASES
    for phrase in sorted((p for p in phrases if p), key=len, reverse=True):
        text = text.replace(f" {phrase} ", " ")
    return text.strip()


@dataclass(frozen=True)
class SpatialCues:
    """The cues found in one expression."""

    horizontal: str | None = None  # "left" | "right"
    vertical: str | None = None  # "top" | "bottom"
    center: bool = False
    size: str | None = None  # "largest" | "smallest"

    @property
    def empty(self) -> bool:
        return self.horizontal is None and self.vertical is None and not self.center and self.size is None


def parse_cues(expression: str, categories: Iterable[str] = ()) -> SpatialCues:
    """Read position and size words from ``expression`` (the last word of each kind wins).

    Words inside a category name (``CATEGORY_PHRASES`` and ``categories``) are not cues (see the module docstring).
    """
    horizontal = vertical = size = None
    center = False
    for word in _WORD.findall(strip_category_phrases(expression, categories)):
        cue = _CUE_WORDS.get(word)
        if cue in ("left", "right"):
            horizontal = cue
        elif cue in ("top", "bottom"):
            vertical = cue
        elif cue == "center":
            center = True
        elif cue in ("largest", "smallest"):
            size = cue
    # "the middle left" means "left, vertically centred": keep center only when it is the only position cue
    if center and (horizontal or vertical):
        center = False
    return SpatialCues(horizontal=horizontal, vertical=vertical, center=center, size=size)


def spatial_fit(cues: SpatialCues, candidates: Sequence[GroundingCandidate], width: int, height: int) -> list[float]:
    """How well each candidate's box fits ``cues``, in [0, 1] (1.0 for every candidate when there are no cues)."""
    if not candidates:
        return []
    areas = [max(1e-6, (c.box[2] - c.box[0]) * (c.box[3] - c.box[1])) for c in candidates]
    max_area, min_area = max(areas), min(areas)
    fits: list[float] = []
    for cand, area in zip(candidates, areas):
        cx = min(max((cand.box[0] + cand.box[2]) / 2.0 / max(width, 1), 0.0), 1.0)
        cy = min(max((cand.box[1] + cand.box[3]) / 2.0 / max(height, 1), 0.0), 1.0)
        parts: list[float] = []
        if cues.horizontal == "left":
            parts.append(1.0 - cx)
        elif cues.horizontal == "right":
            parts.append(cx)
        if cues.vertical == "top":
            parts.append(1.0 - cy)
        elif cues.vertical == "bottom":
            parts.append(cy)
        if cues.center:
            # distance to the image centre, 0 at the centre and 1 at a corner
            parts.append(1.0 - min(1.0, ((cx - 0.5) ** 2 + (cy - 0.5) ** 2) ** 0.5 / 0.5 ** 0.5))
        if cues.size == "largest":
            parts.append(area / max_area)
        elif cues.size == "smallest":
            parts.append(min_area / area)
        fits.append(sum(parts) / len(parts) if parts else 1.0)
    return fits


def rerank(
    expression: str,
    candidates: Sequence[GroundingCandidate],
    width: int,
    height: int,
    weight: float = SPATIAL_WEIGHT,
    categories: Iterable[str] = (),
) -> list[GroundingCandidate]:
    """Candidates re-scored by the spatial cues of ``expression`` and sorted best first (stable for ties).

    ``weight=0`` keeps the detector's ranking; ``categories`` are extra class names that are not cues.
    """
    cues = parse_cues(expression, categories)
    if cues.empty or weight <= 0:
        return sorted(candidates, key=lambda c: -c.score)
    fits = spatial_fit(cues, candidates, width, height)
    rescored = [
        replace(c, score=float(min(1.0, max(0.0, c.score * ((1.0 - weight) + weight * fit)))))
        for c, fit in zip(candidates, fits)
    ]
    return sorted(rescored, key=lambda c: -c.score)


# ------------------------------------------------------------------------------------ one object, many, or none
#: The re-ranked score a candidate needs to count as an object a generalized expression names.
TARGET_THRESHOLD: float = 0.3

_NUMBERS: dict[str, int] = {"one": 1, "single": 1, "two": 2, "both": 2, "pair": 2, "three": 3, "four": 4,
                            "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11,
                            "twelve": 12, "dozen": 12}
_MANY = frozenset({"all", "every", "each", "several", "multiple", "many", "various", "some", "these", "those",
                   "group", "groups", "rows", "row", "cluster", "clusters"})
# a superlative or "the only" picks one member out of a plural ("the largest of the tanks")
_ONE = frozenset({"only", "largest", "biggest", "smallest", "tallest", "longest", "shortest", "leftmost",
                  "rightmost", "topmost", "uppermost", "bottommost", "northernmost", "southernmost",
                  "easternmost", "westernmost", "nearest", "closest", "farthest", "furthest", "first", "last"})
# words ending in "s" that are not plurals
_NOT_PLURAL = frozenset({"is", "was", "has", "its", "this", "as", "us", "thus", "plus", "yes", "bus", "gas",
                         "lens", "across", "towards", "always", "besides", "less", "news", "series", "species",
                         "canvas", "whereas", "nearness", "ness"})
_NUMERAL = re.compile(r"\b(\d{1,3})\b")


@dataclass(frozen=True)
class Cardinality:
    """How many objects an expression names: one, or many (``count`` when a numeral says how many)."""

    many: bool = False
    count: int | None = None


def _is_plural(word: str) -> bool:
    if word in _NOT_PLURAL or len(word) <= 3 or not word.endswith("s"):
        return False
    return not word.endswith(("ss", "us", "is", "ous", "ness"))


def parse_cardinality(expression: str) -> Cardinality:
    """Whether ``expression`` names one object or many, and how many when it says so.

    In order: a numeral ("two ships", "3 tanks"; "one of the ..." is one); a superlative or "only" ("the largest
    of the tanks" is one tank); "all", "every", "several" ...; a plural word ("the tanks on the left"); else one.
    """
    text = _normalise(expression)
    words = _WORD.findall(text)
    digits = [int(v) for v in _NUMERAL.findall(text)]
    counts = [_NUMBERS[w] for w in words if w in _NUMBERS] + digits
    if counts:
        n = counts[0]
        return Cardinality(many=n > 1, count=n if n > 1 else None)
    if any(w in _ONE for w in words):
        return Cardinality()
    if any(w in _MANY for w in words) or any(_is_plural(w) for w in words):
        return Cardinality(many=True)
    return Cardinality()


def select_targets(expression: str, ranked: Sequence[GroundingCandidate],
                   threshold: float = TARGET_THRESHOLD) -> list[GroundingCandidate]:
    """The objects a generalized expression names among ``ranked`` (re-ranked, best first): see the module docstring.

    An empty list is the answer "no target": no candidate reached ``threshold``.
    """
    above = [c for c in sorted(ranked, key=lambda c: -c.score) if c.score >= threshold]
    card = parse_cardinality(expression)
    if not card.many:
        return above[:1]
    return above[: card.count] if card.count else above

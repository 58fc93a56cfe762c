"""A task's category → one of the labeling config's labels, by name, or a clear failure.

Datasets and configs spell one class many ways (``Storage_Tank``, ``storage tank``, ``storage-tanks``); they are
the same label. A category that names none of the config's labels is *not* given some other label (the first
one, silently): the task fails with a message that lists the labels, unless an explicit label map
(``--label-map`` / ``PSLG_LABEL_MAP``, e.g. ``airplane=vehicle,ship=vessel``) says which label it gets.

Names are compared after lower-casing and reading ``_``/``-``/runs of spaces as one space; a word matches its
plural (``ships``/``ship``, ``boxes``/``box``, ``countries``/``country``, ``houses``/``house``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

#: Task data keys that may name the object's category (same keys as ``schema.LABEL_KEYS``).
CATEGORY_KEYS = ("label", "category", "class")


class UnmatchedLabelError(ValueError):
    """A task's category names none of the config's labels (and the label map does not map it)."""


def _forms(word: str) -> set[str]:
    """The word and the singulars its plural ending could stand for (``houses`` → house, hous; ``buses`` → bus)."""
    forms = {word}
    if len(word) > 3 and word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if len(word) > 3 and word.endswith("es"):
        forms.add(word[:-2])
    if len(word) > 2 and word.endswith("s") and not word.endswith("ss"):
        forms.add(word[:-1])
    return forms


def label_key(name: str) -> str:
    """The spelling two names are compared in: lower case, one space between words."""
    return " ".join(w for w in re.sub(r"[\s_\-]+", " ", str(name).strip().lower()).split(" ") if w)


def same_name(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` name one thing: same words up to case, separators and plural endings."""
    wa, wb = label_key(a).split(" "), label_key(b).split(" ")
    return len(wa) == len(wb) and all(_forms(x) & _forms(y) for x, y in zip(wa, wb))


def parse_label_map(text: Optional[str]) -> dict[str, str]:
    """``CATEGORY=LABEL[,CATEGORY=LABEL...]``, or the path of a JSON object ``{"category": "label"}``.

    Raises ``ValueError`` naming the malformed part; an empty or None text is an empty map.
    """
    if text is None or not text.strip():
        return {}
    text = text.strip()
    if text.endswith(".json") or Path(text).is_file():
        try:
            raw = json.loads(Path(text).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"label map {text}: cannot read it as JSON ({exc})") from None
        if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
            raise ValueError(f"label map {text}: expected a JSON object of category → label strings")
        return {k: v for k, v in raw.items()}
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        category, sep, label = part.partition("=")
        if not sep or not category.strip() or not label.strip():
            raise ValueError(f"label map: {part.strip()!r} is not CATEGORY=LABEL")
        out[category.strip()] = label.strip()
    return out


@dataclass
class LabelMatcher:
    """Matches categories to ``labels`` (the config's, in order) by name, then through ``label_map``."""

    labels: list[str]
    label_map: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._mapped: list[tuple[str, str]] = []
        for category, target in self.label_map.items():
            label = self._find(target, [(lab, lab) for lab in self.labels])
            if label is None:
                raise ValueError(f"label map: {category}={target}: {target!r} is not a label of the config "
                                 f"({self.listing()})")
            self._mapped.append((category, label))

    @staticmethod
    def _find(name: str, pairs: list[tuple[str, str]]) -> Optional[str]:
        """The value of the first pair whose key names the same thing as ``name`` (exact spelling first)."""
        key = label_key(name)
        for k, value in pairs:
            if label_key(k) == key:
                return value
        return next((value for k, value in pairs if same_name(k, name)), None)

    def listing(self) -> str:
        return ", ".join(self.labels) if self.labels else "none"

    def match(self, category: str) -> tuple[str, str]:
        """``(label, how)`` for ``category``: how is ``"name"`` or ``"map"``; ``UnmatchedLabelError`` otherwise."""
        label = self._find(category, [(lab, lab) for lab in self.labels])
        if label is not None:
            return label, "name"
        label = self._find(category, self._mapped)
        if label is not None:
            return label, "map"
        raise UnmatchedLabelError(
            f"category {category!r} is none of the config's labels ({self.listing()}); rename it, add the label "
            f"to the config, or map it with --label-map {category}=LABEL (or PSLG_LABEL_MAP)")


def task_category(data: Mapping[str, Any]) -> Optional[str]:
    """The task's own category (``label``, ``category`` or ``class`` field), or None when it names none."""
    for key in CATEGORY_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


@dataclass
class LabelTally:
    """How a batch's tasks got their labels, for the summary line."""

    by_name: int = 0
    by_map: int = 0
    unmatched: dict[str, int] = field(default_factory=dict)
    without_category: int = 0

    def add(self, how: str, category: Optional[str] = None) -> None:
        if how == "name":
            self.by_name += 1
        elif how == "map":
            self.by_map += 1
        elif how == "unmatched":
            self.unmatched[str(category)] = self.unmatched.get(str(category), 0) + 1
        else:
            self.without_category += 1

    def summary(self) -> str:
        """``labels: 27 by category name, 0 by --label-map, 3 failed (no such label: airplane ×2, ship), 0 ...``"""
        failed = sum(self.unmatched.values())
        names = ", ".join(f"{k} ×{v}" if v > 1 else k for k, v in sorted(self.unmatched.items()))
        return (f"labels: {self.by_name} by category name, {self.by_map} by label map, {failed} failed"
                + (f" (category not a label: {names})" if failed else "")
                + f", {self.without_category} without a category (label from the expression, else the config's first)")


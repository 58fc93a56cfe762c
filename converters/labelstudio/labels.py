"""A task's category → one of the labeling config's labels, by name, or a clear failure.

Datasets and configs spell one class many ways (``Storage_Tank``, ``storage tank``, ``storage-tanks``); they are
the same label. A category that names none of the config's labels is *not* given some other label (the first
one, silently): the task fails with a message that lists the labels, unless an explicit label map
(``--label-map`` / ``PSLG_LABEL_MAP``, e.g. ``airplane=vehicle,ship=vessel``) says which label it gets.

Names are compared after lower-casing, reading ``_``/``-``/runs of spaces as one space, and reducing each word's
plural to its singular (``ships``/``ship``, ``boxes``/``box``, ``countries``/``country``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

#: Task data keys that may name the object's category (same keys as ``schema.LABEL_KEYS``).
CATEGORY_KEYS = ("label", "category", "class")


class UnmatchedLabelError(ValueError):
    """A task's category names none of the config's labels (and the label map does not map it)."""


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def label_key(name: str) -> str:
    """The form two names are compared in: lower case, one space between words, each word singular."""
    words = re.sub(r"[\s_\-]+", " ", str(name).strip().lower()).split(" ")
    return " ".join(_singular(w) for w in words if w)


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
        self._by_key = {}
        for lab in self.labels:
            self._by_key.setdefault(label_key(lab), lab)
        self._mapped: dict[str, str] = {}
        for category, target in self.label_map.items():
            label = self._by_key.get(label_key(target))
            if label is None:
                raise ValueError(f"label map: {category}={target}: {target!r} is not a label of the config "
                                 f"({self.listing()})")
            self._mapped[label_key(category)] = label

    def listing(self) -> str:
        return ", ".join(self.labels) if self.labels else "none"

    def match(self, category: str) -> tuple[str, str]:
        """``(label, how)`` for ``category``: how is ``"name"`` or ``"map"``; ``UnmatchedLabelError`` otherwise."""
        key = label_key(category)
        if key in self._by_key:
            return self._by_key[key], "name"
        if key in self._mapped:
            return self._mapped[key], "map"
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

    def merge(self, other: "LabelTally") -> None:
        self.by_name += other.by_name
        self.by_map += other.by_map
        self.without_category += other.without_category
        for k, v in other.unmatched.items():
            self.unmatched[k] = self.unmatched.get(k, 0) + v

    def as_dict(self) -> dict[str, Any]:
        return {"by_name": self.by_name, "by_map": self.by_map, "unmatched": dict(self.unmatched),
                "without_category": self.without_category}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "LabelTally":
        return cls(int(raw.get("by_name", 0)), int(raw.get("by_map", 0)), dict(raw.get("unmatched") or {}),
                   int(raw.get("without_category", 0)))

    def summary(self) -> str:
        """``labels: 27 by category name, 0 by --label-map, 3 failed (no such label: airplane ×2, ship), 0 ...``"""
        failed = sum(self.unmatched.values())
        names = ", ".join(f"{k} ×{v}" if v > 1 else k for k, v in sorted(self.unmatched.items()))
        return (f"labels: {self.by_name} by category name, {self.by_map} by label map, {failed} failed"
                + (f" (category not a label: {names})" if failed else "")
                + f", {self.without_category} without a category (label from the expression, else the config's first)")


def tally_of(items: Iterable[tuple[str, Optional[str]]]) -> LabelTally:
    tally = LabelTally()
    for how, category in items:
        tally.add(how, category)
    return tally

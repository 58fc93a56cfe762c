"""The neutral in-between form every converter reads into and writes from.

Label Studio tasks, COCO images and RRSIS refs are all turned into :class:`ImageItem` values (one image with
its objects), one at a time, so writers can stream: an item's masks are encoded and dropped before the next
item is read. Problems with one item are :class:`ItemError` values collected in a :class:`Report`; the batch
goes on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np


@dataclass
class ObjectItem:
    """One object (instance) of an image: its exact mask, category and the expressions that refer to it."""

    mask: np.ndarray
    category: str
    expressions: list[str] = field(default_factory=list)
    where: str = ""
    """Where the object came from (task/region id), for messages."""
    score: Optional[float] = None
    """The region's score when a pre-label carries one (kept by the geo export)."""


@dataclass
class Referral:
    """One generalized expression (with its variants) and the objects it names: several, or none at all.

    Why beside :class:`ObjectItem`: NWPU-Refer and gRefCOCO pair an expression with a *set* of objects, and an
    empty set ("no target") is a deliberate answer, not a missing one. A single-object expression stays an
    object's own ``expressions`` (the RRSIS-D layout); a referral holds the other cases.
    """

    expressions: list[str]
    objects: list[int] = field(default_factory=list)
    """Indices into the item's ``objects``; empty = no target."""
    where: str = ""

    @property
    def no_target(self) -> bool:
        return not self.objects


@dataclass
class ImageItem:
    """One image with the objects read from one task (or one COCO image / RRSIS ref)."""

    source: str
    """The image reference exactly as the input gives it (URL, Label Studio path, file name)."""
    path: Optional[Path]
    width: int
    height: int
    objects: list[ObjectItem] = field(default_factory=list)
    split: Optional[str] = None
    where: str = ""
    referrals: list[Referral] = field(default_factory=list)
    """Expressions naming several of ``objects`` or none (see :class:`Referral`); objects they name need no
    expressions of their own."""
    tile: Optional[dict] = None
    """A tile of a larger scene: its place there (scene id, CRS, window, transform; see
    ``converters.labelstudio.geo``); writers record it with the image. None for a single image."""


@dataclass
class ItemError:
    """One item that could not be converted, with a message naming it."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Report:
    """What a conversion did: counts, skips (expected, not errors) and per-item errors."""

    errors: list[ItemError] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    nothing_written: bool = False
    """True when a writer produced no object and therefore wrote no dataset at all (see ``export_file``)."""

    def error(self, where: str, message: str) -> None:
        self.errors.append(ItemError(where, message))

    @property
    def ok(self) -> bool:
        return not self.errors

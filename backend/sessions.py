"""Interactive sessions: what an annotator's clicks on one task refine, kept between Label Studio's requests.

Why: Label Studio's browser sends, with each smart-keypoint click, only the keypoints of that session (no
rectangle, no pre-label), and after a suggestion is accepted not even the earlier keypoints. A click alone is
a poor prompt (a click-only mask leaks into look-alike ground), so the backend remembers, per (project, task,
user), the box, the mask being corrected and every click so far, and answers each click with that mask
refined by all of them.

Bounded: at most ``max_items`` sessions and ``max_bytes`` of (bit-packed) masks, each forgotten ``ttl_s`` seconds
after its last click; sessions of different projects never meet (the project is part of the key).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable, Optional, Sequence

import numpy as np

from annotate.masks import mask_digest
from annotate.types import Box, Point

Click = tuple[Point, int]

#: Seconds after an answer during which keypoints that vanished from the canvas count as an accepted suggestion
#: (Label Studio removes them on accept) even though the annotator's draft does not show the answer yet.
ACCEPT_GRACE_S = 15.0


def _pack(mask: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    return np.packbits(np.asarray(mask, bool).ravel()).tobytes(), tuple(mask.shape)  # type: ignore[return-value]


def _unpack(packed: bytes, shape: tuple[int, int]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(packed, np.uint8), count=shape[0] * shape[1])
    return bits.reshape(shape).astype(bool)


@dataclass
class Session:
    """One annotator's corrections of one object: the mask they started from, the box, and the clicks so far."""

    image_key: str
    box: Optional[Box]
    region_id: Optional[str]
    label: Optional[str]
    base: Optional[tuple[bytes, tuple[int, int]]]
    #: where the base mask came from (``draft``, ``annotation``, ``prediction``, ``stored pre-label``), for the log
    base_source: str
    clicks: list[Click] = field(default_factory=list)
    #: the keypoints of the previous request, as Label Studio sent them
    last_keypoints: list[Click] = field(default_factory=list)
    #: the digest of the last answer (a draft that shows it continues the session)
    last_answer: Optional[str] = None
    touched: float = field(default_factory=time.monotonic)
    #: the content key of the base mask, computed once: every request compares the shown mask with it
    base_digest: Optional[str] = field(init=False, default=None)

    @property
    def nbytes(self) -> int:
        return len(self.base[0]) if self.base else 0

    def __post_init__(self) -> None:
        self.base_digest = None if self.base is None else mask_digest(_unpack(*self.base))

    def base_mask(self) -> Optional[np.ndarray]:
        return None if self.base is None else _unpack(*self.base)

    def continues(self, shown_digest: Optional[str], keypoints: Sequence[Click], grace_s: float = ACCEPT_GRACE_S) -> bool:
        """Whether a request whose task shows the mask ``shown_digest`` and carries ``keypoints`` continues this session.

        * The annotator sees this session's last answer (accepted, and saved in their draft): yes.
        * A session started from a drawn rectangle: yes (the rectangle is explicit; a new one starts anew).
        * The mask shown is the one the session started from: yes while keypoints of the previous request are
          still on the canvas (suggestion pending), or within ``grace_s`` of the last answer (accepted, not yet
          saved as a draft); otherwise the earlier clicks were dropped with their suggestion (rejected, or the
          task reopened) and a new session starts.
        * Any other mask (edited by hand with the brush, another annotation): no.
        """
        if shown_digest is not None and shown_digest == self.last_answer:
            return True
        if self.base is None and self.base_source == "rectangle":
            return True
        if shown_digest != self.base_digest:
            return False
        sent = {((float(x), float(y)), int(v)) for (x, y), v in keypoints}
        if any(c in sent for c in self.last_keypoints):
            return True
        return time.monotonic() - self.touched <= grace_s

    def take_keypoints(self, keypoints: Sequence[Click]) -> list[Click]:
        """The session's clicks after a request that carries ``keypoints``; remembers them.

        Label Studio sends every keypoint still on the canvas. A keypoint the annotator deleted is dropped from
        the session; keypoints that vanished all at once (a suggestion accepted or rejected removes them) stay as
        constraints of the later clicks, since the mask the annotator now sees was made with them.
        """
        sent = [((float(x), float(y)), int(v)) for (x, y), v in keypoints]
        still = [c for c in self.clicks if c in sent]
        vanished = [c for c in self.last_keypoints if c not in sent]
        if still and vanished:  # some deleted by hand, others still there: forget the deleted ones
            self.clicks = [c for c in self.clicks if c not in vanished]
        self.clicks += [c for c in sent if c not in self.clicks]
        self.last_keypoints = sent
        self.touched = time.monotonic()
        return list(self.clicks)


class Sessions:
    """Sessions by (project, task, user), bounded in count, bytes and age; thread-safe."""

    def __init__(self, max_items: int = 256, max_bytes: int = 64 << 20, ttl_s: float = 1800.0) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._items: OrderedDict[Hashable, Session] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(project: Optional[str], task_id: object, user: object) -> tuple[str, str, str]:
        """Project, task and user (the task alone when Label Studio did not say who clicks)."""
        return (str(project or ""), str(task_id), "" if user is None else str(user))

    def get(self, key: Hashable, image_key: str) -> Optional[Session]:
        """The live session of ``key`` on that image, or None (expired, evicted or another image)."""
        with self._lock:
            self._expire()
            session = self._items.get(key)
            if session is None or session.image_key != image_key:
                return None
            self._items.move_to_end(key)
            return session

    def start(self, key: Hashable, image_key: str, box: Optional[Box], mask: Optional[np.ndarray],
              region_id: Optional[str], label: Optional[str], source: str) -> Session:
        """A new session (replacing the key's old one): ``mask`` is what the clicks will refine."""
        session = Session(image_key=image_key, box=box, region_id=region_id, label=label,
                          base=None if mask is None else _pack(mask), base_source=source)
        with self._lock:
            self._items.pop(key, None)
            if session.nbytes <= self.max_bytes:
                self._items[key] = session
            self._shrink()
        return session

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(s.nbytes for s in self._items.values())

    def _expire(self) -> None:
        now = time.monotonic()
        for k in [k for k, s in self._items.items() if now - s.touched > self.ttl_s]:
            del self._items[k]

    def _shrink(self) -> None:
        self._expire()
        total = sum(s.nbytes for s in self._items.values())
        while self._items and (len(self._items) > self.max_items or total > self.max_bytes):
            _, old = self._items.popitem(last=False)
            total -= old.nbytes

"""Which of a labeling config's labels an expression names: one matcher built once per config.

Why not a regular expression per label: a config may hold 20,000 labels and an expression may be long; a
regex search per label cost 352 s of CPU for one task. The matcher keeps the normalised labels in one dict
and looks up only the substrings that start and end on a word boundary and have the length of some label:
the cost grows with the expression, not with the number of labels.

Same rule as before: case-insensitive, runs of whitespace, ``_`` and ``-`` read as one space, a label found
only between non-alphanumeric characters (or the ends), optionally followed by a plural ``s``; among the labels
found the longest wins (the first in config order on a tie).
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

#: Only this many characters of an expression are searched for labels (an expression is a sentence; a
#: megabyte-long one must not cost minutes).
MAX_EXPRESSION_CHARS = 10_000


def normalise(text: str) -> str:
    """Lower case, runs of whitespace/``_``/``-`` as one space, trimmed: how labels and expressions compare."""
    return re.sub(r"[\s_\-]+", " ", str(text).strip().lower())


def _alnum(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("0" <= ch <= "9")


class LabelMatcher:
    """The labels of one config, indexed by their normalised form."""

    def __init__(self, labels: Sequence[str]) -> None:
        self._by_key: dict[str, tuple[int, str]] = {}
        for order, label in enumerate(labels):
            key = normalise(label)
            if key and key not in self._by_key:
                self._by_key[key] = (order, label)
        self._lengths = sorted({len(k) for k in self._by_key})

    def find(self, expression: Optional[str]) -> Optional[str]:
        """The longest label named in ``expression`` (first in config order on a tie), or None."""
        if not expression or not self._by_key:
            return None
        text = normalise(expression[:MAX_EXPRESSION_CHARS])
        n = len(text)
        best: Optional[tuple[int, int, str]] = None  # (-len(label), order, label)
        for start in range(n):
            if start and _alnum(text[start - 1]):
                continue  # a label must not start inside a word
            for length in self._lengths:
                end = start + length
                if end > n:
                    break
                hit = self._by_key.get(text[start:end])
                if hit is None:
                    continue
                after = end + 1 if end < n and text[end] == "s" else end  # the plural "s?"
                if (end < n and _alnum(text[end])) and (after == end or (after < n and _alnum(text[after]))):
                    continue  # the label runs on into a word
                order, label = hit
                rank = (-len(label), order, label)
                if best is None or rank < best:
                    best = rank
        return best[2] if best is not None else None

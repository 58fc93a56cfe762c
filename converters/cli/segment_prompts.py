"""Prompts of ``pslg segment``: ``--box``/``--point`` strings and PROMPTS.json entries → ``annotate.types.Prompt``.

Parsing is pure and happens before any model loads, so a mistake costs nothing. Every number must be finite:
``float("nan")``, ``float("inf")`` and JSON's ``NaN`` / ``Infinity`` / ``1e400`` are refused with a message naming
the option or the prompt, instead of failing later inside the segmenter or the overlay; so are coordinates beyond
``MAX_COORDINATE`` pixels (``1e300`` or a 400-digit integer), which no image has and OpenCV cannot draw.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

#: Largest |coordinate| accepted, in pixels (a 100-megapixel image is 10^4 px wide; OpenCV draws in 32-bit ints).
MAX_COORDINATE = 1e9
#: Keys a PROMPTS.json entry may have.
PROMPT_KEYS = ("box", "points", "point_labels", "text")


def parse_numbers(text: str, count: int, what: str) -> tuple[float, ...]:
    """``"1,2,3,4"`` → ``(1.0, 2.0, 3.0, 4.0)``; raises ``typer.BadParameter`` naming ``what``."""
    parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise typer.BadParameter(f"{what} {text!r} must be {count} comma-separated numbers") from None
    if not all(math.isfinite(v) and abs(v) <= MAX_COORDINATE for v in values):
        raise typer.BadParameter(f"{what} {text!r} must be finite numbers within ±{MAX_COORDINATE:g} px (no nan, "
                                 "inf or overflowing values)")
    if len(values) != count:
        raise typer.BadParameter(f"{what} {text!r} must be {count} comma-separated numbers, got {len(values)}")
    return values


def prompt_from_json(item: Any, index: int):
    """Turn one PROMPTS.json entry into a ``Prompt``; raise ValueError with a message naming the entry."""
    from annotate.types import Prompt

    where = f"prompt {index}"
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object with box / points / point_labels / text, got {type(item).__name__}")
    unknown = sorted(set(item) - set(PROMPT_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(PROMPT_KEYS)}")
    box = item.get("box")
    if box is not None:
        if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_number(v) for v in box):
            raise ValueError(f"{where}: box must be [x0, y0, x1, y1], finite numbers within ±{MAX_COORDINATE:g} px, "
                             f"got {_short(box)}")
        box = tuple(float(v) for v in box)
    points_raw = item.get("points") or []
    if not isinstance(points_raw, (list, tuple)) or not all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_number(v) for v in p) for p in points_raw
    ):
        raise ValueError(f"{where}: points must be a list of [x, y] pairs of finite numbers within ±{MAX_COORDINATE:g} "
                         f"px, got {_short(points_raw)}")
    labels_raw = item.get("point_labels") or []
    if not isinstance(labels_raw, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v in (0, 1) for v in labels_raw):
        raise ValueError(f"{where}: point_labels must be a list of 0/1 integers, got {_short(labels_raw)}")
    text = item.get("text")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"{where}: text must be a string, got {type(text).__name__}")
    return Prompt(
        box=box,
        points=[(float(p[0]), float(p[1])) for p in points_raw],
        point_labels=[int(v) for v in labels_raw],
        text=text,
    )


def _is_number(v: Any) -> bool:
    """A usable JSON coordinate: Python's json reads NaN, Infinity and 1e400 (→ inf) as floats and 400-digit
    integers as ints (``float()`` of them overflows); none is a pixel position."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return abs(v) <= MAX_COORDINATE if isinstance(v, int) else (math.isfinite(v) and abs(v) <= MAX_COORDINATE)


def _short(value: Any, limit: int = 120) -> str:
    """``repr`` cut to ``limit`` characters (a 400-digit number need not be printed whole)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def read_prompts_file(path: Path) -> list[Any]:
    """The raw entries of a PROMPTS.json (a JSON list); raises ValueError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"prompts file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read prompts file {path}: {exc}") from None
    if not isinstance(data, list):
        raise ValueError(f"prompts file {path} must hold a JSON list of prompts, got {type(data).__name__}")
    if not data:
        raise ValueError(f"prompts file {path} holds no prompts")
    return data

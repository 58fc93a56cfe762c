"""What ``pslg segment`` writes: mask PNGs and the ``results.json`` entries (its schema is documented in docs/segment-an-image.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Optional

from annotate.atomic import atomic_write_bytes

#: Names of the per-prompt files a run writes (``mask.png`` / ``mask_000.png`` and their GeoTIFF twins).
MASK_FILE = re.compile(r"mask(_\d{3,})?\.(png|tif)")


def write_png(path: Path, image) -> None:
    """Write an RGB (H×W×3) or single-channel (H×W) uint8 array as PNG, atomically."""
    import cv2
    import numpy as np

    arr = np.ascontiguousarray(image)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:  # pragma: no cover - OpenCV only fails here on impossible shapes
        raise RuntimeError(f"could not encode {path.name} as PNG")
    atomic_write_bytes(path, buf.tobytes())


def result_entry(result: Any, text: Optional[str], mask_file: Optional[str], model_version: str) -> dict[str, Any]:
    """One results.json entry (JSON-ready) for a ``PromptResult``."""
    from annotate.masks import coco_rle_encode, mask_area, mask_to_bbox

    ok = result.error is None and result.mask is not None
    return {
        "segmentation": coco_rle_encode(result.mask) if ok else None,
        "score": float(result.score) if ok else None,
        "area": int(mask_area(result.mask)) if ok else None,
        "bbox": [float(v) for v in mask_to_bbox(result.mask)] if ok and result.mask.any() else None,
        "box": [float(v) for v in result.box] if result.box is not None else None,
        "points": [[float(x), float(y)] for x, y in result.points],
        "point_labels": [int(v) for v in result.point_labels],
        "text": text,
        "grounding_score": None if result.grounding_score is None else float(result.grounding_score),
        "mask_file": mask_file if ok else None,
        "timings_ms": {k: round(float(v), 2) for k, v in result.timings_ms.items()},
        "model_version": model_version,
        "error": result.error,
    }


def owned_files(out_dir: Path) -> set[str]:
    """The files of ``out_dir`` an earlier ``pslg segment`` wrote: its ``results.json``, ``overlay.png`` and the
    mask files that results.json names. Empty when there is no results.json of ours (then nothing there is ours).
    """
    import json

    try:
        records = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(records, list) or not all(isinstance(r, dict) and "mask_file" in r for r in records):
        return set()
    names = {"results.json", "overlay.png"}
    for record in records:
        for key in ("mask_file", "geo_mask_file"):
            name = record.get(key)
            if isinstance(name, str) and MASK_FILE.fullmatch(name):
                names.add(name)
    return names


def output_conflicts(out_dir: Path, planned: Iterable[str], inputs: Iterable[Path]) -> list[str]:
    """Files a run would overwrite that are not its own: an input (the image, the prompts file), or a file an
    earlier run did not write (a user's ``mask.tif``). The run refuses instead of replacing them."""
    owned = owned_files(out_dir)
    sources = [Path(p) for p in inputs if p is not None]
    conflicts = []
    for name in planned:
        target = out_dir / name
        if not target.exists():
            continue
        if any(src.exists() and target.samefile(src) for src in sources):
            conflicts.append(f"{target} (an input of this run)")
        elif name not in owned:
            conflicts.append(f"{target} (not written by an earlier pslg segment)")
    return conflicts


def remove_stale_masks(out_dir: Path, keep: Iterable[str], owned: Iterable[str]) -> list[str]:
    """Delete mask files an earlier run wrote in ``out_dir`` (``owned``, from its results.json) that this run
    did not write; returns their names. Files no run of ours wrote are never touched.

    A rerun with fewer prompts would otherwise leave ``mask_007.png`` beside a ``results.json`` that no longer
    mentions it, and a reader globbing ``mask_*.png`` would pick it up.
    """
    kept = set(keep)
    removed = []
    for name in sorted(set(owned)):
        path = out_dir / name
        if MASK_FILE.fullmatch(name) and name not in kept and path.is_file():
            path.unlink()
            removed.append(name)
    return removed

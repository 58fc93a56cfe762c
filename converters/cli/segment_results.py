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


def remove_stale_masks(out_dir: Path, keep: Iterable[str]) -> list[str]:
    """Delete mask files of an earlier run in ``out_dir`` that this run did not write; returns their names.

    A rerun with fewer prompts would otherwise leave ``mask_007.png`` beside a ``results.json`` that no longer
    mentions it, and a reader globbing ``mask_*.png`` would pick it up.
    """
    kept = set(keep)
    removed = []
    for path in sorted(out_dir.iterdir()):
        if path.is_file() and MASK_FILE.fullmatch(path.name) and path.name not in kept:
            path.unlink()
            removed.append(path.name)
    return removed

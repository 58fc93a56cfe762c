"""COCO segmentations in every spelling the datasets use, decoded the way the REFER loader does.

The REFER code that RRSIS-D models reuse (lichengunc/refer ``getMask``) decodes a segmentation with
pycocotools: a list whose first element is a list is a polygon set, anything else is RLE. The real RRSIS-D
files add quirks (``segmentation`` is a *list holding one compressed RLE dict*, ``bbox`` is x1y1x2y2,
``categories_id``), so readers here accept all of them and recompute box and area from the decoded mask.
pycocotools is used directly (not re-implemented) because it *is* the reference the models train with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


class SegmentationError(ValueError):
    """A segmentation that cannot be decoded (its message says why)."""


def to_rle_list(segm: Any, height: int, width: int) -> list[dict]:
    """Normalise any COCO segmentation to a list of compressed RLE dicts of size (height, width)."""
    if isinstance(segm, dict):
        if "counts" not in segm:
            raise SegmentationError("RLE segmentation has no 'counts'")
        size = segm.get("size") or [height, width]
        if [int(size[0]), int(size[1])] != [height, width]:
            raise SegmentationError(f"RLE size {list(size)} differs from the image size {[height, width]}")
        counts = segm["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            return [mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)]
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        return [{"size": [height, width], "counts": counts}]
    if isinstance(segm, list):
        if not segm:
            raise SegmentationError("empty segmentation")
        if isinstance(segm[0], dict):  # RRSIS-D quirk: [ {size, counts} ] (possibly several parts)
            out: list[dict] = []
            for part in segm:
                out.extend(to_rle_list(part, height, width))
            return out
        if isinstance(segm[0], (list, tuple)):
            polys = [list(map(float, p)) for p in segm if len(p) >= 6]
            if not polys:
                raise SegmentationError("polygon segmentation has no ring with 3 or more points")
            return list(mask_utils.frPyObjects(polys, height, width))
        if isinstance(segm[0], (int, float)):  # a single flat polygon without the outer list
            if len(segm) < 6:
                raise SegmentationError("polygon with fewer than 3 points")
            return list(mask_utils.frPyObjects([list(map(float, segm))], height, width))
    raise SegmentationError(f"unsupported segmentation of type {type(segm).__name__}")


def segmentation_to_mask(segm: Any, height: int, width: int) -> np.ndarray:
    """Decode a COCO/RRSIS segmentation to a bool (H, W) mask (union of all its parts)."""
    try:
        rles = to_rle_list(segm, int(height), int(width))
        merged = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
        return mask_utils.decode(merged).astype(bool)
    except SegmentationError:
        raise
    except Exception as exc:  # pycocotools raises bare TypeErrors/ValueErrors on malformed counts
        raise SegmentationError(f"cannot decode segmentation: {exc}") from exc


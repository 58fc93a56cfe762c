"""Checks and digests every SAM-family segmenter shares, free of any model library.

Why a module of its own: ``segment_anything``'s SAM, the ``transformers`` families (SAM 2.1, SAM-HQ, EdgeTAM) and
SAM 3 validate images and prompts the same way and name their weights the same way; keeping that here lets each
of them be installed without the others' packages.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np

from annotate.geometry import clip_box


def check_image(image: np.ndarray) -> np.ndarray:
    """``image`` as a contiguous H×W×3 uint8 array; ``ValueError`` saying what is wrong otherwise."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"SAM expects an H×W×3 RGB image, got shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"SAM expects a uint8 image, got {image.dtype} (load images with annotate.image_io.load_image)")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def check_prompt(
    box: Optional[np.ndarray],
    point_coords: Optional[np.ndarray],
    point_labels: Optional[np.ndarray],
    width: int,
    height: int,
) -> tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    """Validate a prompt against the image size; clip a box that sticks out. Raises ValueError with the reason."""
    box_arr = None
    if box is not None:
        box_arr = np.array(clip_box(np.asarray(box, dtype=np.float64).reshape(-1), width, height))
    coords = labels = None
    if point_coords is not None and np.asarray(point_coords).size > 0:
        coords = np.asarray(point_coords, dtype=np.float64).reshape(-1, 2)
        if point_labels is None:
            raise ValueError("point_labels are required with point_coords (1 = foreground, 0 = background)")
        labels = np.asarray(point_labels).reshape(-1).astype(np.int64)
        if len(labels) != len(coords):
            raise ValueError(f"{len(coords)} points but {len(labels)} point labels")
        if not np.all(np.isin(labels, (0, 1))):
            raise ValueError(f"point labels must be 0 or 1, got {labels.tolist()}")
        if not np.all(np.isfinite(coords)):
            raise ValueError(f"points must be finite, got {coords.tolist()}")
        outside = (coords[:, 0] < 0) | (coords[:, 1] < 0) | (coords[:, 0] >= width) | (coords[:, 1] >= height)
        if outside.any():
            raise ValueError(f"point {coords[np.argmax(outside)].tolist()} lies outside the {width}×{height} image")
    if box_arr is None and coords is None:
        raise ValueError("a prompt needs a box or at least one point")
    return box_arr, coords, labels


def weights_digest(state_dict: dict) -> str:
    """A short digest of the weights themselves, cheap even for ViT-H (2.5 GB).

    Per tensor: name, dtype, shape, its float64 sum and its first and last 4 KiB. Any training step changes
    the sums and edges of the tensors it updates (fine-tuning only the mask decoder included), while the
    file name, its location, mtime or container format (official bare state_dict vs. ours) do not matter.
    """
    import torch

    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel() == 0:
            continue
        h.update(repr(float(t.double().sum())).encode())
        raw = t.cpu().contiguous().view(-1).view(torch.uint8) if t.dtype != torch.bool else t.cpu().to(torch.uint8).view(-1)
        h.update(raw[:4096].numpy().tobytes())
        h.update(raw[-4096:].numpy().tobytes())
    return h.hexdigest()[:8]

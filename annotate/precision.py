"""Numeric precision of the model encoders on a GPU: ``PSLG_PRECISION=auto|fp32|bf16|tf32``.

Why a check instead of a switch: bf16 halves memory traffic and runs the ViT/Hiera encoders markedly faster on
recent GPUs, but whether a given model's masks survive it depends on the model (its weights' range, its
thresholds at logit 0). ``auto`` therefore runs the *loaded* model on a few prompts in fp32 and in bf16 and keeps
bf16 only when every mask agrees with its fp32 twin at IoU ≥ :data:`AGREEMENT_IOU` (0.99); otherwise it stays
fp32. ``tf32`` keeps fp32 weights and lets CUDA's matrix units use TF32 (a global torch switch). On a CPU (or
MPS) every request resolves to fp32: bf16 on CPU is slower than fp32 for these models on common x86 CPUs.

The decision logic (:func:`decide`, :func:`masks_agree`) is pure and unit-tested on CPU; :func:`check_bf16`
runs the comparison on any device (bf16 matmuls work on CPU too, which is how the tests exercise it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "tf32")
#: Lowest mask IoU between a bf16 answer and its fp32 twin for ``auto`` to choose bf16.
AGREEMENT_IOU: float = 0.99


class PrecisionError(ValueError):
    """An unknown precision name."""


@dataclass(frozen=True)
class PrecisionChoice:
    """What runs (``fp32`` / ``bf16`` / ``tf32``) and why (shown in logs and ``pslg segment``'s table title)."""

    precision: str
    reason: str
    min_iou: float | None = None


def parse_precision(value: str | None) -> str:
    """``auto`` for None/empty, else one of :data:`PRECISIONS` (case-insensitive); :class:`PrecisionError` otherwise."""
    text = (value or "auto").strip().lower()
    if text not in PRECISIONS:
        raise PrecisionError(f"unknown precision {value!r}; use {', '.join(PRECISIONS)}")
    return text


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree perfectly (1.0)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def masks_agree(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray],
                threshold: float = AGREEMENT_IOU) -> tuple[bool, float]:
    """``(every pair has IoU ≥ threshold, the lowest IoU)``; different counts never agree."""
    if len(reference) != len(candidate) or not reference:
        return False, 0.0
    worst = min(mask_iou(r, c) for r, c in zip(reference, candidate))
    return worst >= threshold, worst


def decide(requested: str, device_type: str, bf16_check: Callable[[], tuple[bool, float]] | None = None) -> PrecisionChoice:
    """The precision to run for ``requested`` on a device of ``device_type`` (``cuda``, ``cpu``, ``mps``).

    ``bf16_check`` (called only for ``auto`` on CUDA) says whether bf16 masks agree with fp32 ones and the lowest
    IoU; without one, ``auto`` stays fp32.
    """
    requested = parse_precision(requested)
    if device_type != "cuda":
        return PrecisionChoice("fp32", f"{device_type}: fp32 (bf16/tf32 are GPU options)")
    if requested in ("fp32", "bf16", "tf32"):
        return PrecisionChoice(requested, f"{requested} requested")
    if bf16_check is None:
        return PrecisionChoice("fp32", "auto: no agreement check available for this model")
    ok, worst = bf16_check()
    if ok:
        return PrecisionChoice("bf16", f"auto: bf16 masks agree with fp32 (lowest IoU {worst:.4f})", worst)
    return PrecisionChoice("fp32", f"auto: bf16 masks differ from fp32 (lowest IoU {worst:.4f} < {AGREEMENT_IOU})", worst)


def check_prompts(height: int, width: int) -> list[dict]:
    """A few prompts spread over an image: boxes of several sizes and one point (the agreement check's inputs)."""
    h, w = height, width
    return [
        {"box": np.array([0.1 * w, 0.1 * h, 0.5 * w, 0.5 * h])},
        {"box": np.array([0.4 * w, 0.3 * h, 0.9 * w, 0.95 * h])},
        {"box": np.array([0.2 * w, 0.55 * h, 0.45 * w, 0.8 * h])},
        {"point_coords": np.array([[0.7 * w, 0.25 * h]]), "point_labels": np.array([1])},
    ]


def check_image(size: int = 256, seed: int = 0) -> np.ndarray:
    """A deterministic textured test image (blobs on a gradient): something with edges for the masks to follow."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.float64) * (160.0 / size)
    for _ in range(6):
        cy, cx, r = rng.integers(20, size - 20, 2).tolist() + [int(rng.integers(10, size // 5))]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return img.clip(0, 255).astype(np.uint8)


def check_bf16(segmenter, image: np.ndarray | None = None) -> tuple[bool, float]:
    """Compare ``segmenter``'s masks in fp32 and bf16 on :func:`check_image` (it must have ``set_dtype``).

    The segmenter is left in fp32; the caller switches it to bf16 when :func:`decide` says so.
    """
    import torch

    image = check_image() if image is None else image
    prompts = check_prompts(*image.shape[:2])

    def masks(dtype: "torch.dtype") -> list[np.ndarray]:
        segmenter.set_dtype(dtype)
        segmenter.set_image(image, image_key=f"precision-check-{dtype}")
        return [segmenter.predict(**p).mask for p in prompts]

    try:
        reference = masks(torch.float32)
        candidate = masks(torch.bfloat16)
    finally:
        segmenter.set_dtype(torch.float32)
    return masks_agree(reference, candidate)


def apply_precision(segmenter, requested: str | None) -> PrecisionChoice:
    """Resolve ``requested`` for ``segmenter``'s device and put the segmenter (and torch) in that mode.

    Segmenters without ``set_dtype`` (the classical one, segment_anything's SAM) keep fp32 weights; ``tf32`` still
    applies to them on CUDA (a global switch).
    """
    import torch

    device = getattr(segmenter, "device", None)
    device_type = getattr(device, "type", str(device or "cpu"))
    has_dtype = hasattr(segmenter, "set_dtype")
    choice = decide(requested or "auto", device_type, (lambda: check_bf16(segmenter)) if has_dtype else None)
    if choice.precision == "bf16" and not has_dtype:
        choice = PrecisionChoice("fp32", f"{type(segmenter).__name__} runs in fp32 only")
    if choice.precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if has_dtype:
        segmenter.set_dtype(torch.bfloat16 if choice.precision == "bf16" else torch.float32)
    return choice

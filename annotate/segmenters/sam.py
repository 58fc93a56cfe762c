"""Stage 2 with the real Segment Anything Model (``segment_anything.SamPredictor``), with an embedding cache.

Why a cache: SAM's image encoder costs seconds per image on a GPU-less machine (ViT-B ≈ 25 s on 2 cores) and
tens of milliseconds on a GPU, while the mask decoder answers a prompt in ≈ 0.1 s / 1 ms. An annotator sends
many prompts per image and flips back and forth between images, so :class:`SamSegmenter` keeps the last
``cache_size`` image embeddings (LRU, keyed by image *content* + model name): N prompts on one image cost one
encoder pass, and coming back to an earlier image costs none.

With :meth:`SamSegmenter.attach_disk_cache` embeddings are also kept on disk
(``annotate.segmenters.embedding_store``): ``pslg prelabel --cache-embeddings DIR`` fills it, and a backend with
``PSLG_EMBEDDING_CACHE=DIR`` answers the first click on those images without running the encoder.

Thread safety: one ``SamSegmenter`` may serve concurrent requests (the ML backend). The model itself is used
under one lock (encoder and decoder calls are serialised — one GPU does not run two of them faster anyway),
and the image a thread last passed to :meth:`SamSegmenter.set_image` is remembered **per thread**, so
``set_image(a)`` / ``predict`` in one thread cannot be answered on image ``b`` that another thread set in
between.

Checkpoints (official files and self-describing ones with their architecture) are read and written by
``annotate.segmenters.sam_checkpoint``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling import Sam

from annotate.device import resolve_device
from annotate.segmenters.base import Segmenter
from annotate.segmenters.checks import check_image as _check_image, check_prompt as _check_prompt
from annotate.segmenters.sam_checkpoint import (CHECKPOINT_FORMAT, OFFICIAL_MODEL_TYPES, SamArchitecture,
                                                SamCheckpointError, SamCheckpointNotFoundError,
                                                build_sam_from_architecture, detect_model_type, save_sam_checkpoint)
from annotate.segmenters.sam_checkpoint import _ENCODER_KEY, _PULL_NAME, _read_checkpoint, _weights_digest
from annotate.types import SegmentationOutput

__all__ = [
    "CHECKPOINT_FORMAT",
    "OFFICIAL_MODEL_TYPES",
    "SamArchitecture",
    "SamCheckpointError",
    "SamCheckpointNotFoundError",
    "SamSegmenter",
    "build_sam_from_architecture",
    "detect_model_type",
    "save_sam_checkpoint",
]

MultimaskMode = Literal["auto", "always", "never"]


@dataclass
class _Embedding:
    """What SamPredictor needs to answer prompts on one image without re-running the encoder."""

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class SamSegmenter(Segmenter):
    """SAM behind the :class:`~annotate.segmenters.base.Segmenter` interface, with an LRU embedding cache.

    ``checkpoint`` is an official SAM file (``model_type`` vit_h / vit_l / vit_b, or ``"auto"`` to detect it
    from the weights) or a self-describing file from :func:`save_sam_checkpoint`. Use :meth:`from_model` for an
    already built ``Sam``. ``cache_size`` image embeddings are kept (0 disables the cache).

    Multimask choice (``multimask="auto"``): a prompt with a box, or with several points, is unambiguous and
    SAM's authors recommend ``multimask_output=False`` for it (the single-mask token was trained for exactly
    that); a single point alone is ambiguous (part / object / group), so SAM returns three masks and the one
    with the highest predicted IoU is kept. ``"always"`` / ``"never"`` force one behaviour.

    The returned ``score`` is SAM's predicted IoU of the kept mask, clipped to [0, 1] (the IoU head is an
    unbounded regressor and can stray slightly outside).

    Clicks (``accepts_mask_input``): the pipeline passes the previous answer's low-resolution logits of a click
    session as ``mask_input``, so each click refines the mask shown rather than starting from the clicks alone.
    """

    accepts_mask_input = True

    def __init__(
        self,
        checkpoint: str | Path | None,
        model_type: str = "vit_b",
        device: str | torch.device = "auto",
        cache_size: int = 8,
        model: Sam | None = None,
        multimask: MultimaskMode = "auto",
        name: str | None = None,
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        if multimask not in ("auto", "always", "never"):
            raise ValueError(f"multimask must be auto, always or never, got {multimask!r}")
        self.device = resolve_device(device)
        self.cache_size = cache_size
        self.multimask: MultimaskMode = multimask
        if model is not None:
            sam = model
            self.model_type = model_type
            self.checkpoint: Optional[Path] = Path(checkpoint) if checkpoint is not None else None
            self.name = name or f"sam-{model_type}-{_weights_digest(sam.state_dict())}"
        else:
            if checkpoint is None:
                raise SamCheckpointError("SamSegmenter needs a checkpoint path (or model=); for no weights use ClassicalSegmenter")
            sam, self.model_type, self.checkpoint = self._load(Path(checkpoint), model_type)
            self.name = name or f"sam-{self.model_type}-{_weights_digest(sam.state_dict())}"
        self.model: Sam = sam.to(self.device).eval()
        self._predictor = SamPredictor(self.model)
        self._lock = threading.RLock()
        self._cache: OrderedDict[str, _Embedding] = OrderedDict()
        self._local = threading.local()
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0
        self.disk_cache = None  # an annotate.segmenters.embedding_store.DiskEmbeddingCache (attach_disk_cache)

    def attach_disk_cache(self, cache) -> None:
        """Also keep embeddings in ``cache`` (a ``DiskEmbeddingCache``): other processes and later runs reuse them.

        Memory is looked up first, then the disk; the encoder runs only when both miss, and its result is
        written to both.
        """
        self.disk_cache = cache

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(
        cls,
        sam: Sam,
        *,
        model_type: str = "custom",
        device: str | torch.device = "auto",
        cache_size: int = 8,
        multimask: MultimaskMode = "auto",
        name: str | None = None,
    ) -> "SamSegmenter":
        """Wrap an already built ``Sam`` (tests, benchmarks, notebooks). ``name`` defaults to a weights digest."""
        return cls(None, model_type=model_type, device=device, cache_size=cache_size, model=sam, multimask=multimask, name=name)

    @staticmethod
    def _load(path: Path, model_type: str) -> tuple[Sam, str, Path]:
        requested = model_type.strip().lower()
        if requested not in sam_model_registry and requested != "auto":
            raise SamCheckpointError(
                f"unknown SAM model type {model_type!r}; choose one of {', '.join(OFFICIAL_MODEL_TYPES)} or auto"
            )
        if not path.is_file():
            raise SamCheckpointNotFoundError(
                f"SAM checkpoint not found: {path}; run `pslg models pull {_PULL_NAME.get(requested, 'vit_b')}`"
            )
        state_dict, arch = _read_checkpoint(path)
        if arch is not None:
            sam = build_sam_from_architecture(arch)
            resolved = arch.name
        else:
            detected = detect_model_type(state_dict)
            if detected is None:
                raise SamCheckpointError(
                    f"SAM checkpoint {path} does not hold an official SAM architecture "
                    f"(no {_ENCODER_KEY!r} with a known width/depth); is it a SAM checkpoint?"
                )
            resolved = "vit_h" if requested == "default" else requested
            if resolved == "auto":
                resolved = detected
            if detected != resolved:
                raise SamCheckpointError(
                    f"SAM checkpoint {path} holds a {detected} model but model type {resolved} was requested; "
                    f"pass --model-type {detected} (or auto)"
                )
            sam = sam_model_registry[resolved](checkpoint=None)
        try:
            sam.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise SamCheckpointError(
                f"SAM checkpoint {path} does not match the {resolved} architecture: {' '.join(first[:3])}"
            ) from exc
        return sam, resolved, path

    # ------------------------------------------------------------------ cache
    def cache_info(self) -> dict[str, int]:
        """Hits, misses (= encoder passes), entries currently held and capacity."""
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "disk_hits": self.disk_hits, "size": len(self._cache),
                    "capacity": self.cache_size}

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _cache_key(self, image_key: str) -> str:
        return f"{self.name}:{image_key}"

    # ------------------------------------------------------------------ Segmenter
    def set_image(self, image: np.ndarray, image_key: Optional[str] = None) -> None:
        """Encode ``image`` (H×W×3 uint8 RGB), or take its embedding from the cache.

        ``image_key`` should identify the pixels (``annotate.image_io.image_key``); when None it is computed
        here. Two images with the same key are assumed identical.
        """
        image = _check_image(image)
        if image_key is None:
            from annotate.image_io import image_key as content_key

            image_key = content_key(image)
        key = self._cache_key(image_key)
        with self._lock:
            emb = self._cache.get(key)
            stored = None if emb is not None or self.disk_cache is None else self.disk_cache.get(key, self.device)
            if emb is not None:
                self._cache.move_to_end(key)
                self.hits += 1
            else:
                if stored is not None:
                    self.disk_hits += 1
                    emb = _Embedding(features=stored["features"], original_size=tuple(stored["original_size"]),
                                     input_size=tuple(stored["input_size"]))
                else:
                    self.misses += 1
                    self._predictor.set_image(image, image_format="RGB")
                    emb = _Embedding(
                        features=self._predictor.features,
                        original_size=tuple(self._predictor.original_size),
                        input_size=tuple(self._predictor.input_size),
                    )
                    if self.disk_cache is not None:
                        self.disk_cache.put(key, emb.features, emb.original_size, emb.input_size)
                if self.cache_size > 0:
                    self._cache[key] = emb
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        self._local.embedding = emb

    def predict(
        self,
        box: Optional[np.ndarray] = None,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
    ) -> SegmentationOutput:
        """SAM's mask for the prompt; ``mask_input`` (1×256×256 logits, the ``logits`` of an earlier answer) makes
        it a refinement of that answer, the way SAM was trained for interactive clicks."""
        emb: Optional[_Embedding] = getattr(self._local, "embedding", None)
        if emb is None:
            raise RuntimeError("SamSegmenter.predict called before set_image (in this thread)")
        h, w = emb.original_size
        box_arr, coords, labels = _check_prompt(box, point_coords, point_labels, w, h)
        n_points = 0 if coords is None else len(coords)
        if self.multimask == "always":
            multimask = True
        elif self.multimask == "never":
            multimask = False
        else:
            multimask = box_arr is None and n_points == 1
        prior = None
        if mask_input is not None:
            prior = np.asarray(mask_input, dtype=np.float32)
            if prior.ndim == 2:
                prior = prior[None]
            side = tuple(self.model.prompt_encoder.mask_input_size)  # 256×256 for the official models
            if prior.shape != (1, *side):
                raise ValueError(f"mask_input must be SAM's 1×{side[0]}×{side[1]} low-resolution logits, "
                                 f"got shape {prior.shape}")
        with self._lock:
            p = self._predictor
            p.features, p.original_size, p.input_size, p.is_image_set = emb.features, emb.original_size, emb.input_size, True
            masks, ious, low = p.predict(point_coords=coords, point_labels=labels, box=box_arr, mask_input=prior,
                                         multimask_output=multimask)
        best = int(np.argmax(ious))
        return SegmentationOutput(mask=masks[best].astype(bool), score=float(np.clip(ious[best], 0.0, 1.0)),
                                  logits=np.asarray(low[best : best + 1], dtype=np.float32))

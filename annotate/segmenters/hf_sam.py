"""SAM 2.1, SAM-HQ, EdgeTAM (and SAM in Hugging Face format) behind the ``Segmenter`` interface, with an embedding cache.

Why: users want SAM 2's better masks, SAM-HQ's finer boundaries, or EdgeTAM on a laptop CPU (its RepViT encoder
costs about a tenth of SAM ViT-B's, bench/RESULTS.md). ``transformers`` ships all of them with one prompt
interface (points, labels, boxes, low-resolution mask logits), so one class serves every family; what differs per
family is only what the encoder returns (SAM 2 / EdgeTAM: a feature pyramid; SAM-HQ: the embedding plus the
early ViT features its HQ token reads) and how the image is fitted into the model input (SAM 2 / EdgeTAM stretch
it to a square; SAM and SAM-HQ scale the longest side and pad).

Like :class:`~annotate.segmenters.sam.SamSegmenter`: ``set_image`` encodes once (LRU cache of ``cache_size``
images keyed by image content and weights digest), ``predict`` answers any number of prompts from that
embedding; ``mask_input`` (the previous answer's low-resolution logits) makes a click refine the mask shown; one
model lock, the image set per thread. The model is chosen by ``config.json``'s ``model_type`` of a folder or a
hub id (``annotate.segmenters.hf_spec``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F

from annotate.device import resolve_device
from annotate.segmenters.base import Segmenter
from annotate.segmenters.hf_spec import ONE_STAGE_FAMILIES, SEGMENTER_FAMILIES, ModelSpecError
from annotate.segmenters.checks import check_image as _check_image
from annotate.segmenters.checks import check_prompt as _check_prompt
from annotate.segmenters.checks import weights_digest as _weights_digest
from annotate.types import SegmentationOutput

MultimaskMode = Literal["auto", "always", "never"]

#: model_type → the transformers class that runs it (segmenters; SAM 3 is the one-stage model).
_MODEL_CLASSES = {"sam2": "Sam2Model", "sam_hq": "SamHQModel", "edgetam": "EdgeTamModel", "sam": "SamModel"}
_ALL_CLASSES = {**_MODEL_CLASSES, "sam3": "Sam3Model"}
#: Families whose encoder returns a feature pyramid (the last level is the prompt-facing embedding).
_PYRAMID = {"sam2", "edgetam"}


@dataclass
class _Embedding:
    """One image's encoder output and the geometry needed to map prompts in and masks out."""

    tensors: tuple[torch.Tensor, ...]
    original_size: tuple[int, int]  # (h, w) of the image
    resized_size: tuple[int, int]  # (h, w) of the image inside the model input, before padding
    input_size: tuple[int, int]  # (h, w) of the model input


def load_hf_model(spec: str | Path, families: dict[str, str]) -> tuple[Any, Any, str]:
    """``(model, image processor, model_type)`` for a folder or hub id whose model_type is one of ``families``.

    Raises :class:`ModelSpecError` naming the spec and what it holds when it is another kind of model.
    """
    from transformers import AutoConfig, AutoProcessor

    import transformers

    source = str(Path(spec).expanduser()) if Path(str(spec)).expanduser().exists() else str(spec)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelSpecError(f"cannot read model {spec}: {exc}") from exc
    model_type = str(getattr(config, "model_type", ""))
    if model_type == "edgetam":
        import importlib.util

        if importlib.util.find_spec("timm") is None:
            from annotate.extras import MissingExtraError, install_command

            raise MissingExtraError(f"EdgeTAM ({spec}) needs timm for its RepViT backbone, part of the [segmenters] "
                                    f"extra: {install_command('segmenters')} in the repository's folder")
    if model_type not in families:
        hint = ("; SAM 3 is a one-stage model: use --one-stage (PSLG_ONE_STAGE_MODEL)" if model_type in ONE_STAGE_FAMILIES
                else "")
        raise ModelSpecError(f"model {spec} is a {model_type or 'model without model_type'}, not one of "
                             f"{', '.join(sorted(families))}{hint}")
    cls_name = _ALL_CLASSES[model_type]
    model_cls = getattr(transformers, cls_name, None)
    if model_cls is None:
        raise ModelSpecError(f"model {spec} needs transformers.{cls_name}, which transformers "
                             f"{transformers.__version__} lacks; upgrade: pip install -U 'transformers>=5.0'")
    try:
        model = model_cls.from_pretrained(source)
        processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelSpecError(f"cannot load {families[model_type]} model {spec}: {exc}") from exc
    return model, processor, model_type


class HFSamSegmenter(Segmenter):
    """A SAM-family model from ``transformers`` (SAM 2/2.1, SAM-HQ, EdgeTAM, SAM) as a stage-2 segmenter.

    ``spec`` is a model folder (``config.json`` + weights + processor files) or a hub id; pass ``model`` and
    ``processor`` instead to wrap loaded ones. ``multimask`` follows :class:`SamSegmenter`: a lone point is
    ambiguous, so three masks are asked for and the best predicted IoU kept; a box or several points ask for one.
    ``dtype`` (``torch.bfloat16`` on a GPU, see ``annotate.precision``) runs encoder and decoder at that precision;
    masks and logits are returned as float32 either way.
    """

    accepts_mask_input = True

    def __init__(
        self,
        spec: str | Path | None = None,
        device: str | torch.device = "auto",
        cache_size: int = 8,
        multimask: MultimaskMode = "auto",
        model: Any = None,
        processor: Any = None,
        name: str | None = None,
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        if multimask not in ("auto", "always", "never"):
            raise ValueError(f"multimask must be auto, always or never, got {multimask!r}")
        if model is None:
            if spec is None:
                raise ModelSpecError("HFSamSegmenter needs a model folder or hub id (or model= and processor=)")
            model, processor, family = load_hf_model(spec, SEGMENTER_FAMILIES)
        else:
            family = str(model.config.model_type)
            if family not in _MODEL_CLASSES:
                raise ModelSpecError(f"a {family} model is not a SAM-family segmenter ({', '.join(_MODEL_CLASSES)})")
        if processor is None:
            raise ModelSpecError("HFSamSegmenter needs the model's processor (saved with it: processor_config.json)")
        self.family = family
        self.spec = None if spec is None else str(spec)
        self.device = resolve_device(device)
        self.cache_size = cache_size
        self.multimask: MultimaskMode = multimask
        self.image_processor = getattr(processor, "image_processor", processor)
        self.model = model.to(self.device).eval()
        self.dtype = torch.float32
        self.name = name or f"{family.replace('_', '')}-{_weights_digest(self.model.state_dict())}"
        self._lock = threading.RLock()
        self._cache: OrderedDict[str, _Embedding] = OrderedDict()
        self._local = threading.local()
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0
        self.disk_cache = None  # an annotate.segmenters.embedding_store.DiskEmbeddingCache (attach_disk_cache)

    def attach_disk_cache(self, cache) -> None:
        """Also keep embeddings in ``cache`` (a ``DiskEmbeddingCache``), as ``SamSegmenter`` does: memory first,
        then the disk; the encoder runs only when both miss."""
        self.disk_cache = cache

    # ------------------------------------------------------------------ precision
    def set_dtype(self, dtype: torch.dtype) -> None:
        """Run the model at ``dtype`` from now on (cached embeddings of another precision are dropped)."""
        with self._lock:
            if dtype != self.dtype:
                self.model.to(dtype=dtype)
                self.dtype = dtype
                self._cache.clear()
                self._local = threading.local()

    # ------------------------------------------------------------------ cache
    def cache_info(self) -> dict[str, int]:
        """Hits, misses (= encoder passes), entries held and capacity."""
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "disk_hits": self.disk_hits, "size": len(self._cache),
                    "capacity": self.cache_size}

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    # ------------------------------------------------------------------ encoder
    def _encode(self, image: np.ndarray) -> _Embedding:
        inputs = self.image_processor(images=image, return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, dtype=self.dtype)
        h, w = image.shape[:2]
        input_size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        reshaped = inputs.get("reshaped_input_sizes")
        resized = (int(reshaped[0][0]), int(reshaped[0][1])) if reshaped is not None else input_size
        with torch.inference_mode():
            out = self.model.get_image_embeddings(pixels)
        if self.family == "sam_hq":
            embedding, intermediate = out
            tensors = (embedding, *intermediate)
        elif self.family in _PYRAMID:
            tensors = tuple(out)
        else:
            tensors = (out,)
        return _Embedding(tensors=tuple(t.detach() for t in tensors), original_size=(h, w), resized_size=resized,
                          input_size=input_size)

    def set_image(self, image: np.ndarray, image_key: Optional[str] = None) -> None:
        """Encode ``image`` (H×W×3 uint8 RGB) or take its embedding from the cache (keyed by content + weights)."""
        image = _check_image(image)
        if image_key is None:
            from annotate.image_io import image_key as content_key

            image_key = content_key(image)
        key = f"{self.name}:{str(self.dtype).replace('torch.', '')}:{image_key}"  # a bf16 embedding fits bf16 only
        with self._lock:
            emb = self._cache.get(key)
            stored = None if emb is not None or self.disk_cache is None else self.disk_cache.get(key, self.device)
            if emb is not None:
                self._cache.move_to_end(key)
                self.hits += 1
            else:
                if stored is not None and "resized_size" in stored:
                    self.disk_hits += 1
                    emb = _Embedding(tensors=tuple(stored["features"]), original_size=tuple(stored["original_size"]),
                                     resized_size=tuple(stored["resized_size"]), input_size=tuple(stored["input_size"]))
                else:
                    self.misses += 1
                    emb = self._encode(image)
                    if self.disk_cache is not None:
                        self.disk_cache.put(key, list(emb.tensors), emb.original_size, emb.input_size,
                                            resized_size=list(emb.resized_size))
                if self.cache_size > 0:
                    self._cache[key] = emb
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        self._local.embedding = emb

    # ------------------------------------------------------------------ decoder
    def mask_input_side(self, emb: _Embedding) -> int:
        """Side of the low-resolution logits (4 × the prompt-facing embedding's side: 256 for the 1024 models)."""
        main = emb.tensors[-1] if self.family in _PYRAMID else emb.tensors[0]
        return int(main.shape[-1]) * 4

    def _decode(self, emb: _Embedding, box: Optional[np.ndarray], coords: Optional[np.ndarray],
                labels: Optional[np.ndarray], prior: Optional[np.ndarray], multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = emb.original_size
        rh, rw = emb.resized_size
        scale = np.array([rw / w, rh / h], dtype=np.float64)
        kwargs: dict[str, Any] = {"multimask_output": multimask}
        dev, dt = self.device, self.dtype
        if coords is not None:
            pts = (coords * scale)[None, None]
            kwargs["input_points"] = torch.as_tensor(pts, dtype=dt, device=dev)
            kwargs["input_labels"] = torch.as_tensor(labels[None, None], dtype=torch.int64, device=dev)
        if box is not None:
            scaled = (box.reshape(2, 2) * scale).reshape(1, 1, 4)
            kwargs["input_boxes"] = torch.as_tensor(scaled, dtype=dt, device=dev)
        if prior is not None:
            kwargs["input_masks"] = torch.as_tensor(prior[None], dtype=dt, device=dev)
        if self.family in _PYRAMID:
            kwargs["image_embeddings"] = list(emb.tensors)
        else:
            kwargs["image_embeddings"] = emb.tensors[0]
            if self.family == "sam_hq":
                kwargs["intermediate_embeddings"] = list(emb.tensors[1:])
        with torch.inference_mode():
            out = self.model(**kwargs)
        return out.pred_masks[0, 0].float(), out.iou_scores[0, 0].float()

    def _upscale(self, low: torch.Tensor, emb: _Embedding) -> np.ndarray:
        """Low-resolution logits → the image's mask: to the model input, crop the padding, to the image size."""
        x = F.interpolate(low[None, None], size=emb.input_size, mode="bilinear", align_corners=False)
        x = x[..., : emb.resized_size[0], : emb.resized_size[1]]
        x = F.interpolate(x, size=emb.original_size, mode="bilinear", align_corners=False)
        return (x[0, 0] > 0).cpu().numpy()

    def predict(
        self,
        box: Optional[np.ndarray] = None,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
    ) -> SegmentationOutput:
        """The mask for a box and/or points; ``mask_input`` (1×L×L logits of an earlier answer) refines that answer."""
        emb: Optional[_Embedding] = getattr(self._local, "embedding", None)
        if emb is None:
            raise RuntimeError(f"{type(self).__name__}.predict called before set_image (in this thread)")
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
            side = self.mask_input_side(emb)
            if prior.shape != (1, side, side):
                raise ValueError(f"mask_input must be the model's 1×{side}×{side} low-resolution logits, got shape {prior.shape}")
        with self._lock:
            low, ious = self._decode(emb, box_arr, coords, labels, prior, multimask)
            best = int(torch.argmax(ious))
            mask = self._upscale(low[best], emb)
        logits = low[best : best + 1].cpu().numpy().astype(np.float32)
        return SegmentationOutput(mask=mask, score=float(np.clip(float(ious[best]), 0.0, 1.0)), logits=logits)

"""SAM 3 as a one-stage model: a referring expression → the referred instance's mask, without a separate grounder.

Why: SAM 3 finds *every* instance of a short noun phrase ("storage tank") and segments each, so the two stages
of PSLG-SAM collapse into one model. It does not read referring expressions ("the storage tank at the top
left"), so the expression is cut to its category phrase (:func:`category_phrase`), SAM 3's instances become
candidates, and the same spatial re-ranking the grounders use (``annotate.grounding.spatial``) picks the referred
one. The pipeline stays the one every model uses: :class:`Sam3OneStage` exposes a ``grounder`` (instances →
ranked boxes) and a ``segmenter`` (a box → the mask SAM 3 already produced for it), so CFPG, MBO, the box
confinement and clicks (as edits of the shown mask, ``annotate.clicks``) apply unchanged.

A box without text (a box drawn by hand) is given to SAM 3 as a visual exemplar and the instance that overlaps it
most is returned. Vision features are cached per image (LRU), instances per (image, phrase).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from annotate.device import resolve_device
from annotate.geometry import box_iou
from annotate.grounding.base import Grounder, GroundingCandidate
from annotate.grounding.spatial import CATEGORY_PHRASES, SPATIAL_WEIGHT, _CUE_WORDS, _normalise, rerank
from annotate.grounding.text import normalise_expression
from annotate.segmenters.base import Segmenter
from annotate.segmenters.hf_sam import load_hf_model
from annotate.segmenters.hf_spec import ONE_STAGE_FAMILIES
from annotate.segmenters.checks import check_image as _check_image
from annotate.segmenters.checks import check_prompt as _check_prompt
from annotate.segmenters.checks import weights_digest as _weights_digest
from annotate.types import SegmentationOutput

#: Words that are not part of an object's category (articles, prepositions, fillers of RS expressions).
_FILLER = frozenset(
    "the a an this that these those one of in on at to near by next beside besides with and or is are which who "
    "located positioned placed lying side part corner edge region area image picture scene photo first second third "
    "most very".split()
)
#: A category phrase ends at the first of these (what follows says where, not what).
_STOP = frozenset("at on in near by next beside with which that of to from between above below under over".split())
_WORD = re.compile(r"[a-z]+")
#: Candidates kept per (image, phrase): enough for re-ranking, few enough to stay cheap.
MAX_INSTANCES = 20
#: A box counts as one of SAM 3's instances when their boxes overlap at least this much.
MATCH_IOU = 0.5


def category_phrase(expression: str) -> str:
    """The noun phrase SAM 3 should look for: "the storage tank at the top left" → "storage tank".

    A known category name that contains a cue word ("large vehicle") is kept whole; otherwise leading fillers and
    cue words are dropped and the phrase ends at the first preposition or relative word.
    """
    text = _normalise(normalise_expression(expression))
    for phrase in sorted(CATEGORY_PHRASES, key=len, reverse=True):
        if f" {phrase} " in f" {text} ":
            return phrase
    words: list[str] = []
    for word in _WORD.findall(text):
        if word in _STOP and words:
            break
        if word in _FILLER or word in _CUE_WORDS:
            continue
        words.append(word)
    return " ".join(words) or text


@dataclass
class _Instance:
    mask: np.ndarray
    box: tuple[float, float, float, float]
    score: float


class Sam3OneStage:
    """A SAM 3 model (``Sam3Model`` + ``Sam3Processor``) serving as grounder and segmenter of one pipeline."""

    def __init__(self, spec: str | Path | None = None, device: str | torch.device = "auto", model: Any = None,
                 processor: Any = None, spatial_weight: float = SPATIAL_WEIGHT, cache_size: int = 4,
                 name: str | None = None) -> None:
        if model is None:
            if spec is None:
                raise ValueError("Sam3OneStage needs a model folder or hub id (or model= and processor=)")
            model, processor, _ = load_hf_model(spec, ONE_STAGE_FAMILIES)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.dtype = torch.float32
        self.spatial_weight = float(spatial_weight)
        self.cache_size = max(1, int(cache_size))
        self.name = name or f"sam3-{_weights_digest(self.model.state_dict())}"
        self._lock = threading.RLock()
        self._features: OrderedDict[str, Any] = OrderedDict()
        self._instances: OrderedDict[tuple[str, str], list[_Instance]] = OrderedDict()
        self.encoder_passes = 0
        self.grounder = Sam3Grounder(self)
        self.segmenter = Sam3Segmenter(self)

    def set_dtype(self, dtype: torch.dtype) -> None:
        """Run at ``dtype`` (bf16 on a GPU, see ``annotate.precision``); cached features are dropped."""
        with self._lock:
            if dtype != self.dtype:
                self.model.to(dtype=dtype)
                self.dtype = dtype
                self._features.clear()
                self._instances.clear()

    # ------------------------------------------------------------------ model
    def features(self, image: np.ndarray, image_key: str) -> Any:
        """The vision features of ``image`` (encoder once per image, LRU of ``cache_size``)."""
        with self._lock:
            feats = self._features.get(image_key)
            if feats is not None:
                self._features.move_to_end(image_key)
                return feats
            pixels = self.processor(images=image, return_tensors="pt")["pixel_values"].to(self.device, dtype=self.dtype)
            with torch.inference_mode():
                feats = self.model.get_vision_features(pixel_values=pixels)
            self.encoder_passes += 1
            self._features[image_key] = feats
            while len(self._features) > self.cache_size:
                old, _ = self._features.popitem(last=False)
                for k in [k for k in self._instances if k[0] == old]:
                    del self._instances[k]
            return feats

    def instances(self, image: np.ndarray, image_key: str, phrase: str,
                  box: Optional[tuple[float, float, float, float]] = None) -> list[_Instance]:
        """SAM 3's instances of ``phrase`` (and/or similar to the exemplar ``box``), best score first."""
        key = (image_key, phrase if box is None else f"{phrase}|box:{','.join(f'{v:.1f}' for v in box)}")
        with self._lock:
            found = self._instances.get(key)
            if found is not None:
                return found
            feats = self.features(image, image_key)
            h, w = image.shape[:2]
            kwargs: dict[str, Any] = {"text": phrase or "visual", "original_sizes": [[h, w]], "return_tensors": "pt"}
            if box is not None:
                kwargs.update(input_boxes=[[list(box)]], input_boxes_labels=[[1]])
            prompt = self.processor(**kwargs)
            inputs: dict[str, Any] = {"input_ids": prompt["input_ids"].to(self.device),
                                      "attention_mask": prompt["attention_mask"].to(self.device)}
            if box is not None:
                inputs["input_boxes"] = prompt["input_boxes"].to(self.device, dtype=self.dtype)
                inputs["input_boxes_labels"] = prompt["input_boxes_labels"].to(self.device)
            with torch.inference_mode():
                out = _top_queries(_to_float(self.model(vision_embeds=feats, **inputs)), MAX_INSTANCES)
                result = self.processor.post_process_instance_segmentation(out, threshold=0.0, mask_threshold=0.5,
                                                                           target_sizes=[(h, w)])[0]
            scores = result["scores"].float().cpu().numpy()
            order = np.argsort(-scores, kind="stable")[:MAX_INSTANCES]
            masks = result["masks"].cpu().numpy().astype(bool)
            boxes = result["boxes"].float().cpu().numpy()
            found = []
            for i in order:
                x0, y0, x1, y1 = (float(v) for v in boxes[i])
                x0, x1 = sorted((min(max(x0, 0.0), w), min(max(x1, 0.0), w)))
                y0, y1 = sorted((min(max(y0, 0.0), h), min(max(y1, 0.0), h)))
                found.append(_Instance(mask=masks[i], box=(x0, y0, x1, y1), score=float(np.clip(scores[i], 0.0, 1.0))))
            self._instances[key] = found
            return found

    def known_instances(self, image_key: str) -> list[_Instance]:
        """Every instance found on this image so far (any phrase): what a box from the grounder refers to."""
        with self._lock:
            return [inst for (k, _), insts in self._instances.items() if k == image_key for inst in insts]


def _to_float(out: Any) -> Any:
    """The output's floating tensors in float32 (post-processing of a bf16 run)."""
    for name in ("pred_masks", "pred_logits", "pred_boxes", "presence_logits", "semantic_seg"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            setattr(out, name, value.float())
    return out


def _top_queries(out: Any, k: int) -> Any:
    """Only the ``k`` best-scoring queries (SAM 3 has 200): post-processing then upsamples k masks, not 200."""
    scores = out.pred_logits.sigmoid()
    if getattr(out, "presence_logits", None) is not None:
        scores = scores * out.presence_logits.sigmoid()
    if scores.shape[1] <= k:
        return out
    idx = torch.topk(scores[0], k).indices
    out.pred_logits = out.pred_logits[:, idx]
    out.pred_boxes = out.pred_boxes[:, idx]
    out.pred_masks = out.pred_masks[:, idx]
    return out


def _image_key(image: np.ndarray) -> str:
    from annotate.image_io import image_key

    return image_key(image)


class Sam3Grounder(Grounder):
    """The expression's category phrase → SAM 3's instances as boxes, re-ranked by the expression's spatial cues."""

    def __init__(self, owner: Sam3OneStage) -> None:
        self.owner = owner
        self.model_version = owner.name

    def ground(self, image: np.ndarray, expression: str, top_k: int = 5) -> list[GroundingCandidate]:
        phrase = category_phrase(expression)
        h, w = image.shape[:2]
        found = self.owner.instances(image, _image_key(image), phrase)
        candidates = [GroundingCandidate(box=inst.box, score=inst.score, label=phrase) for inst in found
                      if inst.box[2] > inst.box[0] and inst.box[3] > inst.box[1]]
        return rerank(expression, candidates, w, h, weight=self.owner.spatial_weight)[: max(1, int(top_k))]


class Sam3Segmenter(Segmenter):
    """A box → the mask SAM 3 found for it (from the grounder's instances, or with the box as an exemplar).

    Clicks are edits of the mask (``clicks_as_edits``): SAM 3's image model takes no points.
    """

    clicks_as_edits = True

    def __init__(self, owner: Sam3OneStage) -> None:
        self.owner = owner
        self.name = owner.name
        self._local = threading.local()

    @property
    def device(self) -> torch.device:
        return self.owner.device

    def set_dtype(self, dtype: torch.dtype) -> None:
        self.owner.set_dtype(dtype)

    def set_image(self, image: np.ndarray, image_key: Optional[str] = None) -> None:
        image = _check_image(image)
        key = image_key or _image_key(image)
        self.owner.features(image, key)
        self._local.image, self._local.key = image, key

    def predict(self, box: Optional[np.ndarray] = None, point_coords: Optional[np.ndarray] = None,
                point_labels: Optional[np.ndarray] = None) -> SegmentationOutput:
        image = getattr(self._local, "image", None)
        if image is None:
            raise RuntimeError("Sam3Segmenter.predict called before set_image (in this thread)")
        h, w = image.shape[:2]
        box_arr, coords, labels = _check_prompt(box, point_coords, point_labels, w, h)
        if box_arr is None:  # points only: the box around them, so SAM 3 has an exemplar
            pos = coords[labels == 1] if coords is not None and (labels == 1).any() else coords
            x0, y0 = pos.min(axis=0) - 8
            x1, y1 = pos.max(axis=0) + 8
            box_arr = np.array([max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)], dtype=np.float64)
        target = tuple(float(v) for v in box_arr)
        best = _best_instance(self.owner.known_instances(self._local.key), target, coords, labels)
        if best is None:
            exemplar = self.owner.instances(image, self._local.key, "", box=target)
            best = _best_instance(exemplar, target, coords, labels, min_iou=0.0)
        if best is None:
            return SegmentationOutput(mask=np.zeros((h, w), dtype=bool), score=0.0)
        return SegmentationOutput(mask=best.mask.copy(), score=best.score)


def _best_instance(instances: list[_Instance], box: tuple[float, float, float, float], coords: Optional[np.ndarray],
                   labels: Optional[np.ndarray], min_iou: float = MATCH_IOU) -> Optional[_Instance]:
    """The instance whose box matches ``box`` best; points on (off) the object break ties toward (away from) it."""
    best, best_value = None, -1.0
    for inst in instances:
        overlap = box_iou(inst.box, box)
        if overlap < min_iou:
            continue
        value = overlap
        if coords is not None and len(coords):
            ys = np.clip(coords[:, 1].astype(int), 0, inst.mask.shape[0] - 1)
            xs = np.clip(coords[:, 0].astype(int), 0, inst.mask.shape[1] - 1)
            inside = inst.mask[ys, xs]
            value += 0.5 * float(np.mean(inside == (labels == 1)))
        value += 1e-3 * inst.score
        if value > best_value:
            best, best_value = inst, value
    return best


def build_one_stage(spec: str | Path, device: str = "auto", spatial_weight: float = SPATIAL_WEIGHT) -> Sam3OneStage:
    """A :class:`Sam3OneStage` for a SAM 3 folder or hub id (raises ``MissingExtraError`` without ``[segmenters]``)."""
    from annotate.extras import require_extra

    require_extra("segmenters", "SAM 3 (one-stage)")
    return Sam3OneStage(spec, device=device, spatial_weight=spatial_weight)

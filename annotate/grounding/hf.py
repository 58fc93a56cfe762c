"""Zero-shot open-vocabulary detectors from ``transformers`` as grounders: Grounding DINO and OWLv2.

Why our own post-processing rather than the processors' ``post_process_*``: those threshold the detections
(an image without the object would give an empty list, and the caller could not tell "absent" from "failed"),
and OWLv2's boxes are relative to the *padded square* image, which ``post_process_object_detection`` leaves to the
caller. Here every query/patch becomes a candidate with its score, duplicates are removed by NMS, the spatial
cues of the expression re-rank them (``annotate.grounding.spatial``), and the best ``top_k`` are returned: an
image without the object yields low scores, not an exception.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from typing import Any, Optional

import numpy as np
import torch

from annotate.device import resolve_device
from annotate.geometry import as_rgb
from annotate.grounding.base import Grounder, GroundingCandidate, GroundingError
from annotate.grounding.spatial import SPATIAL_WEIGHT, rerank
from annotate.grounding.text import grounding_dino_prompt, owlv2_query

#: Candidates kept after NMS, before spatial re-ranking (re-ranking needs more than ``top_k`` to choose from).
MAX_CANDIDATES: int = 50
#: Two candidates overlapping more than this are the same object (the lower-scored one is dropped).
NMS_IOU: float = 0.7

# Grounding DINO's phrase delimiters, as hard-coded in transformers' modeling_grounding_dino (BERT ids of
# [CLS], [SEP], ".", "?") plus [PAD] = 0: logits at these positions are not scores of the phrase.
_GDINO_DELIMITERS = (0, 101, 102, 1012, 1029)


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float, keep: int) -> torch.Tensor:
    from torchvision.ops import nms

    order = nms(boxes.float(), scores.float(), iou)
    return order[:keep]


class TransformersGrounder(Grounder):
    """Shared machinery: device placement, a lock (one forward at a time), NMS, re-ranking."""

    family: str = "transformers"

    def __init__(
        self,
        model: Any,
        processor: Any,
        device: str | torch.device = "auto",
        model_version: Optional[str] = None,
        spatial_weight: float = SPATIAL_WEIGHT,
        source: Optional[str] = None,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.spatial_weight = float(spatial_weight)
        self.source = source
        self.model_version = model_version or f"{self.family}"
        self._lock = threading.Lock()

    @abstractmethod
    def _detect(self, image: np.ndarray, expression: str) -> tuple[torch.Tensor, torch.Tensor]:
        """All raw candidates: boxes ``(N, 4)`` xyxy in pixels of ``image`` and scores ``(N,)`` in [0, 1]."""

    def ground(self, image: np.ndarray, expression: str, top_k: int = 5) -> list[GroundingCandidate]:
        try:
            rgb = as_rgb(image)
        except ValueError as exc:  # the grounder's callers handle GroundingError per prompt
            raise GroundingError(str(exc)) from None
        height, width = rgb.shape[:2]
        with self._lock, torch.inference_mode():
            boxes, scores = self._detect(rgb, expression)
        boxes = boxes.float().cpu().clone()
        scores = scores.float().cpu().clone().clamp(0.0, 1.0)
        # inside the image and at least one pixel wide/high: a degenerate box (an untrained model, a box in
        # OWLv2's padding) stays a candidate with its own (low) score instead of vanishing
        finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        boxes, scores = boxes[finite], scores[finite]
        if boxes.shape[0] == 0:
            return []
        boxes[:, 0] = boxes[:, 0].clamp(0, width - 1)
        boxes[:, 1] = boxes[:, 1].clamp(0, height - 1)
        boxes[:, 2] = torch.maximum(boxes[:, 2].clamp(max=width), boxes[:, 0] + 1)
        boxes[:, 3] = torch.maximum(boxes[:, 3].clamp(max=height), boxes[:, 1] + 1)
        keep = _nms(boxes, scores, NMS_IOU, MAX_CANDIDATES)
        candidates = [
            GroundingCandidate(box=tuple(float(v) for v in boxes[i].tolist()), score=float(scores[i]), label=expression)
            for i in keep.tolist()
        ]
        return rerank(expression, candidates, width, height, weight=self.spatial_weight)[: max(1, int(top_k))]


class GroundingDinoGrounder(TransformersGrounder):
    """``GroundingDinoForObjectDetection``: the expression is one phrase; a query's score is its best phrase token."""

    family = "grounding-dino"

    def encode(self, images: list[np.ndarray], prompts: list[str]) -> dict[str, torch.Tensor]:
        """Processor inputs for a batch, on the model's device (used by inference and fine-tuning alike)."""
        # writable copies: the processors call torch.from_numpy, which warns on read-only arrays
        images = [np.array(im, dtype=np.uint8, copy=True) for im in images]
        # long expressions are cut to the model's text length (the logits have max_text_len token slots)
        max_len = int(min(getattr(self.model.config, "max_text_len", 256),
                          getattr(self.model.config.text_config, "max_position_embeddings", 512)))
        inputs = self.processor(images=images, text=prompts, return_tensors="pt", padding=True, truncation=True,
                                max_length=max_len)
        return {k: v.to(self.device) for k, v in inputs.items()}

    def _detect(self, image: np.ndarray, expression: str) -> tuple[torch.Tensor, torch.Tensor]:
        prompt = grounding_dino_prompt(expression)
        inputs = self.encode([image], [prompt])
        out = self.model(**inputs)
        return gdino_boxes_scores(out.logits[0], out.pred_boxes[0], inputs["input_ids"][0], image.shape[1], image.shape[0])


def gdino_boxes_scores(
    logits: torch.Tensor, pred_boxes: torch.Tensor, input_ids: torch.Tensor, width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query score (max sigmoid over the phrase's tokens) and xyxy pixel box for one image."""
    phrase = ~torch.isin(input_ids, torch.tensor(_GDINO_DELIMITERS, device=input_ids.device))
    seq = min(int(input_ids.shape[0]), int(logits.shape[-1]))
    token_logits = logits[:, :seq][:, phrase[:seq]]
    if token_logits.shape[1] == 0:
        raise GroundingError("the referring expression has no words the grounding model's tokenizer can use")
    scores = token_logits.sigmoid().max(dim=-1).values
    cx, cy, w, h = pred_boxes.unbind(-1)
    boxes = torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)
    return boxes, scores


class Owlv2Grounder(TransformersGrounder):
    """``Owlv2ForObjectDetection``: the expression is one text query; every image patch proposes a box."""

    family = "owlv2"

    def _detect(self, image: np.ndarray, expression: str) -> tuple[torch.Tensor, torch.Tensor]:
        query = owlv2_query(expression)
        max_len = int(getattr(self.model.config.text_config, "max_position_embeddings", 16))
        inputs = self.processor(
            text=[[query]], images=np.array(image, copy=True), return_tensors="pt", padding="max_length", truncation=True, max_length=max_len
        )
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        out = self.model(**inputs)
        scores = out.logits[0, :, 0].sigmoid()
        # OWLv2 pads the image to a square (bottom/right) before resizing: boxes are relative to that square
        side = float(max(image.shape[0], image.shape[1]))
        cx, cy, w, h = out.pred_boxes[0].unbind(-1)
        boxes = torch.stack([(cx - w / 2) * side, (cy - h / 2) * side, (cx + w / 2) * side, (cy + h / 2) * side], -1)
        return boxes, scores

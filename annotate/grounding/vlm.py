"""Vision-language models as grounders: Florence-2 and Qwen2.5-VL read the whole referring expression.

Why: Grounding DINO and OWLv2 (``annotate.grounding.hf``) score *phrases* against image regions; a referring
expression ("the second tank from the left, next to the road") is a sentence whose meaning is in its relations.
A VLM generates the answer box as text after reading the sentence and the image together, so no spatial
re-ranking is applied to its answer (it has read the spatial words itself).

Each family answers in its own documented box format, parsed strictly here:

- Florence-2 (``<CAPTION_TO_PHRASE_GROUNDING>`` task): the phrase followed by four location tokens
  ``<loc_x0><loc_y0><loc_x1><loc_y1>``, each a bin of 1000 over the *original* image's width or height.
- Qwen2.5-VL: JSON ``[{"bbox_2d": [x0, y0, x1, y1], "label": ...}]`` (optionally inside a ```json fence) in
  absolute pixels of the *resized* input the processor fed to the model (the image grid × patch size), mapped
  back to the original image here.

An answer without a box in that format raises ``GroundingError`` quoting the answer: the prompt fails alone
with that message, the rest of the batch goes on. A candidate's score is the model's mean probability of the
tokens that wrote its box (greedy decoding), so a hesitant answer ranks low in review.

A model store version may be a LoRA adapter (``pslg train grounding --base <VLM>``); it is served as the base
model with the adapter applied (``load_vlm``).
"""

from __future__ import annotations

import json
import math
import re
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from annotate.device import resolve_device
from annotate.geometry import as_rgb
from annotate.grounding.base import Grounder, GroundingCandidate, GroundingError
from annotate.grounding.text import normalise_expression
from annotate.types import Box

FLORENCE2_TYPES = ("florence2",)
QWEN25_VL_TYPES = ("qwen2_5_vl",)
VLM_TYPES = FLORENCE2_TYPES + QWEN25_VL_TYPES

#: What peft writes into an adapter directory: its presence (without ``config.json``) marks a LoRA version.
ADAPTER_CONFIG = "adapter_config.json"

#: Florence-2 quantises each coordinate into this many bins of the image's width / height.
LOC_BINS = 1000
FLORENCE_TASK = "<CAPTION_TO_PHRASE_GROUNDING>"
_LOC = re.compile(r"^<loc_(\d+)>$")
_FLORENCE_PIECES = re.compile(r"<[^<>]*>|[^<]+")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
#: How much of a bad answer an error message quotes.
_QUOTE = 160


def _quote(text: str) -> str:
    text = " ".join(str(text).split())
    return repr(text if len(text) <= _QUOTE else text[:_QUOTE] + "...")


# --------------------------------------------------------------------------------------------- Florence-2


def florence_prompt(expression: str) -> str:
    """The task prompt: Florence-2's phrase-grounding task with the whole expression as its caption."""
    return FLORENCE_TASK + normalise_expression(expression)


def florence_loc_bins(box: Sequence[float], width: int, height: int) -> list[int]:
    """A pixel box as Florence-2's four location bins (the quantisation Florence-2's own processor uses)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    scale = (width / LOC_BINS, height / LOC_BINS, width / LOC_BINS, height / LOC_BINS)
    return [int(min(max(math.floor(v / s), 0), LOC_BINS - 1)) for v, s in zip((x0, y0, x1, y1), scale)]


def florence_target(expression: str, box: Sequence[float], width: int, height: int) -> str:
    """The answer Florence-2 should give for ``expression``: the phrase, then its box's location tokens."""
    return normalise_expression(expression) + "".join(f"<loc_{b}>" for b in florence_loc_bins(box, width, height))


def florence_boxes_from_tokens(tokens: Sequence[str], width: int, height: int) -> list[tuple[Box, list[int]]]:
    """Every run of four location tokens as a pixel box (bin centres), with the token positions that wrote it.

    Strict: a run of 1–3 or 5+ location tokens is not a box (a truncated or garbled answer), nor is a box whose
    corners are not ordered.
    """
    boxes: list[tuple[Box, list[int]]] = []
    run: list[int] = []
    for i, token in enumerate(list(tokens) + [""]):
        if _LOC.match(token.strip()):
            run.append(i)
            continue
        if len(run) == 4:
            bins = [int(_LOC.match(tokens[j].strip()).group(1)) for j in run]  # type: ignore[union-attr]
            if all(0 <= b < LOC_BINS for b in bins) and bins[2] >= bins[0] and bins[3] >= bins[1]:
                sx, sy = width / LOC_BINS, height / LOC_BINS
                box = ((bins[0] + 0.5) * sx, (bins[1] + 0.5) * sy, (bins[2] + 0.5) * sx, (bins[3] + 0.5) * sy)
                boxes.append((box, list(run)))
        run = []
    return boxes


def parse_florence_answer(text: str, width: int, height: int) -> list[Box]:
    """Florence-2's decoded answer (special tokens kept) → pixel boxes; ``GroundingError`` when it has none."""
    pieces = _FLORENCE_PIECES.findall(text or "")
    boxes = florence_boxes_from_tokens(pieces, width, height)
    if not boxes:
        raise GroundingError(f"the Florence-2 answer has no box (four <loc_N> tokens): {_quote(text)}")
    return [box for box, _ in boxes]


# --------------------------------------------------------------------------------------------- Qwen2.5-VL


def qwen_question(expression: str) -> str:
    """The grounding question in Qwen2.5-VL's documented style (answer: JSON with ``bbox_2d``)."""
    return (f"Locate the object that this referring expression describes: \"{normalise_expression(expression)}\". "
            "Output its bbox coordinates in JSON format.")


def qwen_answer(expression: str, box_in_input: Sequence[float]) -> str:
    """The answer Qwen2.5-VL should give: a ```json fenced list with one ``bbox_2d`` in input pixels."""
    coords = [int(round(float(v))) for v in box_in_input]
    body = json.dumps([{"bbox_2d": coords, "label": normalise_expression(expression)}])
    return f"```json\n{body}\n```"


def parse_qwen_answer(text: str, input_size: tuple[int, int], image_size: tuple[int, int]) -> list[Box]:
    """Qwen2.5-VL's answer → pixel boxes of the original image.

    ``input_size``/``image_size`` are (width, height) of the resized model input and of the original image.
    Strict: the answer (or its first ```json fence) must be JSON, an object or a list of objects, each with a
    ``bbox_2d`` of four finite numbers with x1 > x0 and y1 > y0; anything else raises ``GroundingError``
    quoting the answer.
    """
    raw = (text or "").strip()
    fenced = _FENCE.search(raw)
    body = fenced.group(1).strip() if fenced else raw
    try:
        data = json.loads(body)
    except ValueError:
        raise GroundingError(f"the Qwen2.5-VL answer has no box (expected JSON with \"bbox_2d\"): {_quote(raw)}") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise GroundingError(f"the Qwen2.5-VL answer lists no box: {_quote(raw)}")
    in_w, in_h = input_size
    width, height = image_size
    boxes: list[Box] = []
    for item in items:
        coords = item.get("bbox_2d") if isinstance(item, dict) else None
        if (not isinstance(coords, list) or len(coords) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in coords)):
            raise GroundingError(f"the Qwen2.5-VL answer has no valid \"bbox_2d\" [x0, y0, x1, y1]: {_quote(raw)}")
        x0, y0, x1, y1 = (float(v) for v in coords)
        if not (x1 > x0 and y1 > y0):
            raise GroundingError(f"the Qwen2.5-VL answer's box {coords} is empty: {_quote(raw)}")
        sx, sy = width / in_w, height / in_h
        boxes.append((x0 * sx, y0 * sy, x1 * sx, y1 * sy))
    return boxes


def qwen_input_size(image_grid_thw: Any, patch_size: int) -> tuple[int, int]:
    """(width, height) in pixels of the resized image the model saw: the processor's grid × the patch size."""
    _, grid_h, grid_w = (int(v) for v in image_grid_thw)
    return grid_w * patch_size, grid_h * patch_size


# --------------------------------------------------------------------------------------------- grounders


class VlmGrounder(Grounder):
    """Shared machinery: device, one generation at a time, greedy decoding with token probabilities."""

    family: str = "vlm"
    #: Tokens a grounding answer may take: the echoed expression and a box (Florence) or a short JSON (Qwen).
    max_new_tokens: int = 96

    def __init__(
        self,
        model: Any,
        processor: Any,
        device: Any = "auto",
        model_version: Optional[str] = None,
        source: Optional[str] = None,
        spatial_weight: Optional[float] = None,
        max_new_tokens: Optional[int] = None,
    ) -> None:
        # spatial_weight is accepted so every grounder loads with the same options; a VLM reads the spatial
        # words itself, so its answer is not re-ranked
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.source = source
        self.model_version = model_version or self.family
        self.max_new_tokens = int(max_new_tokens or self.max_new_tokens)
        self._lock = threading.Lock()

    # what each family defines
    def encode(self, image: np.ndarray, expression: str, answer_box: Optional[Sequence[float]] = None) -> dict[str, Any]:
        """Model inputs for one prompt; with ``answer_box``, also ``labels`` (the training target)."""
        raise NotImplementedError

    def parse(self, tokens: Sequence[str], text: str, inputs: dict[str, Any], width: int, height: int
              ) -> list[tuple[Box, Optional[list[int]]]]:
        """The answer's boxes in image pixels, with the positions of the tokens that wrote each (None: all)."""
        raise NotImplementedError

    def _generated(self, sequences: Any, inputs: dict[str, Any]) -> Any:
        return sequences[0]

    def generate(self, image: np.ndarray, expression: str) -> tuple[list[str], str, list[float], dict[str, Any]]:
        """Greedy answer: its tokens, its text (special tokens kept), each token's probability, the inputs."""
        import torch

        inputs = self.encode(image, expression)
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
                                  output_scores=True, return_dict_in_generate=True)
        ids = self._generated(out.sequences, inputs)
        ids = ids[len(ids) - len(out.scores):] if len(out.scores) <= len(ids) else ids
        probs = [float(torch.softmax(step[0].float(), dim=-1)[int(tok)]) for step, tok in zip(out.scores, ids)]
        tokenizer = self.processor.tokenizer
        tokens = tokenizer.convert_ids_to_tokens([int(t) for t in ids])
        text = tokenizer.decode([int(t) for t in ids], skip_special_tokens=False)
        return [str(t) for t in tokens], text, probs, inputs

    def ground(self, image: np.ndarray, expression: str, top_k: int = 5) -> list[GroundingCandidate]:
        try:
            rgb = as_rgb(image)
        except ValueError as exc:
            raise GroundingError(str(exc)) from None
        normalise_expression(expression)  # an empty expression fails before the model runs
        import torch

        height, width = rgb.shape[:2]
        with self._lock, torch.inference_mode():
            tokens, text, probs, inputs = self.generate(rgb, expression)
        found = self.parse(tokens, text, inputs, width, height)
        answer_conf = float(np.mean(probs)) if probs else 0.0
        candidates = []
        for box, positions in found:
            picked = [probs[i] for i in positions if i < len(probs)] if positions else []
            score = float(np.mean(picked)) if picked else answer_conf
            x0, y0, x1, y1 = box
            x0, x1 = min(max(x0, 0.0), width - 1.0), min(max(x1, 0.0), float(width))
            y0, y1 = min(max(y0, 0.0), height - 1.0), min(max(y1, 0.0), float(height))
            candidates.append(GroundingCandidate(box=(x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)),
                                                 score=min(max(score, 0.0), 1.0), label=expression))
        return candidates[: max(1, int(top_k))]


class Florence2Grounder(VlmGrounder):
    """``Florence2ForConditionalGeneration`` with the phrase-grounding task; location tokens → pixel boxes."""

    family = "florence2"

    def encode(self, image: np.ndarray, expression: str, answer_box: Optional[Sequence[float]] = None) -> dict[str, Any]:
        rgb = np.array(image, dtype=np.uint8, copy=True)
        inputs = self.processor(text=[florence_prompt(expression)], images=[rgb], return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if answer_box is not None:
            target = florence_target(expression, answer_box, rgb.shape[1], rgb.shape[0])
            labels = self.processor.tokenizer(text=[target], return_tensors="pt").input_ids
            inputs["labels"] = labels.to(self.device)
        return inputs

    def parse(self, tokens, text, inputs, width, height):
        found = florence_boxes_from_tokens(tokens, width, height)
        if not found:
            raise GroundingError(f"the Florence-2 answer has no box (four <loc_N> tokens): {_quote(text)}")
        return [(box, positions) for box, positions in found]


class Qwen25VLGrounder(VlmGrounder):
    """``Qwen2_5_VLForConditionalGeneration`` asked for a JSON ``bbox_2d`` in its resized input's pixels."""

    family = "qwen2.5-vl"

    def _messages(self, expression: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": qwen_question(expression)}]}]

    def _patch_size(self) -> int:
        return int(getattr(self.processor.image_processor, "patch_size", 14))

    def encode(self, image: np.ndarray, expression: str, answer_box: Optional[Sequence[float]] = None) -> dict[str, Any]:
        rgb = np.array(image, dtype=np.uint8, copy=True)
        prompt = self.processor.apply_chat_template(self._messages(expression), add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[prompt], images=[rgb], return_tensors="pt")
        if answer_box is not None:
            import torch

            in_w, in_h = qwen_input_size(inputs["image_grid_thw"][0], self._patch_size())
            sx, sy = in_w / rgb.shape[1], in_h / rgb.shape[0]
            x0, y0, x1, y1 = (float(v) for v in answer_box)
            answer = qwen_answer(expression, (x0 * sx, y0 * sy, x1 * sx, y1 * sy))
            end = self.processor.tokenizer.eos_token or "<|im_end|>"
            answer_ids = self.processor.tokenizer(answer + end, add_special_tokens=False, return_tensors="pt").input_ids
            prompt_len = int(inputs["input_ids"].shape[1])
            inputs["input_ids"] = torch.cat([inputs["input_ids"], answer_ids], dim=1)
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            if "mm_token_type_ids" in inputs:
                inputs["mm_token_type_ids"] = torch.cat(
                    [inputs["mm_token_type_ids"], torch.zeros_like(answer_ids)], dim=1)
            labels = inputs["input_ids"].clone()
            labels[:, :prompt_len] = -100  # learn the answer only, not the question
            inputs["labels"] = labels
        return {k: v.to(self.device) for k, v in inputs.items()}

    def _generated(self, sequences: Any, inputs: dict[str, Any]) -> Any:
        return sequences[0, inputs["input_ids"].shape[1]:]

    def parse(self, tokens, text, inputs, width, height):
        in_size = qwen_input_size(inputs["image_grid_thw"][0], self._patch_size())
        answer = text.split(self.processor.tokenizer.eos_token or "<|im_end|>")[0] if text else text
        return [(box, None) for box in parse_qwen_answer(answer, in_size, (width, height))]


GROUNDER_CLASSES: dict[str, type[VlmGrounder]] = {
    **{t: Florence2Grounder for t in FLORENCE2_TYPES},
    **{t: Qwen25VLGrounder for t in QWEN25_VL_TYPES},
}


# --------------------------------------------------------------------------------------------- loading


def is_adapter_dir(path: Path) -> bool:
    """A LoRA adapter version: peft's ``adapter_config.json`` and no full model ``config.json``."""
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def adapter_base(path: Path) -> str:
    """The base model an adapter directory was trained on (peft's ``base_model_name_or_path``)."""
    try:
        base = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise GroundingError(f"{path / ADAPTER_CONFIG}: unreadable adapter configuration ({exc})") from exc
    if not base:
        raise GroundingError(f"{path / ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    base_path = Path(str(base))
    if base_path.is_absolute() and not base_path.is_dir():
        raise GroundingError(f"the adapter {path} was trained on {base}, which no longer exists; restore that base "
                             "model or roll the store back (`pslg models rollback`)")
    return str(base)


def model_class(model_type: str) -> Any:
    """The transformers class that generates answers for ``model_type``."""
    if model_type in FLORENCE2_TYPES:
        from transformers import Florence2ForConditionalGeneration

        return Florence2ForConditionalGeneration
    if model_type in QWEN25_VL_TYPES:
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration
    raise GroundingError(f"{model_type!r} is not a supported vision-language grounder ({', '.join(VLM_TYPES)})")


def load_vlm_model(base: str, model_type: str, adapter: Optional[Path] = None, trainable: bool = False) -> Any:
    """The base model's weights, with the LoRA ``adapter`` applied when given (needs the ``[vlm]`` extra)."""
    model = model_class(model_type).from_pretrained(base)
    if adapter is None:
        return model
    from annotate.extras import require_extra

    require_extra("vlm", "A LoRA adapter grounding version")
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)


def build_vlm_grounder(model_type: str, model: Any, processor: Any, **kwargs: Any) -> VlmGrounder:
    """The grounder of ``model_type`` around a loaded model (a ``PeftModel`` included) and its processor."""
    if model_type not in GROUNDER_CLASSES:
        raise GroundingError(f"{model_type!r} is not a supported vision-language grounder ({', '.join(VLM_TYPES)})")
    return GROUNDER_CLASSES[model_type](model, processor, **kwargs)

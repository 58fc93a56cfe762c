"""Stage 2 of PSLG-SAM for one image and many prompts: (grounding) → CFPG point → segmenter → MBO.

Why one object per image: the segmenter's expensive per-image work (SAM's encoder, the classical segmenter's
colour conversion) is done once by ``set_image`` and shared by every prompt of the batch. Every prompt is
validated and answered on its own, so one bad prompt (a box outside the image, a text prompt without a
grounding model) fails only itself, with a message that says what was wrong.
"""

from __future__ import annotations

import math
import time
from typing import Optional, Sequence

import numpy as np

from annotate import defaults
from annotate.grounding.base import Grounder
from annotate.segmenters.base import Segmenter
from annotate.types import Box, Point, Prompt, PromptResult

TEXT_WITHOUT_GROUNDER = (
    "text-only grounding needs a grounding model (configure one, e.g. --grounding DIR) or give a box"
)


class PromptError(ValueError):
    """A prompt that cannot be answered; the message is shown to the user as that prompt's error."""


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a contiguous H×W×3 uint8 RGB array (grayscale and RGBA are accepted)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] >= 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"expected an H×W×3 RGB image, got an array of shape {np.asarray(image).shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr.astype(np.float64)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def clip_box(box: Sequence[float], width: int, height: int) -> Box:
    """Validate ``box`` and clip it to the image; raise ``PromptError`` when it is malformed, empty or outside."""
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise PromptError(f"box {box!r} is not four numbers (x0, y0, x1, y1)") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise PromptError(f"box {box!r} is not four finite numbers (x0, y0, x1, y1)")
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise PromptError(f"box {tuple(values)} is empty (zero or negative width/height); expected x0 < x1 and y0 < y1")
    cx0, cy0 = min(max(x0, 0.0), float(width)), min(max(y0, 0.0), float(height))
    cx1, cy1 = min(max(x1, 0.0), float(width)), min(max(y1, 0.0), float(height))
    # a box that keeps less than one pixel inside the image has nothing to segment
    if cx1 - cx0 < 1.0 or cy1 - cy0 < 1.0:
        raise PromptError(f"box {tuple(values)} lies outside the {width}×{height} image")
    return (cx0, cy0, cx1, cy1)


def _check_points(prompt: Prompt, width: int, height: int) -> tuple[list[Point], list[int]]:
    points = [(float(p[0]), float(p[1])) for p in prompt.points]
    labels = [int(v) for v in prompt.point_labels]
    if points and not labels:
        labels = [1] * len(points)  # a bare list of points means "these are on the object"
    if len(points) != len(labels):
        raise PromptError(f"{len(points)} points but {len(labels)} point labels; give one label (1 = object, 0 = not) per point")
    for (x, y), lab in zip(points, labels):
        if lab not in (0, 1):
            raise PromptError(f"point label {lab} is not 0 (background) or 1 (object)")
        if not (math.isfinite(x) and math.isfinite(y)) or not (0 <= x < width and 0 <= y < height):
            raise PromptError(f"point ({x}, {y}) lies outside the {width}×{height} image")
    return points, labels


class Pipeline:
    """Answers prompts on one image: optional grounding, CFPG point, segmenter, MBO refinement.

    ``use_cfpg`` / ``use_mbo`` default to the measured defaults for the segmenter in use
    (``annotate.defaults.use_cfpg_for`` / ``use_mbo_for``); pass a bool to force either step on or off.
    ``cfpg_params`` / ``mbo_params`` override the hyperparameters of those steps.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        grounder: Optional[Grounder] = None,
        use_cfpg: Optional[bool] = None,
        use_mbo: Optional[bool] = None,
        cfpg_params: Optional[dict] = None,
        mbo_params: Optional[dict] = None,
    ) -> None:
        self.segmenter = segmenter
        self.grounder = grounder
        name = getattr(segmenter, "name", "segmenter")
        self.use_cfpg = defaults.use_cfpg_for(name) if use_cfpg is None else bool(use_cfpg)
        self.use_mbo = defaults.use_mbo_for(name) if use_mbo is None else bool(use_mbo)
        self.cfpg_params = dict(cfpg_params or {})
        self.mbo_params = dict(mbo_params or {})

    @property
    def model_version(self) -> str:
        """Segmenter name, grounder version and the CFPG/MBO switches: changes whenever predictions may change."""
        parts = [getattr(self.segmenter, "name", "segmenter")]
        if self.grounder is not None:
            parts.append(getattr(self.grounder, "model_version", "grounder"))
        parts.append(f"cfpg-{'on' if self.use_cfpg else 'off'}")
        parts.append(f"mbo-{'on' if self.use_mbo else 'off'}")
        return "+".join(parts)

    def run(self, image: np.ndarray, prompts: Sequence[Prompt], image_key: Optional[str] = None) -> list[PromptResult]:
        """One ``PromptResult`` per prompt, in order; failures are reported per prompt, never raised."""
        prompts = list(prompts)
        try:
            rgb = as_rgb(image)
        except ValueError as exc:
            return [PromptResult(mask=None, score=0.0, box=p.box, error=str(exc)) for p in prompts]
        state = {"image_set": False, "image_error": None}
        results: list[PromptResult] = []
        for prompt in prompts:
            t0 = time.perf_counter()
            timings: dict[str, float] = {}
            try:
                result = self._run_one(rgb, prompt, image_key, state, timings)
            except Exception as exc:  # one prompt's failure must not take the batch down
                message = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                result = PromptResult(mask=None, score=0.0, box=prompt.box, error=message or type(exc).__name__)
            timings["total"] = (time.perf_counter() - t0) * 1000.0
            result.timings_ms = timings
            results.append(result)
        return results

    def _ensure_image(self, rgb: np.ndarray, image_key: Optional[str], state: dict, timings: dict[str, float]) -> None:
        if state["image_error"] is not None:
            raise RuntimeError(state["image_error"])
        if state["image_set"]:
            return
        t = time.perf_counter()
        try:
            self.segmenter.set_image(rgb, image_key=image_key)
        except Exception as exc:
            state["image_error"] = f"the segmenter could not process the image: {exc}"
            raise RuntimeError(state["image_error"]) from exc
        timings["set_image"] = (time.perf_counter() - t) * 1000.0
        state["image_set"] = True

    def _run_one(
        self, rgb: np.ndarray, prompt: Prompt, image_key: Optional[str], state: dict, timings: dict[str, float]
    ) -> PromptResult:
        height, width = rgb.shape[:2]
        points, labels = _check_points(prompt, width, height)
        text = (prompt.text or "").strip()
        box: Optional[Box] = None
        grounding_score: Optional[float] = None

        if prompt.box is not None:
            box = clip_box(prompt.box, width, height)
        elif text and self.grounder is not None:
            t = time.perf_counter()
            candidates = self.grounder.ground(rgb, text, top_k=1)
            timings["grounding"] = (time.perf_counter() - t) * 1000.0
            if not candidates:
                raise PromptError(f"the grounding model found nothing for {text!r}")
            best = max(candidates, key=lambda c: c.score)
            box = clip_box(best.box, width, height)
            grounding_score = float(best.score)
        elif text and not points:
            raise PromptError(TEXT_WITHOUT_GROUNDER)
        if box is None and not points:
            raise PromptError("the prompt has no box, no points and no text: nothing says which object to segment")

        # CFPG adds the paper's positive point only when the user gave none (a user's click beats a cluster)
        if self.use_cfpg and box is not None and 1 not in labels:
            from annotate.cfpg import foreground_point

            t = time.perf_counter()
            point = foreground_point(rgb, box, **self.cfpg_params)
            timings["cfpg"] = (time.perf_counter() - t) * 1000.0
            if point is not None:
                points = points + [(float(point[0]), float(point[1]))]
                labels = labels + [1]

        self._ensure_image(rgb, image_key, state, timings)
        t = time.perf_counter()
        out = self.segmenter.predict(
            box=None if box is None else np.asarray(box, dtype=np.float64),
            point_coords=np.asarray(points, dtype=np.float64).reshape(-1, 2) if points else None,
            point_labels=np.asarray(labels, dtype=np.int64) if points else None,
        )
        timings["segment"] = (time.perf_counter() - t) * 1000.0
        mask = np.asarray(out.mask, dtype=bool)
        if mask.shape != (height, width):
            raise RuntimeError(f"the segmenter returned a {mask.shape} mask for a {height}×{width} image")

        if self.use_mbo and mask.any():
            from annotate.mbo import refine_mask

            t = time.perf_counter()
            mask = refine_mask(rgb, mask, box, **self.mbo_params)
            timings["mbo"] = (time.perf_counter() - t) * 1000.0

        return PromptResult(
            mask=mask,
            score=float(np.clip(out.score, 0.0, 1.0)),
            box=box,
            points=points,
            point_labels=labels,
            grounding_score=grounding_score,
        )

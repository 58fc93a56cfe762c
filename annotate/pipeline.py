"""Stage 2 of PSLG-SAM for one image and many prompts: (grounding) → CFPG point → segmenter → MBO.

Why one object per image: the segmenter's expensive per-image work (SAM's encoder, the classical segmenter's
colour conversion) is done once by ``set_image`` and shared by every prompt of the batch. Every prompt is
validated and answered on its own, so one bad prompt (a box outside the image, a text prompt without a
grounding model) fails only itself, with a message that says what was wrong.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Optional, Sequence

import numpy as np

from annotate import defaults
from annotate.geometry import as_rgb, clip_box
from annotate.grounding.base import Grounder, GroundingCandidate
from annotate.segmenters.base import Segmenter
from annotate.types import Box, Point, Prompt, PromptResult

TEXT_WITHOUT_GROUNDER = (
    "text-only grounding needs a grounding model (configure one, e.g. --grounding DIR) or give a box"
)


#: The most objects one generalized expression is answered with (the grounder's candidates asked for).
MAX_TARGETS: int = 20


class PromptError(ValueError):
    """A prompt that cannot be answered; the message is shown to the user as that prompt's error."""


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


def _shown_mask(prompt: Prompt, height: int, width: int) -> Optional[np.ndarray]:
    """The prompt's mask being corrected, checked against the image size (None when the prompt has none)."""
    if prompt.mask is None:
        return None
    mask = np.asarray(prompt.mask)
    if mask.shape != (height, width):
        raise PromptError(f"the mask being corrected is {mask.shape[1]}×{mask.shape[0]} but the image is {width}×{height}")
    return mask.astype(bool, copy=False)


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
        # click sessions on the last image (by its key): each new click of a session costs one local edit
        from annotate.clicks import EditCache

        self._edits = EditCache(32)
        self._edits_key: Optional[str] = None
        # click sessions of a segmenter that refines its previous answer (SAM's mask_input): its logits per prefix
        from annotate.clicks import LogitsCache

        self._logits = LogitsCache(32)
        self._logits_key: Optional[str] = None

    def with_parts(self, segmenter: Optional[Segmenter] = None, grounder: Optional[Grounder] = None) -> "Pipeline":
        """The same pipeline (switches and step parameters) with a new segmenter and/or grounder.

        Why: a retrain replaces one part (new grounder weights, learned shape priors) while the user's settings stay.
        """
        return Pipeline(self.segmenter if segmenter is None else segmenter,
                        self.grounder if grounder is None else grounder,
                        use_cfpg=self.use_cfpg, use_mbo=self.use_mbo,
                        cfpg_params=self.cfpg_params, mbo_params=self.mbo_params)

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

    def ground_targets(self, image: np.ndarray, text: str,
                       threshold: Optional[float] = None) -> tuple[list[GroundingCandidate], float]:
        """Stage 1 for a generalized expression: the boxes of every object it names, and the best score seen.

        The grounder's re-ranked candidates go through ``select_targets`` (one, several or none: see
        ``annotate.grounding.spatial``); an empty list is the answer "no target". The best score lets a caller
        say how sure "no target" is. Raises ``PromptError`` without a grounder or text.
        """
        from annotate.grounding.spatial import TARGET_THRESHOLD, select_targets

        text = (text or "").strip()
        if self.grounder is None:
            raise PromptError(TEXT_WITHOUT_GROUNDER)
        if not text:
            raise PromptError("a generalized expression needs text")
        rgb = as_rgb(image)
        height, width = rgb.shape[:2]
        candidates = self.grounder.ground(rgb, text, top_k=MAX_TARGETS)
        best = max((float(c.score) for c in candidates), default=0.0)
        chosen = select_targets(text, candidates, TARGET_THRESHOLD if threshold is None else threshold)
        return [replace(c, box=clip_box(c.box, width, height)) for c in chosen], best

    def run_targets(self, image: np.ndarray, text: str, threshold: Optional[float] = None,
                    category: Optional[str] = None, image_key: Optional[str] = None) -> list[PromptResult]:
        """Every object a generalized expression names, segmented: one result per object, none for no target.

        Stage 1 (``ground_targets``) chooses the boxes, stage 2 segments each as a box prompt; each result
        carries its box's grounding score.
        """
        targets, _ = self.ground_targets(image, text, threshold)
        results = self.run(image, [Prompt(box=c.box, text=text, category=category) for c in targets], image_key)
        for cand, result in zip(targets, results):
            result.grounding_score = float(cand.score)
            result.features["grounding_score"] = float(cand.score)
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
        features: dict[str, float] = {}

        if prompt.box is not None:
            box = clip_box(prompt.box, width, height)
        elif text and self.grounder is not None:
            t = time.perf_counter()
            candidates = self.grounder.ground(rgb, text, top_k=2)
            timings["grounding"] = (time.perf_counter() - t) * 1000.0
            if not candidates:
                raise PromptError(f"the grounding model found nothing for {text!r}")
            ranked = sorted((float(c.score) for c in candidates), reverse=True)
            best = max(candidates, key=lambda c: c.score)
            box = clip_box(best.box, width, height)
            grounding_score = float(best.score)
            # the grounding margin: how clearly the expression picks this box over the runner-up
            features["grounding_score"] = grounding_score
            features["grounding_margin"] = ranked[0] - ranked[1] if len(ranked) > 1 else ranked[0]
        elif text and not points:
            raise PromptError(TEXT_WITHOUT_GROUNDER)
        if box is None and not points:
            raise PromptError("the prompt has no box, no points and no text: nothing says which object to segment")

        user_points, user_labels = list(points), list(labels)
        shown = _shown_mask(prompt, height, width)
        if shown is not None and user_points:
            # the annotator corrects a mask they see (a pre-label, an earlier answer): the clicks refine *that*
            # mask, with whatever segmenter is loaded, instead of segmenting from the clicks alone
            from annotate.clicks import edit_session
            from annotate.masks import mask_digest

            if image_key is None or image_key != self._edits_key:
                self._edits.clear()
            self._edits_key = image_key
            clicks = [(pt, lab) for pt, lab in zip(user_points, user_labels)]
            t = time.perf_counter()
            key = (image_key, "shown", mask_digest(shown), None if box is None else tuple(round(v, 3) for v in box))
            mask, score = edit_session(rgb, key, lambda: (shown, 1.0), clicks,
                                       self._edits if image_key is not None else None, box=box)
            timings["clicks"] = (time.perf_counter() - t) * 1000.0
        elif user_points and box is not None and getattr(self.segmenter, "clicks_as_edits", False):
            # the box is segmented and refined once; each click then corrects that mask in order (re-segmenting
            # the part it lies in), so a later refinement never undoes a click (annotate.clicks)
            from annotate.clicks import edit_session

            clicks = [(pt, lab) for pt, lab in zip(user_points, user_labels)]
            if image_key is None or image_key != self._edits_key:
                self._edits.clear()
            self._edits_key = image_key
            used: dict = {}

            def base() -> tuple[np.ndarray, float]:
                used["mask"], used["score"], used["points"], used["labels"] = self._segment_and_refine(
                    rgb, box, [], [], image_key, state, timings, category=prompt.category, features=features
                )
                return used["mask"], used["score"]

            t = time.perf_counter()
            mask, score = edit_session(rgb, (image_key, tuple(round(v, 3) for v in box)), base, clicks,
                                       self._edits if image_key is not None else None, box=box)
            timings["clicks"] = (time.perf_counter() - t) * 1000.0 - sum(timings.get(k, 0.0) for k in ("cfpg", "segment", "mbo"))
            # the points the segmenter got: the CFPG point of the box (when it ran), then the user's clicks
            points = used.get("points", []) + user_points
            labels = used.get("labels", []) + user_labels
        elif user_points and box is not None and getattr(self.segmenter, "accepts_mask_input", False):
            mask, score, points, labels = self._refine_session(
                rgb, box, user_points, user_labels, image_key, state, timings, prompt.category, features
            )
        elif (not user_points and box is not None and image_key is not None
              and getattr(self.segmenter, "accepts_mask_input", False)):
            # the box alone: the first answer of any click session on this box (its logits start the chain)
            got: dict = {}
            mask, score, points, labels = self._segment_and_refine(
                rgb, box, [], [], image_key, state, timings, category=prompt.category, features=features,
                logits_out=got,
            )
            if got.get("logits") is not None:
                if image_key != self._logits_key:
                    self._logits.clear()
                self._logits_key = image_key
                self._logits.put((image_key, tuple(round(v, 3) for v in box)), [], got["logits"])
        else:
            mask, score, points, labels = self._segment_and_refine(
                rgb, box, user_points, user_labels, image_key, state, timings, category=prompt.category,
                features=features,
            )
        if box is not None:
            from annotate.confine import confine_to_box
            from annotate.quality import mask_box_features

            # the mask stays in its box (plus a margin for loose boxes) unless a positive click lies beyond it
            mask = confine_to_box(mask, box, user_points, user_labels)

            features.update(mask_box_features(mask, box, (height, width)))

        return PromptResult(
            mask=mask,
            score=float(np.clip(score, 0.0, 1.0)),
            box=box,
            points=points,
            point_labels=labels,
            grounding_score=grounding_score,
            features=features,
        )

    def _refine_session(
        self, rgb: np.ndarray, box: Box, user_points: list[Point], user_labels: list[int], image_key: Optional[str],
        state: dict, timings: dict[str, float], category: Optional[str], features: dict[str, float],
    ) -> tuple[np.ndarray, float, list[Point], list[int]]:
        """A click session with a segmenter that refines its previous answer (SAM with ``mask_input``).

        The answer to box + clicks c1..ck is the segmenter's answer to them given its own answer to c1..ck-1
        (its low-resolution logits), down to the box alone: what SAM was trained for, and what the annotator
        sees refined. The chain's logits are cached per (image, box, click prefix); the answer depends only on
        the prompt, never on what was cached (a prefix that is not cached is recomputed).
        """
        clicks = [(pt, lab) for pt, lab in zip(user_points, user_labels)]
        key = (image_key, tuple(round(v, 3) for v in box))
        if image_key is None or image_key != self._logits_key:
            self._logits.clear()
        self._logits_key = image_key
        k, logits = self._logits.longest(key, clicks[:-1]) if image_key is not None else (0, None)
        t = time.perf_counter()
        start = k + 1 if logits is not None else 0
        for j in range(start, len(clicks)):
            pts, labs = self._with_cfpg(rgb, box, [c[0] for c in clicks[:j]], [c[1] for c in clicks[:j]], timings)
            self._ensure_image(rgb, image_key, state, timings)
            out = self.segmenter.predict(box=np.asarray(box, dtype=np.float64),
                                         point_coords=np.asarray(pts, dtype=np.float64).reshape(-1, 2) if pts else None,
                                         point_labels=np.asarray(labs, dtype=np.int64) if pts else None,
                                         mask_input=logits)
            logits = out.logits
            if image_key is not None and logits is not None:
                self._logits.put(key, clicks[:j], logits)
        timings["session"] = (time.perf_counter() - t) * 1000.0
        got: dict = {}
        result = self._segment_and_refine(rgb, box, user_points, user_labels, image_key, state, timings,
                                          category=category, features=features, mask_input=logits, logits_out=got)
        if image_key is not None and got.get("logits") is not None:
            self._logits.put(key, clicks, got["logits"])
        return result

    def _with_cfpg(
        self, rgb: np.ndarray, box: Optional[Box], points: list[Point], labels: list[int], timings: dict[str, float]
    ) -> tuple[list[Point], list[int]]:
        """The points sent to the segmenter: CFPG's point is added only when the user gave no positive one."""
        points, labels = list(points), list(labels)
        if self.use_cfpg and box is not None and 1 not in labels:
            from annotate.cfpg import foreground_point

            t = time.perf_counter()
            point = foreground_point(rgb, box, **self.cfpg_params)
            timings["cfpg"] = (time.perf_counter() - t) * 1000.0
            if point is not None:
                points = points + [(float(point[0]), float(point[1]))]
                labels = labels + [1]
        return points, labels

    def _segment_and_refine(
        self,
        rgb: np.ndarray,
        box: Optional[Box],
        user_points: list[Point],
        user_labels: list[int],
        image_key: Optional[str],
        state: dict,
        timings: dict[str, float],
        category: Optional[str] = None,
        features: Optional[dict[str, float]] = None,
        mask_input: Optional[np.ndarray] = None,
        logits_out: Optional[dict] = None,
    ) -> tuple[np.ndarray, float, list[Point], list[int]]:
        """CFPG point → segmenter → MBO → click repair: (mask, score, points sent, their labels).

        ``features`` receives what the quality estimate (``annotate.quality``) reads: the segmenter's own score
        and how much MBO changed its mask. ``mask_input`` goes to a segmenter that ``accepts_mask_input``;
        ``logits_out["logits"]`` receives the segmenter's low-resolution logits when it has them.
        """
        features = {} if features is None else features
        height, width = rgb.shape[:2]
        # CFPG adds the paper's positive point only when the user gave none (a user's click beats a cluster)
        points, labels = self._with_cfpg(rgb, box, user_points, user_labels, timings)

        self._ensure_image(rgb, image_key, state, timings)
        t = time.perf_counter()
        extra: dict = {"category": category} if getattr(self.segmenter, "uses_category", False) else {}
        if mask_input is not None:
            extra["mask_input"] = mask_input
        out = self.segmenter.predict(
            box=None if box is None else np.asarray(box, dtype=np.float64),
            point_coords=np.asarray(points, dtype=np.float64).reshape(-1, 2) if points else None,
            point_labels=np.asarray(labels, dtype=np.int64) if points else None,
            **extra,
        )
        timings["segment"] = (time.perf_counter() - t) * 1000.0
        mask = np.asarray(out.mask, dtype=bool)
        if logits_out is not None:
            logits_out["logits"] = getattr(out, "logits", None)
        if mask.shape != (height, width):
            raise RuntimeError(f"the segmenter returned a {mask.shape} mask for a {height}×{width} image")

        if self.use_mbo and mask.any():
            from annotate.mbo import refine_mask

            t = time.perf_counter()
            before = mask
            mask = refine_mask(rgb, mask, box, points=user_points, point_labels=user_labels, **self.mbo_params)
            timings["mbo"] = (time.perf_counter() - t) * 1000.0
            from annotate.geometry import mask_iou

            features["mbo_change"] = 1.0 - mask_iou(before, mask)
            if getattr(self.segmenter, "splits_edge_pixels", False) and box is not None and mask.any():
                # MBO's colour cut leaves out about half of the pixels the object's edge crosses; human outlines
                # include them (without MBO the segmenter's fitted shape already encloses its outline)
                from annotate.masks import include_edge_pixels

                mask = include_edge_pixels(mask)
        features["segmenter_score"] = float(out.score)

        if user_points:
            # every click is a hard constraint: whatever a stage did, a contradicted click is repaired locally
            from annotate.clicks import honour_clicks

            t = time.perf_counter()
            mask = honour_clicks(rgb, mask, user_points, user_labels, box=box)
            timings["clicks"] = (time.perf_counter() - t) * 1000.0
        return mask, float(out.score), points, labels


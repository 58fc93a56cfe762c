"""The model class Label Studio users recognise: ``predict(tasks, context)`` and ``fit(event, data)``.

``LabelStudioMLBase`` mirrors the shape of the maintained ``label_studio_ml.model.LabelStudioMLBase`` (project
id, label config, ``label_interface``, ``model_version``, ``setup``/``predict``/``fit``) so people who wrote
Label Studio backends find their way; it does not import that package (the PyPI release is obsolete, see
docs/backend.md). ``PSLGModel`` is ours:

* ``predict`` without context (batch pre-labelling): expression from the task → grounding box (or the task's
  own ``bbox`` (``[x, y, w, h]`` pixels) when no grounding model is configured) → stage 2 → one ``brushlabels`` region with a label, plus
  the box as a rectangle and the expression echoed in a TextArea, linked to the mask. ``score`` is the
  segmenter's confidence times the grounding score: low means "review me", and Label Studio sorts by it.
* ``predict`` with context (interactive): keypoints / a rectangle / a typed TextArea prompt → a new mask on
  the cached image (image bytes, decoded pixels and the SAM embedding are all cached; a click never re-encodes).
* ``fit``: stores annotations from ``/webhook`` and asks the trainer to retrain (see ``backend.training``).
"""

from __future__ import annotations

import logging
import uuid
from functools import lru_cache
from typing import Any, Optional, Sequence


from annotate.image_io import LoadedImage
from annotate.types import Prompt, PromptResult
from converters.labelstudio.tasks import context_prompt, task_box
from backend.labels import LabelSchema

log = logging.getLogger("pslg.backend.model")



class LabelStudioMLBase:
    """The ``label-studio-ml`` model shape: one instance per project and labeling config."""

    def __init__(self, project_id: Optional[str] = None, label_config: Optional[str] = None) -> None:
        self.project_id = project_id
        self.label_config = label_config or ""
        self.setup()

    def setup(self) -> None:
        """Per-instance initialisation (heavy models belong to the process, not here)."""

    @property
    def label_interface(self):
        from label_studio_sdk.label_interface import LabelInterface

        return LabelInterface(self.label_config)

    @property
    def model_version(self) -> str:
        return "0.0.1"

    def predict(self, tasks: list[dict], context: Optional[dict] = None, **kwargs: Any) -> list[dict]:
        """One prediction ``{"result": [...], "score": float, "model_version": str}`` per task, same order."""
        raise NotImplementedError

    def fit(self, event: str, data: dict, **kwargs: Any) -> dict:
        """React to a webhook event (annotation created/updated/deleted, START_TRAINING)."""
        raise NotImplementedError


@lru_cache(maxsize=64)
def parse_schema(label_config: str) -> LabelSchema:
    """Label configs repeat on every request: parse each distinct one once."""
    return LabelSchema.parse(label_config)


def _new_id() -> str:
    return uuid.uuid4().hex[:10]


class PSLGModel(LabelStudioMLBase):
    """PSLG-SAM pre-labelling and refinement for one project; models and caches live in the ``Runtime``."""

    def __init__(self, runtime, project_id: Optional[str] = None, label_config: Optional[str] = None) -> None:
        self.runtime = runtime
        super().__init__(project_id=project_id, label_config=label_config)

    def setup(self) -> None:
        self.schema = parse_schema(self.label_config)

    @property
    def model_version(self) -> str:
        return self.runtime.engine.model_version

    # --- helpers -----------------------------------------------------------------------------------------------
    def _load(self, url: str) -> LoadedImage:
        return self.runtime.load_image(url, project=self.project_id)

    def _empty(self, version: str) -> dict:
        return {"result": [], "score": 0.0, "model_version": version}

    def _regions(self, image: LoadedImage, result: PromptResult, label: Optional[str],
                 expression: Optional[str], with_box: bool) -> list[dict]:
        from converters.labelstudio.brush import brush_rle_encode

        s = self.schema
        w, h = image.width, image.height
        brush_id = _new_id()
        score = _score(result)
        regions: list[dict] = [{
            "id": brush_id, "from_name": s.brush_name, "to_name": s.image_name, "type": "brushlabels",
            "original_width": w, "original_height": h, "image_rotation": 0, "score": score,
            "value": {"format": "rle", "rle": brush_rle_encode(result.mask), "brushlabels": [label] if label else []},
        }]
        if with_box and s.rect_name and result.box is not None:
            x0, y0, x1, y1 = result.box
            rect_id = _new_id()
            rect_label = label if label in s.rect_labels else (s.rect_labels[0] if s.rect_labels else None)
            regions.append({
                "id": rect_id, "from_name": s.rect_name, "to_name": s.image_name, "type": "rectanglelabels",
                "original_width": w, "original_height": h, "image_rotation": 0,
                "score": float(result.grounding_score) if result.grounding_score is not None else score,
                "value": {"x": 100.0 * x0 / w, "y": 100.0 * y0 / h, "width": 100.0 * (x1 - x0) / w,
                          "height": 100.0 * (y1 - y0) / h, "rotation": 0,
                          "rectanglelabels": [rect_label] if rect_label else []},
            })
            regions.append({"type": "relation", "from_id": rect_id, "to_id": brush_id, "direction": "right"})
        if expression and s.textarea_name:
            # per-region TextArea: same id as the mask, so the expression is shown on (and linked to) it
            regions.append({
                "id": brush_id if s.textarea_per_region else _new_id(), "from_name": s.textarea_name,
                "to_name": s.image_name, "type": "textarea", "value": {"text": [expression]},
            })
        return regions

    # --- predict ---------------------------------------------------------------------------------------------
    def predict(self, tasks: list[dict], context: Optional[dict] = None, **kwargs: Any) -> list[dict]:
        if context and context.get("result"):
            return [self._predict_interactive(task, context) for task in tasks]
        return self._predict_batch(tasks)

    def _predict_interactive(self, task: dict, context: dict) -> dict:
        version = self.model_version
        tid = task.get("id")
        data = task.get("data") or {}
        try:
            url = self.schema.image_url(data)
            if url is None:
                raise ValueError(f"the task has no image under data.{self.schema.image_key}")
            image = self._load(url)
            prompt, hint = context_prompt(context, image.width, image.height)
            if prompt.box is None and not prompt.points and not prompt.text:
                raise ValueError("the interactive context has no keypoint, rectangle or typed expression")
            if prompt.text and prompt.box is None and not prompt.points and not self.runtime.engine.has_grounder:
                box = task_box(data, image.width, image.height)
                if box is None:
                    raise ValueError("a typed expression needs a grounding model (PSLG_GROUNDING_MODEL) or a task bbox")
                prompt.box = box
            result = self.runtime.engine.run(image.rgb, [prompt], image.key)[0]
            if not result.ok:
                raise ValueError(result.error)
        except Exception as exc:
            log.warning("task %s: interactive prediction failed: %s", tid, exc)
            return self._empty(version)
        expression = prompt.text or self.schema.expression(data)
        label = self.schema.choose_label(expression, data, hint=hint)
        regions = self._regions(image, result, label, None, with_box=False)
        return {"result": regions, "score": _score(result), "model_version": version}

    def _predict_batch(self, tasks: list[dict]) -> list[dict]:
        version = self.model_version
        out: list[Optional[dict]] = [None] * len(tasks)
        by_image: dict[str, list[int]] = {}
        for i, task in enumerate(tasks):
            url = self.schema.image_url((task or {}).get("data") or {})
            if url is None:
                log.warning("task %s: no image under data.%s; empty prediction", (task or {}).get("id"), self.schema.image_key)
                out[i] = self._empty(version)
                continue
            by_image.setdefault(url, []).append(i)
        has_grounder = self.runtime.engine.has_grounder
        for url, indices in by_image.items():
            try:
                image = self._load(url)
            except Exception as exc:
                for i in indices:
                    log.warning("task %s: %s; empty prediction", tasks[i].get("id"), exc)
                    out[i] = self._empty(version)
                continue
            prompts: list[Prompt] = []
            runnable: list[int] = []
            for i in indices:
                data = tasks[i].get("data") or {}
                expression = self.schema.expression(data)
                try:
                    box = task_box(data, image.width, image.height)
                    if has_grounder and expression:
                        prompts.append(Prompt(text=expression))
                    elif box is not None:
                        prompts.append(Prompt(box=box, text=expression))
                    elif not expression:
                        raise ValueError("the task has no referring expression and no bbox")
                    else:
                        raise ValueError("no grounding model is configured (PSLG_GROUNDING_MODEL) and the task has no bbox")
                except ValueError as exc:
                    log.warning("task %s: %s; empty prediction", tasks[i].get("id"), exc)
                    out[i] = self._empty(version)
                    continue
                runnable.append(i)
            if not prompts:
                continue
            try:
                results = self.runtime.engine.run(image.rgb, prompts, image.key)
            except Exception as exc:
                results = [PromptResult(mask=None, score=0.0, box=None, error=str(exc)) for _ in prompts]
            for i, prompt, result in zip(runnable, prompts, results):
                data = tasks[i].get("data") or {}
                if not result.ok:
                    log.warning("task %s: %s; empty prediction", tasks[i].get("id"), result.error)
                    out[i] = self._empty(version)
                    continue
                label = self.schema.choose_label(prompt.text, data)
                out[i] = {"result": self._regions(image, result, label, prompt.text, with_box=True),
                          "score": _score(result), "model_version": version}
        return [o if o is not None else self._empty(version) for o in out]

    # --- fit ---------------------------------------------------------------------------------------------------
    def fit(self, event: str, data: dict, **kwargs: Any) -> dict:
        return self.runtime.handle_event(event, data)


def _score(result: PromptResult) -> float:
    score = float(result.score)
    if result.grounding_score is not None:
        score *= float(result.grounding_score)
    return float(min(max(score, 0.0), 1.0))


def predict_envelopes(model: PSLGModel, tasks: Sequence[dict], context: Optional[dict]) -> list[dict]:
    """``model.predict`` with the protocol's guarantee: exactly one prediction per task, in order."""
    results = model.predict(list(tasks), context=context)
    if len(results) != len(tasks):
        raise RuntimeError(f"model returned {len(results)} predictions for {len(tasks)} tasks")
    return results

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
import threading
import uuid
from functools import lru_cache
from typing import Any, Optional, Sequence


from annotate.image_io import LoadedImage
from annotate.types import Box, Prompt, PromptResult
from backend.labels import LabelSchema

log = logging.getLogger("pslg.backend.model")

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


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


def task_box(data: dict[str, Any], width: int, height: int) -> Optional[Box]:
    """The task's own box, as ``(x0, y0, x1, y1)`` pixels.

    Accepted task fields (the converters' importer writes the first): ``bbox`` = ``[x, y, w, h]`` in pixels (COCO
    order), ``bbox_xyxy`` = ``[x0, y0, x1, y1]`` in pixels, or ``bbox`` as a Label Studio rectangle value
    ``{x, y, width, height}`` in percent of the image.
    """
    xyxy = data.get("bbox_xyxy")
    if xyxy is not None:
        if not (isinstance(xyxy, (list, tuple)) and len(xyxy) == 4):
            raise ValueError(f"task bbox_xyxy {xyxy!r} is not [x0, y0, x1, y1] in pixels")
        return tuple(float(v) for v in xyxy)  # type: ignore[return-value]
    raw = data.get("bbox")
    if raw is None:
        return None
    if isinstance(raw, dict) and {"x", "y", "width", "height"} <= raw.keys():
        x0, y0 = float(raw["x"]) * width / 100.0, float(raw["y"]) * height / 100.0
        return (x0, y0, x0 + float(raw["width"]) * width / 100.0, y0 + float(raw["height"]) * height / 100.0)
    if isinstance(raw, (list, tuple)) and len(raw) == 4:
        x, y, w, h = (float(v) for v in raw)
        return (x, y, x + w, y + h)
    raise ValueError(f"task bbox {raw!r} is neither [x, y, w, h] in pixels nor {{x, y, width, height}} in percent")


def context_prompt(context: dict[str, Any], width: int, height: int) -> tuple[Prompt, Optional[str]]:
    """The prompt an annotator's interactive regions describe, and the label they carry (if any)."""
    points: list[tuple[float, float]] = []
    labels: list[int] = []
    box: Optional[Box] = None
    text: Optional[str] = None
    label: Optional[str] = None
    for region in context.get("result") or []:
        rtype = str(region.get("type", "")).lower()
        value = region.get("value") or {}
        w = float(region.get("original_width") or width)
        h = float(region.get("original_height") or height)
        if rtype in ("keypointlabels", "keypoint"):
            positive = region.get("is_positive", value.get("is_positive", True))
            points.append((float(value["x"]) * w / 100.0, float(value["y"]) * h / 100.0))
            labels.append(1 if positive in (True, 1, "true", "True") else 0)
            label = label or next(iter(value.get("keypointlabels") or []), None)
        elif rtype in ("rectanglelabels", "rectangle"):
            x0, y0 = float(value["x"]) * w / 100.0, float(value["y"]) * h / 100.0
            box = (x0, y0, x0 + float(value["width"]) * w / 100.0, y0 + float(value["height"]) * h / 100.0)
            label = next(iter(value.get("rectanglelabels") or []), None) or label
        elif rtype == "textarea":
            typed = value.get("text") or []
            if typed and str(typed[0]).strip():
                text = str(typed[0]).strip()
    return Prompt(box=box, points=points, point_labels=labels, text=text), label


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
        from annotate.masks import brush_rle_encode

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


class Runtime:
    """Everything one backend process shares: settings, engine, image fetching and caches, store, trainer."""

    def __init__(self, settings, engine=None) -> None:
        from backend.engine import Engine
        from backend.images import LRUCache
        from backend.store import TrainingStore
        from backend.training import Trainer

        self.settings = settings
        self.engine = engine or Engine(settings).start()
        self._images = LRUCache(size=16)
        self._fetchers: dict[tuple[str, str], Any] = {}
        self._setup_creds: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()
        self.store = TrainingStore(settings.model_dir / "training.sqlite3")
        self.trainer = Trainer(self.engine, self.store, settings.model_dir, self._fetch_for_training,
                               epochs=settings.train_epochs)

    # --- credentials ---------------------------------------------------------------------------------------------
    def remember_setup(self, project: Optional[str], hostname: Optional[str], access_token: Optional[str]) -> None:
        """Keep the Label Studio host/token from ``/setup``: the fallback when LABEL_STUDIO_URL/API_KEY are unset."""
        if hostname and access_token:
            with self._lock:
                self._setup_creds[str(project or "")] = (hostname.rstrip("/"), access_token)
                self._setup_creds[""] = (hostname.rstrip("/"), access_token)

    def fetcher(self, project: Optional[str] = None):
        from backend.images import ImageFetcher, LabelStudioAuth

        s = self.settings
        with self._lock:
            setup = self._setup_creds.get(str(project or "")) or self._setup_creds.get("")
        # the environment wins; /setup's hostname and token fill what it leaves unset (the env URL is preferred
        # because /setup's hostname is the browser's view, e.g. localhost, which a container may not reach)
        url = s.label_studio_url or (setup[0] if setup else None)
        token = s.label_studio_api_key or (setup[1] if setup else None)
        creds = (url, token) if url and token else None
        key = creds or ("", "")
        with self._lock:
            fetcher = self._fetchers.get(key)
            if fetcher is None:
                auth = LabelStudioAuth(creds[0], creds[1], timeout=s.image_timeout_s) if creds else None
                fetcher = ImageFetcher(auth, max_bytes=s.max_image_bytes, timeout_s=s.image_timeout_s,
                                       local_files_root=s.local_files_root)
                self._fetchers[key] = fetcher
        return fetcher

    def load_image(self, url: str, project: Optional[str] = None) -> LoadedImage:
        """Decoded pixels of a task image, cached by URL (a click on the same image reuses them and the embedding)."""
        from annotate.image_io import load_image

        cached = self._images.get(url)
        if cached is not None:
            return cached
        raw = self.fetcher(project).fetch(url)
        from backend.images import display_url

        loaded = load_image(raw, name=display_url(url), max_pixels=self.settings.max_pixels)
        self._images.put(url, loaded)
        return loaded

    def _fetch_for_training(self, item) -> tuple[bytes, str]:
        from backend.training import _image_ref

        url, _ = _image_ref(item)
        return self.fetcher(item.project).fetch(url), url

    # --- webhook events --------------------------------------------------------------------------------------------
    def handle_event(self, event: str, data: dict) -> dict:
        """Store annotations, start retraining when asked (START_TRAINING) or every ``PSLG_TRAIN_EVERY`` new ones."""
        project = data.get("project")
        project_id = project.get("id") if isinstance(project, dict) else project
        if event in TRAIN_EVENTS:
            annotation = data.get("annotation") or {}
            task = data.get("task") or {}
            seq = self.store.upsert(event, project_id, task, annotation)
            answer: dict[str, Any] = {"status": "stored", "annotation": annotation.get("id"), "stored": self.store.count()}
            every = self.settings.train_every
            if every > 0 and seq % every == 0:
                answer["training"] = self.trainer.request(f"{every} new annotations")
            return answer
        if event == "ANNOTATION_DELETED":
            annotation = data.get("annotation") or {}
            removed = self.store.delete(annotation["id"]) if "id" in annotation else False
            return {"status": "deleted" if removed else "not stored", "annotation": annotation.get("id")}
        if event == "START_TRAINING":
            return {"status": "training", "training": self.trainer.request("START_TRAINING")}
        return {"status": "ignored", "event": event}


def predict_envelopes(model: PSLGModel, tasks: Sequence[dict], context: Optional[dict]) -> list[dict]:
    """``model.predict`` with the protocol's guarantee: exactly one prediction per task, in order."""
    results = model.predict(list(tasks), context=context)
    if len(results) != len(tasks):
        raise RuntimeError(f"model returned {len(results)} predictions for {len(tasks)} tasks")
    return results

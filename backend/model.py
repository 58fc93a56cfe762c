"""The model class Label Studio users recognise: ``predict(tasks, context)`` and ``fit(event, data)``.

``LabelStudioMLBase`` mirrors the shape of the maintained ``label_studio_ml.model.LabelStudioMLBase`` (project
id, label config, ``label_interface``, ``model_version``, ``setup``/``predict``/``fit``) so people who wrote
Label Studio backends find their way; it does not import that package (the PyPI release is obsolete, see
docs/serve-backend.md). ``PSLGModel`` is ours:

* ``predict`` without context (batch pre-labelling): expression from the task → grounding box (or the task's
  own ``bbox`` (``[x, y, w, h]`` pixels) when no grounding model is configured) → stage 2 → one ``brushlabels`` region with a label, plus
  the box as a rectangle and the expression echoed in a TextArea, linked to the mask. ``score`` is the
  segmenter's confidence times the grounding score: low means "review me", and Label Studio sorts by it.
* a generalized config (a "no target" choice, ``converters/configs/generalized_expression_per_task.xml``) with
  a grounding model: stage 1 keeps every box the expression names above ``PSLG_TARGET_THRESHOLD`` (one, several
  or none, ``annotate.grounding.spatial.select_targets``), stage 2 segments each: one region per object, or the
  "no target" choice when no box passes.
* ``predict`` with context (interactive): keypoints / a rectangle / a typed TextArea prompt → a new mask on
  the cached image (image bytes, decoded pixels and the SAM embedding are all cached; a click never re-encodes).
* ``fit``: stores annotations from ``/webhook`` and asks the trainer to retrain (see ``backend.training``).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, Optional, Sequence


from annotate.image_io import LoadedImage
from annotate.types import Prompt, PromptResult
from converters.labelstudio.labels import LabelMatcher, LabelTally, UnmatchedLabelError, parse_label_map, task_category
from converters.labelstudio.regions import no_target_region, prediction_regions
from converters.labelstudio.schema import LabelSchema
from converters.labelstudio.tasks import context_prompt, task_box

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


class PSLGModel(LabelStudioMLBase):
    """PSLG-SAM pre-labelling and refinement for one project; models and caches live in the ``Runtime``."""

    def __init__(self, runtime, project_id: Optional[str] = None, label_config: Optional[str] = None) -> None:
        self.runtime = runtime
        super().__init__(project_id=project_id, label_config=label_config)

    def setup(self) -> None:
        self.schema = parse_schema(self.label_config)
        self._matcher: Optional[LabelMatcher] = None
        #: how each task of the last batch got its label: {task index: (how, category)} with how ``name``,
        #: ``map``, ``none`` (no category) or ``unmatched`` (the task failed); ``pslg prelabel`` sums them up
        self.last_label_how: dict[int, tuple[str, Optional[str]]] = {}

    def _task_label(self, expression: Optional[str], data: dict) -> tuple[Optional[str], str, Optional[str]]:
        """``(label, how, category)`` for a batch task: its category matched by name or through the label map
        (``PSLG_LABEL_MAP``), else (no category) a label the expression names, else the config's first.

        A category that is none of the labels raises ``UnmatchedLabelError`` listing them: the task fails
        rather than being labelled as some other class.
        """
        category = task_category(data)
        if category is None or not self.schema.labels:
            return self.schema.choose_label(expression, data), "none", category
        if self._matcher is None:
            settings = getattr(self.runtime, "settings", None)
            self._matcher = LabelMatcher(list(self.schema.labels),
                                         parse_label_map(getattr(settings, "label_map", None)))
        label, how = self._matcher.match(category)
        return label, how, category

    @property
    def model_version(self) -> str:
        return self.runtime.engine.model_version

    # --- helpers -----------------------------------------------------------------------------------------------
    def _load(self, url: str) -> LoadedImage:
        return self.runtime.load_image(url, project=self.project_id)

    def _empty(self, version: str, error: Optional[str] = None) -> dict:
        """An empty prediction; with ``error`` the reason travels in the answer too (Label Studio ignores the key)."""
        empty = {"result": [], "score": 0.0, "model_version": version}
        if error:
            empty["error"] = error
        return empty

    def _regions(self, image: LoadedImage, result: PromptResult, label: Optional[str],
                 expression: Optional[str], with_box: bool) -> list[dict]:
        return prediction_regions(self.schema, result.mask, label, self.runtime.engine.score(result),
                                  box=result.box if with_box else None, box_score=result.grounding_score,
                                  expression=expression, tolerance=self.runtime.settings.polygon_tolerance)

    # --- predict ---------------------------------------------------------------------------------------------
    def predict(self, tasks: list[dict], context: Optional[dict] = None, **kwargs: Any) -> list[dict]:
        if context and context.get("result"):
            return [self._predict_interactive(task, context) for task in tasks]
        return self._predict_batch(tasks)

    def _predict_interactive(self, task: dict, context: dict) -> dict:
        """One answer to an annotator's interactive request: their clicks refine the mask they see.

        Label Studio sends only the regions of the tool just used (keypoints without the rectangle or the
        pre-label), so the request is combined with the task's interactive session (``backend.sessions``): the
        box (a rectangle in the context, else the one the session started with: the task's box or the
        pre-label's grounding box), the mask being corrected (the newest draft, annotation or prediction of the
        task that holds one) and every click so far. The answer's region carries the corrected region's id, so
        accepting it in Label Studio replaces that region instead of adding a second mask.
        """
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
            log.info("task %s: interactive request: %d keypoint(s) (%d negative), %s, %s", tid, len(prompt.points),
                     prompt.point_labels.count(0), "a rectangle" if prompt.box is not None else "no rectangle",
                     "a typed expression" if prompt.text else "no text")
            session = self._session_for(task, image, prompt)
            region_id = None
            if session is not None:
                keypoints = list(zip(prompt.points, prompt.point_labels))
                clicks = session.take_keypoints(keypoints)
                prompt.points, prompt.point_labels = [c[0] for c in clicks], [c[1] for c in clicks]
                prompt.box = session.box
                prompt.mask = session.base_mask()
                region_id = session.region_id
                hint = hint or session.label
            if prompt.text and prompt.box is None and not prompt.points and not self.runtime.engine.has_grounder:
                box = task_box(data, image.width, image.height)
                if box is None:
                    raise ValueError("a typed expression needs a grounding model (PSLG_GROUNDING_MODEL) or a task bbox")
                prompt.box = box
            result = self.runtime.engine.run(image.rgb, [prompt], image.key)[0]
            if not result.ok:
                raise ValueError(result.error)
            if session is not None:
                from annotate.masks import mask_digest

                session.last_answer = mask_digest(result.mask)
        except Exception as exc:
            log.warning("task %s: interactive prediction failed: %s", tid, exc)
            return self._empty(version, f"interactive prediction failed: {exc}")
        expression = prompt.text or self.schema.expression(data)
        label = self.schema.choose_label(expression, data, hint=hint)
        regions = self._regions(image, result, label, None, with_box=False)
        if region_id and len(regions) == 1 and regions[0].get("type") == "brushlabels":
            regions[0]["id"] = region_id
        return {"result": regions, "score": self.runtime.engine.score(result), "model_version": version}

    def _session_for(self, task: dict, image: LoadedImage, prompt: Prompt):
        """The click session this request continues or starts; None when the context is not keypoints alone.

        A rectangle in the context starts a new object (the drawn box is segmented, later clicks refine that);
        a typed expression is answered on its own. Keypoints alone continue the task's session, or start one
        from what the annotator sees: the mask of the newest draft, annotation or prediction (with the box
        nested under it, else the task's box, else the mask's own extent).
        """
        from annotate.geometry import mask_box
        from annotate.masks import mask_digest
        from backend.sessions import Sessions
        from converters.labelstudio.shown import requesting_user, shown_region

        sessions = self.runtime.sessions
        key = Sessions.key(self.project_id, task.get("id"), requesting_user(task))
        if prompt.box is not None:
            sessions.start(key, image.key, prompt.box, None, None, None, "rectangle")
            return None
        if not prompt.points:
            return None
        session = sessions.get(key, image.key)
        shown = shown_region(task, self.schema, image.width, image.height, prompt.points, self.model_version)
        if session is not None and session.continues(
                None if shown is None else mask_digest(shown.mask), list(zip(prompt.points, prompt.point_labels))):
            return session
        data = task.get("data") or {}
        box = task_box(data, image.width, image.height)
        if shown is not None:
            box = shown.box or box or mask_box(shown.mask)
            log.info("task %s: clicks refine the %s mask%s", task.get("id"), shown.source,
                     f" (region {shown.region_id})" if shown.region_id else "")
            return sessions.start(key, image.key, box, shown.mask, shown.region_id, shown.label, shown.source)
        if box is None:
            return None  # nothing shown and no box: the clicks alone say where the object is
        return sessions.start(key, image.key, box, None, None, None, "task box")

    def _predict_batch(self, tasks: list[dict], errors: Optional[dict[int, str]] = None) -> list[dict]:
        """One prediction per task (empty when the task cannot be predicted), same order.

        The one task → prediction path: the backend's batch ``/predict`` and ``pslg prelabel`` both call it.
        ``errors`` (when given) receives ``{task index: reason}`` for every task answered with an empty
        prediction, so a bulk job can list them and retry them later instead of storing empty predictions.
        Images are loaded first and then run together through ``Engine.run_many``, which spreads them over
        the engine's worker processes when it has some.
        """
        version = self.model_version
        out: list[Optional[dict]] = [None] * len(tasks)
        failures: dict[str, list[Any]] = {}

        def fail(i: int, reason: str) -> None:
            task = tasks[i] if isinstance(tasks[i], dict) else {}
            tid = task.get("id")
            failures.setdefault(reason, []).append(tid if tid is not None else f"#{i} of the batch")
            if errors is not None:
                errors[i] = reason
            out[i] = self._empty(version, reason)

        try:
            return self._run_batch(tasks, out, fail, version)
        finally:
            if failures:  # one line per batch, whatever its size (a line per task let a body write gigabytes)
                log.warning("%s", failure_summary(failures, len(tasks)))

    def _run_batch(self, tasks: list[dict], out: list[Optional[dict]], fail, version: str) -> list[dict]:
        how_of: dict[int, tuple[str, Optional[str]]] = {}
        self.last_label_how = how_of
        by_image: dict[str, list[int]] = {}
        for i, task in enumerate(tasks):
            try:
                url = self.schema.image_url((task or {}).get("data") or {})
            except Exception as exc:  # a malformed task fails alone (deep nesting, odd types)
                fail(i, f"unreadable task data ({type(exc).__name__})")
                continue
            if url is None:
                fail(i, f"no image under data.{self.schema.image_key}")
                continue
            by_image.setdefault(url, []).append(i)
        has_grounder = self.runtime.engine.has_grounder
        generalized = self.schema.no_target_name is not None and has_grounder
        threshold = float(getattr(getattr(self.runtime, "settings", None), "target_threshold", 0.3))
        jobs: list[tuple[LoadedImage, list[int], list[Prompt], list[Optional[float]]]] = []
        for url, indices in by_image.items():
            try:
                image = self._load(url)
            except Exception as exc:
                for i in indices:
                    fail(i, str(exc))
                continue
            prompts: list[Prompt] = []
            runnable: list[int] = []
            grounded: list[Optional[float]] = []  # a generalized expression's box score, per prompt
            for i in indices:
                data = tasks[i].get("data") or {}
                expression = self.schema.expression(data)
                try:
                    box = task_box(data, image.width, image.height)
                    # the task's label picks the learned shape prior of its class (annotate.priors)
                    try:
                        category, how, named = self._task_label(expression, data)
                    except UnmatchedLabelError:
                        how_of[i] = ("unmatched", task_category(data))
                        raise
                    how_of[i] = (how, named)
                    if generalized and expression:
                        # stage 1 decides: every object the expression names, or none (backend-side, so the
                        # no-target answer needs no stage 2 at all)
                        targets, best = self.runtime.engine.ground_targets(image.rgb, expression, threshold)
                        if not targets:
                            out[i] = {"result": [no_target_region(self.schema, 1.0 - best)],
                                      "score": 1.0 - best, "model_version": version}
                            continue
                        for cand in targets:
                            prompts.append(Prompt(box=cand.box, text=expression, category=category))
                            runnable.append(i)
                            grounded.append(float(cand.score))
                        continue
                    if has_grounder and expression:
                        prompts.append(Prompt(text=expression, category=category))
                    elif box is not None:
                        prompts.append(Prompt(box=box, text=expression, category=category))
                    elif not expression:
                        raise ValueError("the task has no referring expression and no bbox")
                    else:
                        raise ValueError("no grounding model is configured (PSLG_GROUNDING_MODEL) and the task has no bbox")
                except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # this task's data only
                    fail(i, str(exc) if isinstance(exc, ValueError) else f"unreadable task data ({type(exc).__name__}: {exc})"[:300])
                    continue
                runnable.append(i)
                grounded.append(None)
            if prompts:
                jobs.append((image, runnable, prompts, grounded))
        all_results = self.runtime.engine.run_many([(image.rgb, prompts, image.key) for image, _, prompts, _ in jobs])
        for (image, runnable, prompts, grounded), results in zip(jobs, all_results):
            per_task: dict[int, list[tuple[Prompt, PromptResult, Optional[float]]]] = {}
            for i, prompt, result, box_score in zip(runnable, prompts, results, grounded):
                per_task.setdefault(i, []).append((prompt, result, box_score))
            for i, answers in per_task.items():
                if answers[0][2] is None:
                    self._answer_one(tasks[i], i, image, *answers[0][:2], out, fail, version)
                else:
                    self._answer_objects(tasks[i], i, image, answers, out, fail, version)
        tally = LabelTally()
        for how, named in how_of.values():
            tally.add(how, named)
        if tally.unmatched:
            log.warning("%d task(s) of this batch failed on their category: %s", sum(tally.unmatched.values()),
                        tally.summary())
        self._pin_project_version(version)
        return [o if o is not None else self._empty(version) for o in out]

    def _answer_one(self, task: dict, i: int, image: LoadedImage, prompt: Prompt, result: PromptResult,
                    out: list[Optional[dict]], fail, version: str) -> None:
        """A one-object task's prediction: its regions, score and the pre-label kept for learning."""
        data = task.get("data") or {}
        if not result.ok:
            fail(i, str(result.error))
            return
        label = prompt.category if task_category(data) is not None else self.schema.choose_label(prompt.text, data)
        score = self.runtime.engine.score(result)
        out[i] = {"result": self._regions(image, result, label, prompt.text, with_box=True),
                  "score": score, "model_version": version}
        self._keep_prelabel(task, version, score, result)

    def _answer_objects(self, task: dict, i: int, image: LoadedImage,
                        answers: list[tuple[Prompt, PromptResult, Optional[float]]], out: list[Optional[dict]], fail,
                        version: str) -> None:
        """A generalized expression's prediction: one region (with its box) per object stage 1 chose.

        An object whose mask fails is left out; the task fails only when every object did. The score is the
        lowest object's: one doubtful object is enough to ask for review.
        """
        data = task.get("data") or {}
        regions: list[dict] = []
        scores: list[float] = []
        errors: list[str] = []
        for prompt, result, box_score in answers:
            if not result.ok:
                errors.append(str(result.error))
                continue
            result.grounding_score = box_score
            label = prompt.category if task_category(data) is not None else self.schema.choose_label(prompt.text, data)
            regions += self._regions(image, result, label, None, with_box=True)
            scores.append(self.runtime.engine.score(result))
        if not scores:
            fail(i, errors[0] if errors else "no object could be segmented")
            return
        out[i] = {"result": regions, "score": min(scores), "model_version": version}

    def _pin_project_version(self, version: str) -> None:
        """With a token configured, keep the project's model version on the served one (``backend.project_version``)."""
        if self.project_id is None or self.runtime.credentials(self.project_id) is None:
            return
        from backend.project_version import PINS

        try:
            # in the background: Label Studio accepts the version once it stored this answer's predictions
            PINS.in_background(self.runtime.fetcher(self.project_id).auth, self.project_id, version)
        except ValueError as exc:  # a project id that is not a Label Studio id: nothing to pin
            log.warning("project %s: model version not pinned: %s", self.project_id, exc)

    def _keep_prelabel(self, task: dict, version: str, score: float, result: PromptResult) -> None:
        """Store the served pre-label beside the task's future correction: the quality estimate's training pairs."""
        store = getattr(self.runtime, "store", None)
        if store is None or task.get("id") is None:
            return
        from annotate.masks import coco_rle_encode

        try:
            store.record_prelabel(self.project_id, task["id"], version, score, dict(result.features),
                                  coco_rle_encode(result.mask))
        except (ValueError, OSError) as exc:  # the prediction is still served; only its pairing is lost
            log.warning("task %s: pre-label not kept for learning: %s", task.get("id"), exc)

    # --- fit ---------------------------------------------------------------------------------------------------
    def fit(self, event: str, data: dict, **kwargs: Any) -> dict:
        return self.runtime.handle_event(event, data)


def failure_summary(failures: dict[str, list[Any]], total: int, *, reasons: int = 5, ids: int = 5) -> str:
    """One bounded log line for the tasks of a batch that got empty predictions: count, then the commonest
    reasons (each cut to 200 characters) with a few task ids each."""
    failed = sum(len(v) for v in failures.values())
    ranked = sorted(failures.items(), key=lambda kv: -len(kv[1]))
    parts = [f"{len(tids)} × {reason[:200]!s} (task {', '.join(str(t) for t in tids[:ids])}"
             f"{', ...' if len(tids) > ids else ''})" for reason, tids in ranked[:reasons]]
    more = f"; and {len(ranked) - reasons} other reason(s)" if len(ranked) > reasons else ""
    return f"{failed} of {total} task(s) got an empty prediction: " + "; ".join(parts) + more


def _score(result: PromptResult) -> float:
    """Today's score (before a quality estimate is learned): ``annotate.quality.fallback_score``."""
    from annotate.quality import fallback_score

    return fallback_score(result)


def predict_envelopes(model: PSLGModel, tasks: Sequence[dict], context: Optional[dict]) -> list[dict]:
    """``model.predict`` with the protocol's guarantee: exactly one prediction per task, in order."""
    results = model.predict(list(tasks), context=context)
    if len(results) != len(tasks):
        raise RuntimeError(f"model returned {len(results)} predictions for {len(tasks)} tasks")
    return results

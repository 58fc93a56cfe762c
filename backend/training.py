"""Learning from corrections: export stored annotations to a grounding training set, retrain in the background.

What is retrained: stage 1 (the grounding model), with ``annotate.grounding.training.train_grounder``. Stored
annotations are read by the same rules as ``pslg export rrsis`` (``converters.labelstudio.task_to_item`` with
the project's labeling config: a task's latest annotation, its brush strokes merged for a one-expression task,
per-region TextAreas paired with their region by id); each (object, expression) gives one sample — the task
image, the expression, and the box of the object's mask. Stage 2 (SAM / classical) is not retrained:
corrections mostly fix *which* object an expression names, which is the grounding model's job.

Without a grounding model (the weights-free default) stage 2 learns instead (``learn_stage2``): per-category
shape priors (``annotate.priors``) from the corrected masks in their task boxes, and the quality estimate
(``annotate.quality``) from each task's stored pre-label paired with its correction. The two are committed as
one version of kind ``shape-priors`` to the same model store as the grounders, and the engine serves it: a new
``model_version``, so Label Studio re-predicts, with the learned masks and the predicted-IoU score.

A retrain runs in one background thread at a time; a request arriving meanwhile is queued once (the next run
picks up everything stored until then). A retrain starts from the served model and commits a new version to
the engine's model store (``backend.model_source``: the configured store, else ``MODEL_DIR/grounders``), its
card recording the configured model it came from; the engine then serves it (new ``model_version``), also
after a restart. On failure the old model stays and the error is logged and shown on ``/health``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from annotate.geometry import mask_box
from annotate.priors import ANY
from backend.engine import Engine
from backend.store import TrainingStore
from converters.labelstudio.annotations import select_annotation, task_to_item
from converters.labelstudio.media import FetchedImages
from converters.labelstudio.schema import LabelConfigError, LabelSchema
from converters.model import ImageItem, Report

log = logging.getLogger("pslg.backend.training")

IDLE, RUNNING, SUCCEEDED, FAILED, SKIPPED = "idle", "running", "succeeded", "failed", "skipped"
#: the training store's meta keys: the stored annotations' digest when the last retrain succeeded, and its outcome
TRAINED_DIGEST, TRAINED_OUTCOME = "trained_digest", "trained_outcome"
ONE_STAGE_SERVED_AS_IS = (
    "not retrained: the one-stage model (PSLG_ONE_STAGE_MODEL, SAM 3) is served as it is; Start Training fine-tunes "
    "a two-stage pipeline's grounder or learns its shape priors; the {n} stored corrections stay for `pslg export`"
)
NO_GROUNDER = (
    "no grounding model is configured (PSLG_GROUNDING_MODEL): learning the weights-free stage 2 instead "
    "(per-category shape priors and the quality estimate, from the stored corrections)"
)


@dataclass
class TrainingStatus:
    state: str = IDLE
    runs: int = 0
    last_error: Optional[str] = None
    last_version: Optional[str] = None
    last_samples: int = 0
    last_skipped: list[str] = field(default_factory=list)
    finished_at: Optional[float] = None
    #: one line saying what the last retrain did ("served v0004: +0.031 mIoU on 42 held-out corrections; ...")
    last_outcome: Optional[str] = None


class Trainer:
    """Runs retraining jobs in a background thread, one at a time."""

    def __init__(self, engine: Engine, store: TrainingStore, model_dir: Path,
                 fetch_image: Callable[[str, Optional[str]], bytes], epochs: Optional[int] = None) -> None:
        self.engine = engine
        self.store = store
        self.model_dir = Path(model_dir)
        self.fetch_image = fetch_image
        self.epochs = epochs
        self.status = TrainingStatus()
        self._lock = threading.Lock()
        self._pending = False
        self._thread: Optional[threading.Thread] = None
        self._idle = threading.Event()
        self._idle.set()
        self._digest_at_start: Optional[str] = None
        self.status.last_outcome = store.get_meta(TRAINED_OUTCOME)

    @property
    def outcome(self) -> Optional[str]:
        """The last retrain's outcome (kept across restarts in the training store)."""
        return self.status.last_outcome

    def request(self, reason: str) -> str:
        """Ask for a retrain; returns at once with what will happen (``started`` or ``queued``)."""
        what = f" ({NO_GROUNDER})" if self.engine.ready and not self.engine.has_grounder else ""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._pending = True
                return "queued: a retrain is running; another one follows it" + what
            if self.store.get_meta(TRAINED_DIGEST) == self.store.digest():
                last = self.status.last_outcome or "see /health"
                return (f"nothing new: no annotation was stored, changed or deleted since the last retrain "
                        f"({self.store.count()} stored); nothing trained or committed. Last outcome: {last}")
            self._idle.clear()
            self._thread = threading.Thread(target=self._loop, args=(reason,), name="pslg-train", daemon=True)
            self._thread.start()
        return "started" + what

    def request_and_wait(self, reason: str, timeout: float) -> dict[str, Any]:
        """``request`` and wait up to ``timeout`` s for the outcome, so a Start Training answer can carry it.

        The answer has ``training`` (what happened to the request) and, once known, ``outcome`` (the one-line
        result) and ``job`` (the same line cut to the 128 characters Label Studio stores as the training job).
        """
        runs = self.status.runs
        answer: dict[str, Any] = {"training": self.request(reason)}
        nothing_new = answer["training"].startswith("nothing new")
        if not nothing_new and timeout > 0 and self.wait_idle(timeout) and self.status.runs > runs:
            if self.status.state == FAILED:
                answer["outcome"] = f"retraining failed, the served version is kept: {self.status.last_error}"
            else:
                answer["outcome"] = self.status.last_outcome
        elif nothing_new:
            answer["outcome"] = answer["training"]
        else:
            answer["outcome"] = f"{answer['training'].split(' (')[0]}: the outcome will be on /health"
        if answer.get("outcome"):
            answer["job"] = _short(str(answer["outcome"]))
        return answer

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until no retrain is running or queued (for tests and shutdown)."""
        return self._idle.wait(timeout)

    def _loop(self, reason: str) -> None:
        try:
            while True:
                self._train_once(reason)
                with self._lock:
                    if not self._pending:
                        self._thread = None
                        self._idle.set()
                        return
                    self._pending = False
                    reason = "queued request"
                if self.store.get_meta(TRAINED_DIGEST) == self.store.digest():  # the run before took it all
                    with self._lock:
                        if not self._pending:
                            self._thread = None
                            self._idle.set()
                            return
        except BaseException:  # never leave waiters hanging
            with self._lock:
                self._thread = None
                self._idle.set()
            raise

    def _train_once(self, reason: str) -> None:
        self.status.state = RUNNING
        t0 = time.perf_counter()
        log.info("retraining (%s)", reason)
        self._digest_at_start = self.store.digest()
        try:
            if not self.engine.wait_ready(timeout=600):
                raise RuntimeError(f"the models are not loaded: {self.engine.error or 'still loading'}")
            if self.engine.settings.one_stage_model:  # nothing here fine-tunes SAM 3: say so, commit nothing
                version, n, skipped = self.engine.model_version, 0, []
            elif not self.engine.has_grounder:
                version, n, skipped = self.learn_stage2()
            else:
                version, n, skipped = self._retrain()
        except Exception as exc:
            self.status.state = FAILED
            self.status.last_error = f"{type(exc).__name__}: {exc}"
            log.error("retraining failed, keeping model %s: %s", self.engine.model_version, self.status.last_error)
        else:
            self.status.state = SUCCEEDED
            self.status.last_error = None
            self.status.last_version = version
            self.status.last_samples = n
            self.status.last_skipped = skipped
            if self.engine.settings.one_stage_model:
                self.status.last_outcome = ONE_STAGE_SERVED_AS_IS.format(n=self.store.count())
                log.info("%s", self.status.last_outcome)
            elif self.engine.has_grounder:
                self.status.last_outcome = f"served {version}: grounding model retrained on {n} samples"
            self.store.set_meta(TRAINED_DIGEST, self._digest_at_start or "")
            self.store.set_meta(TRAINED_OUTCOME, self.status.last_outcome or "")
            log.info("retrained on %d annotations in %.1f s; now serving %s", n, time.perf_counter() - t0, version)
        finally:
            self.status.runs += 1
            self.status.finished_at = time.time()

    def export_samples(self, work: Path) -> tuple[list[Any], list[str]]:
        """The training set: ``GroundingSample``s (images written under ``work``) and why anything was left out.

        Built by the converters' rules (``training_items``), so an annotation trains on exactly the (image,
        expression, mask, box) that ``pslg export rrsis`` would write for it.
        """
        from annotate.grounding.evaluation import GroundingSample

        samples: list[Any] = []
        skipped: list[str] = []
        # one task's masks at a time: only boxes are kept
        for task_id, item in iter_training_items(self.store, self.fetch_image, work, skipped,
                                                 max_pixels=self.engine.settings.max_pixels):
            for obj in item.objects:
                box = mask_box(obj.mask)
                if box is None:
                    skipped.append(f"{obj.where}: the brush mask is empty")
                    continue
                samples += [GroundingSample(image_path=Path(item.path), expression=expression, box=box,
                                            category=obj.category, ref_id=task_id)
                            for expression in obj.expressions]
        return samples, skipped

    def learn_stage2(self) -> tuple[str, int, list[str]]:
        """Fit a candidate (shape priors + quality estimate) from the stored corrections, validate it against the
        served version on held-out corrections (``annotate.promotion``), commit it, and serve it only if it won.

        Returns (model version served afterwards, corrected objects learned from, messages about what was left out).
        ``self.status.last_outcome`` gets the one-line outcome.
        """
        from annotate.geometry import mask_iou
        from annotate.image_io import load_image
        from annotate.masks import coco_rle_decode
        from annotate.modelstore import ModelCard
        from annotate.priors import PriorSample, ShapePriors
        from annotate.promotion import ADOPT_MARGIN as PRIOR_MARGIN, Pair, pipeline_segment, validate_priors
        from annotate.quality import QualityModel, spearman
        from backend.engine import LEARNED_KIND, Learned, learned_store
        from converters.labelstudio.tasks import task_box

        settings = self.engine.settings
        work = self.model_dir / "training-data"
        work.mkdir(parents=True, exist_ok=True)
        skipped: list[str] = []
        # lazily, one task's full-size masks at a time: each sample keeps only its mask's crop to its box (the
        # priors see exactly the same cells), so 40 corrections of 5000² images no longer hold 40 full masks
        items = iter_training_items(self.store, self.fetch_image, work, skipped,
                                    max_pixels=self.engine.settings.max_pixels)
        stored = {a.task_id: a for a in self.store.annotations()}  # Label Studio task ids are unique per server
        prelabels = self.store.prelabels()
        samples: list[PriorSample] = []
        pairs: list[Pair] = []
        features: list[dict] = []
        ious: list[float] = []
        served_scores: list[float] = []
        for task_id, item in items:
            project = stored[task_id].project if task_id in stored else None
            data = (stored[task_id].task.get("data") or {}) if task_id in stored else {}
            try:
                prompt_box = task_box(data, item.width, item.height)
            except ValueError:
                prompt_box = None
            union = None
            for obj in item.objects:
                box = prompt_box if prompt_box is not None and len(item.objects) == 1 else mask_box(obj.mask)
                if box is None:
                    skipped.append(f"{obj.where}: the brush mask is empty")
                    continue
                samples.append(cropped_sample(obj.mask, box, obj.category))
                union = obj.mask if union is None else (union | obj.mask)
                if prompt_box is not None and len(item.objects) == 1:  # what a pre-label of this task was prompted with
                    pairs.append(Pair(str(item.path), prompt_box, str(obj.category), np.asarray(obj.mask, bool)))
            kept = prelabels.get((project, task_id))
            if kept is not None and union is not None:
                pre = coco_rle_decode(kept.mask_rle).astype(bool)
                if pre.shape == union.shape:
                    features.append(kept.features)
                    ious.append(mask_iou(pre, union))
                    served_scores.append(kept.score)
                else:
                    skipped.append(f"task {task_id}: its pre-label was made on a {pre.shape} image, the correction "
                                   f"on {union.shape}; not used for the quality estimate")
        if not samples:
            raise ValueError("no stored annotation has a brush mask to learn from")
        served = self.engine.learned
        served_priors = served.priors if served is not None else None
        served_quality = served.quality if served is not None else QualityModel()

        # the shape priors: per class, validated on held-out corrections
        pipeline = self.engine.pipeline
        validation = None
        if getattr(pipeline.segmenter, "uses_category", False) and hasattr(pipeline.segmenter, "params"):
            def image_of(path: str) -> np.ndarray:
                return load_image(path, max_pixels=settings.max_pixels).rgb

            validation = validate_priors(pairs, pipeline_segment(pipeline, image_of), served_priors,
                                         min_samples=settings.adopt_min_samples, prior_min_samples=settings.prior_min_samples)
        candidate_priors = ShapePriors.fit(samples, min_samples=settings.prior_min_samples)
        candidate_priors = ShapePriors({k: v for k, v in candidate_priors.categories.items() if k != ANY},
                                       candidate_priors.grid, candidate_priors.min_samples)

        # the score: the quality estimate replaces the served score when it ranks the stored pairs better
        quality = QualityModel.fit(features, ious, min_pairs=settings.quality_min_pairs)
        served_rho = spearman(served_scores, ious) if len(ious) > 1 else 0.0
        quality_adopted, quality_note = quality_choice(quality, served_rho, len(ious), settings.quality_min_pairs)

        changed = validation is not None and validation.changed
        promoted = (changed and validation.no_worse) or quality_adopted  # type: ignore[union-attr]
        classes = validation.class_summary() if validation is not None else "shape priors not used by this segmenter"
        held = f"{validation.pairs} held-out corrections" if validation is not None else "no held-out corrections"
        if promoted:
            serve_priors = validation.priors if changed else served_priors  # type: ignore[union-attr]
            serve_quality = quality if quality_adopted else served_quality
            gain = validation.gain if validation is not None and changed else 0.0
            why = None
        else:
            serve_priors, serve_quality, gain = candidate_priors if candidate_priors.categories else None, quality, 0.0
            why = (f"no class's learned prior beat what it is served on its held-out corrections (at least "
                   f"{settings.adopt_min_samples} of them, by {PRIOR_MARGIN} mIoU), and the quality estimate did not rank the "
                   f"stored pairs better than the served score")
        store = learned_store(settings)
        staging = store.staging(f"learned-{self.store.last_seq()}")
        if serve_priors is not None:
            serve_priors.save(staging)
        serve_quality.save(staging)
        metrics = {
            "categories": {k: {"samples": v.samples, "level": v.level, "fit_iou": round(v.fit_iou, 4)}
                           for k, v in (serve_priors.categories.items() if serve_priors is not None else [])},
            "quality_pairs": len(ious), "quality_fitted": serve_quality.fitted,
            "quality_cv_spearman": serve_quality.cv_spearman, "served_score_spearman": round(served_rho, 4),
            "validation": validation.to_dict() if validation is not None else None,
            "promoted": promoted,
        }
        card = ModelCard(kind=LEARNED_KIND, base="classical-defaults", samples=len(samples), metrics=metrics,
                         data_digest=self._digest_at_start)
        name_next = f"v{(max([v.number for v in store.versions()] or [0]) + 1):04d}"
        if promoted:
            outcome = f"served {name_next}: {gain:+.3f} mIoU on {held}; {classes}; {quality_note}"
        else:
            outcome = f"not served ({name_next} stored): {held}; {classes}; {quality_note}"
        metrics["outcome"] = outcome
        version = store.commit(staging, card, not_served=None if promoted else why)
        if version.name != name_next:  # another writer took the number meanwhile
            outcome = outcome.replace(name_next, version.name, 1)
            metrics["outcome"] = outcome
        self.status.last_outcome = outcome
        if promoted:
            log.info("training outcome: %s", outcome)
            served_version = self.engine.adopt_learned(
                Learned(version.card.label if version.card else version.name, serve_priors, serve_quality))
        else:
            log.warning("candidate %s not served: %s. %s", version.name, why, outcome)
            served_version = self.engine.model_version
        return served_version, len(samples), skipped

    def _retrain(self) -> tuple[str, int, list[str]]:
        from annotate.grounding import load_grounder
        from annotate.grounding.training import TrainConfig, train_grounder

        work = self.model_dir / "training-data"
        work.mkdir(parents=True, exist_ok=True)
        samples, skipped = self.export_samples(work)
        for msg in skipped:
            log.warning("not used for training: %s", msg)
        if not samples:
            raise ValueError("no stored annotation has an expression and a brush mask to learn from")
        source = self.engine.source
        if source is None:
            raise RuntimeError("this engine was not configured with a grounding model to retrain")
        config = TrainConfig(epochs=self.epochs) if self.epochs else TrainConfig()
        result = train_grounder(
            samples, [], base=source.training_base(), out_dir=source.store.root, config=config,
            device=self.engine.settings.device, progress=False, log=lambda m: log.info("train: %s", m),
            configured=source.key,
        )
        from backend.model_source import Candidate

        grounder = load_grounder(str(result.path), device=self.engine.settings.device)
        version = self.engine.adopt(grounder, Candidate(str(result.path), result.path.name))
        return version, len(samples), skipped


def quality_choice(quality, served_rho: float, pairs: int, min_pairs: int) -> tuple[bool, str]:
    """Whether a newly fitted quality estimate replaces the served score, and the outcome's phrase saying why:
    only when its cross-validated Spearman rho on the stored pairs beats the served score's by ``ADOPT_MARGIN``."""
    from annotate.quality import ADOPT_MARGIN

    if not quality.fitted:
        return False, f"score kept ({pairs} < {min_pairs} pairs)"
    if quality.cv_spearman is None:
        return False, f"score kept ({pairs} pairs are too few to cross-validate)"
    verdict = "quality estimate adopted" if quality.cv_spearman > served_rho + ADOPT_MARGIN else "score kept, quality estimate"
    return verdict.startswith("quality"), f"{verdict} (rho {quality.cv_spearman:.2f} vs {served_rho:.2f} on {pairs} pairs)"


def _short(line: str, limit: int = 128) -> str:
    """``line`` cut to ``limit`` characters (Label Studio keeps a training job id in a 128-character field)."""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def label_config_key(project: Any) -> str:
    """The training store's meta key under which a project's labeling config is kept."""
    return f"label_config:{'' if project is None else project}"


def project_schema(store: TrainingStore, project: Optional[str]) -> LabelSchema:
    """The schema of a project's stored labeling config; the conventional layout when none was received."""
    from backend.model import parse_schema

    config = store.get_meta(label_config_key(project))
    if config:
        try:
            return parse_schema(config)
        except LabelConfigError as exc:
            log.warning("project %s: stored labeling config unusable (%s); reading annotations by the default layout",
                        project, exc)
    return LabelSchema()


def cropped_sample(mask: Any, box: Any, category: str) -> Any:
    """A ``PriorSample`` whose mask is cut to its box (clipped to the image), the box moved into the crop.

    ``box_normalised`` cuts the same integer window (floor/ceil of the box, clipped), so the learned cells are
    identical, while a small object of a 5000² correction keeps kilobytes instead of 25 MB.
    """
    import numpy as np

    from annotate.priors import PriorSample

    h, w = mask.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    xi0, yi0 = int(np.clip(np.floor(x0), 0, w)), int(np.clip(np.floor(y0), 0, h))
    xi1, yi1 = int(np.clip(np.ceil(x1), 0, w)), int(np.clip(np.ceil(y1), 0, h))
    crop = np.ascontiguousarray(mask[yi0:max(yi0, yi1), xi0:max(xi0, xi1)])
    return PriorSample(crop, (x0 - xi0, y0 - yi0, x1 - xi0, y1 - yi0), category)


def training_items(store: TrainingStore, fetch_image: Callable[[str, Optional[str]], bytes], work: Path,
                   max_pixels: Optional[int] = None) -> tuple[list[tuple[Any, ImageItem]], list[str]]:
    """Stored annotations → ``(task id, ImageItem)`` by the converters' ``task_to_item`` (per project: its
    labeling config, its image fetcher), plus one message per annotation or region left out.

    A task's stored annotations compete as in an export (``select_annotation``: the latest live one wins).
    Every item is held at once; the trainer itself iterates (:func:`iter_training_items`).
    """
    messages: list[str] = []
    items = list(iter_training_items(store, fetch_image, work, messages, max_pixels=max_pixels))
    return items, messages


def iter_training_items(store: TrainingStore, fetch_image: Callable[[str, Optional[str]], bytes], work: Path,
                        messages: list[str], max_pixels: Optional[int] = None) -> Iterator[tuple[Any, ImageItem]]:
    """:func:`training_items` one item at a time; the messages are appended to ``messages`` as each project
    is done (complete once the iterator is exhausted)."""
    tasks: dict[tuple[Optional[str], Any], dict] = {}
    for stored in store.annotations():
        key = (stored.project, stored.task_id)
        task = tasks.get(key)
        if task is None:
            task = {**stored.task, "id": stored.task_id, "annotations": []}
            tasks[key] = task
        task["annotations"].append(stored.annotation)
    for project in dict.fromkeys(p for p, _ in tasks):
        report = Report()
        folder = work / f"project-{project if project is not None else 'none'}"  # image-N.png are per resolver
        folder.mkdir(parents=True, exist_ok=True)
        images = FetchedImages(lambda src, project=project: fetch_image(src, project), folder, max_pixels)
        group = [t for (p, _), t in tasks.items() if p == project]
        schema = project_schema(store, project)
        for task in group:
            annotation = select_annotation(task, "latest", report)
            item = task_to_item(task, annotation, schema, images, report) if annotation is not None else None
            if item is not None:
                yield task["id"], item
        messages += [str(e) for e in report.errors]
        messages += [f"{n} task(s): {reason}" for reason, n in report.skipped.items()]

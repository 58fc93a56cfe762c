"""The per-process models: loaded once, in the background, and swapped atomically after retraining.

Why in the background: Label Studio gives ``/setup`` 3 s and ``/health`` 1 s, while loading SAM ViT-H takes
longer than that on a CPU. The engine starts loading when the app is created; ``/health`` reports the state and
``/predict`` waits (bounded) for readiness instead of loading anything per request.

Why a lock per prompt, granted first come first served (``backend.scheduling.FifoLock``): a segmenter is
stateful (``set_image`` then ``predict``), so two threads must not interleave on it, but a batch must not hold
it for all its prompts either: another request waits at most for the prompt in progress (re-``set_image`` is
cheap for the classical segmenter and cached for SAM). ``PSLG_INFERENCE_BUDGET`` bounds one request's total
inference time: prompts not started when it is spent fail with a message.

Which grounding model is served comes from ``backend.model_source``: the configured model or its model
store's current version, with fallback to an older good version. A background thread polls the store (every
``PSLG_MODEL_POLL`` seconds, and at once when ``/setup`` asks) and swaps in a newer version without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from functools import partial
from typing import Callable, Optional, Sequence

import numpy as np

from annotate.types import Prompt, PromptResult
from backend.config import Settings
from backend.model_source import GroundingSource
from backend.scheduling import FifoLock

log = logging.getLogger("pslg.backend.engine")

LOADING, READY, FAILED = "loading", "ready", "error"


_FROM_SETTINGS = object()

#: The model-store kind of a learned stage 2 (shape priors + quality estimate), beside the grounders' versions.
LEARNED_KIND = "shape-priors"


class Learned:
    """A learned stage-2 version: per-category shape priors (classical segmenter) and the quality estimate."""

    def __init__(self, label: str, priors, quality) -> None:
        self.label = label
        self.priors = priors
        self.quality = quality


def learned_store(settings: Settings):
    """The model store the learned stage 2 is versioned in: the grounders' store (same lineage)."""
    from annotate.modelstore import ModelStore
    from pathlib import Path

    if settings.grounding_model:
        return GroundingSource(settings.grounding_model, settings.model_dir).store
    return ModelStore(Path(settings.model_dir) / "grounders")


def load_learned(settings: Settings, problems: Optional[list[str]] = None) -> Optional[Learned]:
    """The store's current learned stage 2 (newest good version first); None when there is none or none loads.

    Never raises: a corrupt version (truncated ``priors.npz``, a card field of the wrong type, anything its
    loaders trip on) is skipped for the next older one, and an unreadable store (``store.json``,
    ``current.json``) serves the defaults; each reason is logged and appended to ``problems``. A broken file
    must cost the learned shapes, never the backend's readiness.
    """
    from annotate.priors import ShapePriors, is_priors_dir
    from annotate.quality import QUALITY_JSON, QualityModel

    def problem(message: str) -> None:
        log.error("%s", message)
        if problems is not None:
            problems.append(message)

    try:
        store = learned_store(settings)
        candidates = store.candidates(LEARNED_KIND)
        for version in store.versions():  # a version whose card is unreadable is never a candidate: say so
            if version.card_error and (not candidates or version.number > candidates[0].number):
                problem(f"model store version {version.name} skipped: {version.card_error}")
    except Exception as exc:  # ModelStoreError, or whatever an odd store state raises
        problem(f"learned stage 2 not served: the model store is unreadable ({type(exc).__name__}: {exc}); "
                "serving the defaults")
        return None
    for version in candidates:
        try:
            priors = ShapePriors.load(version.path) if is_priors_dir(version.path) else None
            quality = QualityModel.load(version.path) if (version.path / QUALITY_JSON).is_file() else QualityModel()
            label = version.card.label if version.card else version.name
        except Exception as exc:  # zipfile.BadZipFile, EOFError... as well as the loaders' ValueError
            problem(f"learned stage 2 {version.name} unusable ({type(exc).__name__}: {exc}); trying an older version")
            continue
        return Learned(label, priors, quality)
    return None


def load_pipeline(settings: Settings, grounder=_FROM_SETTINGS):
    """The pipeline ``settings`` describe (segmenter, grounder, CFPG/MBO switches), built by ``annotate.factory``.

    Module-level so worker processes (``backend.pool``, ``pslg prelabel``) build exactly the same pipeline.
    ``grounder`` (a loaded grounder or None) replaces resolving ``PSLG_GROUNDING_MODEL`` here.
    """
    from annotate.factory import build_pipeline

    s = settings
    if s.one_stage_model:  # SAM 3 grounds and segments by itself
        from annotate.factory import build_one_stage_pipeline

        return build_one_stage_pipeline(s.one_stage_model, device=s.device, use_cfpg=s.use_cfpg, use_mbo=s.use_mbo,
                                        precision=s.precision)
    if grounder is _FROM_SETTINGS:
        grounder = None
        if s.grounding_model:
            grounder, _ = GroundingSource(s.grounding_model, s.model_dir).load(s.device)
    segmenter = None
    if not s.sam_checkpoint:  # the weights-free segmenter serves the learned shape priors, when there are some
        from annotate.segmenters.classical import ClassicalSegmenter

        learned = load_learned(s)
        if learned is not None and learned.priors is not None:
            segmenter = ClassicalSegmenter(priors=learned.priors)
    if segmenter is None and s.sam_checkpoint:
        from annotate.factory import build_segmenter

        segmenter = build_segmenter(s.sam_checkpoint, s.sam_model_type, device=s.device, precision=s.precision)
    pipeline = build_pipeline(s.sam_checkpoint, s.sam_model_type, grounding=grounder, device=s.device,
                              use_cfpg=s.use_cfpg, use_mbo=s.use_mbo, segmenter=segmenter)
    if s.embedding_cache and hasattr(pipeline.segmenter, "attach_disk_cache"):  # SAM: embeddings shared on disk
        from annotate.segmenters.embedding_store import DiskEmbeddingCache

        pipeline.segmenter.attach_disk_cache(DiskEmbeddingCache(s.embedding_cache, s.embedding_cache_bytes))
    return pipeline


def pool_workers(settings: Settings) -> int:
    """Worker processes for inference: ``PSLG_WORKERS`` (0 = one per core) for the weights-free pipeline, else 1.

    SAM's encoder runs one image at a time per device and a grounder is swapped in place after retraining,
    so only the pipeline without weights (classical segmenter, boxes from the tasks) is spread over processes.
    """
    if settings.sam_checkpoint or settings.grounding_model or settings.one_stage_model:
        return 1
    return settings.workers if settings.workers > 0 else (os.cpu_count() or 1)


class EngineNotReady(RuntimeError):
    """The models are still loading (or failed to load); the message says which."""


class Engine:
    """Holds the ``annotate.pipeline.Pipeline`` of this process."""

    def __init__(self, settings: Settings, loader: Optional[Callable[[], object]] = None) -> None:
        self.settings = settings
        self._loader = loader or self._default_loader
        self._pipeline = None
        self._pool = None  # backend.pool.InferencePool when the pipeline is spread over worker processes
        self.state = LOADING
        self.error: Optional[str] = None
        self._ready = threading.Event()
        self._run_lock = FifoLock()
        self.versions: list[str] = []
        self.load_seconds: Optional[float] = None
        self._thread: Optional[threading.Thread] = None
        self.source: Optional[GroundingSource] = None
        if loader is None and settings.grounding_model:
            self.source = GroundingSource(settings.grounding_model, settings.model_dir)
        self._refresh_lock = threading.Lock()
        self._refresh_wanted = threading.Event()
        self._stop = threading.Event()
        self._poller: Optional[threading.Thread] = None
        self._store_token: tuple = ()
        #: the served learned stage 2 (shape priors + quality estimate), when one was trained
        self.learned: Optional[Learned] = None
        #: why learned versions were passed over at load (shown on /health)
        self.learned_problems: list[str] = []

    # --- loading ---------------------------------------------------------------------------------------------
    def _default_loader(self):
        if self.source is None:
            return load_pipeline(self.settings)
        self._store_token = self.source.token()
        grounder, candidate = self.source.load(self.settings.device)
        self.source.serving = candidate
        if candidate is not None:
            log.info("grounding model: %s", candidate.label)
        return load_pipeline(self.settings, grounder=grounder)

    def _start_pool(self) -> None:
        """Spread the weights-free pipeline over worker processes (see ``backend.pool``); failures keep one process."""
        workers = pool_workers(self.settings)
        if self._loader != self._default_loader or workers < 2:
            return
        from backend.pool import InferencePool

        try:
            pool = InferencePool(partial(load_pipeline, self.settings), workers)
            pool.warm_up()
        except Exception as exc:
            log.warning("inference worker processes could not start (%s); running in one process", exc)
            return
        self._pool = pool
        log.info("inference spread over %d worker processes", workers)

    def start(self) -> "Engine":
        """Begin loading in a daemon thread (returns at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="pslg-engine-load", daemon=True)
            self._thread.start()
        if self.source is not None and self._poller is None:
            self._poller = threading.Thread(target=self._poll, name="pslg-model-poll", daemon=True)
            self._poller.start()
        return self

    def stop(self) -> None:
        """Stop following the model store (the poller thread ends)."""
        self._stop.set()
        self._refresh_wanted.set()

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            pipeline = self._loader()
            if self._loader == self._default_loader:
                self.learned_problems = []
                self.learned = load_learned(self.settings, self.learned_problems)
            self._start_pool()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = FAILED
            log.error("model loading failed: %s", self.error)
        else:
            self._pipeline = pipeline
            self.versions.append(self.model_version)
            self.state = READY
            self.load_seconds = time.perf_counter() - t0
            log.info("models ready in %.1f s: %s", self.load_seconds, self.model_version)
        finally:
            self._ready.set()

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """Block until loading finished (either way) or ``timeout``; True when the models are usable."""
        self._ready.wait(timeout)
        return self.state == READY

    # --- state -----------------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.state == READY

    @property
    def pipeline(self):
        if self.state == FAILED:
            raise EngineNotReady(f"the models failed to load: {self.error}")
        if self._pipeline is None:
            raise EngineNotReady("the models are still loading; retry in a moment (see /health)")
        return self._pipeline

    @property
    def has_grounder(self) -> bool:
        return self._pipeline is not None and getattr(self._pipeline, "grounder", None) is not None

    @property
    def model_version(self) -> str:
        """``pslg:`` + the pipeline's version (segmenter, grounder weights, flags); changes after retraining."""
        if self._pipeline is None:
            s = self.settings
            return f"pslg:{'sam-' + s.sam_model_type if s.sam_checkpoint else 'classical'}:{self.state}"
        learned = f"+{self.learned.label}" if self.learned is not None else ""
        return f"pslg:{self._pipeline.model_version}{learned}"

    def score(self, result: PromptResult) -> float:
        """A prediction's ``score``: the learned quality estimate (predicted IoU) once fitted, else today's score."""
        from annotate.quality import QualityModel

        quality = self.learned.quality if self.learned is not None else QualityModel()
        return quality.score(result)

    def adopt_learned(self, learned: Learned) -> str:
        """Serve a newly trained learned stage 2 (new segmenter priors, new score); returns the model version."""

        old = self.pipeline
        segmenter = old.segmenter
        if getattr(segmenter, "uses_category", False) and hasattr(segmenter, "params"):  # priors None: hand-made
            from annotate.segmenters.classical import ClassicalSegmenter

            segmenter = ClassicalSegmenter(params=segmenter.params, click_params=segmenter.click_params,
                                           priors=learned.priors)
        new = old.with_parts(segmenter=segmenter)
        with self._run_lock:
            self._pipeline = new
            self.learned = learned
        if self._pool is not None:  # the workers hold the old priors; new ones load the store's current version
            self._pool.close()
            self._pool = None
            self._start_pool()
        version = self.model_version
        if version not in self.versions:
            self.versions.append(version)
        return version

    # --- inference ---------------------------------------------------------------------------------------------
    def run(self, image: np.ndarray, prompts: Sequence[Prompt], image_key: Optional[str]) -> list[PromptResult]:
        """``Pipeline.run`` in a worker process when there is a pool, else under the process lock (segmenters are stateful)."""
        return self.run_many([(image, prompts, image_key)])[0]

    def run_many(self, jobs: Sequence[tuple[np.ndarray, Sequence[Prompt], Optional[str]]]) -> list[list[PromptResult]]:
        """Results of several ``(image, prompts, image_key)`` jobs, in order: in parallel over the pool's workers
        when there is one, else one after the other. A job that fails answers each of its prompts with the error."""
        pipeline = self.pipeline
        pool = self._pool if getattr(pipeline, "grounder", None) is None else None
        out: list[list[PromptResult]] = []
        futures = [pool.submit(*job) for job in jobs] if pool is not None else [None] * len(jobs)
        for (image, prompts, image_key), future in zip(jobs, futures):
            try:
                if future is not None:
                    out.append(future.result())
                    continue
                out.append(self._run_fairly(pipeline, image, prompts, image_key))
            except Exception as exc:
                out.append([PromptResult(mask=None, score=0.0, box=None, error=str(exc)) for _ in prompts])
        return out

    def ground_targets(self, image: np.ndarray, text: str, threshold: float):
        """Stage 1 of a generalized expression (``Pipeline.ground_targets``) under the process lock:
        ``(boxes of the objects it names, best score)``; no boxes = no target."""
        pipeline = self.pipeline
        with self._run_lock:
            return pipeline.ground_targets(image, text, threshold)

    def _run_fairly(self, pipeline, image: np.ndarray, prompts: Sequence[Prompt],
                    image_key: Optional[str]) -> list[PromptResult]:
        """``pipeline.run`` one prompt at a time under the FIFO lock, within the request's time budget."""
        budget = self.settings.inference_budget_s
        t0 = time.monotonic()
        results: list[PromptResult] = []
        for prompt in prompts:
            if budget > 0 and time.monotonic() - t0 > budget:
                results.append(PromptResult(
                    mask=None, score=0.0, box=prompt.box,
                    error=f"not run: this request spent its inference time budget of {budget:g} s "
                          "(PSLG_INFERENCE_BUDGET); send fewer tasks per request"))
                continue
            with self._run_lock:
                results.extend(pipeline.run(image, [prompt], image_key=image_key))
        return results

    # --- following the model store -------------------------------------------------------------------------
    def request_refresh(self) -> None:
        """Ask the poller to look at the model store now (``/setup`` calls this; returns at once)."""
        self._refresh_wanted.set()

    def _poll(self) -> None:
        interval = self.settings.model_poll_s
        while not self._stop.is_set():
            self._refresh_wanted.wait(interval if interval > 0 else None)
            asked = self._refresh_wanted.is_set()
            self._refresh_wanted.clear()
            if self._stop.is_set():
                return
            if not self.ready or self.source is None:
                continue
            try:
                token = self.source.token()
                if asked or token != self._store_token:
                    self._store_token = token
                    self.refresh("/setup" if asked else "the model store changed")
            except Exception as exc:  # the poller must survive a bad store state; the next change retries
                log.error("following the model store failed: %s: %s", type(exc).__name__, exc)

    def refresh(self, reason: str) -> Optional[str]:
        """Serve the store's current version if it is not served yet; returns the new model version or None."""
        if self.source is None or not self.ready:
            return None
        with self._refresh_lock:
            candidates = self.source.candidates()
            if not self.source.wants_reload(candidates):
                return None
            try:
                grounder, candidate = self.source.load(self.settings.device, candidates)
            except RuntimeError as exc:
                self.source.fallback = {"wanted": candidates[0].label, "error": str(exc),
                                        "serving": self.source.serving.label if self.source.serving else None}
                log.error("%s; keeping %s", exc, self.model_version)
                return None
            if candidate == self.source.serving:
                return None
            version = self.swap_grounder(grounder, serving=candidate)
            log.info("now serving grounding model %s (%s): %s", candidate.label, reason, version)
            return version

    def adopt(self, grounder, candidate) -> str:
        """Serve ``grounder``, just loaded from ``candidate`` (a retrain's new version); returns the model version.

        Serialised with :meth:`refresh`, so a poll that already switched to the same version is not repeated.
        """
        with self._refresh_lock:
            if self.source is not None and self.source.serving == candidate:
                return self.model_version
            if self.source is not None:
                self.source.fallback = None
            return self.swap_grounder(grounder, serving=candidate)

    def health(self) -> dict:
        """What ``/health`` adds about the grounding model: which is served, and a fallback when there is one."""
        body: dict = {}
        if self.learned_problems:  # an older learned version, or the defaults, is served instead
            body["learned_fallback"] = list(self.learned_problems[:5])
        if self.source is None:
            return body
        body["grounding"] = self.source.status()
        if self.source.fallback is not None:
            body["fallback"] = dict(self.source.fallback)
        return body

    def swap_grounder(self, grounder, serving=None) -> str:
        """Use ``grounder`` from now on (after a retrain or a store change); returns the new model version.

        The segmenter (and its embedding cache) is kept; only the grounding model changes. ``serving`` is the
        ``model_source.Candidate`` it was loaded from.
        """

        old = self.pipeline
        new = old.with_parts(grounder=grounder)
        previous = self.model_version
        with self._run_lock:
            self._pipeline = new
            if self.source is not None and serving is not None:
                self.source.serving = serving
        if self._pool is not None:  # the workers hold the pipeline without this grounder
            self._pool.close()
            self._pool = None
        version = self.model_version
        if version == previous:  # Label Studio skips tasks predicted by the current version: it must change
            setattr(grounder, "model_version", f"{getattr(grounder, 'model_version', 'grounder')}-r{len(self.versions)}")
            version = self.model_version
        if version not in self.versions:
            self.versions.append(version)
        return version

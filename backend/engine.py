"""The per-process models: loaded once, in the background, and swapped atomically after retraining.

Why in the background: Label Studio gives ``/setup`` 3 s and ``/health`` 1 s, while loading SAM ViT-H takes
longer than that on a CPU. The engine starts loading when the app is created; ``/health`` reports the state and
``/predict`` waits (bounded) for readiness instead of loading anything per request.

Why one lock around inference: a segmenter is stateful (``set_image`` then ``predict``), so two threads must not
interleave on it. Gunicorn threads therefore queue on the lock; the embedding cache makes each click cheap.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from annotate.types import Prompt, PromptResult
from backend.config import Settings

log = logging.getLogger("pslg.backend.engine")

LOADING, READY, FAILED = "loading", "ready", "error"


CURRENT_GROUNDER_FILE = "grounder-current.txt"


def current_trained_grounder(model_dir: Path) -> Optional[Path]:
    """The directory of the last successfully retrained grounder recorded in ``model_dir``, if any."""
    marker = Path(model_dir) / CURRENT_GROUNDER_FILE
    try:
        path = Path(marker.read_text().strip())
    except OSError:
        return None
    return path if path.is_dir() else None


class EngineNotReady(RuntimeError):
    """The models are still loading (or failed to load); the message says which."""


class Engine:
    """Holds the ``annotate.pipeline.Pipeline`` of this process."""

    def __init__(self, settings: Settings, loader: Optional[Callable[[], object]] = None) -> None:
        self.settings = settings
        self._loader = loader or self._default_loader
        self._pipeline = None
        self.state = LOADING
        self.error: Optional[str] = None
        self._ready = threading.Event()
        self._run_lock = threading.Lock()
        self.versions: list[str] = []
        self.load_seconds: Optional[float] = None
        self._thread: Optional[threading.Thread] = None

    # --- loading ---------------------------------------------------------------------------------------------
    def _default_loader(self):
        from annotate.pipeline import Pipeline
        from annotate.segmenters import build_segmenter

        s = self.settings
        segmenter = build_segmenter(s.sam_checkpoint, model_type=s.sam_model_type, device=s.device)
        grounder = None
        if s.grounding_model:
            from annotate.grounding import load_grounder

            # after a retrain, the retrained weights (recorded in MODEL_DIR) win over the configured ones
            current = current_trained_grounder(s.model_dir)
            spec = str(current) if current is not None else s.grounding_model
            grounder = load_grounder(spec, device=s.device)
            log.info("grounding model: %s", spec)
        return Pipeline(segmenter, grounder, use_cfpg=s.use_cfpg, use_mbo=s.use_mbo)

    def start(self) -> "Engine":
        """Begin loading in a daemon thread (returns at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="pslg-engine-load", daemon=True)
            self._thread.start()
        return self

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            pipeline = self._loader()
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
        return f"pslg:{self._pipeline.model_version}"

    # --- inference ---------------------------------------------------------------------------------------------
    def run(self, image: np.ndarray, prompts: Sequence[Prompt], image_key: Optional[str]) -> list[PromptResult]:
        """``Pipeline.run`` under the process lock (segmenters are stateful)."""
        pipeline = self.pipeline
        with self._run_lock:
            return pipeline.run(image, prompts, image_key=image_key)

    def swap_grounder(self, grounder) -> str:
        """Use ``grounder`` from now on (after a successful retrain); returns the new model version.

        The segmenter (and its embedding cache) is kept; only the grounding model changes.
        """
        from annotate.pipeline import Pipeline

        old = self.pipeline
        new = Pipeline(old.segmenter, grounder, use_cfpg=old.use_cfpg, use_mbo=old.use_mbo,
                       cfpg_params=old.cfpg_params, mbo_params=old.mbo_params)
        previous = self.model_version
        with self._run_lock:
            self._pipeline = new
        version = self.model_version
        if version == previous:  # Label Studio skips tasks predicted by the current version: it must change
            setattr(grounder, "model_version", f"{getattr(grounder, 'model_version', 'grounder')}-r{len(self.versions)}")
            version = self.model_version
        if version not in self.versions:
            self.versions.append(version)
        return version

"""Learning from corrections: export stored annotations to a grounding training set, retrain in the background.

What is retrained: stage 1 (the grounding model), with ``annotate.grounding.training.train_grounder``. Each
stored annotation gives one sample — the task image, its referring expression, and the box of the corrected
mask (or of the annotated rectangle). Stage 2 (SAM / classical) is not retrained: corrections mostly fix
*which* object an expression names, which is the grounding model's job.

Without a grounding model (the weights-free default) there is nothing to retrain: annotations are still stored
(so a later grounding model can learn from them) and ``START_TRAINING`` answers that training was skipped.

A retrain runs in one background thread at a time; a request arriving meanwhile is queued once (the next run
picks up everything stored until then). On success the engine switches to the new weights (new
``model_version``) and ``MODEL_DIR/grounder-current.txt`` records them for restarts; on failure the old model
stays and the error is logged and shown on ``/health``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from annotate.atomic import atomic_write_bytes
from backend.engine import CURRENT_GROUNDER_FILE, Engine, current_trained_grounder
from backend.store import StoredAnnotation, TrainingStore

log = logging.getLogger("pslg.backend.training")

IDLE, RUNNING, SUCCEEDED, FAILED, SKIPPED = "idle", "running", "succeeded", "failed", "skipped"
NO_GROUNDER = (
    "training skipped: no grounding model is configured (PSLG_GROUNDING_MODEL), so there is nothing to retrain; "
    "annotations are stored in MODEL_DIR and will be used once a grounding model is configured"
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


class Trainer:
    """Runs retraining jobs in a background thread, one at a time."""

    def __init__(self, engine: Engine, store: TrainingStore, model_dir: Path,
                 fetch_image: Callable[[StoredAnnotation], tuple[bytes, str]], epochs: Optional[int] = None) -> None:
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

    def request(self, reason: str) -> str:
        """Ask for a retrain; returns at once with what will happen (``started``, ``queued`` or the skip reason)."""
        if self.engine.ready and not self.engine.has_grounder:
            log.info("%s (%s)", NO_GROUNDER, reason)
            self.status.state = SKIPPED
            return NO_GROUNDER
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._pending = True
                return "queued: a retrain is running; another one follows it"
            self._idle.clear()
            self._thread = threading.Thread(target=self._loop, args=(reason,), name="pslg-train", daemon=True)
            self._thread.start()
        return "started"

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
        except BaseException:  # never leave waiters hanging
            with self._lock:
                self._thread = None
                self._idle.set()
            raise

    def _train_once(self, reason: str) -> None:
        self.status.state = RUNNING
        t0 = time.perf_counter()
        log.info("retraining the grounding model (%s)", reason)
        try:
            if not self.engine.wait_ready(timeout=600):
                raise RuntimeError(f"the models are not loaded: {self.engine.error or 'still loading'}")
            if not self.engine.has_grounder:
                self.status.state = SKIPPED
                log.info(NO_GROUNDER)
                return
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
            log.info("retrained on %d annotations in %.1f s; now serving %s", n, time.perf_counter() - t0, version)
        finally:
            self.status.runs += 1
            self.status.finished_at = time.time()

    def export_samples(self, work: Path) -> tuple[list[Any], list[str]]:
        """Write each stored annotation's image under ``work`` and return ``GroundingSample``s (+ skip reasons)."""
        from annotate.grounding.evaluation import GroundingSample
        from annotate.image_io import load_image

        samples: list[Any] = []
        skipped: list[str] = []
        images: dict[str, Path] = {}
        for item in self.store.annotations():
            name = f"annotation {item.annotation_id} (task {item.task_id})"
            try:
                expression, box = annotation_target(item)
                data_url, _ = _image_ref(item)
                path = images.get(data_url)
                if path is None:
                    raw, _ = self.fetch_image(item)
                    rgb = load_image(raw, name=data_url).rgb
                    path = work / f"task-{item.task_id}-{len(images)}.png"
                    import cv2

                    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                    if not ok:
                        raise ValueError("could not re-encode the image")
                    atomic_write_bytes(path, buf.tobytes())
                    images[data_url] = path
                samples.append(GroundingSample(image_path=path, expression=expression, box=box,
                                               ref_id=item.annotation_id))
            except Exception as exc:
                skipped.append(f"{name}: {exc}")
        return samples, skipped

    def _retrain(self) -> tuple[str, int, list[str]]:
        from annotate.grounding import load_grounder
        from annotate.grounding.training import TrainConfig, train_grounder

        work = self.model_dir / "training-data"
        work.mkdir(parents=True, exist_ok=True)
        samples, skipped = self.export_samples(work)
        for msg in skipped:
            log.warning("not used for training: %s", msg)
        if not samples:
            raise ValueError("no stored annotation has an expression and a mask or rectangle to learn from")
        current = current_trained_grounder(self.model_dir)
        base = str(current) if current is not None else str(self.engine.settings.grounding_model)
        config = TrainConfig(epochs=self.epochs) if self.epochs else TrainConfig()
        result = train_grounder(
            samples, [], base=base, out_dir=self.model_dir / "grounders", config=config,
            device=self.engine.settings.device, progress=False, log=lambda m: log.info("train: %s", m),
        )
        grounder = load_grounder(str(result.path), device=self.engine.settings.device)
        version = self.engine.swap_grounder(grounder)
        atomic_write_bytes(self.model_dir / CURRENT_GROUNDER_FILE, str(Path(result.path).resolve()).encode())
        return version, len(samples), skipped


def _image_ref(item: StoredAnnotation) -> tuple[str, str]:
    """(image URL, data key) of a stored task: the first string value that looks like an image reference."""
    data = item.task.get("data") or {}
    for key in ("image", "img", "url"):
        if isinstance(data.get(key), str):
            return data[key], key
    for key, value in data.items():
        if isinstance(value, str) and (value.startswith(("/data/", "http://", "https://"))):
            return value, key
    raise ValueError("the task has no image URL in its data")


def annotation_target(item: StoredAnnotation) -> tuple[str, tuple[float, float, float, float]]:
    """(expression, box in pixels) of one stored annotation: the mask's box, else the rectangle's."""
    from converters.labelstudio.brush import brush_rle_decode

    data = item.task.get("data") or {}
    expression = None
    for key in ("expression", "sentence", "text", "caption"):
        if isinstance(data.get(key), str) and data[key].strip():
            expression = data[key].strip()
            break
    results = item.annotation.get("result") or []
    for region in results:  # a typed expression on the annotation wins over the task's
        if region.get("type") == "textarea":
            text = (region.get("value") or {}).get("text") or []
            if text and str(text[0]).strip():
                expression = str(text[0]).strip()
                break
    if not expression:
        raise ValueError("no referring expression in the task data or a TextArea")
    for region in results:
        value = region.get("value") or {}
        if region.get("type") == "brushlabels" and value.get("format") == "rle" and value.get("rle"):
            h, w = int(region["original_height"]), int(region["original_width"])
            mask = brush_rle_decode(value["rle"], h, w)
            if mask.any():
                ys, xs = np.nonzero(mask)
                return expression, (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    for region in results:
        value = region.get("value") or {}
        if region.get("type") == "rectanglelabels" and "width" in value:
            h, w = float(region["original_height"]), float(region["original_width"])
            x0, y0 = value["x"] * w / 100.0, value["y"] * h / 100.0
            return expression, (x0, y0, x0 + value["width"] * w / 100.0, y0 + value["height"] * h / 100.0)
    raise ValueError("no brush mask or rectangle in the annotation")

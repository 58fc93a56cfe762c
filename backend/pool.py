"""Worker processes for the weights-free pipeline, so one backend process uses every core.

Why processes: the classical segmenter and MBO are NumPy/OpenCV/SciPy code that holds the GIL for much of
its time, and a segmenter is stateful (``set_image`` then ``predict``), so the engine serialises inference
behind one lock. With a pool, each worker process holds its own pipeline, built by the engine's own loader,
and requests (interactive clicks from several annotators, the images of a batch ``/predict``) run side by
side. SAM stays in the engine's process: its encoder is run one image at a time per device, and N copies of
its weights would multiply memory for nothing.

The pool is only used for pipelines without a grounding model (the engine checks): a retrained grounder is
swapped into the engine's process, and workers holding the old one would answer with stale weights.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Callable, Optional, Sequence

import numpy as np

from annotate.types import Prompt, PromptResult

log = logging.getLogger("pslg.backend.pool")

Job = tuple[np.ndarray, Sequence[Prompt], Optional[str]]

_pipeline = None  # the worker process's own pipeline (set by _init_worker)


def _init_worker(loader: Callable[[], object]) -> None:
    """Build this worker's pipeline once; OpenCV gets one thread per worker (the pool is the parallelism)."""
    global _pipeline
    import cv2

    cv2.setNumThreads(1)
    _pipeline = loader()


def _run_job(rgb: np.ndarray, prompts: Sequence[Prompt], image_key: Optional[str]) -> list[PromptResult]:
    return _pipeline.run(rgb, list(prompts), image_key=image_key)  # type: ignore[union-attr]


def _worker_pid() -> int:
    return os.getpid()


class InferencePool:
    """``workers`` processes, each with a pipeline from ``loader`` (a picklable callable, e.g. a ``partial``)."""

    def __init__(self, loader: Callable[[], object], workers: int) -> None:
        if workers < 1:
            raise ValueError(f"an inference pool needs at least one worker, got {workers}")
        self.workers = workers
        # spawn: the backend runs threads (gunicorn, the engine's loader), and forking a threaded process is unsafe
        self._executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(loader,))

    def warm_up(self) -> list[int]:
        """Start every worker now (each builds its pipeline) rather than on the first requests; their pids."""
        futures = [self._executor.submit(_worker_pid) for _ in range(self.workers)]
        return sorted({f.result() for f in futures})

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return sorted(p.pid for p in list(self._executor._processes.values()) if p.is_alive())

    def submit(self, rgb: np.ndarray, prompts: Sequence[Prompt], image_key: Optional[str]) -> "Future[list[PromptResult]]":
        return self._executor.submit(_run_job, rgb, list(prompts), image_key)

    def run_many(self, jobs: Sequence[Job]) -> list[list[PromptResult]]:
        """Every job's results, in order; the jobs run in parallel across the workers."""
        futures = [self.submit(*job) for job in jobs]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

"""Where chunks of tasks run: this process, local worker processes, or Ray actors on a cluster.

Every executor offers the same two things: the ``model_version`` its workers load (asked before any task is
dispatched, to know which tasks are stale) and ``results(chunks)``, which yields each chunk's outcomes as soon
as it finishes (in completion order). Scheduling is the standard library's ``ProcessPoolExecutor`` or Ray's
``ActorPool``; the job only keeps the checkpoint.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Iterable, Iterator, Optional, Protocol

from backend.prelabel.worker import Outcome, PrelabelWorker, WorkerSpec, quiet_task_warnings

Chunk = list[tuple[str, dict]]


class Executor(Protocol):
    def model_version(self) -> str: ...

    def results(self, chunks: Iterable[Chunk]) -> Iterator[list[Outcome]]: ...

    def close(self) -> None: ...


class InProcessExecutor:
    """One worker in this process (``--workers 1``)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self._worker = PrelabelWorker(spec)

    def model_version(self) -> str:
        return self._worker.model_version

    def results(self, chunks: Iterable[Chunk]) -> Iterator[list[Outcome]]:
        for chunk in chunks:
            yield self._worker.predict(chunk)

    def close(self) -> None:
        pass


_worker: Optional[PrelabelWorker] = None


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel send this worker SIGTERM when the parent dies, even by SIGKILL (no cleanup runs
    then); otherwise an orphaned worker waits on its task queue forever. A parent already gone by the time this
    runs ends the worker at once. Elsewhere only that last check."""
    import ctypes
    import ctypes.util
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl
            pass
    if os.getppid() != parent:
        os._exit(1)


def _init_process(spec: WorkerSpec, parent: int) -> None:
    global _worker
    import cv2

    _die_with_parent(parent)

    cv2.setNumThreads(1)  # the processes are the parallelism
    quiet_task_warnings()
    _worker = PrelabelWorker(spec)


def _process_version() -> str:
    return _worker.model_version  # type: ignore[union-attr]


def _process_predict(chunk: Chunk) -> list[Outcome]:
    return _worker.predict(chunk)  # type: ignore[union-attr]


class ProcessExecutor:
    """``workers`` local processes, each loading the models once (``--workers N``)."""

    def __init__(self, spec: WorkerSpec, workers: int) -> None:
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_process, initargs=(spec, os.getpid()))
        #: pids of this pool's worker processes (``multiprocessing.active_children`` minus those alive before)
        self._before = {p.pid for p in multiprocessing.active_children()}

    def model_version(self) -> str:
        # one call per worker starts them all now (each loads the models); they must agree
        versions = {f.result() for f in [self._pool.submit(_process_version) for _ in range(self.workers)]}
        if len(versions) != 1:
            raise RuntimeError(f"the worker processes loaded different models: {sorted(versions)}")
        return versions.pop()

    def results(self, chunks: Iterable[Chunk]) -> Iterator[list[Outcome]]:
        pending: set[Future] = set()
        source = iter(chunks)
        limit = 2 * self.workers  # keep every worker busy without queueing the whole project in memory
        while True:
            while len(pending) < limit:
                chunk = next(source, None)
                if chunk is None:
                    break
                pending.add(self._pool.submit(_process_predict, chunk))
            if not pending:
                return
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()

    def close(self) -> None:
        """Stop the workers: after a complete run they are idle and exit; after an interrupt (Ctrl-C, SIGTERM)
        they may be inside a chunk, so every worker process is terminated and waited for, never left orphaned
        computing for a parent that is gone."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        workers = [p for p in multiprocessing.active_children() if p.pid not in self._before]
        for process in workers:
            process.terminate()
        for process in workers:
            process.join(timeout=10)
            if process.is_alive():  # pragma: no cover - a worker that ignores SIGTERM
                process.kill()
                process.join(timeout=5)


class RayExecutor:
    """Ray actors, each holding one ``PrelabelWorker`` (models loaded once per actor; images fetched there).

    ``address`` is ``"auto"`` (the cluster this machine belongs to), ``ray://host:10001`` / ``host:6379``, or
    None (a Ray instance started here, or the one this process already initialised). ``actors`` actors
    (default: as many as the cluster's CPUs, or GPUs with ``num_gpus``) are created with ``num_gpus`` each
    (SAM on a GPU: one actor per GPU).
    """

    def __init__(self, spec: WorkerSpec, address: Optional[str], actors: Optional[int] = None,
                 num_gpus: float = 0.0, num_cpus: float = 1.0) -> None:
        import ray
        from ray.util import ActorPool

        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        self._ray = ray
        if not actors:
            resources = ray.cluster_resources()
            per_gpu = resources.get("GPU", 0.0) / num_gpus if num_gpus else float("inf")
            actors = max(1, int(min(resources.get("CPU", 1.0) / num_cpus, per_gpu)))
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_RayWorker)
        self._actors = [remote.remote(spec) for _ in range(actors)]
        self._pool = ActorPool(self._actors)

    def model_version(self) -> str:
        versions = set(self._ray.get([a.model_version.remote() for a in self._actors]))
        if len(versions) != 1:
            raise RuntimeError(f"the Ray actors loaded different models: {sorted(versions)}")
        return versions.pop()

    def results(self, chunks: Iterable[Chunk]) -> Iterator[list[Outcome]]:
        yield from self._pool.map_unordered(lambda actor, chunk: actor.predict.remote(chunk), chunks)

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)


class _RayWorker:
    """The Ray actor class (made remote in ``RayExecutor`` so Ray is only imported when asked for)."""

    def __init__(self, spec: WorkerSpec) -> None:
        import cv2

        cv2.setNumThreads(1)
        self._worker = PrelabelWorker(spec)

    def model_version(self) -> str:
        return self._worker.model_version

    def predict(self, chunk: Chunk) -> list[Outcome]:
        return self._worker.predict(chunk)

"""Fair sharing of the one inference pipeline between concurrent requests.

Why a FIFO lock: the segmenter is stateful, so inference runs one prompt at a time. ``threading.Lock`` makes
no ordering promise: a thread that releases it and immediately asks again (the next prompt of a long batch)
usually wins against threads already waiting, so one batch could still hold inference for its whole length.
Here waiters are served in arrival order, so an interactive click waits for at most the prompt in progress.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType
from typing import Optional


class FifoLock:
    """A non-reentrant lock granted in the order it was requested (usable as a context manager)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[object] = deque()
        self._held = False

    def acquire(self) -> None:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            while self._held or self._queue[0] is not ticket:
                self._cond.wait()
            self._queue.popleft()
            self._held = True

    def release(self) -> None:
        with self._cond:
            if not self._held:
                raise RuntimeError("release of an unheld FifoLock")
            self._held = False
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """How many threads wait for the lock now."""
        with self._cond:
            return len(self._queue)

    def __enter__(self) -> "FifoLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.release()

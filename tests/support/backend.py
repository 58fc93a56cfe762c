"""Flask test clients around fresh backend runtimes, for the backend and security tests."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from backend.app import create_app
from backend.config import Settings
from backend.runtime import Runtime


@contextlib.contextmanager
def runtime_clients(engine=None, train_wait_s: float = 300.0) -> Iterator[Callable[[Settings], object]]:
    """Yield ``make(settings) -> test client``, each around its own runtime (store, caches); ``engine`` shares one
    loaded engine between them. On exit, waits for their trainers and closes their stores."""
    made: list[Runtime] = []

    def make(settings: Settings):
        runtime = Runtime(settings, engine=engine)
        assert runtime.engine.wait_ready(120), runtime.engine.error
        made.append(runtime)
        app = create_app(settings, runtime=runtime)
        app.testing = True
        return app.test_client()

    try:
        yield make
    finally:
        for runtime in made:
            runtime.trainer.wait_idle(train_wait_s)
            runtime.store.close()

"""Running the backend: gunicorn (1 worker, N threads) by default, Flask's development server with ``dev=True``."""

from __future__ import annotations

import logging
import os
from typing import Optional

from backend.config import Settings

#: gunicorn's default access line with the request path instead of the request line (which holds the query)
ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(f)s" "%(a)s"'


def serve(host: str = "0.0.0.0", port: int = 9090, threads: int = 8, dev: bool = False,
          settings: Optional[Settings] = None, timeout: int = 300) -> None:
    """Start the backend and block. Models load in the background after the worker starts."""
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from backend.app import create_app

    if dev:
        create_app(settings).run(host=host, port=port, threaded=True)
        return
    from gunicorn.app.base import BaseApplication

    class _App(BaseApplication):
        def load_config(self) -> None:
            # one worker: models are per process (see backend/_wsgi.py); threads share them
            for key, value in {"bind": f"{host}:{port}", "workers": 1, "threads": threads, "worker_class": "gthread",
                               "timeout": timeout, "graceful_timeout": 30, "accesslog": "-", "errorlog": "-",
                               # the path without its query string: a webhook's ?secret= never reaches the log
                               "access_log_format": ACCESS_LOG_FORMAT,
                               "loglevel": os.environ.get("LOG_LEVEL", "info").lower()}.items():
                self.cfg.set(key, value)

        def load(self):
            # called in the worker after fork, so the model-loading thread lives in the serving process
            return create_app(settings)

    _App().run()

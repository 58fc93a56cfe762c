"""WSGI entry point: ``gunicorn backend._wsgi:app`` (what ``pslg serve`` and the Dockerfile run).

One gunicorn worker with several threads: the models (SAM, the grounding model, the embedding cache) live in
the worker process, so more workers would load them again and split the cache; threads share them, and the
engine serialises inference on one lock while fetching images, encoding masks and webhooks run in parallel.
"""

from __future__ import annotations

import logging
import os

from backend.app import create_app


def _configure_logging() -> None:
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


_configure_logging()
app = create_app()

"""Running the backend: gunicorn (1 worker, N threads) by default, Flask's development server with ``dev=True``."""

from __future__ import annotations

import logging
import os
from typing import Optional

from backend.config import Settings


def control_socket_path(cfg, host: str, port: int) -> Optional[str]:
    """A control socket of this instance's own, or None where gunicorn has no control socket (before 25.1).

    gunicorn ≥ 25.1 opens a control socket for ``gunicornc`` at one path per user (``gunicorn.ctl``), so a
    second ``pslg serve`` of the same user would replace the first one's. Each instance gets
    ``pslg-serve-HOST-PORT.ctl`` in the same folder instead (feature-detected: no such setting, no socket).
    """
    from pathlib import Path

    setting = cfg.settings.get("control_socket") if hasattr(cfg, "settings") else None
    if setting is None:
        return None
    default = setting.get() or str(Path.home() / ".gunicorn" / "gunicorn.ctl")
    safe_host = "".join(c if c.isalnum() or c in ".-" else "_" for c in host) or "any"
    return str(Path(default).with_name(f"pslg-serve-{safe_host}-{port}.ctl"))


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
                               "loglevel": os.environ.get("LOG_LEVEL", "info").lower()}.items():
                self.cfg.set(key, value)
            socket = control_socket_path(self.cfg, host, port)
            if socket is not None:
                self.cfg.set("control_socket", socket)

        def load(self):
            # called in the worker after fork, so the model-loading thread lives in the serving process
            return create_app(settings)

    _App().run()

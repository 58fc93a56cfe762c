"""Running the backend: gunicorn (1 worker, N threads) behind the front (``backend.front``) by default, Flask's
development server with ``dev=True``.

gunicorn listens on a Unix socket in a private temporary folder; the front listens on ``host:port``, reads each
request completely (deadlines and sizes from the settings) and only then hands it to gunicorn, so slow or stalled
clients never hold a worker thread.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from backend.config import Settings

#: gunicorn's default access line with the request path instead of the request line (which holds the query)
ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(f)s" "%(a)s"'


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
    import shutil
    import tempfile

    from gunicorn.app.base import BaseApplication

    from backend.front import FrontLimits, start_front

    s = settings if settings is not None else Settings.from_env()
    private = tempfile.mkdtemp(prefix="pslg-serve-")  # 0700: only this user can reach the socket
    upstream = os.path.join(private, "gunicorn.sock")
    limits = FrontLimits(header_timeout=s.header_timeout_s, body_timeout=s.body_timeout_s,
                         send_timeout=s.send_timeout_s, max_body_bytes=s.max_request_bytes,
                         max_connections=s.max_connections)

    def when_ready(server) -> None:  # in gunicorn's master, once its socket is bound
        start_front(host, port, upstream, limits)

    def on_exit(server) -> None:
        shutil.rmtree(private, ignore_errors=True)

    class _App(BaseApplication):
        def load_config(self) -> None:
            # one worker: models are per process (see backend/_wsgi.py); threads share them
            for key, value in {"bind": f"unix:{upstream}", "workers": 1, "threads": threads, "worker_class": "gthread",
                               "when_ready": when_ready, "on_exit": on_exit,
                               "timeout": timeout, "graceful_timeout": 30, "accesslog": "-", "errorlog": "-",
                               # the path without its query string: a webhook's ?secret= never reaches the log
                               "access_log_format": ACCESS_LOG_FORMAT,
                               "loglevel": os.environ.get("LOG_LEVEL", "info").lower()}.items():
                self.cfg.set(key, value)
            socket = control_socket_path(self.cfg, host, port)
            if socket is not None:
                self.cfg.set("control_socket", socket)

        def load(self):
            # called in the worker after fork, so the model-loading thread lives in the serving process
            return create_app(s)

    _App().run()

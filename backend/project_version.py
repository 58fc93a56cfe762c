"""Keep a Label Studio project's ``model_version`` on the version the backend serves.

Why: the Data Manager's "Prediction score" column (and sorting by it) shows only predictions whose
``model_version`` equals the project's (Settings → Annotation → Prelabeling). Connecting a backend sets the
project's to the backend's title, so the column stays empty until someone picks the version by hand, and again
after every retrain. With a token configured, the backend sets it through the API
(``PATCH /api/projects/<id>`` ``{"model_version": ...}``) the first time it serves a project a new version.

Label Studio accepts a version only once a prediction carrying it is stored, i.e. after the ``/predict`` answer
that introduces it has been received; so the request is made from a background thread that retries (HTTP 400)
with growing delays for about a minute (``in_background``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional

import requests

log = logging.getLogger("pslg.backend.project_version")


class VersionPins:
    """Remembers which (host, project) already has which version, so each new version costs one PATCH.

    The memory lasts ``refresh_s``: reconnecting the backend in Label Studio sets the project's version back
    to the backend's title, so a served version is set again at most every ``refresh_s`` seconds.
    """

    def __init__(self, timeout_s: float = 5.0, refresh_s: float = 300.0) -> None:
        self.timeout_s = timeout_s
        self.refresh_s = refresh_s
        self._done: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._session = requests.Session()

    def in_background(self, auth, project: Optional[str], version: str,
                      delays: tuple[float, ...] = (0.5, 1, 2, 4, 8, 15, 30)) -> Optional[threading.Thread]:
        """:meth:`ensure` in a daemon thread, retried after each delay while Label Studio does not know the version."""
        if auth is None or not str(project or "").isdigit() or not version or self._fresh(auth, project, version):
            return None

        def run() -> None:
            for delay in delays:
                time.sleep(delay)
                if self.ensure(auth, project, version, force=True, quiet=True) is not False:
                    return
            log.warning("project %s: Label Studio did not accept model version %s; pick it in Settings → Annotation "
                        "→ Prelabeling to see its scores in the Data Manager", project, version)

        with self._lock:
            self._done[(auth.url, str(project))] = (version, time.monotonic())
        thread = threading.Thread(target=run, name="pslg-project-version", daemon=True)
        thread.start()
        return thread

    def _fresh(self, auth, project, version: str) -> bool:
        with self._lock:
            done = self._done.get((auth.url, str(project)))
        return done is not None and done[0] == version and time.monotonic() - done[1] < self.refresh_s

    def ensure(self, auth, project: Optional[str], version: str, force: bool = False,
               quiet: bool = False) -> Optional[bool]:
        """PATCH the project's model version unless already done; True/False = done/failed, None = nothing to do."""
        if auth is None or project is None or not version:
            return None
        key = (auth.url, str(project))
        now = time.monotonic()
        with self._lock:
            done = self._done.get(key)
            if not force and done is not None and done[0] == version and now - done[1] < self.refresh_s:
                return None
            self._done[key] = (version, now)  # one attempt per period: a failure is logged, not retried per request
        url = f"{auth.url}/api/projects/{int(project)}"
        try:
            r = self._session.patch(url, json={"model_version": version}, headers=auth.headers(), timeout=self.timeout_s)
            if r.status_code == 401 and auth.kind == "pat":
                r = self._session.patch(url, json={"model_version": version}, headers=auth.headers(refresh=True),
                                        timeout=self.timeout_s)
        except Exception as exc:  # never fail a prediction over this; the reason is logged without the token
            log.warning("project %s: could not set its model version to %s (%s)", project, version, type(exc).__name__)
            return False
        if r.status_code >= 300:
            (log.debug if quiet else log.warning)(
                "project %s: Label Studio refused to set its model version (HTTP %s)", project, r.status_code)
            return False
        log.info("project %s: model version set to %s (Data Manager shows this version's scores)", project, version)
        return True


#: one per process: the projects' versions are a property of the Label Studio server, not of a request
PINS = VersionPins()

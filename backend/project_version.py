"""Keep a Label Studio project's ``model_version`` on the version the backend serves.

Why: the Data Manager's "Prediction score" column (and sorting by it) shows only predictions whose
``model_version`` equals the project's (Settings → Annotation → Prelabeling). Connecting a backend sets the
project's to the backend's title, so the column stays empty until someone picks the version by hand, and again
after every retrain. With a token configured, the backend sets it through the API
(``PATCH /api/projects/<id>`` ``{"model_version": ...}``) the first time it serves a project a new version.
"""

from __future__ import annotations

import logging
import threading
from typing import Optional

import requests

log = logging.getLogger("pslg.backend.project_version")


class VersionPins:
    """Remembers which (host, project) already has which version, so each new version costs one PATCH."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self._done: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._session = requests.Session()

    def ensure(self, auth, project: Optional[str], version: str) -> Optional[bool]:
        """PATCH the project's model version unless already done; True/False = done/failed, None = nothing to do."""
        if auth is None or project is None or not version:
            return None
        key = (auth.url, str(project))
        with self._lock:
            if self._done.get(key) == version:
                return None
            self._done[key] = version  # one attempt per version: a failure is logged, never retried per request
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
            log.warning("project %s: Label Studio refused to set its model version (HTTP %s)", project, r.status_code)
            return False
        log.info("project %s: model version set to %s (Data Manager shows this version's scores)", project, version)
        return True


#: one per process: the projects' versions are a property of the Label Studio server, not of a request
PINS = VersionPins()

"""Show the last training outcome on the model's card in Label Studio (the ML backend's title).

Why: Label Studio 1.23's *Start Training* dialog shows "Request Sent! Response: {}" whatever the backend
answers (``MLBackendTrainAPI`` returns an empty 200; it keeps only the answer's ``job``, in its database), and
the model card under Settings → Model shows just the backend's title, state and URL. The title is the one
place an annotator sees in the UI, right beside the Start Training menu, so with a token configured the backend
appends the one-line outcome to it once the retrain ends::

    PSLG-SAM · last training: served v0004: +0.031 mIoU on 42 held-out corrections; building prior adopted

The part before `` · last training: `` is the title the person gave the model; it is kept, and each outcome
replaces the previous one. ``PSLG_OUTCOME_IN_TITLE=0`` turns this off.

Which of the project's ML backends is this one: the one whose URL's host and port are those Label Studio used
to reach this backend (the training request's ``Host`` header), else the project's only backend.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional
from urllib.parse import urlsplit

import requests

log = logging.getLogger("pslg.backend.model_title")

#: separates the person's title from the outcome the backend appends
MARKER = " · last training: "
#: the longest outcome put in a title (the card wraps; the whole line stays on /health and the model card)
MAX_OUTCOME_CHARS = 160
#: how long a background update waits for a running retrain to end before it gives up
WAIT_FOR_RETRAIN_S = 3600.0


def titled(title: Optional[str], outcome: str) -> str:
    """``title`` with its previous outcome (if any) replaced by ``outcome`` (cut to ``MAX_OUTCOME_CHARS``)."""
    base = (title or "").split(MARKER, 1)[0].strip() or "PSLG-SAM"
    line = " ".join(str(outcome).split())
    if len(line) > MAX_OUTCOME_CHARS:
        line = line[:MAX_OUTCOME_CHARS - 1] + "…"
    return f"{base}{MARKER}{line}"


def _netloc(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{(parts.hostname or '').lower()}:{port}"


def _host_netloc(host_header: str) -> str:
    """``Host`` header → ``host:port`` (port 80 when absent, as Label Studio's backend URLs are plain HTTP)."""
    return _netloc(f"http://{host_header}") if host_header else ""


class OutcomeTitles:
    """Puts training outcomes into the titles of the ML backends that asked for them (one PATCH per outcome)."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def _call(self, auth, method: str, path: str, **kw) -> requests.Response:
        url = f"{auth.url}{path}"
        r = self._session.request(method, url, headers=auth.headers(), timeout=self.timeout_s, **kw)
        if r.status_code == 401 and auth.kind == "pat":
            r = self._session.request(method, url, headers=auth.headers(refresh=True), timeout=self.timeout_s, **kw)
        return r

    def ours(self, auth, project: int, host_header: str) -> Optional[dict]:
        """The project's ML backend that is this backend (see the module's docstring), or None."""
        r = self._call(auth, "GET", "/api/ml", params={"project": int(project)})
        if r.status_code >= 300:
            log.warning("project %s: Label Studio did not list its ML backends (HTTP %s)", project, r.status_code)
            return None
        backends = [b for b in r.json() if isinstance(b, dict) and isinstance(b.get("url"), str)]
        here = _host_netloc(host_header)
        matched = [b for b in backends if here and _netloc(b["url"]) == here]
        if len(matched) == 1:
            return matched[0]
        if len(backends) == 1 and not matched:
            return backends[0]
        log.info("project %s: %d ML backends, %d reached at %s; the training outcome is not put in a title",
                 project, len(backends), len(matched), host_header or "(no Host)")
        return None

    @staticmethod
    def _patch_body(backend: dict, project: int, title: str, basic_auth: Optional[tuple[str, str]]) -> Optional[dict]:
        """The PATCH body: Label Studio 1.23 re-validates the connection on every update (health check and
        ``/setup`` of ``url`` for ``project``; its serializer fails with HTTP 500 without ``url``), so the body
        repeats them; a backend behind Basic auth needs the user and password again (this backend's own)."""
        body = {"title": title, "url": backend["url"], "project": int(project),
                "auth_method": backend.get("auth_method") or "NONE"}
        if body["auth_method"] == "BASIC_AUTH":
            if basic_auth is None:
                return None
            body["basic_auth_user"], body["basic_auth_pass"] = basic_auth
        return body

    def show(self, auth, project: int, host_header: str, outcome: str,
             basic_auth: Optional[tuple[str, str]] = None) -> bool:
        """PATCH the backend's title with ``outcome``; False (logged, token never shown) when that is not possible.

        ``basic_auth``: this backend's ``BASIC_AUTH_USER``/``BASIC_AUTH_PASS``, which Label Studio needs again when
        the connection uses Basic auth."""
        try:
            backend = self.ours(auth, project, host_header)
            if backend is None:
                return False
            title = titled(backend.get("title"), outcome)
            if title == backend.get("title"):
                return True
            body = self._patch_body(backend, project, title, basic_auth)
            if body is None:
                log.info("project %s: the model connects with Basic auth this backend does not know; the training "
                         "outcome is not put in its title", project)
                return False
            r = self._call(auth, "PATCH", f"/api/ml/{int(backend['id'])}", json=body)
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            log.warning("project %s: the training outcome could not be put in the model's title (%s)", project,
                        type(exc).__name__)
            return False
        if r.status_code >= 300:
            log.warning("project %s: Label Studio refused the model title with the training outcome (HTTP %s)",
                        project, r.status_code)
            return False
        log.info("project %s: model card title shows the training outcome", project)
        return True

    def after_retrain(self, auth, project: int, host_header: str, wait_idle: Callable[[float], bool],
                      outcome: Callable[[], Optional[str]],
                      basic_auth: Optional[tuple[str, str]] = None) -> threading.Thread:
        """In a daemon thread: wait for the retrain to end (``wait_idle``), then :meth:`show` its ``outcome``."""

        def run() -> None:
            if not wait_idle(WAIT_FOR_RETRAIN_S):
                log.warning("project %s: the retrain did not end within %.0f s; its outcome is on /health", project,
                            WAIT_FOR_RETRAIN_S)
                return
            line = outcome()
            if line:
                self.show(auth, project, host_header, line, basic_auth)

        thread = threading.Thread(target=run, name="pslg-outcome-title", daemon=True)
        thread.start()
        return thread


#: one per process, like the project version pins
TITLES = OutcomeTitles()

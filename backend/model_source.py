"""Which grounding model the backend serves: the configured one, or the current version of its model store.

Two configurations, one rule each:

* ``PSLG_GROUNDING_MODEL`` names a **model store** (a directory ``pslg train grounding --out`` fills, or an
  empty directory): the backend serves the store's current grounding version, retrains into the same store
  (one lineage with the CLI), and follows the store when it changes (a new version, a rollback, a version
  marked bad).
* It names a **model** (a directory or hub id): retrained versions go to the store ``MODEL_DIR/grounders``,
  and a version there is served only when its card says it was trained under this same configuration; a
  version trained for another configuration is ignored (and logged), so a newly configured model always wins.

Either way an unreadable version is skipped: the next older good version (finally the configured or root base
model) is served, and :attr:`GroundingSource.fallback` says what was wanted, why it failed and what is served.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from annotate.modelstore import ModelStore, ModelStoreError, Version, is_store

log = logging.getLogger("pslg.backend.models")

KIND = "grounding"
#: The marker file older releases wrote into MODEL_DIR; it is no longer read (the store's card decides).
LEGACY_MARKER = "grounder-current.txt"


@dataclass(frozen=True)
class Candidate:
    """One model the backend could serve: what to load and how to name it."""

    spec: str
    version: Optional[str] = None  # the store's version name (v0003) when it is a store version

    @property
    def label(self) -> str:
        return self.version or self.spec


def configured_key(spec: str) -> str:
    """The configured spec as recorded in cards: an absolute path for a directory, the hub id otherwise."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


class GroundingSource:
    """Resolves, loads (with fallback) and tracks the served grounding model of one backend process."""

    def __init__(self, configured: str, model_dir: Path) -> None:
        self.configured = configured
        self.key = configured_key(configured)
        path = Path(configured).expanduser()
        empty_dir = path.is_dir() and not any(path.iterdir())
        self.store_mode = is_store(path) or empty_dir
        self.store = ModelStore(path if self.store_mode else Path(model_dir) / "grounders")
        self.serving: Optional[Candidate] = None
        self.fallback: Optional[dict[str, Any]] = None
        self._ignored_logged: set[str] = set()
        marker = Path(model_dir) / LEGACY_MARKER
        if marker.is_file():
            log.warning("ignoring %s (a marker of an older release); the served version is decided by %s",
                        marker, self.store.root)

    # --- what could be served --------------------------------------------------------------------------------
    def candidates(self) -> list[Candidate]:
        """What to try, best first: the store's current version, older good versions, then the base model."""
        try:
            versions = self.store.candidates(KIND)
        except ModelStoreError as exc:
            log.error("cannot read the model store: %s", exc)
            versions = []
        if not self.store_mode:
            ours = []
            for v in versions:
                if v.card is not None and v.card.configured == self.key:
                    ours.append(v)
                elif v.name not in self._ignored_logged:
                    self._ignored_logged.add(v.name)
                    log.warning("not serving %s/%s: it was trained for PSLG_GROUNDING_MODEL=%s, this backend is "
                                "configured with %s", self.store.root, v.name,
                                v.card.configured if v.card else "?", self.key)
            versions = ours
        found = [Candidate(str(v.path), v.name) for v in versions]
        base = self.configured if not self.store_mode else _root_base(versions)
        if base is not None:
            found.append(Candidate(base))
        return found

    def token(self) -> tuple:
        """Changes whenever the store may serve something else (polled by the engine)."""
        return self.store.state_token()

    # --- loading ---------------------------------------------------------------------------------------------
    def load(self, device: str, candidates: Optional[list[Candidate]] = None):
        """``(grounder, candidate)`` of the first candidate that loads; ``(None, None)`` for an empty store.

        Raises ``RuntimeError`` listing every failure when no candidate loads.
        """
        from annotate.grounding import load_grounder

        candidates = self.candidates() if candidates is None else candidates
        if not candidates:
            self.fallback = None
            return None, None
        failures: list[str] = []
        for candidate in candidates:
            try:
                grounder = load_grounder(candidate.spec, device=device)
            except Exception as exc:  # any failure to load means "try the next one"
                failures.append(f"{candidate.label}: {exc}")
                log.error("cannot load grounding model %s: %s", candidate.label, exc)
                continue
            if failures:
                self.fallback = {"wanted": candidates[0].label, "error": failures[0], "serving": candidate.label}
                log.warning("serving %s instead of %s (%s)", candidate.label, candidates[0].label, failures[0])
            else:
                self.fallback = None
            return grounder, candidate
        raise RuntimeError("no grounding model could be loaded: " + "; ".join(failures))

    def wants_reload(self, candidates: list[Candidate]) -> bool:
        """True when the best candidate is not what is served (or the last load fell back and the store changed)."""
        if not candidates:
            return False
        return self.serving is None or candidates[0] != self.serving or self.fallback is not None

    # --- training ----------------------------------------------------------------------------------------------
    def training_base(self) -> str:
        """What a retrain starts from: the served model (so versions form a lineage)."""
        if self.serving is not None:
            return self.serving.spec
        return self.configured

    def status(self) -> dict[str, Any]:
        """The ``grounding`` block of ``/health``."""
        body: dict[str, Any] = {"configured": self.configured, "store": str(self.store.root),
                                "serving": self.serving.label if self.serving else None}
        if self.store_mode and self.serving is None:
            body["note"] = "the model store has no grounding version yet; train one with `pslg train grounding`"
        return body


def _root_base(versions: list[Version]) -> Optional[str]:
    """The base model a store's lineage started from (the oldest version's base when it is outside the store)."""
    if not versions:
        return None
    oldest = versions[-1]
    if oldest.card is None or oldest.card.parent is not None:
        return None
    return oldest.card.base

"""A versioned model store: one directory holding every trained version of the models of one lineage.

Layout of a store directory::

    store.json          {"format": 1, "bad": {"v0002": "reason"}, "not_served": {"v0004": "reason"}}
    current.json        {"grounding": "v0003"}     the served version per kind (rollback moves it)
    v0001/ card.json    one finished version: model files + its card (kind, base, data digest, ...)
    v0002/ ...
    .staging-<key>/     a version being written (resumable by the same key); never served

Why one module: ``pslg train grounding`` and the backend's retraining write into the same store, and the
backend serves the store's current version, so a version trained anywhere reaches the backend without a
restart. The store is kind-agnostic: a card's ``kind`` ("grounding", or any other model the toolkit trains)
says what a version holds, and ``current``/``rollback`` work per kind.

Every write is atomic: a version appears by renaming a complete staging directory to ``vNNNN`` (under an
advisory lock, so two writers never take the same number); ``current.json`` and ``store.json`` are replaced
with ``atomic_write_text``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional

from annotate.atomic import atomic_write_text

STORE_FILE = "store.json"
CURRENT_FILE = "current.json"
CARD_FILE = "card.json"
LOCK_FILE = ".lock"
STAGING_PREFIX = ".staging-"
_VERSION_RE = re.compile(r"^v(\d{4,})$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def printable(text: object, limit: int = 200) -> str:
    """``text`` with control characters (terminal escapes, carriage returns, C1 codes) written as ``\\xNN``
    escapes, cut to ``limit`` characters: a reason typed or stored once must not drive a terminal later."""
    out = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))
    return out if len(out) <= limit else out[:limit] + "..."


class ModelStoreError(ValueError):
    """A store operation cannot be done (unknown version, not a store, unreadable card); the message says why."""


@dataclass
class ModelCard:
    """What one version is: written as ``card.json`` when the version is committed.

    ``base`` is the model the version was trained from (a hub id, a directory, or another version's
    directory); ``parent`` is that version's name when it came from this store; ``configured`` is the model
    spec the training process was configured with (the backend only serves versions of its own configuration).
    """

    kind: str
    base: str
    version: str = ""
    parent: Optional[str] = None
    configured: Optional[str] = None
    data_digest: Optional[str] = None
    samples: Optional[int] = None
    metrics: Optional[dict[str, Any]] = None
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        """The card of ``data``; ``ModelStoreError`` when a field is missing or of the wrong type (a card is read
        by code that formats and compares its fields: ``"created_at": 5`` must fail here, not there)."""
        if not isinstance(data, dict):
            raise ModelStoreError(f"a model card must be a JSON object, not {type(data).__name__}")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if "kind" not in known or "base" not in known:
            raise ModelStoreError(f"a model card needs 'kind' and 'base' (got keys {sorted(data)})")
        for name, types in _CARD_TYPES.items():
            value = known.get(name)
            if name in known and not (isinstance(value, types) and not isinstance(value, bool) or
                                      (value is None and name in _CARD_OPTIONAL)):
                raise ModelStoreError(f"model card field {name!r} is a {type(value).__name__}, not "
                                      f"{' or '.join(t.__name__ for t in types)}")
        return cls(**known)

    @property
    def label(self) -> str:
        """A version string unique across stores: ``<kind>-<version>-<created, compact>``."""
        stamp = re.sub(r"[^0-9T]", "", self.created_at.split("+")[0])[:15]
        return f"{self.kind}-{self.version}-{stamp}Z" if stamp else f"{self.kind}-{self.version}"


_CARD_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,), "base": (str,), "version": (str,), "parent": (str,), "configured": (str,),
    "data_digest": (str,), "samples": (int,), "metrics": (dict,), "created_at": (str,), "extra": (dict,),
}
_CARD_OPTIONAL = {"parent", "configured", "data_digest", "samples", "metrics"}


@dataclass
class Version:
    """One finished version of a store."""

    name: str
    path: Path
    card: Optional[ModelCard]
    bad: Optional[str] = None
    card_error: Optional[str] = None
    #: why a trained candidate was stored but not served (it lost on validation); None for a served version
    not_served: Optional[str] = None

    @property
    def number(self) -> int:
        return int(self.name[1:])

    @property
    def kind(self) -> Optional[str]:
        return self.card.kind if self.card else None


def read_card(path: str | Path) -> Optional[ModelCard]:
    """The card of a version directory, None when it has none; ``ModelStoreError`` when it is unreadable."""
    card_path = Path(path) / CARD_FILE
    if not card_path.is_file():
        return None
    try:
        return ModelCard.from_dict(json.loads(card_path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise ModelStoreError(f"{card_path}: unreadable model card ({exc})") from exc


def is_store(path: str | Path) -> bool:
    """True when ``path`` is a store directory (has ``store.json`` or ``vNNNN`` versions, and is no model itself)."""
    p = Path(path).expanduser()
    if not p.is_dir() or (p / "config.json").is_file():
        return False
    if (p / STORE_FILE).is_file():
        return True
    return any(_VERSION_RE.match(c.name) and c.is_dir() for c in p.iterdir())


class ModelStore:
    """A store directory (created on first write)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # --- reading -------------------------------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / STORE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"format": 1, "bad": {}}
        except (OSError, ValueError) as exc:
            raise ModelStoreError(f"{self.root / STORE_FILE}: unreadable ({exc})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("bad") or {}, dict):
            # which versions are marked bad is unknown: serving any of them could serve a bad one
            raise ModelStoreError(f"{self.root / STORE_FILE}: not a store file (an object with a 'bad' object)")
        return data

    def _pointers(self) -> dict[str, str]:
        try:
            data = json.loads((self.root / CURRENT_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ModelStoreError(f"{self.root / CURRENT_FILE}: unreadable ({exc})") from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ModelStoreError(f"{self.root / CURRENT_FILE}: not a pointer file (an object of version names)")
        return {str(k): v for k, v in data.items()}

    def versions(self, kind: Optional[str] = None) -> list[Version]:
        """Finished versions, oldest first (a version with an unreadable card is listed with ``card_error``)."""
        if not self.root.is_dir():
            return []
        meta = self._meta()
        bad = meta.get("bad") or {}
        held = meta.get("not_served") or {}
        found = []
        for child in self.root.iterdir():
            if not (_VERSION_RE.match(child.name) and child.is_dir()):
                continue
            card, error = None, None
            try:
                card = read_card(child)
                if card is None:
                    error = f"{child.name} has no {CARD_FILE}"
            except ModelStoreError as exc:
                error = str(exc)
            if card is not None and not card.version:
                card.version = child.name
            if kind is not None and card is not None and card.kind != kind:
                continue
            found.append(Version(child.name, child, card, bad.get(child.name), error, held.get(child.name)))
        return sorted(found, key=lambda v: v.number)

    def get(self, name: str) -> Version:
        """One version by name (``v0002`` or ``2``); ``ModelStoreError`` listing the versions otherwise."""
        wanted = _normalise_name(name)
        for version in self.versions():
            if version.name == wanted:
                return version
        names = ", ".join(v.name for v in self.versions()) or "none"
        raise ModelStoreError(f"{self.root} has no version {name!r} (versions: {names})")

    def current(self, kind: str) -> Optional[Version]:
        """The served version of ``kind``: the rollback pointer when it names a good version, else the newest good one."""
        return next(iter(self.candidates(kind)), None)

    def candidates(self, kind: str) -> list[Version]:
        """Good versions of ``kind`` in the order to try them: the current one, then older ones newest first.

        Versions newer than a rollback pointer are skipped (a rollback means "not those").
        """
        versions = self.versions(kind)
        pointer = self._pointers().get(kind)
        chosen = next((v for v in versions if v.name == pointer), None)
        good = [v for v in versions if v.card is not None and v.bad is None
                and (v.not_served is None or v is chosen) and (chosen is None or v.number <= chosen.number)]
        return sorted(good, key=lambda v: v.number, reverse=True)

    def state_token(self) -> tuple:
        """A cheap fingerprint of what the store serves: changes on a commit, rollback or mark-bad (for polling)."""
        if not self.root.is_dir():
            return ()
        stamps = []
        for name in (STORE_FILE, CURRENT_FILE):
            with contextlib.suppress(OSError):
                st = (self.root / name).stat()
                stamps.append((name, st.st_mtime_ns, st.st_size))
        names = tuple(sorted(c.name for c in self.root.iterdir() if _VERSION_RE.match(c.name)))
        return tuple(stamps) + names

    # --- writing -------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks
            yield
            return
        with open(self.root / LOCK_FILE, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _init(self) -> None:
        if not (self.root / STORE_FILE).is_file():
            atomic_write_text(self.root / STORE_FILE, json.dumps({"format": 1, "bad": {}}, indent=2))

    def staging(self, key: str) -> Path:
        """The staging directory for a version identified by ``key`` (created; an earlier one is reused to resume)."""
        if not _KEY_RE.match(key):
            raise ModelStoreError(f"staging key {key!r} must be 1-80 letters, digits, '_', '.' or '-'")
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{STAGING_PREFIX}{key}"
        path.mkdir(exist_ok=True)
        return path

    def commit(self, staging: str | Path, card: ModelCard, not_served: Optional[str] = None) -> Version:
        """Turn a complete staging directory into the next version (card written, renamed atomically, made current).

        With ``not_served`` (the reason) the version is kept but not made current: a candidate that lost on
        validation. ``rollback`` to it serves it anyway.
        """
        staging = Path(staging)
        if not staging.is_dir() or staging.parent.resolve() != self.root.resolve():
            raise ModelStoreError(f"{staging} is not a staging directory of {self.root}")
        with self._locked():
            self._init()
            numbers = [v.number for v in self.versions()]
            name = f"v{(max(numbers) + 1 if numbers else 1):04d}"
            card.version = name
            card.created_at = card.created_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
            atomic_write_text(staging / CARD_FILE, json.dumps(asdict(card), indent=2))
            os.rename(staging, self.root / name)
            if not_served is None:
                self._set_pointer(card.kind, name)
            else:
                meta = self._meta()
                meta.setdefault("not_served", {})[name] = not_served
                atomic_write_text(self.root / STORE_FILE, json.dumps(meta, indent=2))
        return self.get(name)

    def _set_pointer(self, kind: str, name: str) -> None:
        pointers = self._pointers()
        pointers[kind] = name
        atomic_write_text(self.root / CURRENT_FILE, json.dumps(pointers, indent=2, sort_keys=True))

    def rollback(self, name: str) -> Version:
        """Serve ``name`` (a good version) for its kind from now on; newer versions of that kind are not served."""
        with self._locked():
            version = self.get(name)
            if version.card is None:
                raise ModelStoreError(f"{version.name} cannot be served: {version.card_error}")
            if version.bad is not None:
                raise ModelStoreError(f"{version.name} is marked bad ({version.bad}); `unmark` it first")
            if version.not_served is not None:  # a candidate that lost on validation, served by the user's choice
                meta = self._meta()
                (meta.get("not_served") or {}).pop(version.name, None)
                atomic_write_text(self.root / STORE_FILE, json.dumps(meta, indent=2))
                version.not_served = None
            self._set_pointer(version.card.kind, version.name)
        return version

    def mark_bad(self, name: str, reason: str = "marked bad") -> Version:
        """Never serve ``name`` again (the next good version down is served instead); the files stay.

        The reason is kept printable (:func:`printable`): it is shown in terminals and on /health."""
        reason = printable(reason) or "marked bad"
        with self._locked():
            self._init()
            version = self.get(name)
            meta = self._meta()
            meta.setdefault("bad", {})[version.name] = reason
            atomic_write_text(self.root / STORE_FILE, json.dumps(meta, indent=2))
            version.bad = reason
        return version

    def unmark(self, name: str) -> Version:
        """Undo :meth:`mark_bad`."""
        with self._locked():
            version = self.get(name)
            meta = self._meta()
            (meta.get("bad") or {}).pop(version.name, None)
            atomic_write_text(self.root / STORE_FILE, json.dumps(meta, indent=2))
            version.bad = None
        return version


def _normalise_name(name: str) -> str:
    text = str(name).strip()
    if text.isdigit():
        return f"v{int(text):04d}"
    return text

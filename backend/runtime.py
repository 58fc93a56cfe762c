"""What one backend process shares: settings, engine, image fetching and caches, training store, trainer."""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from typing import Any, Optional

from annotate.image_io import LoadedImage

log = logging.getLogger("pslg.backend.runtime")

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
DELETE_EVENTS = ("ANNOTATION_DELETED", "ANNOTATIONS_DELETED")


class SetupRefused(ValueError):
    """A ``/setup`` tried to re-point a project's images at another host without authentication."""


def declared_size_problem(annotation: dict, max_pixels: int) -> Optional[str]:
    """Why an annotation's regions cannot be decoded for training: a declared ``original_width ×
    original_height`` that is not a positive integer size or exceeds ``max_pixels`` (brush RLE decodes at that
    size, 4 bytes a pixel, so the declaration alone could claim gigabytes)."""
    for region in annotation.get("result") or []:
        if not isinstance(region, dict) or ("original_width" not in region and "original_height" not in region):
            continue
        w, h = region.get("original_width"), region.get("original_height")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)):
            return f"region {region.get('id')!r} declares original size {w!r}×{h!r}, not positive integers"
        if w * h > max_pixels:
            return (f"region {region.get('id')!r} declares {w}×{h} = {w * h:,} pixels, above the limit of "
                    f"{max_pixels:,} (PSLG_MAX_PIXELS)")
    return None


#: bytes a pixel of a request's image stands for while the request runs: its RGB pixels (3), the mask (1) and the
#: RGBA raster the brush RLE is encoded from (4)
HELD_BYTES_PER_PIXEL = 8


def held_bytes(image: LoadedImage) -> int:
    """What a request working on ``image`` holds, counted against the decode budget until it ends."""
    return image.height * image.width * HELD_BYTES_PER_PIXEL


#: glibc's ``mallopt`` parameter number of M_MMAP_THRESHOLD, and the value the backend fixes it at
_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES = -3, 1 << 20


def return_large_frees_to_the_os() -> bool:
    """Serve allocations of 1 MiB and more with mmap, so freeing them gives the memory back to the OS (glibc only).

    Why: decoding one large image allocates several times its pixels for a moment (Pillow's blocks, conversions).
    glibc raises its mmap threshold after the first large free, so later blocks come from the heap, stay in the
    resident set after they are freed, and each gunicorn thread's arena keeps its own high-water mark. Measured
    with eight 3000² PNGs through a 60 MiB image cache: RSS 314 MiB with the default, 160 MiB with the threshold
    fixed (bench/backend_soak.py shows the backend as a whole). A no-op returning False without glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def build_fetcher(settings, creds: Optional[tuple[str, str]]):
    """The ``ImageFetcher`` the settings describe (limits, local roots) for a Label Studio (URL, token), or none."""
    from converters.labelstudio.fetch import ImageFetcher, LabelStudioAuth

    s = settings
    auth = LabelStudioAuth(creds[0], creds[1], timeout=s.image_timeout_s) if creds else None
    return ImageFetcher(auth, max_bytes=s.max_image_bytes, timeout_s=s.image_timeout_s,
                        local_files_root=s.local_files_root, local_image_roots=[s.local_image_root] if s.local_image_root else [])


class Runtime:
    """Everything one backend process shares: settings, engine, image fetching and caches, store, trainer."""

    def __init__(self, settings, engine=None) -> None:
        from backend.engine import Engine
        from converters.labelstudio.fetch import LRUCache
        from backend.store import TrainingStore
        from backend.training import Trainer

        from annotate.image_io import DEFAULT_BUDGET, DecodeBudget

        self.settings = settings
        return_large_frees_to_the_os()
        #: the bytes image decodes may hold at once (PSLG_MAX_DECODE_BYTES); the engine-wide default budget when
        #: the setting is the default, so training's decodes share it
        self.decode_budget = (DEFAULT_BUDGET if settings.max_decode_bytes == DEFAULT_BUDGET.max_bytes
                              else DecodeBudget(settings.max_decode_bytes))
        self.engine = engine or Engine(settings).start()
        #: decoded task images by (project, URL), bounded by PSLG_IMAGE_CACHE_BYTES and PSLG_IMAGE_CACHE_ITEMS
        self.images = LRUCache(size=settings.image_cache_items, max_bytes=settings.image_cache_bytes)
        # kept images give way to images in flight: together they stay within the decode budget when it is needed
        self.decode_budget.add_reclaimer(self.images.shrink_to)
        from backend.sessions import Sessions

        #: interactive click sessions by (project, task, user), bounded by PSLG_SESSION_ITEMS / _BYTES / _TTL
        self.sessions = Sessions(settings.session_items, settings.session_bytes, settings.session_ttl_s)
        self._fetchers = LRUCache(size=settings.max_projects + 1, sizeof=lambda _: 0)
        # not an LRU: evicting a project would let an anonymous /setup re-point it afterwards (see remember_setup)
        self._setup_creds: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()
        self.store = TrainingStore(settings.model_dir / "training.sqlite3")
        self.trainer = Trainer(self.engine, self.store, settings.model_dir, self._fetch_for_training,
                               epochs=settings.train_epochs)
        if settings.label_studio_api_key and not settings.label_studio_url:
            log.warning("LABEL_STUDIO_API_KEY is set without LABEL_STUDIO_URL: it is not used (the environment token "
                        "never goes to a host named in a request); set LABEL_STUDIO_URL")

    # --- credentials ---------------------------------------------------------------------------------------------
    def remember_setup(self, project: Optional[str], hostname: Optional[str], access_token: Optional[str],
                       authenticated: bool = False) -> None:
        """Keep the Label Studio host/token that ``/setup`` sends for this project (used when the environment does
        not name them). Without ``LABEL_STUDIO_URL`` only an authenticated (BASIC_AUTH_*) ``/setup`` may name a
        host (an anonymous one is answered but its host and token are not kept): the first anonymous caller would
        otherwise claim the project. With ``LABEL_STUDIO_URL`` set the host is the environment's anyway and
        ``/setup`` can only bring the token for it. At most
        ``PSLG_MAX_PROJECTS`` projects are kept; beyond that an anonymous ``/setup`` of a new project is refused
        rather than forgetting another. Raises ``SetupRefused``."""
        s = self.settings
        if (s.label_studio_url and s.label_studio_api_key) or not access_token or not isinstance(access_token, str):
            return
        if not isinstance(hostname, str) or not hostname.strip():
            return
        if not s.label_studio_url and not authenticated:
            # the first caller would win: anyone reaching the port could claim a project id before Label Studio
            # does and point its images at a host of their choosing. The setup itself (the labeling config) stands.
            log.warning("/setup of project %s: its Label Studio host and token are not used, the request is not "
                        "authenticated; set LABEL_STUDIO_URL (and LABEL_STUDIO_API_KEY) or enable BASIC_AUTH_* so "
                        "images on Label Studio can be fetched", project or "(none)")
            return
        host = hostname.strip().rstrip("/")
        key = str(project or "")
        with self._lock:
            known = self._setup_creds.get(key)
            if known is None and len(self._setup_creds) >= s.max_projects:
                if not authenticated:
                    raise SetupRefused(
                        f"{len(self._setup_creds)} projects are already set up (PSLG_MAX_PROJECTS); an unauthenticated "
                        f"/setup cannot add project {key or '(none)'} (set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, or "
                        "enable BASIC_AUTH_*)"
                    )
                self._setup_creds.pop(next(iter(self._setup_creds)))
            self._setup_creds[key] = (host, access_token)

    def credentials(self, project: Optional[str] = None) -> Optional[tuple[str, str]]:
        """(Label Studio URL, token) for a project's images, or None.

        The environment's URL wins (``/setup``'s hostname is the browser's view, e.g. localhost, which a container
        may not reach); the environment's token only ever goes with the environment's URL, and a host taken from
        a request only ever gets the token from that same project's ``/setup``.
        """
        s = self.settings
        with self._lock:
            setup = self._setup_creds.get(str(project or ""))
        if s.label_studio_url:
            token = s.label_studio_api_key or (setup[1] if setup else None)
            return (s.label_studio_url, token) if token else None
        return setup

    def fetcher(self, project: Optional[str] = None):
        creds = self.credentials(project)
        key = creds or ("", "")
        with self._lock:
            fetcher = self._fetchers.get(key)
            if fetcher is None:
                fetcher = build_fetcher(self.settings, creds)
                self._fetchers.put(key, fetcher)
        return fetcher

    def load_image(self, url: str, project: Optional[str] = None) -> LoadedImage:
        """Decoded pixels of a task image, cached by URL and project (a click on the same image reuses them and the
        embedding); the cache is bounded by bytes (PSLG_IMAGE_CACHE_BYTES) and entries (PSLG_IMAGE_CACHE_ITEMS).
        The image counts against the decode budget (``held_bytes``: its pixels and what predicting on it allocates)
        until the calling request ends (``release_held``), so concurrent requests on large images wait for each
        other instead of working on them all at once."""
        from annotate.image_io import load_image
        from converters.labelstudio.fetch import display_url

        key = (str(project or ""), url)
        cached = self.images.get(key)
        if cached is not None:
            self.decode_budget.hold(held_bytes(cached))  # released when the request ends (backend.app)
            return cached
        raw = self.fetcher(project).fetch(url)
        # the request's working set is held from the header on, before the decode starts (waiting its turn): held
        # only after the decode, the next request's decode would start in between and both would be worked on
        loaded = load_image(raw, name=display_url(url), max_pixels=self.settings.max_pixels, budget=self.decode_budget,
                            hold_per_pixel=HELD_BYTES_PER_PIXEL)
        del raw
        self.images.put(key, loaded)
        return loaded

    def _fetch_for_training(self, url: str, project: Optional[str]) -> bytes:
        return self.fetcher(project).fetch(url)

    def remember_label_config(self, project: Any, label_config: Any) -> None:
        """Keep a project's labeling config with its stored annotations: training reads them by it."""
        from backend.training import label_config_key

        if not isinstance(label_config, str) or not label_config.strip():
            return
        if len(label_config.encode("utf-8", "replace")) > self.settings.max_label_config_bytes:
            log.warning("project %s: labeling config above PSLG_MAX_LABEL_CONFIG_BYTES; not kept for training", project)
            return
        key = label_config_key(project)
        # a new project's config is kept only while fewer than PSLG_MAX_PROJECTS are: an anonymous /setup loop
        # must not grow the store without bound (a known project's config is always updated)
        if self.store.get_meta(key) is None and self.store.count_meta(label_config_key("")) >= self.settings.max_projects:
            log.warning("project %s: %d labeling configs are kept already (PSLG_MAX_PROJECTS); this one is not kept",
                        project, self.settings.max_projects)
            return
        self.store.set_meta(key, label_config)

    # --- webhook events --------------------------------------------------------------------------------------------
    def _store(self, event: str, project_id: Any, task: Any, annotation: Any) -> tuple[str, Optional[int]]:
        """Validate and store one annotation: (status, sequence number when stored). Raises ValueError naming it."""
        from backend.store import parse_id

        if not isinstance(annotation, dict) or "id" not in annotation:
            raise ValueError("an annotation without an id")
        ann_id = parse_id(annotation["id"])
        if not isinstance(annotation.get("result") or [], list):
            raise ValueError(f"annotation {ann_id}: 'result' is not a list")
        problem = declared_size_problem(annotation, self.settings.max_pixels)
        if problem:
            raise ValueError(f"annotation {ann_id}: {problem}")
        outcome = self.store.upsert(event, project_id, task if isinstance(task, dict) else {}, annotation)
        return outcome.status, outcome.seq

    def show_outcome(self, project_id: Any, host: str, answer: dict) -> None:
        """Put a Start Training request's outcome into the model's title in Label Studio (``backend.model_title``).

        The answer of a retrain that ended within ``PSLG_TRAIN_WAIT`` carries its outcome; otherwise a background
        thread waits for the retrain to end. Needs a token for the project's Label Studio; never raises.
        """
        from backend.model_title import TITLES

        if not self.settings.outcome_in_title or not str(project_id or "").isdigit():
            return
        if self.credentials(str(project_id)) is None:
            return
        try:
            auth = self.fetcher(str(project_id)).auth
        except ValueError as exc:
            log.warning("project %s: no Label Studio to show the training outcome on: %s", project_id, exc)
            return
        if auth is None:
            return
        cfg = self.settings
        basic = (cfg.basic_auth_user, cfg.basic_auth_pass) if cfg.basic_auth_enabled else None
        training = str(answer.get("training") or "")
        if training.startswith("nothing new"):
            last = self.trainer.outcome
            line = f"nothing new to learn ({self.store.count()} stored)" + (f"; {last}" if last else "")
            threading.Thread(target=TITLES.show, args=(auth, int(project_id), host, line, basic),
                             name="pslg-outcome-title", daemon=True).start()
            return
        TITLES.after_retrain(auth, int(project_id), host, self.trainer.wait_idle, lambda: self.trainer.outcome, basic)

    def train_item(self, project: Optional[str], task: dict, annotation: Any) -> str:
        """Store one annotation from the older ``/train`` call; returns the store's status (ValueError if bad)."""
        status, _ = self._store("TRAIN", project, task, annotation)
        return status

    def _maybe_train(self, seqs: list[int], answer: dict[str, Any]) -> None:
        every = self.settings.train_every
        if every > 0 and any(seq % every == 0 for seq in seqs):
            answer["training"] = self.trainer.request(f"{every} new annotations")

    def handle_event(self, event: str, data: dict, host: str = "") -> dict:
        """Apply one Label Studio webhook event to the store (Label Studio 1.23's payload shapes).

        ANNOTATION_CREATED/UPDATED and the bulk ANNOTATIONS_CREATED store; ANNOTATION(S)_DELETED and TASKS_DELETED
        remove (and leave tombstones); START_TRAINING, or every ``PSLG_TRAIN_EVERY`` stored annotations, retrains.
        A malformed single event raises ``ValueError`` (the route answers 400); in a bulk event each bad item is
        reported in ``errors`` and the rest is applied. ``host`` is the request's ``Host`` header (which of the
        project's ML backends is this one, for :meth:`show_outcome`).
        """
        from backend.store import parse_id

        project = data.get("project")
        project_id = project.get("id") if isinstance(project, dict) else project
        if project_id is not None:
            project_id = parse_id(project_id, "project id")
        if isinstance(project, dict) and event in TRAIN_EVENTS + ("ANNOTATIONS_CREATED",):
            self.remember_label_config(project_id, project.get("label_config"))
        if event in TRAIN_EVENTS:
            annotation = data.get("annotation")
            status, seq = self._store(event, project_id, data.get("task"), annotation)
            answer: dict[str, Any] = {"status": status, "annotation": annotation.get("id"), "stored": self.store.count()}
            self._maybe_train([seq] if seq is not None else [], answer)
            return answer
        if event == "ANNOTATIONS_CREATED":
            annotations = data.get("annotation")
            if not isinstance(annotations, list):
                raise ValueError("ANNOTATIONS_CREATED needs 'annotation' as a list")
            tasks = data.get("task") if isinstance(data.get("task"), list) else []
            by_id = {t.get("id"): t for t in tasks if isinstance(t, dict)}
            seqs: list[int] = []
            errors: list[str] = []
            statuses: dict[str, int] = {}
            for item in annotations:
                try:
                    task = by_id.get(item.get("task")) if isinstance(item, dict) else None
                    status, seq = self._store(event, project_id, task, item)
                except ValueError as exc:
                    errors.append(str(exc))
                    log.warning("ANNOTATIONS_CREATED: %s; skipped", exc)
                    continue
                statuses[status] = statuses.get(status, 0) + 1
                if seq is not None:
                    seqs.append(seq)
            answer = {"status": "stored", "annotations": statuses, "stored": self.store.count()}
            if errors:
                answer["errors"] = errors
            self._maybe_train(seqs, answer)
            return answer
        if event in DELETE_EVENTS:
            items = data.get("annotations") if event == "ANNOTATIONS_DELETED" else [data.get("annotation")]
            if not isinstance(items, list) or not all(isinstance(a, dict) and "id" in a for a in items):
                raise ValueError(f"{event} needs {'annotations: [{id}]' if event == 'ANNOTATIONS_DELETED' else 'annotation: {id}'}")
            removed = self.store.delete([parse_id(a["id"]) for a in items])
            return {"status": "deleted" if removed else "not stored", "deleted": removed, "stored": self.store.count()}
        if event == "TASKS_DELETED":
            tasks = data.get("tasks")
            if not isinstance(tasks, list) or not all(isinstance(t, dict) and "id" in t for t in tasks):
                raise ValueError("TASKS_DELETED needs tasks: [{id}]")
            removed = self.store.delete_tasks([parse_id(t["id"], "task id") for t in tasks])
            return {"status": "deleted", "deleted": removed, "stored": self.store.count()}
        if event == "START_TRAINING":  # the answer carries the outcome when the retrain ends within PSLG_TRAIN_WAIT
            answer = {"status": "training", **self.trainer.request_and_wait("START_TRAINING", self.settings.train_wait_s)}
            self.show_outcome(project_id, host, answer)
            return answer
        return {"status": "ignored", "event": event}

"""What one backend process shares: settings, engine, image fetching and caches, training store, trainer."""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from annotate.image_io import LoadedImage

log = logging.getLogger("pslg.backend.runtime")

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


class Runtime:
    """Everything one backend process shares: settings, engine, image fetching and caches, store, trainer."""

    def __init__(self, settings, engine=None) -> None:
        from backend.engine import Engine
        from converters.labelstudio.fetch import LRUCache
        from backend.store import TrainingStore
        from backend.training import Trainer

        self.settings = settings
        self.engine = engine or Engine(settings).start()
        self._images = LRUCache(size=16)
        self._fetchers: dict[tuple[str, str], Any] = {}
        self._setup_creds: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()
        self.store = TrainingStore(settings.model_dir / "training.sqlite3")
        self.trainer = Trainer(self.engine, self.store, settings.model_dir, self._fetch_for_training,
                               epochs=settings.train_epochs)

    # --- credentials ---------------------------------------------------------------------------------------------
    def remember_setup(self, project: Optional[str], hostname: Optional[str], access_token: Optional[str]) -> None:
        """Keep the Label Studio host/token from ``/setup``: the fallback when LABEL_STUDIO_URL/API_KEY are unset."""
        if hostname and access_token:
            with self._lock:
                self._setup_creds[str(project or "")] = (hostname.rstrip("/"), access_token)
                self._setup_creds[""] = (hostname.rstrip("/"), access_token)

    def fetcher(self, project: Optional[str] = None):
        from converters.labelstudio.fetch import ImageFetcher, LabelStudioAuth

        s = self.settings
        with self._lock:
            setup = self._setup_creds.get(str(project or "")) or self._setup_creds.get("")
        # the environment wins; /setup's hostname and token fill what it leaves unset (the env URL is preferred
        # because /setup's hostname is the browser's view, e.g. localhost, which a container may not reach)
        url = s.label_studio_url or (setup[0] if setup else None)
        token = s.label_studio_api_key or (setup[1] if setup else None)
        creds = (url, token) if url and token else None
        key = creds or ("", "")
        with self._lock:
            fetcher = self._fetchers.get(key)
            if fetcher is None:
                auth = LabelStudioAuth(creds[0], creds[1], timeout=s.image_timeout_s) if creds else None
                fetcher = ImageFetcher(auth, max_bytes=s.max_image_bytes, timeout_s=s.image_timeout_s,
                                       local_files_root=s.local_files_root)
                self._fetchers[key] = fetcher
        return fetcher

    def load_image(self, url: str, project: Optional[str] = None) -> LoadedImage:
        """Decoded pixels of a task image, cached by URL (a click on the same image reuses them and the embedding)."""
        from annotate.image_io import load_image

        cached = self._images.get(url)
        if cached is not None:
            return cached
        raw = self.fetcher(project).fetch(url)
        from converters.labelstudio.fetch import display_url

        loaded = load_image(raw, name=display_url(url), max_pixels=self.settings.max_pixels)
        self._images.put(url, loaded)
        return loaded

    def _fetch_for_training(self, item) -> tuple[bytes, str]:
        from backend.training import _image_ref

        url, _ = _image_ref(item)
        return self.fetcher(item.project).fetch(url), url

    # --- webhook events --------------------------------------------------------------------------------------------
    def handle_event(self, event: str, data: dict) -> dict:
        """Store annotations, start retraining when asked (START_TRAINING) or every ``PSLG_TRAIN_EVERY`` new ones."""
        project = data.get("project")
        project_id = project.get("id") if isinstance(project, dict) else project
        if event in TRAIN_EVENTS:
            annotation = data.get("annotation") or {}
            task = data.get("task") or {}
            seq = self.store.upsert(event, project_id, task, annotation)
            answer: dict[str, Any] = {"status": "stored", "annotation": annotation.get("id"), "stored": self.store.count()}
            every = self.settings.train_every
            if every > 0 and seq % every == 0:
                answer["training"] = self.trainer.request(f"{every} new annotations")
            return answer
        if event == "ANNOTATION_DELETED":
            annotation = data.get("annotation") or {}
            removed = self.store.delete(annotation["id"]) if "id" in annotation else False
            return {"status": "deleted" if removed else "not stored", "annotation": annotation.get("id")}
        if event == "START_TRAINING":
            return {"status": "training", "training": self.trainer.request("START_TRAINING")}
        return {"status": "ignored", "event": event}

"""SAM image embeddings on disk, shared between processes and bounded in bytes (least recently used first out).

Why: ``pslg prelabel --cache-embeddings DIR`` runs SAM's encoder once per image ahead of time; a backend
started with ``PSLG_EMBEDDING_CACHE=DIR`` then answers the annotator's first click on any pre-labelled image
without the encoder (seconds on a CPU). Entries are keyed by the segmenter's name (which carries a digest of
its weights) and the image's content key, so another model or changed pixels never match.

Files are written atomically (a reader never sees half an entry; several processes may share the folder) and
a read refreshes the entry's mtime, which is what eviction orders by.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Optional

from annotate.atomic import atomic_path

log = logging.getLogger("pslg.segmenters.embedding_store")

SUFFIX = ".sam-embedding.pt"


class DiskEmbeddingCache:
    """``key → (features, original_size, input_size)`` in ``root``, at most ``max_bytes`` in all."""

    def __init__(self, root: str | Path, max_bytes: int = 2 * 1024**3) -> None:
        if max_bytes <= 0:
            raise ValueError(f"the embedding cache needs a positive size bound, got {max_bytes} bytes")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)

    def _path(self, key: str) -> Path:
        return self.root / (hashlib.sha256(key.encode("utf-8")).hexdigest()[:40] + SUFFIX)

    def get(self, key: str, device: Any = "cpu") -> Optional[dict[str, Any]]:
        """The stored entry for ``key`` on ``device``, or None (absent, or unreadable: then it is removed)."""
        import torch

        path = self._path(key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location=device, weights_only=True)
            if entry.get("key") != key:  # a hash collision or a foreign file: not ours
                return None
            os.utime(path)  # recently used
            return entry
        except Exception as exc:  # a truncated or foreign file must not break set_image
            log.warning("dropping unreadable embedding %s: %s", path.name, exc)
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, features: Any, original_size: tuple[int, int], input_size: tuple[int, int],
            **extra: Any) -> None:
        """Store an entry, then evict the least recently used ones beyond ``max_bytes``.

        ``features`` is one tensor (SAM) or a list of tensors (the feature pyramids of SAM 2 / EdgeTAM, SAM-HQ's
        intermediate features); ``extra`` holds further plain values (lists of ints) the segmenter needs back.
        """
        import torch

        stored = ([f.detach().cpu() for f in features] if isinstance(features, (list, tuple))
                  else features.detach().cpu())
        entry = {"key": key, "features": stored, "original_size": list(original_size), "input_size": list(input_size),
                 **extra}
        try:
            with atomic_path(self._path(key)) as tmp:
                torch.save(entry, tmp)
        except OSError as exc:  # a full or read-only disk costs the cache, never the prediction
            log.warning("could not store an embedding in %s: %s", self.root, exc)
            return
        self.evict()

    def evict(self) -> int:
        """Remove least recently used entries until the folder holds at most ``max_bytes``; how many went."""
        entries = []
        for path in self.root.glob("*" + SUFFIX):
            try:
                st = path.stat()
            except FileNotFoundError:  # another process evicted it
                continue
            entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        return removed

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("*" + SUFFIX) if p.exists())

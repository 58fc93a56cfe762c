"""Resolving the image a task references to a local file (local files, uploads, URLs), with its size."""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from converters.labelstudio.live import LiveProject

LOCAL_FILES_PREFIX = "/data/local-files/"
UPLOAD_PREFIX = "/data/upload/"

class ImageResolveError(ValueError):
    pass


class ImageResolver:
    """Turns the image reference a task gives into a local file, and reads its size from the header.

    * ``/data/local-files/?d=REL`` → ``<image_root>/REL``
    * ``/data/upload/P/F`` → ``<image_root>/upload/P/F``, ``<image_root>/P/F`` or ``<image_root>/F``
    * plain paths → as given, else relative to ``image_root`` / the export's folder
    * ``http(s)://`` URLs and Label Studio paths not found locally → downloaded once (with the live project's
      credentials when the URL is on its host) into a scratch folder removed by :meth:`close`.
    """

    def __init__(self, image_root: Optional[Path] = None, base_dir: Optional[Path] = None,
                 fetcher: Optional["LiveProject"] = None) -> None:
        self.image_root = Path(image_root) if image_root else None
        self.base_dir = Path(base_dir) if base_dir else None
        self.fetcher = fetcher
        self._cache: dict[str, tuple[Path, int, int]] = {}
        self._scratch: Optional[tempfile.TemporaryDirectory] = None

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def _local_candidates(self, src: str) -> list[Path]:
        roots = [r for r in (self.image_root, self.base_dir) if r is not None]
        if src.startswith(LOCAL_FILES_PREFIX):
            q = urllib.parse.parse_qs(urllib.parse.urlparse(src).query).get("d", [""])[0]
            found = [r / q for r in roots] + ([Path("/") / q] if not roots else [])
            return [c for c in found if ".." not in Path(q).parts]  # stay under the root, as Label Studio does
        if src.startswith(UPLOAD_PREFIX):
            parts = Path(urllib.parse.unquote(src[len(UPLOAD_PREFIX):]))
            if ".." in parts.parts:
                return []
            return [c for r in roots for c in (r / "upload" / parts, r / parts, r / parts.name)]
        if "://" in src:
            return []
        p = Path(urllib.parse.unquote(src))
        return [p] if p.is_absolute() else [r / p for r in roots] + [p]

    def _download(self, src: str) -> Path:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="pslg-images-")
        name = os.path.basename(urllib.parse.urlparse(src).path) or "image"
        if src.startswith(LOCAL_FILES_PREFIX):
            name = os.path.basename(urllib.parse.parse_qs(urllib.parse.urlparse(src).query).get("d", [name])[0])
        dest = Path(self._scratch.name) / str(len(self._cache)) / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.fetcher is not None:
            self.fetcher.download(src, dest)
        elif src.startswith(("http://", "https://")):
            import requests

            with requests.get(src, timeout=60, stream=True) as resp:
                if resp.status_code != 200:
                    raise ImageResolveError(f"image {src}: HTTP {resp.status_code}")
                with open(dest, "wb") as fh:
                    for chunk in resp.iter_content(1 << 16):
                        fh.write(chunk)
        else:
            raise ImageResolveError(f"image {src} not found locally (give --image-root)")
        return dest

    def resolve(self, src: str) -> tuple[Path, int, int]:
        """(local path, width, height) for the image reference ``src``; cached per reference."""
        hit = self._cache.get(src)
        if hit is not None:
            return hit
        path = next((c for c in self._local_candidates(src) if c.is_file()), None)
        if path is None:
            if "://" in src or (src.startswith("/data/") and self.fetcher is not None):
                try:
                    path = self._download(src)
                except ImageResolveError:
                    raise
                except Exception as exc:  # network errors: name the image, never the credentials
                    raise ImageResolveError(f"image {src} could not be downloaded: {type(exc).__name__}") from exc
            else:
                tried = ", ".join(str(c) for c in self._local_candidates(src)[:3]) or "no local candidate"
                raise ImageResolveError(f"image {src} not found (tried {tried}; give --image-root)")
        width, height = image_size(path)
        self._cache[src] = (path, width, height)
        return self._cache[src]


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header (PIL reads no pixels); falls back to annotate.image_io."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except Exception:
        from annotate.image_io import load_image

        try:
            rgb = load_image(path).rgb
        except Exception as exc:
            raise ImageResolveError(f"image {path} cannot be read: {exc}") from exc
        return int(rgb.shape[1]), int(rgb.shape[0])

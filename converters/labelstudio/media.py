"""Resolving the image a task references to a local file (local files, uploads, URLs), with its size."""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Protocol

if TYPE_CHECKING:
    from converters.labelstudio.live import LiveProject

LOCAL_FILES_PREFIX = "/data/local-files/"
UPLOAD_PREFIX = "/data/upload/"

class ImageResolveError(ValueError):
    """An image reference that cannot be turned into a readable local file (the message names the image)."""


class ImageSource(Protocol):
    """What turns a task's image reference into a local file: ``resolve(src)`` → (path, width, height).

    ``ImageResolver`` serves exports (local roots, then downloads); ``FetchedImages`` serves the backend (its
    fetcher, with the Label Studio token and size limits). ``task_to_item`` works with either.
    """

    def resolve(self, src: str) -> tuple[Path, int, int]: ...


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
            from converters.labelstudio.fetch import ImageFetcher, ImageFetchError

            try:  # no credentials here; the fetcher bounds size and time and refuses ambiguous URLs
                data = ImageFetcher(timeout_s=60.0).fetch(src)
            except ImageFetchError as exc:
                raise ImageResolveError(str(exc)) from None
            dest.write_bytes(data)
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


class FetchedImages:
    """Image references → local PNG files through a byte fetcher (the backend's ``ImageFetcher.fetch``).

    Why re-encode: the bytes may be any format ``annotate.image_io`` reads (GeoTIFF, 16-bit, ...); training
    code reads plain RGB files. Each reference is fetched and written once per instance, under ``work_dir``.
    """

    def __init__(self, fetch: Callable[[str], bytes], work_dir: Path, max_pixels: Optional[int] = None) -> None:
        self.fetch = fetch
        self.work_dir = Path(work_dir)
        self.max_pixels = max_pixels
        self._cache: dict[str, tuple[Path, int, int]] = {}

    def resolve(self, src: str) -> tuple[Path, int, int]:
        hit = self._cache.get(src)
        if hit is not None:
            return hit
        import cv2

        from annotate.atomic import atomic_write_bytes
        from annotate.image_io import load_image
        from converters.labelstudio.fetch import display_url

        shown = display_url(src)
        try:
            limit = {} if self.max_pixels is None else {"max_pixels": self.max_pixels}
            rgb = load_image(self.fetch(src), name=shown, **limit).rgb
        except Exception as exc:  # fetch/decode errors name the image (display_url never shows a token)
            raise ImageResolveError(f"image {shown}: {exc}") from exc
        ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ImageResolveError(f"image {shown}: could not be re-encoded as PNG")
        path = self.work_dir / f"image-{len(self._cache)}.png"
        atomic_write_bytes(path, buf.tobytes())
        self._cache[src] = (path, int(rgb.shape[1]), int(rgb.shape[0]))
        return self._cache[src]

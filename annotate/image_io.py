"""Load any image the toolkit meets (PNG, JPEG, TIFF, GeoTIFF/COG, bytes from a URL) as RGB uint8 for the models.

Choices (documented in docs/images-and-checkpoints.md):

* **Readers.** TIFF/BigTIFF/JPEG 2000 go through rasterio (GDAL), which keeps the CRS and the affine transform
  and reads any band count and dtype. Plain formats (PNG, JPEG, WebP, BMP, GIF) go through Pillow, which applies
  the JPEG EXIF orientation the way browsers (and so Label Studio) display it and handles palette/alpha modes.
  Anything Pillow cannot identify is retried with rasterio.
* **Bands.** One band → replicated to RGB (a palette band is expanded through its colour map); two bands
  (grey + alpha) → the first one; three or more → bands 1, 2, 3, or the ``bands`` you pass, **1-based like
  rasterio** (e.g. ``bands=(4, 3, 2)`` for a false-colour NIR composite of a 4-band NAIP tile). One index is
  allowed and replicated.
* **Dtypes.** uint8 is kept as is. Anything else (uint16, int16, float …) is stretched **per band** from its
  2nd to its 98th percentile to 0–255, ignoring nodata, masked and non-finite pixels; the percentiles come from a
  regular subsample of at most ``STRETCH_SAMPLE`` valid pixels per band (exact for images up to that size).
  Nodata pixels become 0.
* **Size limit.** ``max_pixels`` (default ``DEFAULT_MAX_PIXELS`` = 100 MP, ~0.3 GB as RGB; the one default of
  the CLI and the backend, both overridable with ``PSLG_MAX_PIXELS``) is checked from the header **before** decoding; bigger scenes should be tiled. Pillow's own
  decompression-bomb limit (89 MP warning, 179 MP error) is superseded by this explicit one: images Pillow
  refuses for size are read through rasterio after the same check.
* **Memory budget.** The pixel limit does not bound memory (a 16-bit or float band, or many bands, costs more
  per pixel), so every decode also reserves, from the header and before decoding, the bytes it will hold at its
  peak from a budget shared by the threads of the process (``DecodeBudget``, default
  ``DEFAULT_MAX_DECODE_BYTES`` = 1 GiB; the backend's ``PSLG_MAX_DECODE_BYTES``): an image that alone needs more
  is refused, concurrent decodes wait for each other instead of adding up. To keep that peak near the 3 bytes a
  pixel of the RGB result, GeoTIFFs are read band by band in windows of rows and every stretch runs on chunks
  of ``CHUNK_PIXELS`` pixels (float64 only per chunk), and Pillow images are converted only when their mode is
  not RGB already.
* **Errors.** Every failure (missing, corrupt, truncated, unsupported, too large, bad ``bands``) raises
  :class:`ImageLoadError` whose message names the file (or the ``name`` given for bytes).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
import weakref
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import rasterio
from PIL import Image, ImageOps, UnidentifiedImageError
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import MemoryFile

#: Default pixel-count limit (width × height): 100 megapixels (a 10000 × 10000 scene, ~0.3 GB as RGB). The CLI
#: (``--max-pixels``) and the backend (``PSLG_MAX_PIXELS``) start from this one value.
DEFAULT_MAX_PIXELS: int = 100_000_000
#: At most this many valid pixels per band are sampled to estimate the 2–98 % stretch percentiles.
STRETCH_SAMPLE: int = 1_000_000
STRETCH_PERCENTILES: tuple[float, float] = (2.0, 98.0)
#: Default memory budget of the decodes of one process (bytes, shared by concurrent decodes): a 100-megapixel
#: RGB PNG peaks at about 0.7 GB (Pillow's 4 bytes a pixel, then the 3-byte array), a float GeoTIFF of the same
#: size at 0.3 GB (read in windows).
DEFAULT_MAX_DECODE_BYTES: int = 1024**3
#: Pixels processed at once when stretching or reading windows (float64 temporaries: 8 MiB a chunk).
CHUNK_PIXELS: int = 1 << 20

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_JP2_MAGIC = (b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")


class ImageLoadError(ValueError):
    """An image could not be loaded; the message always names the file, URL or given name."""


class _UnreadableError(ImageLoadError):
    """GDAL could not open or decode the data (as opposed to a limit or a bad ``bands`` argument)."""


class DecodeBudget:
    """Bytes that decodes may hold at once in this process; each decode reserves its estimated peak first.

    Why: a pixel limit counts pixels, not bytes per pixel; and eight request threads decoding large images at
    once would each be within the limit and together exhaust memory. A reservation larger than the whole budget
    fails at once (the image can never be decoded here); a smaller one waits until enough is released.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError("the decode memory budget must be positive")
        self.max_bytes = int(max_bytes)
        self._used = 0
        self._cond = threading.Condition()
        self._local = threading.local()
        self._reclaimers: list[weakref.WeakMethod] = []

    def add_reclaimer(self, shrink_to: Callable[[int], object]) -> None:
        """Memory that gives way to decodes: once a reservation or a hold is counted, ``shrink_to(room)`` is called
        with the bytes the budget has left, e.g. a cache of decoded images (``LRUCache.shrink_to``)
        then keeps at most that much.

        Why: a cache bounded on its own and the decode budget would add up (a 1 GiB cache of 100-megapixel images
        plus 1 GiB of decodes in flight); this way kept images and images in flight together stay within the
        budget whenever a decode needs room. Held by weak reference (a bound method): a dropped cache is not
        kept alive by a process-wide budget.
        """
        with self._cond:
            self._reclaimers = [r for r in self._reclaimers if r() is not None]
            self._reclaimers.append(weakref.WeakMethod(shrink_to))  # type: ignore[arg-type]

    def _reclaim(self) -> None:
        """Shrink what gives way to the room the budget has left (called once a reservation or hold is counted)."""
        with self._cond:
            room = max(0, self.max_bytes - self._used)
            methods = [r() for r in self._reclaimers]
        for method in methods:  # outside the lock: a cache takes its own
            if method is not None:
                method(room)

    def held_here(self) -> int:
        """Bytes this thread holds for decoded images (:meth:`hold`) until :meth:`release_held`."""
        return getattr(self._local, "held", 0)

    def hold(self, nbytes: int, wait: bool = False) -> None:
        """Count a decoded image this thread keeps using (a request's images) against the budget until
        :meth:`release_held`: concurrent requests then wait for each other's images, not only decodes.

        With ``wait`` a thread that holds nothing yet first waits until the budget has room (an image larger than
        the whole budget waits until nothing else is counted), so a request's working set is counted before its
        decode starts: counted only after it, the next request's decode could start in the gap and both images
        would be worked on at once. A thread that already holds never waits (no deadlock)."""
        nbytes = max(0, int(nbytes))
        with self._cond:
            if wait:
                while self._used + min(nbytes, self.max_bytes) > self.max_bytes and not self.held_here():
                    self._cond.wait()
            self._used += nbytes
            self._local.held = self.held_here() + int(nbytes)
        self._reclaim()

    def release_held(self) -> None:
        """Give back what :meth:`hold` counted for this thread (at the end of its request)."""
        with self._cond:
            self._used -= self.held_here()
            self._local.held = 0
            self._cond.notify_all()

    @property
    def used(self) -> int:
        with self._cond:
            return self._used

    @contextmanager
    def reserve(self, nbytes: int, name: str) -> Iterator[None]:
        """Hold ``nbytes`` of the budget for the ``with`` block; ``ImageLoadError`` naming ``name`` when the
        budget can never hold them."""
        nbytes = max(0, int(nbytes))
        if nbytes > self.max_bytes:
            raise ImageLoadError(
                f"{name}: decoding needs about {nbytes / 2**20:,.0f} MiB, above the memory budget of "
                f"{self.max_bytes / 2**20:,.0f} MiB (PSLG_MAX_DECODE_BYTES); tile the scene or raise the budget")
        with self._cond:
            # a thread that already holds images never waits (two requests each holding one image and waiting for
            # the other's would deadlock); it may go over the budget by its own next decode
            while self._used + nbytes > self.max_bytes and not self.held_here():
                self._cond.wait()
            self._used += nbytes
        self._reclaim()
        try:
            yield
        finally:
            with self._cond:
                self._used -= nbytes
                self._cond.notify_all()


#: The budget of every decode that is not given one (the CLI's, and the default of the backend's settings).
DEFAULT_BUDGET = DecodeBudget()


@dataclass
class LoadedImage:
    """An image ready for the models, with its georeferencing when it had any.

    ``transform`` is the affine 6-tuple in rasterio order ``(a, b, c, d, e, f)`` (x = a·col + b·row + c,
    y = d·col + e·row + f); ``band_count`` and ``dtype`` describe the source before conversion.
    """

    rgb: np.ndarray
    source: str
    crs: str | None
    transform: tuple[float, float, float, float, float, float] | None
    band_count: int
    dtype: str

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @cached_property
    def key(self) -> str:
        """:func:`image_key` of the pixels, computed once (embedding caches are keyed by it)."""
        return image_key(self.rgb)


def image_key(rgb: np.ndarray) -> str:
    """Content hash of an image array (blake2b-128 of shape, dtype and bytes), the key of embedding caches.

    Two loads of the same pixels give the same key whatever the file name or URL; any pixel change gives
    another.
    """
    arr = np.ascontiguousarray(rgb)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.shape}|{arr.dtype.str}|".encode())
    h.update(arr.tobytes() if arr.size == 0 else memoryview(arr).cast("B"))
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------


def _check_size(width: int, height: int, max_pixels: int, name: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"{name}: image has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise ImageLoadError(
            f"{name}: image is {width}×{height} = {width * height:,} pixels, above the limit of {max_pixels:,} "
            f"(max_pixels); tile the scene or raise the limit"
        )


#: ``read(r0, r1) -> (values, valid)`` for rows ``r0:r1`` of one band (``valid`` None: every pixel is)
RowReader = Callable[[int, int], "tuple[np.ndarray, Optional[np.ndarray]]"]


def _row_chunks(height: int, width: int, rows: Optional[int] = None) -> list[tuple[int, int]]:
    rows = rows or max(1, CHUNK_PIXELS // max(1, width))
    return [(r, min(height, r + rows)) for r in range(0, height, rows)]


def _valid_of(values: np.ndarray, valid: Optional[np.ndarray]) -> np.ndarray:
    ok = np.isfinite(values) if np.issubdtype(values.dtype, np.floating) else np.ones(values.shape, bool)
    return ok if valid is None else ok & valid


def _stretch_rows(read: RowReader, height: int, width: int, out: np.ndarray, rows: Optional[int] = None) -> None:
    """Per-band 2–98 % percentile stretch to uint8 written into ``out`` (H, W), invalid pixels 0, in row chunks.

    The percentiles come from every ``step``-th valid pixel in row-major order (``step`` = ⌈valid / STRETCH_SAMPLE⌉,
    so exact up to that many), gathered chunk by chunk: one pass counts, one samples, one converts. No
    temporary is larger than a chunk, where the whole-band version held several float64 copies of the band.
    """
    chunks = _row_chunks(height, width, rows)
    total = sum(int(np.count_nonzero(_valid_of(*read(r0, r1)))) for r0, r1 in chunks)
    out[:] = 0
    if total == 0:
        return
    step = -(-total // STRETCH_SAMPLE) if total > STRETCH_SAMPLE else 1
    parts: list[np.ndarray] = []
    seen = 0
    for r0, r1 in chunks:
        values, valid = read(r0, r1)
        vals = values[_valid_of(values, valid)]
        parts.append(vals[(-seen) % step::step].astype(np.float64))
        seen += vals.size
    lo, hi = np.percentile(np.concatenate(parts), STRETCH_PERCENTILES)
    del parts
    for r0, r1 in chunks:
        values, valid = read(r0, r1)
        ok = _valid_of(values, valid)
        if not hi > lo:
            # constant band: map its value to mid-grey rather than inventing contrast
            out[r0:r1] = np.where(ok, 0 if lo == 0 else 128, 0)
            continue
        scaled = (values.astype(np.float64) - lo) * (255.0 / (hi - lo))
        np.clip(scaled, 0, 255, out=scaled)
        out[r0:r1] = np.where(ok, np.rint(scaled), 0).astype(np.uint8)


def _stretch(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-band 2–98 % percentile stretch of an in-memory ``band`` to uint8; invalid pixels become 0."""
    out = np.zeros(band.shape, dtype=np.uint8)
    _stretch_rows(lambda r0, r1: (band[r0:r1], valid[r0:r1]), band.shape[0], band.shape[1], out)
    return out


def _to_rgb(stack: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """``stack`` (k, H, W) of one or three bands → (H, W, 3) uint8 (stretched unless already uint8)."""
    k, h, w = stack.shape
    rgb = np.empty((h, w, 3), dtype=np.uint8)
    for i in range(k):
        if stack.dtype == np.uint8:
            rgb[:, :, i] = stack[i] if valid is None else np.where(valid[i], stack[i], 0)
        else:
            band = stack[i]
            mask = None if valid is None else valid[i]
            _stretch_rows(lambda r0, r1: (band[r0:r1], None if mask is None else mask[r0:r1]), h, w, rgb[:, :, i])
    if k == 1:
        rgb[:, :, 1] = rgb[:, :, 0]
        rgb[:, :, 2] = rgb[:, :, 0]
    return rgb


def _select(count: int, bands: Sequence[int] | None, name: str) -> list[int]:
    """1-based band indexes to read: ``bands`` (validated) or the default for ``count`` bands."""
    if bands is None:
        return [1] if count < 3 else [1, 2, 3]
    idx = [int(b) for b in bands]
    if len(idx) not in (1, 3):
        raise ImageLoadError(f"{name}: bands must name 1 or 3 bands (1-based), got {list(bands)}")
    bad = [b for b in idx if not 1 <= b <= count]
    if bad:
        raise ImageLoadError(f"{name}: band(s) {bad} out of range: the image has {count} band(s), numbered from 1")
    return idx


# ---------------------------------------------------------------- rasterio (GDAL) path

#: GDAL's block cache while we read (MB): windows are read in block-aligned rows, so one row of blocks is enough;
#: GDAL's default (5 % of the RAM) would otherwise keep gigabytes of decoded float blocks.
_GDAL_CACHE_MB = 64
# GDAL sizes its block cache once, at the first read of the process, from GDAL_CACHEMAX: the per-read
# ``rasterio.Env`` below only takes effect when it is that first read, so the default is set for the process
# too (a value the user set is kept)
os.environ.setdefault("GDAL_CACHEMAX", str(_GDAL_CACHE_MB))
#: bytes per chunk pixel besides the source value: validity masks, the float64 scaling and its rounding
_CHUNK_OVERHEAD = 8 + 8 + 4


def _rasterio_rows(ds: rasterio.io.DatasetReader, band: int) -> int:
    """Rows per window: about CHUNK_PIXELS pixels, a whole number of the band's blocks."""
    block_h = max(1, int(ds.block_shapes[band - 1][0]))
    rows = max(1, CHUNK_PIXELS // max(1, ds.width))
    return max(block_h, rows // block_h * block_h)


def _rasterio_estimate(ds: rasterio.io.DatasetReader, idx: list[int]) -> int:
    """Peak bytes of :func:`_load_rasterio`: the RGB result and one window of one band with its temporaries."""
    itemsize = max(np.dtype(ds.dtypes[b - 1]).itemsize for b in idx)
    window = max(_rasterio_rows(ds, b) for b in idx) * ds.width
    return ds.width * ds.height * 3 + window * (itemsize + _CHUNK_OVERHEAD)


def _load_rasterio(ds: rasterio.io.DatasetReader, name: str, max_pixels: int, bands: Sequence[int] | None,
                   budget: DecodeBudget, hold_per_pixel: int = 0) -> LoadedImage:
    from rasterio.windows import Window

    _check_size(ds.width, ds.height, max_pixels, name)
    if hold_per_pixel:
        budget.hold(ds.width * ds.height * hold_per_pixel, wait=True)
    count = ds.count
    if count < 1:
        raise ImageLoadError(f"{name}: the file has no raster bands")
    idx = _select(count, bands, name)
    crs = ds.crs.to_string() if ds.crs else None
    transform: tuple[float, float, float, float, float, float] | None = tuple(float(v) for v in ds.transform[:6])  # type: ignore[assignment]
    if crs is None and ds.transform.is_identity:
        transform = None
    h, w = ds.height, ds.width
    with budget.reserve(_rasterio_estimate(ds, idx), name):
        rgb = np.empty((h, w, 3), dtype=np.uint8)
        if len(idx) == 1 and ds.colorinterp[idx[0] - 1] == ColorInterp.palette:
            cmap = ds.colormap(idx[0])
            lut = np.zeros((max(256, max(cmap) + 1), 3), dtype=np.uint8)
            for k, rgba in cmap.items():
                lut[k] = rgba[:3]
            rows = _rasterio_rows(ds, idx[0])
            for r0 in range(0, h, rows):
                r1 = min(h, r0 + rows)
                rgb[r0:r1] = lut[ds.read(idx[0], window=Window(0, r0, w, r1 - r0))]
        else:
            for j, b in enumerate(idx):
                rows = _rasterio_rows(ds, b)

                def read(r0: int, r1: int, b: int = b) -> tuple[np.ndarray, Optional[np.ndarray]]:
                    data = ds.read(b, window=Window(0, r0, w, r1 - r0), masked=True)
                    mask = np.ma.getmaskarray(data)
                    return np.asarray(data.data), (None if not mask.any() else ~mask)

                if ds.dtypes[b - 1] == "uint8":
                    for r0 in range(0, h, rows):
                        values, valid = read(r0, min(h, r0 + rows))
                        rgb[r0:r0 + values.shape[0], :, j] = values if valid is None else np.where(valid, values, 0)
                else:
                    _stretch_rows(read, h, w, rgb[:, :, j], rows=rows)
            if len(idx) == 1:
                rgb[:, :, 1] = rgb[:, :, 0]
                rgb[:, :, 2] = rgb[:, :, 0]
    return LoadedImage(rgb=rgb, source=name, crs=crs, transform=transform, band_count=count, dtype=str(ds.dtypes[0]))


def _via_rasterio(source: Path | bytes, name: str, max_pixels: int, bands: Sequence[int] | None,
                  budget: DecodeBudget, hold_per_pixel: int = 0) -> LoadedImage:
    try:
        with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_MB):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            if isinstance(source, bytes):
                with MemoryFile(source) as mem, mem.open() as ds:
                    return _load_rasterio(ds, name, max_pixels, bands, budget, hold_per_pixel)
            with rasterio.open(source) as ds:
                return _load_rasterio(ds, name, max_pixels, bands, budget, hold_per_pixel)
    except ImageLoadError:
        raise
    except (RasterioError, OSError, ValueError, MemoryError) as exc:
        raise _UnreadableError(f"{name}: cannot read image ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------- Pillow path

_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
#: bytes a pixel Pillow keeps for a mode once decoded (every other mode: 4)
_PIL_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def _pil_array(im: Image.Image) -> np.ndarray:
    """``np.asarray(im)`` without its peak: ``tobytes`` builds the whole image as a list of chunks and then joins
    them (twice the array at once); cropping bands of rows fills one preallocated array instead."""
    rows = max(1, CHUNK_PIXELS // max(1, im.width))
    first = np.asarray(im.crop((0, 0, im.width, min(rows, im.height))))
    out = np.empty((im.height, *first.shape[1:]), dtype=first.dtype)
    out[: first.shape[0]] = first
    for r0 in range(first.shape[0], im.height, rows):
        r1 = min(im.height, r0 + rows)
        out[r0:r1] = np.asarray(im.crop((0, r0, im.width, r1)))
    return out


def _pil_estimate(im: Image.Image, bands: Sequence[int] | None) -> int:
    """Peak bytes of :func:`_via_pil` for ``im`` (header only): Pillow's decoded image, the numpy copy of it or
    of its RGB conversion, a transposed copy when EXIF says to rotate, the RGB result, one stretch chunk."""
    px = im.width * im.height
    held = _PIL_PIXEL_BYTES.get(im.mode, 4)
    if im.mode in _HIGH_DEPTH_MODES:
        per_pixel = max(2 * held, held + 3)  # the image and its array; then the array and the result
    elif bands is None:
        # RGB: the image and the result; else the image and its conversions (LA goes through L), then the
        # converted image and the result
        per_pixel = held + 3 if im.mode == "RGB" else max(held + 4 + 1, 4 + 3)
    else:
        per_pixel = held + 4 + 4 + 3 + 3  # the image, its RGB(A) form, its array, the chosen bands, the result
    try:
        rotated = im.getexif().get(0x0112, 1) not in (None, 1)
    except Exception:  # an unreadable EXIF block is ignored here as exif_transpose ignores it
        rotated = False
    chunk = min(px, CHUNK_PIXELS) * (8 + _CHUNK_OVERHEAD if im.mode in _HIGH_DEPTH_MODES else 4 + 4)
    return px * (per_pixel + (held if rotated else 0)) + chunk


def _via_pil(source: Path | bytes, name: str, max_pixels: int, bands: Sequence[int] | None,
             budget: DecodeBudget, hold_per_pixel: int = 0) -> LoadedImage | None:
    """Load with Pillow; ``None`` when Pillow does not know the format or refuses it for size (try rasterio)."""
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError:
        return None  # bigger than Pillow's own limit: rasterio reads it after our explicit size check
    except OSError as exc:
        raise ImageLoadError(f"{name}: cannot read image ({exc})") from exc
    with im, ExitStack() as reservation:
        _check_size(im.width, im.height, max_pixels, name)
        if hold_per_pixel:
            budget.hold(im.width * im.height * hold_per_pixel, wait=True)
        reservation.enter_context(budget.reserve(_pil_estimate(im, bands), name))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
                ImageOps.exif_transpose(im, in_place=True)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageLoadError(f"{name}: corrupt or truncated {im.format or 'image'} ({exc})") from exc
        mode = im.mode
        band_count = len(im.getbands())
        if mode in _HIGH_DEPTH_MODES:
            _select(1, bands, name)
            arr = _pil_array(im)
            im.close()  # Pillow's copy is no longer needed: free it before the result is allocated
            dtype = "uint16" if mode.startswith("I;16") else str(arr.dtype)
            rgb = _to_rgb(arr[None], None)
        elif bands is None:
            dtype = "uint8"
            if mode == "RGB":
                rgb = _pil_array(im)
            else:
                converted = im.convert("L").convert("RGB") if mode in ("LA", "La") else im.convert("RGB")
                im.close()
                rgb = _pil_array(converted)
                converted.close()
        else:
            dtype = "uint8"
            full = im if mode in ("L", "RGB", "RGBA", "CMYK") else im.convert("RGBA" if "A" in mode else "RGB")
            arr = _pil_array(full)
            arr = arr[:, :, None] if arr.ndim == 2 else arr
            idx = _select(arr.shape[2], bands, name)
            rgb = _to_rgb(np.moveaxis(arr[:, :, [i - 1 for i in idx]], -1, 0), None)
    return LoadedImage(rgb=np.ascontiguousarray(rgb), source=name, crs=None, transform=None, band_count=band_count, dtype=dtype)


# ---------------------------------------------------------------- entry point


def load_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    bands: Sequence[int] | None = None,
    budget: DecodeBudget | None = None,
    hold_per_pixel: int = 0,
) -> LoadedImage:
    """Load ``source`` (a path, or the bytes of a downloaded file) as an RGB uint8 :class:`LoadedImage`.

    ``name`` labels bytes input in error messages and in ``LoadedImage.source`` (default ``"<bytes>"``; for
    paths the path). ``bands`` picks 1 or 3 source bands, 1-based. ``budget`` is the memory budget the decode
    reserves its peak from (default: the process-wide :data:`DEFAULT_BUDGET`). With ``hold_per_pixel`` the calling
    thread also holds ``width × height × hold_per_pixel`` bytes of the budget (:meth:`DecodeBudget.hold`, waiting its
    turn) as soon as the header gives the size, before the decode starts, until it calls ``release_held``: the
    backend counts a request's whole working set this way. Raises :class:`ImageLoadError`.
    """
    budget = budget if budget is not None else DEFAULT_BUDGET
    if isinstance(source, (bytes, bytearray, memoryview)):
        data: Path | bytes = bytes(source)
        label = name or "<bytes>"
        if not data:
            raise ImageLoadError(f"{label}: empty data (0 bytes)")
        head = data[:12]
    else:
        path = Path(source)
        label = name or str(path)
        if not path.exists():
            raise ImageLoadError(f"{label}: file not found")
        if not path.is_file():
            raise ImageLoadError(f"{label}: not a file")
        try:
            with open(path, "rb") as f:
                head = f.read(12)
        except OSError as exc:
            raise ImageLoadError(f"{label}: cannot open ({exc})") from exc
        if not head:
            raise ImageLoadError(f"{label}: empty file (0 bytes)")
        data = path
    if max_pixels <= 0:
        raise ValueError("max_pixels must be positive")

    if head.startswith(_TIFF_MAGIC) or head.startswith(_JP2_MAGIC):
        return _via_rasterio(data, label, max_pixels, bands, budget, hold_per_pixel)
    loaded = _via_pil(data, label, max_pixels, bands, budget, hold_per_pixel)
    if loaded is not None:
        return loaded
    try:
        return _via_rasterio(data, label, max_pixels, bands, budget, hold_per_pixel)
    except _UnreadableError as exc:
        raise ImageLoadError(
            f"{label}: unrecognised or corrupt image (neither Pillow nor GDAL can read it; "
            f"expected PNG, JPEG, TIFF/GeoTIFF or another raster format)"
        ) from exc


def write_georeferenced_mask(path: str | Path, mask: np.ndarray, crs: str | None,
                             transform: tuple[float, float, float, float, float, float] | None) -> Path:
    """Write ``mask`` as a one-band uint8 GeoTIFF (0/255, deflate) with the source's CRS and transform, atomically.

    Why: a mask cut from a GeoTIFF is only useful to a GIS (QGIS, rasterio, GDAL polygonize) when it stays on the
    scene's grid; a PNG loses the georeference. The mask must have the source's pixel size (it does: the engine
    never resamples).
    """
    from rasterio.transform import Affine

    from annotate.atomic import atomic_path

    path = Path(path)
    arr = np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8)
    profile = {
        "driver": "GTiff", "height": arr.shape[0], "width": arr.shape[1], "count": 1, "dtype": "uint8",
        "compress": "deflate", "nodata": None,
        "crs": crs, "transform": Affine(*transform) if transform is not None else Affine.identity(),
    }
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr, 1)
    return path

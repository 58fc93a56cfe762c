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
* **Errors.** Every failure (missing, corrupt, truncated, unsupported, too large, bad ``bands``) raises
  :class:`ImageLoadError` whose message names the file (or the ``name`` given for bytes).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

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

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_JP2_MAGIC = (b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")


class ImageLoadError(ValueError):
    """An image could not be loaded; the message always names the file, URL or given name."""


class _UnreadableError(ImageLoadError):
    """GDAL could not open or decode the data (as opposed to a limit or a bad ``bands`` argument)."""


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


def _stretch(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-band 2–98 % percentile stretch of ``band`` to uint8; invalid pixels become 0."""
    out = np.zeros(band.shape, dtype=np.uint8)
    vals = band[valid]
    if vals.size == 0:
        return out
    if vals.size > STRETCH_SAMPLE:
        vals = vals[:: -(-vals.size // STRETCH_SAMPLE)]
    lo, hi = np.percentile(vals.astype(np.float64), STRETCH_PERCENTILES)
    if not hi > lo:
        # constant band: map its value to mid-grey rather than inventing contrast
        out[valid] = 0 if lo == 0 else 128
        return out
    scaled = (band.astype(np.float64) - lo) * (255.0 / (hi - lo))
    np.clip(scaled, 0, 255, out=scaled)
    out[valid] = np.rint(scaled[valid]).astype(np.uint8)
    return out


def _to_rgb(stack: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """``stack`` (k, H, W) of one or three bands → (H, W, 3) uint8 (stretched unless already uint8)."""
    if stack.dtype == np.uint8:
        bands = [stack[i] for i in range(stack.shape[0])]
        if valid is not None:
            bands = [np.where(valid[i], b, 0).astype(np.uint8) for i, b in enumerate(bands)]
    else:
        bands = []
        for i in range(stack.shape[0]):
            v = np.isfinite(stack[i]) if np.issubdtype(stack.dtype, np.floating) else np.ones(stack[i].shape, bool)
            if valid is not None:
                v &= valid[i]
            bands.append(_stretch(stack[i], v))
    if len(bands) == 1:
        bands = bands * 3
    return np.ascontiguousarray(np.stack(bands, axis=-1))


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


def _load_rasterio(ds: rasterio.io.DatasetReader, name: str, max_pixels: int, bands: Sequence[int] | None) -> LoadedImage:
    _check_size(ds.width, ds.height, max_pixels, name)
    count = ds.count
    if count < 1:
        raise ImageLoadError(f"{name}: the file has no raster bands")
    idx = _select(count, bands, name)
    crs = ds.crs.to_string() if ds.crs else None
    transform: tuple[float, float, float, float, float, float] | None = tuple(float(v) for v in ds.transform[:6])  # type: ignore[assignment]
    if crs is None and ds.transform.is_identity:
        transform = None
    if len(idx) == 1 and ds.colorinterp[idx[0] - 1] == ColorInterp.palette:
        band = ds.read(idx[0])
        cmap = ds.colormap(idx[0])
        lut = np.zeros((max(256, max(cmap) + 1), 3), dtype=np.uint8)
        for k, rgba in cmap.items():
            lut[k] = rgba[:3]
        rgb = np.ascontiguousarray(lut[band])
    else:
        data = ds.read(idx, masked=True)
        mask = np.ma.getmaskarray(data)
        valid = None if not mask.any() else ~mask
        rgb = _to_rgb(np.asarray(data.data), valid)
    return LoadedImage(rgb=rgb, source=name, crs=crs, transform=transform, band_count=count, dtype=str(ds.dtypes[0]))


def _via_rasterio(source: Path | bytes, name: str, max_pixels: int, bands: Sequence[int] | None) -> LoadedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            if isinstance(source, bytes):
                with MemoryFile(source) as mem, mem.open() as ds:
                    return _load_rasterio(ds, name, max_pixels, bands)
            with rasterio.open(source) as ds:
                return _load_rasterio(ds, name, max_pixels, bands)
    except ImageLoadError:
        raise
    except (RasterioError, OSError, ValueError, MemoryError) as exc:
        raise _UnreadableError(f"{name}: cannot read image ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------- Pillow path

_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _via_pil(source: Path | bytes, name: str, max_pixels: int, bands: Sequence[int] | None) -> LoadedImage | None:
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
    with im:
        _check_size(im.width, im.height, max_pixels, name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
                im = ImageOps.exif_transpose(im) or im
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageLoadError(f"{name}: corrupt or truncated {im.format or 'image'} ({exc})") from exc
        mode = im.mode
        band_count = len(im.getbands())
        if mode in _HIGH_DEPTH_MODES:
            arr = np.asarray(im)
            dtype = "uint16" if mode.startswith("I;16") else str(arr.dtype)
            _select(1, bands, name)
            rgb = _to_rgb(arr[None], None)
        elif bands is None:
            dtype = "uint8"
            rgb = np.asarray(im.convert("L").convert("RGB") if mode in ("LA", "La") else im.convert("RGB"))
        else:
            dtype = "uint8"
            full = im if mode in ("L", "RGB", "RGBA", "CMYK") else im.convert("RGBA" if "A" in mode else "RGB")
            arr = np.asarray(full)
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
) -> LoadedImage:
    """Load ``source`` (a path, or the bytes of a downloaded file) as an RGB uint8 :class:`LoadedImage`.

    ``name`` labels bytes input in error messages and in ``LoadedImage.source`` (default ``"<bytes>"``; for
    paths the path). ``bands`` picks 1 or 3 source bands, 1-based. Raises :class:`ImageLoadError`.
    """
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
        return _via_rasterio(data, label, max_pixels, bands)
    loaded = _via_pil(data, label, max_pixels, bands)
    if loaded is not None:
        return loaded
    try:
        return _via_rasterio(data, label, max_pixels, bands)
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

"""Large georeferenced scenes read in windows: a tile grid, one stretch for the whole scene, window reads.

Why a module apart from ``image_io``: ``load_image`` decodes a whole image (bounded by a pixel limit), which a
20k × 20k orthomosaic or a satellite scene can never be. Here nothing reads more than one window at a time:

* **Grid.** :func:`tile_windows` cuts a ``width × height`` scene into ``size``-pixel tiles that overlap by
  ``overlap`` pixels; the last row and column are shifted back to end on the scene's edge, so every tile is
  full size (a scene smaller than a tile gives one tile of the scene's size) and every pixel is covered.
* **Stretch.** 8-bit bands are kept as they are. Any other dtype is mapped to 0–255 by ONE linear stretch per
  band for the whole scene (2nd–98th percentile, like ``image_io``), estimated from a decimated read of at most
  ``OVERVIEW_SIDE`` pixels a side (GDAL serves it from the overviews of a COG). A per-tile stretch would give the
  same roof a different grey in two neighbouring tiles, and a seam in every annotation.
* **Nodata.** A pixel is invalid when the dataset's mask says so (nodata value, alpha or internal mask) in every
  read band; invalid pixels become 0 and a window without a valid pixel is "empty" (the tiler skips it).
* **Map windows.** :func:`window_for_bounds` turns a box in any CRS into the pixel window that holds it (plus a
  margin), so a prompt given in map coordinates reads only that part of the scene.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

if TYPE_CHECKING:
    from annotate.image_io import LoadedImage

# GDAL's block cache, as annotate.image_io sets it for the process (MB; a value the user set is kept). Not through
# a per-read ``rasterio.Env(GDAL_CACHEMAX=64)``: measured on a deflate-compressed 3000² scene, the decimated read of
# the stretch took over 6 minutes inside such an Env and under a second without it (each block decoded again for
# every row read from it).
os.environ.setdefault("GDAL_CACHEMAX", "64")

#: The decimated read the scene stretch is estimated from is at most this many pixels on its longer side.
OVERVIEW_SIDE: int = 2048
STRETCH_PERCENTILES: tuple[float, float] = (2.0, 98.0)

Transform = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class TileWindow:
    """A tile's place in its scene, in scene pixels: column and row of its top-left corner, width, height."""

    col_off: int
    row_off: int
    width: int
    height: int

    def to_rasterio(self) -> Window:
        return Window(self.col_off, self.row_off, self.width, self.height)

    def as_list(self) -> list[int]:
        return [self.col_off, self.row_off, self.width, self.height]


def _starts(length: int, size: int, stride: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def tile_windows(width: int, height: int, size: int, overlap: int) -> list[TileWindow]:
    """Row-major tile windows covering a ``width × height`` scene (see the module docstring)."""
    if size <= 0:
        raise ValueError(f"tile size must be positive, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be at least 0 and smaller than the tile size {size}, got {overlap}")
    if width <= 0 or height <= 0:
        raise ValueError(f"scene has no pixels ({width}×{height})")
    stride = size - overlap
    return [TileWindow(c, r, min(size, width), min(size, height))
            for r in _starts(height, size, stride) for c in _starts(width, size, stride)]


def select_bands(count: int, bands: Optional[Sequence[int]]) -> list[int]:
    """1-based bands to read: ``bands`` (1 or 3 of them, checked) or 1, 2, 3 (1 for a scene of fewer bands)."""
    if bands is None:
        return [1] if count < 3 else [1, 2, 3]
    idx = [int(b) for b in bands]
    if len(idx) not in (1, 3):
        raise ValueError(f"bands must name 1 or 3 bands (1-based), got {list(bands)}")
    bad = [b for b in idx if not 1 <= b <= count]
    if bad:
        raise ValueError(f"band(s) {bad} out of range: the scene has {count} band(s), numbered from 1")
    return idx


@dataclass(frozen=True)
class SceneStretch:
    """The per-band linear map to 0–255 used for every window of one scene (``None`` bounds: 8-bit, kept)."""

    bands: tuple[int, ...]
    low: Optional[tuple[float, ...]]
    high: Optional[tuple[float, ...]]

    def apply(self, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``values`` (k, h, w) of the scene's bands → (h, w, 3) uint8; invalid pixels are 0."""
        k, h, w = values.shape
        rgb = np.zeros((h, w, 3), dtype=np.uint8)
        for i in range(k):
            band = values[i]
            if self.low is None or self.high is None:
                out = band.astype(np.uint8, copy=False)
            else:
                lo, hi = self.low[i], self.high[i]
                if not hi > lo:  # a constant band: mid-grey rather than invented contrast
                    out = np.full(band.shape, 0 if lo == 0 else 128, dtype=np.uint8)
                elif band.dtype in (np.uint16, np.int16):  # one table lookup a pixel instead of float arithmetic
                    table = _stretch_table(lo, hi, band.dtype.str)
                    out = table[band.astype(np.int32) + (32768 if band.dtype == np.int16 else 0)]
                else:
                    scaled = (band.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
                    np.clip(scaled, 0, 255, out=scaled)
                    out = np.rint(scaled).astype(np.uint8)
            rgb[:, :, i] = np.where(valid, out, 0)
        if k == 1:
            rgb[:, :, 1] = rgb[:, :, 0]
            rgb[:, :, 2] = rgb[:, :, 0]
        return rgb


@functools.lru_cache(maxsize=32)
def _stretch_table(lo: float, hi: float, dtype: str) -> np.ndarray:
    """The stretch of every 16-bit value (int16 shifted by 32768), computed as ``SceneStretch.apply`` does."""
    values = np.arange(65536, dtype=np.float32) - np.float32(32768 if np.dtype(dtype) == np.int16 else 0)
    scaled = (values - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    np.clip(scaled, 0, 255, out=scaled)
    return np.rint(scaled).astype(np.uint8)


def _nodata_only(ds: "rasterio.io.DatasetReader", bands: Sequence[int]) -> bool:
    """True when the bands' validity is a nodata value (or every pixel is valid): computable from the values."""
    from rasterio.enums import MaskFlags

    flags = [set(ds.mask_flag_enums[b - 1]) for b in bands]
    return all(f <= {MaskFlags.all_valid} or f == {MaskFlags.nodata} for f in flags)


def _valid(ds: "rasterio.io.DatasetReader", bands: Sequence[int], window: Optional[Window],
           values: np.ndarray, out_shape: Optional[tuple[int, int]] = None) -> np.ndarray:
    """Pixels valid in at least one of ``bands`` (GDAL's masks: nodata, alpha, internal mask).

    When the bands' masks come from a nodata value only (or every pixel is valid), validity is computed from
    ``values`` already read: asking GDAL for the masks would decode every block a second time.
    """
    from rasterio.enums import MaskFlags

    if _nodata_only(ds, bands):
        flags = [set(ds.mask_flag_enums[b - 1]) for b in bands]
        valid = np.zeros(values.shape[1:], dtype=bool)
        for i, b in enumerate(bands):
            nodata = ds.nodatavals[b - 1]
            if MaskFlags.nodata not in flags[i] or nodata is None:
                valid[:] = True
                break
            band = values[i]
            valid |= ~np.isnan(band) if np.isnan(nodata) else band != nodata
        return valid
    kwargs = {"window": window} if window is not None else {}
    if out_shape is not None:
        kwargs["out_shape"] = (len(bands), *out_shape)
    masks = ds.read_masks(list(bands), **kwargs)
    return np.any(masks > 0, axis=0)


def _decimated(ds: "rasterio.io.DatasetReader", bands: tuple[int, ...], side: int) -> tuple[np.ndarray, np.ndarray]:
    """The scene at most ``side`` pixels a side (values, valid), for the stretch.

    With overviews (a COG), GDAL serves a decimated read from them. Without, a decimated read of the whole scene
    walks every output row across a full row of blocks, and when such a row outgrows GDAL's block cache each block
    is decoded again for every output row it feeds (minutes for a 20k² deflate scene): here every ``step``-th pixel
    is taken from block-aligned windows instead, so each block is decoded once.
    """
    step = max(1, -(-max(ds.width, ds.height) // side))
    if step == 1 or ds.overviews(bands[0]):
        shape = (-(-ds.height // step), -(-ds.width // step))
        values = ds.read(list(bands), out_shape=(len(bands), *shape))
        return values, _valid(ds, bands, None, values, shape)
    block_h, block_w = (max(1, int(v)) for v in ds.block_shapes[bands[0] - 1])
    rows = max(block_h, (1024 // block_h) * block_h)
    cols = max(block_w, (4096 // block_w) * block_w)
    out_rows, out_cols = -(-ds.height // step), -(-ds.width // step)
    values = np.zeros((len(bands), out_rows, out_cols), dtype=ds.dtypes[bands[0] - 1])
    valid = np.zeros((out_rows, out_cols), dtype=bool)
    for r0 in range(0, ds.height, rows):
        for c0 in range(0, ds.width, cols):
            win = Window(c0, r0, min(cols, ds.width - c0), min(rows, ds.height - r0))
            # the window's pixels on the global grid of every step-th row and column
            dr, dc = (-r0) % step, (-c0) % step
            if dr >= win.height or dc >= win.width:
                continue
            block = ds.read(list(bands), window=win)[:, dr::step, dc::step]
            if _nodata_only(ds, bands):
                ok = _valid(ds, bands, win, block)
            else:
                ok = np.any(ds.read_masks(list(bands), window=win)[:, dr::step, dc::step] > 0, axis=0)
            o0, p0 = (r0 + dr) // step, (c0 + dc) // step
            values[:, o0:o0 + block.shape[1], p0:p0 + block.shape[2]] = block
            valid[o0:o0 + block.shape[1], p0:p0 + block.shape[2]] = ok
    return values, valid


def scene_stretch(ds: "rasterio.io.DatasetReader", bands: Sequence[int],
                  overview_side: int = OVERVIEW_SIDE) -> SceneStretch:
    """The one stretch of a scene, from a decimated read (the whole scene is never in memory)."""
    bands = tuple(bands)
    if all(ds.dtypes[b - 1] == "uint8" for b in bands):
        return SceneStretch(bands, None, None)
    values, valid = _decimated(ds, bands, overview_side)
    lows, highs = [], []
    for i in range(len(bands)):
        band = values[i]
        ok = valid & (np.isfinite(band) if np.issubdtype(band.dtype, np.floating) else True)
        sample = band[ok].astype(np.float64)
        if sample.size == 0:
            lows.append(0.0)
            highs.append(0.0)
            continue
        lo, hi = np.percentile(sample, STRETCH_PERCENTILES)
        lows.append(float(lo))
        highs.append(float(hi))
    return SceneStretch(bands, tuple(lows), tuple(highs))


def read_window(ds: "rasterio.io.DatasetReader", window: TileWindow | Window,
                stretch: SceneStretch) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 (h, w, 3), valid mask (h, w)) of one window, with the scene's stretch."""
    win = window.to_rasterio() if isinstance(window, TileWindow) else window
    values = ds.read(list(stretch.bands), window=win)
    valid = _valid(ds, stretch.bands, win, values)
    if np.issubdtype(values.dtype, np.floating):
        valid = valid & np.all(np.isfinite(values), axis=0)
    return stretch.apply(values, valid), valid


def window_transform(ds: "rasterio.io.DatasetReader", window: TileWindow | Window) -> Transform:
    """The affine 6-tuple (rasterio order a, b, c, d, e, f) of a window's pixel grid."""
    win = window.to_rasterio() if isinstance(window, TileWindow) else window
    t = ds.window_transform(win)
    return (t.a, t.b, t.c, t.d, t.e, t.f)


def window_for_bounds(ds: "rasterio.io.DatasetReader", bounds: Sequence[float], crs: Optional[str],
                      margin: float = 0.5, min_margin: int = 32) -> TileWindow:
    """The scene window holding the map box ``bounds`` (x0, y0, x1, y1 in ``crs``; ``None``: the scene's CRS)
    plus ``margin`` × its size (at least ``min_margin`` pixels) on every side, clipped to the scene.

    Raises ``ValueError`` when the box is degenerate or lies outside the scene.
    """
    from rasterio.warp import transform_bounds

    x0, y0, x1, y1 = (float(v) for v in bounds)
    if crs is not None:
        if ds.crs is None:
            raise ValueError("the scene has no CRS: a box in map coordinates cannot be placed on it")
        x0, y0, x1, y1 = transform_bounds(crs, ds.crs, min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    col0, row0, col1, row1 = pixel_box(ds, (x0, y0, x1, y1))
    if not (col1 > col0 and row1 > row0):
        raise ValueError(f"the box {list(bounds)} covers no pixel")
    pad_c = max(min_margin, margin * (col1 - col0))
    pad_r = max(min_margin, margin * (row1 - row0))
    c0, r0 = max(0, int(np.floor(col0 - pad_c))), max(0, int(np.floor(row0 - pad_r)))
    c1, r1 = min(ds.width, int(np.ceil(col1 + pad_c))), min(ds.height, int(np.ceil(row1 + pad_r)))
    if c1 <= c0 or r1 <= r0 or col1 <= 0 or row1 <= 0 or col0 >= ds.width or row0 >= ds.height:
        raise ValueError(f"the box {list(bounds)} lies outside the scene ({ds.width}×{ds.height} px)")
    return TileWindow(c0, r0, c1 - c0, r1 - r0)


def apply_affine(t: Sequence[float], x: float, y: float) -> tuple[float, float]:
    """``t`` (affine 6-tuple or ``Affine``) applied to the point (x, y), written out (Affine's ``*`` on points is
    deprecated and its ``@`` missing from older releases)."""
    a, b, c, d, e, f = tuple(t)[:6]
    return a * x + b * y + c, d * x + e * y + f


def pixel_box(ds: "rasterio.io.DatasetReader", map_box: Sequence[float]) -> tuple[float, float, float, float]:
    """A box in the scene's CRS → (col0, row0, col1, row1) in scene pixels (ordered, fractional)."""
    inv = ~ds.transform
    x0, y0, x1, y1 = map_box
    corners = [apply_affine(inv, x, y) for x in (x0, x1) for y in (y0, y1)]
    cols = [c for c, _ in corners]
    rows = [r for _, r in corners]
    return min(cols), min(rows), max(cols), max(rows)


def map_to_pixel(ds: "rasterio.io.DatasetReader", points: Sequence[Sequence[float]], crs: Optional[str]
                 ) -> list[tuple[float, float]]:
    """Points (x, y) in ``crs`` (``None``: the scene's) → (col, row) in scene pixels."""
    from rasterio.warp import transform

    if not points:
        return []
    xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    if crs is not None:
        xs, ys = transform(crs, ds.crs, xs, ys)
    inv = ~ds.transform
    return [apply_affine(inv, x, y) for x, y in zip(xs, ys)]


@dataclass
class MapPrompt:
    """A box (and points) given in map coordinates, read as the window of the scene that holds it."""

    image: "LoadedImage"
    window: TileWindow
    box: tuple[float, float, float, float]
    """The box in the window's pixels."""
    points: list[tuple[float, float]]
    """The points in the window's pixels."""


def load_map_prompt(source: str, box: Sequence[float], points: Sequence[Sequence[float]], crs: Optional[str],
                    *, max_pixels: int, bands: Optional[Sequence[int]] = None, margin: float = 0.5) -> MapPrompt:
    """Read only the window of ``source`` around the map ``box`` (``crs``; ``None``: the scene's own CRS).

    The window's pixels get the whole scene's stretch (from a decimated read), as ``pslg tile`` gives them, and
    the result carries the window's own transform, so masks written from it stay on the map. Raises
    ``ImageLoadError`` naming ``source``.
    """
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    import warnings

    from annotate.image_io import ImageLoadError, LoadedImage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(source)
    except (RasterioError, OSError) as exc:
        raise ImageLoadError(f"{source}: cannot read the scene ({exc})") from None
    with ds:
        try:
            if ds.crs is None:
                raise ValueError("the scene has no CRS: map coordinates cannot be placed on it")
            win = window_for_bounds(ds, box, crs, margin=margin)
            idx = select_bands(ds.count, bands)
        except ValueError as exc:
            raise ImageLoadError(f"{source}: {exc}") from None
        if win.width * win.height > max_pixels:
            raise ImageLoadError(f"{source}: the window around the box is {win.width}×{win.height} pixels, above the "
                                 f"limit of {max_pixels:,} (max_pixels)")
        try:
            rgb, _ = read_window(ds, win, scene_stretch(ds, idx))
        except RasterioError as exc:
            raise ImageLoadError(f"{source}: cannot read the window {win.as_list()} ({exc})") from None
        x0, y0, x1, y1 = (float(v) for v in box)
        if crs is not None:  # a reprojected box: the scene-CRS box that holds its four corners
            from rasterio.warp import transform_bounds

            x0, y0, x1, y1 = transform_bounds(crs, ds.crs, min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        c0, r0, c1, r1 = pixel_box(ds, (x0, y0, x1, y1))
        pts = map_to_pixel(ds, points, crs)
        image = LoadedImage(rgb=rgb, source=str(source), crs=ds.crs.to_string(), transform=window_transform(ds, win),
                            band_count=ds.count, dtype=str(ds.dtypes[0]))
    ox, oy = win.col_off, win.row_off
    return MapPrompt(image=image, window=win, box=(c0 - ox, r0 - oy, c1 - ox, r1 - oy),
                     points=[(x - ox, y - oy) for x, y in pts])

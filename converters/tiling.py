"""A large scene (GeoTIFF/COG, a local path or an http(s) URL) → tile images + one Label Studio tasks JSON.

The engine behind ``pslg tile``. Memory stays bounded by one tile whatever the scene's size: the scene is read
window by window (``annotate.scene``), each tile is encoded and written before the next is read, and tasks are
streamed into the JSON file. One stretch serves every tile (see ``annotate.scene``), so a tile's grey values
match its neighbours'. Tiles without one valid pixel (nodata, outside the footprint) are skipped.
"""

from __future__ import annotations

import io
import re
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Optional, Sequence

import numpy as np

from annotate.atomic import atomic_write_bytes
from annotate.scene import (SceneStretch, TileWindow, read_window, scene_stretch, select_bands, tile_windows,
                            window_transform)
from converters.importer import image_url, write_tasks
from converters.labelstudio.geo import TilePlace, tile_task

TileFormat = Literal["png", "jpeg"]
#: JPEG quality of ``--format jpeg`` tiles.
JPEG_QUALITY = 92


@dataclass
class TilingReport:
    """What a tiling run did."""

    scene: str
    width: int
    height: int
    crs: Optional[str]
    tiles: int = 0
    skipped_empty: int = 0
    stretch: Optional[SceneStretch] = None
    files: list[Path] = field(default_factory=list)


def scene_id_of(source: str) -> str:
    """A scene's id from its path or URL: the file name without extension, in safe characters."""
    path = urllib.parse.urlparse(source).path if "://" in source else source
    stem = Path(path).name.split(".")[0] or "scene"
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem)


def open_scene(source: str):
    """``rasterio.open`` of a path or URL; ``ValueError`` naming the source when GDAL cannot open it."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(source)
    except (RasterioError, OSError) as exc:
        raise ValueError(f"{source}: cannot open the scene ({exc})") from None


def _encode(rgb: np.ndarray, fmt: TileFormat) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def tile_scene(source: str, out: Path, *, size: int = 1024, overlap: int = 128,
               bands: Optional[Sequence[int]] = None, fmt: TileFormat = "png", url_prefix: Optional[str] = None,
               document_root: Optional[Path] = None, scene_id: Optional[str] = None,
               tasks_name: str = "tasks.json") -> TilingReport:
    """Write the tiles of ``source`` under ``out/tiles/`` and their tasks to ``out/<tasks_name>``.

    A tile's image reference is ``url_prefix + file name``, a ``/data/local-files/?d=`` URL under
    ``document_root``, or its absolute path (see ``converters.importer.image_url``). Raises ``ValueError`` with a
    one-line message for a scene that cannot be opened or bad options.
    """
    sid = scene_id or scene_id_of(source)
    out = Path(out)
    if document_root is not None:  # before any tile is written: every tile URL must lie under the root
        try:
            image_url(out / "tiles" / f"{sid}.png", document_root=document_root)
        except ValueError:
            raise ValueError(f"the output folder {out} is not under the document root {document_root}") from None
    tiles_dir = out / "tiles"
    with open_scene(source) as ds:
        idx = select_bands(ds.count, bands)
        windows = tile_windows(ds.width, ds.height, size, overlap)
        crs = ds.crs.to_string() if ds.crs is not None else None
        report = TilingReport(scene=sid, width=ds.width, height=ds.height, crs=crs)
        report.stretch = scene_stretch(ds, idx)
        ext = "jpg" if fmt == "jpeg" else "png"

        def tasks() -> Iterator[dict]:
            for win in windows:
                rgb, valid = read_window(ds, win, report.stretch)  # type: ignore[arg-type]
                if not valid.any():
                    report.skipped_empty += 1
                    continue
                path = tiles_dir / f"{sid}_{win.row_off}_{win.col_off}.{ext}"
                atomic_write_bytes(path, _encode(rgb, fmt))
                report.tiles += 1
                report.files.append(path)
                place = TilePlace(scene=sid, crs=crs, window=tuple(win.as_list()),  # type: ignore[arg-type]
                                  transform=window_transform(ds, win), scene_size=(ds.width, ds.height))
                yield tile_task(image_url(path, url_prefix=url_prefix, document_root=document_root), place)

        write_tasks(tasks(), out / tasks_name)
    return report


__all__ = ["TileWindow", "TilingReport", "open_scene", "scene_id_of", "tile_scene"]

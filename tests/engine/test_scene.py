"""Large scenes in windows (annotate.scene): the tile grid, the one stretch of a scene, nodata, boxes in map
coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from annotate.scene import (TileWindow, read_window, scene_stretch, select_bands, tile_windows, window_for_bounds,
                            window_transform)
from tests.support.geo_scenes import SceneBox, scene_transform, write_geo_scene


@pytest.mark.parametrize("width,height,size,overlap", [(1000, 700, 256, 32), (256, 256, 256, 0), (100, 300, 128, 16),
                                                       (1025, 1024, 512, 128)])
def test_tile_windows_cover_the_scene_with_full_tiles_and_the_overlap(width, height, size, overlap):
    wins = tile_windows(width, height, size, overlap)
    covered = np.zeros((height, width), dtype=np.int32)
    for w in wins:
        assert (w.width, w.height) == (min(size, width), min(size, height))  # every tile full size
        assert w.col_off + w.width <= width and w.row_off + w.height <= height
        covered[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] += 1
    assert covered.min() >= 1  # every pixel is in a tile
    cols = sorted({w.col_off for w in wins})
    for a, b in zip(cols, cols[1:]):  # neighbours share at least the overlap, never leave a gap
        assert b - a <= size - overlap
    assert cols[-1] + min(size, width) == width


def test_tile_windows_reject_bad_options():
    with pytest.raises(ValueError, match="overlap"):
        tile_windows(100, 100, 64, 64)
    with pytest.raises(ValueError, match="size"):
        tile_windows(100, 100, 0, 0)


def test_select_bands():
    assert select_bands(4, None) == [1, 2, 3] and select_bands(1, None) == [1]
    assert select_bands(4, (4, 3, 2)) == [4, 3, 2]
    with pytest.raises(ValueError, match="out of range"):
        select_bands(3, (4, 3, 2))
    with pytest.raises(ValueError, match="1 or 3"):
        select_bands(4, (1, 2))


def test_one_stretch_for_the_whole_scene_not_per_tile(tmp_path):
    # left half dark, right half bright: a per-tile stretch would map both halves' tiles to the full range
    path = tmp_path / "s.tif"
    with rasterio.open(path, "w", driver="GTiff", width=512, height=256, count=1, dtype="uint16",
                       transform=rasterio.transform.Affine(*scene_transform()), crs="EPSG:32633") as dst:
        arr = np.zeros((256, 512), dtype=np.uint16)
        arr[:, :256] = np.tile(np.linspace(100, 200, 256, dtype=np.uint16), (256, 1))
        arr[:, 256:] = np.tile(np.linspace(1000, 2000, 256, dtype=np.uint16), (256, 1))
        dst.write(arr, 1)
    with rasterio.open(path) as ds:
        st = scene_stretch(ds, [1])
        lo, hi = np.percentile(arr.astype(np.float64), (2, 98))
        assert st.low[0] == pytest.approx(lo, rel=0.02) and st.high[0] == pytest.approx(hi, rel=0.02)
        dark, _ = read_window(ds, TileWindow(0, 0, 256, 256), st)
        bright, _ = read_window(ds, TileWindow(256, 0, 256, 256), st)
        full, _ = read_window(ds, TileWindow(0, 0, 512, 256), st)
    # a per-tile stretch would spread each half over 0–255: the scene stretch keeps the dark half dark
    assert dark.max() < 40 and bright.min() > 100 and bright.max() == 255
    # a tile's pixels are the scene's pixels: the same values as a read of the whole width
    assert np.array_equal(np.concatenate([dark, bright], axis=1), full)


def test_stretch_comes_from_a_decimated_read(tmp_path):
    path = write_geo_scene(tmp_path / "s.tif", 3000, 2000, [SceneBox(100, 100, 400, 300)], count=3)
    with rasterio.open(path) as ds:
        small = scene_stretch(ds, [1, 2, 3], overview_side=256)
        big = scene_stretch(ds, [1, 2, 3], overview_side=4096)  # the whole scene
    for a, b in zip(small.low + small.high, big.low + big.high):
        assert a == pytest.approx(b, rel=0.05)


def test_uint8_scene_is_not_stretched(tmp_path):
    path = write_geo_scene(tmp_path / "s.tif", 300, 200, count=3, dtype="uint8")
    with rasterio.open(path) as ds:
        st = scene_stretch(ds, [1, 2, 3])
        rgb, valid = read_window(ds, TileWindow(10, 20, 50, 40), st)
        raw = ds.read([1, 2, 3], window=TileWindow(10, 20, 50, 40).to_rasterio())
    assert st.low is None and valid.all()
    assert np.array_equal(rgb, np.moveaxis(raw, 0, -1))


def test_nodata_pixels_are_invalid_and_black(tmp_path):
    path = write_geo_scene(tmp_path / "s.tif", 512, 512, count=3, nodata_block=(0, 0, 256, 512))
    with rasterio.open(path) as ds:
        st = scene_stretch(ds, [1, 2, 3])
        rgb, valid = read_window(ds, TileWindow(0, 0, 256, 256), st)
        assert not valid.any() and not rgb.any()
        rgb, valid = read_window(ds, TileWindow(128, 0, 256, 256), st)
        assert not valid[:, :128].any() and valid[:, 128:].all() and not rgb[:, :128].any()
        assert st.low[0] >= 300  # nodata zeros do not drag the stretch down


def test_window_transform_places_the_tile(tmp_path):
    path = write_geo_scene(tmp_path / "s.tif", 400, 300, count=1)
    with rasterio.open(path) as ds:
        t = window_transform(ds, TileWindow(100, 50, 64, 64))
    a, _, c, _, e, f = scene_transform()
    assert t == pytest.approx((a, 0.0, c + 100 * a, 0.0, e, f + 50 * e))


def test_window_for_a_box_in_another_crs(tmp_path):
    from rasterio.warp import transform_bounds

    path = write_geo_scene(tmp_path / "s.tif", 2000, 1500, count=1)
    a, _, c, _, e, f = scene_transform()
    # scene pixels [600, 700) × [400, 450) in the scene's UTM, then the same box in longitude/latitude
    utm = (c + 600 * a, f + 450 * e, c + 700 * a, f + 400 * e)
    lonlat = transform_bounds("EPSG:32633", "EPSG:4326", *utm)
    with rasterio.open(path) as ds:
        win = window_for_bounds(ds, utm, None, margin=0.0, min_margin=0)
        assert (win.col_off, win.row_off, win.width, win.height) == (600, 400, 100, 50)
        win = window_for_bounds(ds, lonlat, "EPSG:4326", margin=0.5, min_margin=0)
        # the box (±1 px from the reprojection of its corners) plus half its size on every side
        assert abs(win.col_off - 550) <= 2 and abs(win.row_off - 375) <= 2
        assert abs(win.width - 200) <= 4 and abs(win.height - 100) <= 4
        with pytest.raises(ValueError, match="outside"):
            window_for_bounds(ds, (c - 1000, f + 10, c - 900, f + 20), None)


def test_an_internal_mask_marks_invalid_pixels(tmp_path):
    # no nodata value: the dataset's own mask (GDAL per-dataset mask band) says which pixels hold data
    path = tmp_path / "m.tif"
    with rasterio.open(path, "w", driver="GTiff", width=128, height=64, count=3, dtype="uint16", crs="EPSG:32633",
                       transform=rasterio.transform.Affine(*scene_transform())) as dst:
        dst.write(np.full((3, 64, 128), 700, dtype=np.uint16))
        mask = np.zeros((64, 128), dtype=np.uint8)
        mask[:, 64:] = 255
        dst.write_mask(mask)
    with rasterio.open(path) as ds:
        st = scene_stretch(ds, [1, 2, 3])
        rgb, valid = read_window(ds, TileWindow(0, 0, 128, 64), st)
    assert not valid[:, :64].any() and valid[:, 64:].all()
    assert not rgb[:, :64].any() and (rgb[:, 64:] == 128).all()  # a constant band: mid-grey


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32"])
def test_the_stretch_table_equals_the_arithmetic(dtype):
    from annotate.scene import SceneStretch

    info = np.iinfo(dtype) if dtype != "float32" else None
    values = (np.arange(info.min, info.max + 1, dtype=dtype) if info else np.linspace(-500, 3000, 65536,
                                                                                      dtype=dtype))
    values = values.reshape(1, 256, 256)
    st = SceneStretch((1,), (-200.0 if dtype != "uint16" else 120.5,), (1800.25,))
    got = st.apply(values, np.ones((256, 256), bool))[..., 0]
    scaled = (values[0].astype(np.float32) - np.float32(st.low[0])) * np.float32(255.0 / (st.high[0] - st.low[0]))
    want = np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)
    assert np.array_equal(got, want)

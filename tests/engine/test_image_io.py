"""Image loading: formats, bands, dtypes, georeferencing, limits and clear errors."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from affine import Affine

from annotate.image_io import ImageLoadError, LoadedImage, image_key, load_image


def _rgb(h: int = 40, w: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, **kw).save(buf, format="PNG")
    return buf.getvalue()


def _expected_stretch(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(band[valid].astype(np.float64), (2, 98))
    out = np.clip((band.astype(np.float64) - lo) * 255.0 / (hi - lo), 0, 255)
    return np.where(valid, np.rint(out), 0).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ plain formats


def test_png_rgb_path_and_bytes(tmp_path: Path) -> None:
    arr = _rgb()
    p = tmp_path / "a.png"
    Image.fromarray(arr).save(p)
    im = load_image(p)
    assert isinstance(im, LoadedImage)
    np.testing.assert_array_equal(im.rgb, arr)
    assert im.rgb.dtype == np.uint8 and im.rgb.flags["C_CONTIGUOUS"]
    assert (im.crs, im.transform, im.band_count, im.dtype, im.source) == (None, None, 3, "uint8", str(p))
    assert (im.height, im.width) == (40, 60)
    from_bytes = load_image(p.read_bytes(), name="http://x/a.png")
    np.testing.assert_array_equal(from_bytes.rgb, arr)
    assert from_bytes.source == "http://x/a.png"
    assert load_image(p.read_bytes()).source == "<bytes>"


def test_grayscale_palette_and_rgba_png(tmp_path: Path) -> None:
    gray = np.arange(0, 250, dtype=np.uint8).reshape(10, 25)
    im = load_image(_png_bytes(gray))
    assert im.rgb.shape == (10, 25, 3) and im.band_count == 1
    for c in range(3):
        np.testing.assert_array_equal(im.rgb[:, :, c], gray)

    pal = Image.fromarray(np.array([[0, 1], [2, 1]], dtype=np.uint8), mode="P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    got = load_image(buf.getvalue()).rgb
    np.testing.assert_array_equal(got[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(got[1, 0], [0, 0, 255])

    rgba = np.dstack([_rgb(8, 9), np.full((8, 9), 7, np.uint8)])
    got = load_image(_png_bytes(rgba))
    np.testing.assert_array_equal(got.rgb, rgba[:, :, :3])
    assert got.band_count == 4
    np.testing.assert_array_equal(load_image(_png_bytes(rgba), bands=[4]).rgb[:, :, 1], rgba[:, :, 3])


def test_16bit_png_is_percentile_stretched() -> None:
    band = (np.arange(100 * 30).reshape(100, 30) * 7).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(band).save(buf, format="PNG")  # mode I;16
    im = load_image(buf.getvalue())
    assert im.dtype == "uint16" and im.band_count == 1
    expected = _expected_stretch(band, np.ones(band.shape, bool))
    for c in range(3):
        np.testing.assert_array_equal(im.rgb[:, :, c], expected)
    assert im.rgb.min() == 0 and im.rgb.max() == 255


def test_jpeg_and_exif_orientation(tmp_path: Path) -> None:
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, :32] = (200, 30, 30)
    arr[:, 32:] = (30, 30, 200)
    p = tmp_path / "a.jpg"
    Image.fromarray(arr).save(p, quality=95)
    im = load_image(p)
    assert im.rgb.shape == (32, 64, 3)
    assert np.abs(im.rgb.astype(int) - arr).mean() < 4
    # EXIF orientation 6 (rotate 90° clockwise for display): browsers — and Label Studio — show it 64×32 tall
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, exif=exif)
    rot = load_image(buf.getvalue()).rgb
    assert rot.shape == (64, 32, 3)
    assert rot[0, 16, 0] > 150  # left half (red) is now on top


def test_plain_tiff_without_georeferencing(tmp_path: Path) -> None:
    arr = _rgb(20, 30, seed=3)
    p = tmp_path / "plain.tif"
    Image.fromarray(arr).save(p)
    im = load_image(p)
    np.testing.assert_array_equal(im.rgb, arr)
    assert im.crs is None and im.transform is None


# ------------------------------------------------------------------------------------------------ GeoTIFF


def _write_geotiff(path: Path, data: np.ndarray, nodata: float | None = None) -> tuple:
    transform = Affine(0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0)
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
        dtype=data.dtype, crs="EPSG:32616", transform=transform, nodata=nodata,
    ) as ds:
        ds.write(data)
    return tuple(transform)[:6]


def test_four_band_uint16_geotiff_crs_transform_stretch_and_bands(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    data = rng.integers(100, 5000, (4, 50, 40)).astype(np.uint16)
    data[:, :5, :] = 0  # nodata rows
    data[3] = 60000  # constant NIR band except nodata
    data[3, :5, :] = 0
    p = tmp_path / "geo.tif"
    transform = _write_geotiff(p, data, nodata=0)
    im = load_image(p)
    assert im.crs == "EPSG:32616"
    assert im.transform == pytest.approx(transform)
    assert im.band_count == 4 and im.dtype == "uint16"
    valid = data[0] != 0
    for c in range(3):
        np.testing.assert_array_equal(im.rgb[:, :, c], _expected_stretch(data[c], valid))
    assert (im.rgb[:5] == 0).all()  # nodata → 0, and ignored by the percentiles
    nir = load_image(p, bands=(4, 3, 2))
    np.testing.assert_array_equal(nir.rgb[:, :, 1], im.rgb[:, :, 2])
    assert set(np.unique(nir.rgb[5:, :, 0])) == {128}  # constant band → mid-grey, no invented contrast
    one = load_image(p, bands=[2])
    np.testing.assert_array_equal(one.rgb[:, :, 0], one.rgb[:, :, 2])
    with pytest.raises(ImageLoadError, match=r"geo\.tif.*band\(s\) \[5\] out of range.*4 band"):
        load_image(p, bands=(5, 1, 2))
    with pytest.raises(ImageLoadError, match="1 or 3 bands"):
        load_image(p, bands=(1, 2))


def test_float_geotiff_ignores_nan(tmp_path: Path) -> None:
    data = np.linspace(-1, 1, 2 * 3 * 4, dtype=np.float32).reshape(1, 4, 6)
    data[0, 0, 0] = np.nan
    p = tmp_path / "f.tif"
    _write_geotiff(p, data)
    im = load_image(p)
    valid = np.isfinite(data[0])
    np.testing.assert_array_equal(im.rgb[:, :, 0], _expected_stretch(data[0], valid))
    assert im.rgb[0, 0, 0] == 0


def test_geotiff_from_bytes_keeps_crs(tmp_path: Path) -> None:
    p = tmp_path / "g.tif"
    _write_geotiff(p, np.full((3, 8, 8), 9, np.uint8))
    im = load_image(p.read_bytes(), name="remote/g.tif")
    assert im.crs == "EPSG:32616" and im.source == "remote/g.tif"
    assert (im.rgb == 9).all()


# ------------------------------------------------------------------------------------------------ errors, limits


def _png_with_header_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR claims ``width × height`` (the pixel data is far too short)."""
    png = _png_bytes(np.zeros((2, 2, 3), np.uint8))
    ihdr_data = struct.pack(">II", width, height) + png[24:29]
    chunk = b"IHDR" + ihdr_data
    return png[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[33:]


def test_pixel_limit_checked_before_decoding() -> None:
    bomb = _png_with_header_size(100_000, 100_000)  # 10 GP claimed: would need 30 GB decoded
    with pytest.raises(ImageLoadError, match=r"bomb\.png: image is 100000×100000 .* above the limit"):
        load_image(bomb, name="bomb.png")
    # above Pillow's own decompression-bomb error threshold (~179 MP) but below ours: still our clear message
    big = _png_with_header_size(20_000, 10_000)
    with pytest.raises(ImageLoadError, match=r"big\.png: image is 20000×10000 .*limit of 100,000,000"):
        load_image(big, name="big.png", max_pixels=100_000_000)
    # within both limits: Pillow tries to decode and reports the truncation
    with pytest.raises(ImageLoadError, match=r"small\.png"):
        load_image(_png_with_header_size(300, 200), name="small.png")


def test_truncated_and_garbage_inputs_name_the_file(tmp_path: Path) -> None:
    arr = _rgb(64, 64)
    png = _png_bytes(arr)
    jpg_buf = io.BytesIO()
    Image.fromarray(arr).save(jpg_buf, format="JPEG")
    jpg = jpg_buf.getvalue()
    tif = tmp_path / "t.tif"
    _write_geotiff(tif, np.moveaxis(arr, -1, 0).copy())
    tif_bytes = tif.read_bytes()
    cases = {
        "trunc.png": png[: len(png) // 2],
        "trunc.jpg": jpg[: len(jpg) // 2],
        "trunc.tif": tif_bytes[: len(tif_bytes) // 2],
        "garbage.bin": bytes(range(256)) * 4,
        "empty.png": b"",
    }
    for name, data in cases.items():
        with pytest.raises(ImageLoadError, match=name.replace(".", r"\.")):
            load_image(data, name=name)
        f = tmp_path / name
        f.write_bytes(data)
        with pytest.raises(ImageLoadError, match=str(f).replace(".", r"\.")):
            load_image(f)
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match="not a file"):
        load_image(tmp_path)


def test_image_key_is_content_hash() -> None:
    a = _rgb(10, 12)
    b = a.copy()
    assert image_key(a) == image_key(b)
    b[3, 4, 1] ^= 1
    assert image_key(a) != image_key(b)
    assert image_key(a) != image_key(a.reshape(12, 10, 3))  # same bytes, other shape
    assert image_key(a[:, ::-1]) == image_key(np.ascontiguousarray(a[:, ::-1]))
    assert len(image_key(a)) == 32


# ------------------------------------------------------------------------------------------------ real data


def test_real_uint16_geotiff(shared_data: Path) -> None:
    im = load_image(shared_data / "solaris" / "sample_geotiff.tif")
    assert im.crs == "EPSG:32616" and im.dtype == "uint16" and im.band_count == 1
    assert im.transform == pytest.approx((0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0))
    assert im.rgb.shape == (900, 900, 3)
    np.testing.assert_array_equal(im.rgb[:, :, 0], im.rgb[:, :, 2])
    # a 2–98 % stretch saturates about 2 % of the valid pixels at each end
    with rasterio.open(shared_data / "solaris" / "sample_geotiff.tif") as ds:
        valid = ds.read(1) != ds.nodata
    assert (im.rgb[:, :, 0][~valid] == 0).all()
    frac_hi = np.mean(im.rgb[:, :, 0][valid] == 255)
    assert 0.005 < frac_hi < 0.05


def test_real_rgb_and_cog_geotiffs(shared_data: Path) -> None:
    rgb = load_image(shared_data / "rasterio" / "RGB.byte.tif")
    assert rgb.crs == "EPSG:32618" and rgb.rgb.shape == (718, 791, 3)
    with rasterio.open(shared_data / "rasterio" / "RGB.byte.tif") as ds:
        np.testing.assert_array_equal(rgb.rgb, np.moveaxis(ds.read(), 0, -1))
    cog = load_image(shared_data / "rasterio" / "cogeo.tif")
    assert cog.crs == "EPSG:3857" and cog.rgb.shape == (1024, 1024, 3)  # full resolution, not an overview


def test_real_naip_four_band(shared_data: Path) -> None:
    paths = sorted((shared_data / "opengeos_data" / "naip").glob("*.tif"))
    assert paths
    for p in paths:
        im = load_image(p)
        assert im.band_count == 4 and im.crs is not None
        with rasterio.open(p) as ds:
            np.testing.assert_array_equal(im.rgb, np.moveaxis(ds.read([1, 2, 3]), 0, -1))
            nir = load_image(p, bands=(4, 3, 2))
            np.testing.assert_array_equal(nir.rgb[:, :, 0], ds.read(4))


def test_real_isaid_png(shared_data: Path) -> None:
    p = shared_data / "isaid_devkit" / "train" / "images" / "P0005.png"
    im = load_image(p)
    np.testing.assert_array_equal(im.rgb, np.asarray(Image.open(p).convert("RGB")))

"""Mask encodings: brush RLE byte-identity with label-studio-sdk, COCO RLE, polygons, bbox, area."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle, encode_rle, mask2rle
from pycocotools import mask as mask_utils

from converters.labelstudio.brush import brush_rle_decode, brush_rle_encode, decode_rle_values, encode_rle_values

from annotate.masks import (
    coco_rle_decode,
    coco_rle_encode,
    mask_area,
    mask_to_bbox,
    mask_to_polygons,
    polygons_to_mask,
)


def _blobs(rng: np.random.Generator, h: int, w: int, n: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    for _ in range(n):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(1, max(2, w // 3))), int(rng.integers(1, max(2, h // 3))))
        cv2.ellipse(m, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return m.astype(bool)


def _cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(1234)
    cases: list[tuple[str, np.ndarray]] = []
    for shape in [(1, 1), (1, 2), (2, 1), (1, 7), (7, 1), (3, 5), (16, 16), (1, 1000), (1000, 1)]:
        cases.append((f"zeros{shape}", np.zeros(shape, bool)))
        cases.append((f"ones{shape}", np.ones(shape, bool)))
        cases.append((f"noise{shape}", rng.random(shape) > 0.5))
    for shape in [(31, 17), (64, 64), (99, 101)]:
        cases.append((f"checker{shape}", (np.indices(shape).sum(axis=0) % 2) == 0))
        cases.append((f"noise{shape}", rng.random(shape) > 0.3))
    # single isolated pixels → the sdk's literal chunks are not hit (runs are ×4) but runs of exactly 4, 8, 12
    sparse = np.zeros((40, 40), bool)
    sparse[rng.integers(0, 40, 60), rng.integers(0, 40, 60)] = True
    cases.append(("sparse", sparse))
    for k, shape in enumerate([(57, 83), (256, 256), (480, 640), (977, 884)]):
        cases.append((f"blobs{shape}", _blobs(rng, *shape, n=3 + k)))
    # one row longer than 65536/4 pixels: runs split into 65536-value chunks, with a 1-value-chunk edge case
    long_row = np.zeros((1, 40000), bool)
    long_row[0, 16384:] = True  # first run = 65536 values exactly, second = 94464
    cases.append(("long_row", long_row))
    big = np.zeros((600, 700), bool)
    big[5:590, 3:690] = True  # runs > 256 values, each row
    cases.append(("big_rect", big))
    cases.append(("all_ones_large", np.ones((300, 500), bool)))
    return cases


CASES = _cases()


@pytest.fixture(params=["python-packer", "numpy-packer"])
def packer(request, monkeypatch) -> str:
    """Run a test with both encoder paths: Python integers (few runs) and vectorised numpy (many runs)."""
    from converters.labelstudio import brush as masks

    monkeypatch.setattr(masks, "_PY_PACK_MAX_RUNS", 10**9 if request.param == "python-packer" else -1)
    return request.param


@pytest.mark.parametrize("name,mask", CASES, ids=[c[0] for c in CASES])
def test_brush_encode_byte_identical_to_sdk(name: str, mask: np.ndarray, packer: str) -> None:
    ours = brush_rle_encode(mask)
    ref = mask2rle(mask.astype(np.uint8) * 255)
    assert ours == ref
    assert all(isinstance(v, int) for v in ours)
    # decode both ways
    np.testing.assert_array_equal(brush_rle_decode(ours, *mask.shape), mask)
    np.testing.assert_array_equal(decode_rle_values(ours), decode_rle(ref))


def test_brush_encode_accepts_uint8_255_and_int_masks() -> None:
    rng = np.random.default_rng(5)
    m = _blobs(rng, 50, 60, 3)
    ref = mask2rle(m.astype(np.uint8) * 255)
    assert brush_rle_encode(m.astype(np.uint8) * 255) == ref
    assert brush_rle_encode(m.astype(np.int64)) == ref


@pytest.mark.parametrize("n", [1, 2, 8, 9, 16, 17, 256, 257, 65536, 65537, 65540, 131073])
def test_generic_values_encoder_matches_sdk_including_literal_runs(n: int, packer: str) -> None:
    rng = np.random.default_rng(n)
    # long constant stretches with isolated different values: literal chunks of one value + split long runs
    v = np.full(n, 7, np.uint8)
    v[:: max(1, n // 3)] = 200
    assert encode_rle_values(v) == encode_rle(v)
    np.testing.assert_array_equal(decode_rle_values(encode_rle(v)), v)
    if n <= 20000:
        noise = rng.integers(0, 256, n).astype(np.uint8)
        assert encode_rle_values(noise) == encode_rle(noise)
        np.testing.assert_array_equal(decode_rle_values(encode_rle(noise)), noise)


def test_decode_reads_alpha_channel_of_non_uniform_rgba_stream() -> None:
    rng = np.random.default_rng(9)
    v = (rng.integers(0, 3, 4 * 30 * 20) * 100).astype(np.uint8)
    rle = encode_rle(v)
    expected = v.reshape(30, 20, 4)[:, :, 3] > 0
    np.testing.assert_array_equal(brush_rle_decode(rle, 30, 20), expected)


def test_brush_decode_rejects_malformed_streams() -> None:
    rle = brush_rle_encode(np.eye(20, dtype=bool))
    with pytest.raises(ValueError, match="expected 10×20×4"):
        brush_rle_decode(rle, 10, 20)
    with pytest.raises(ValueError, match="truncated"):
        brush_rle_decode(rle[: len(rle) // 2], 20, 20)
    with pytest.raises(ValueError, match="header"):
        brush_rle_decode([0, 1, 2], 1, 1)
    with pytest.raises(ValueError, match="bytes"):
        brush_rle_decode([0, 300, 2, 4, 5, 6, 7, 8], 1, 1)
    with pytest.raises(ValueError, match="empty"):
        brush_rle_encode(np.zeros((0, 5), bool))


def test_real_label_studio_export_decodes_and_reencodes_identically(shared_data) -> None:
    export = json.loads((shared_data / "derived" / "label_studio_brush_export_isaid.json").read_text())
    n = 0
    for task in export:
        for ann in task["annotations"]:
            for region in ann["result"]:
                if region.get("type") != "brushlabels":
                    continue
                h, w = region["original_height"], region["original_width"]
                rle = region["value"]["rle"]
                ref = decode_rle(rle).reshape(h, w, 4)[:, :, 3] > 0
                ours = brush_rle_decode(rle, h, w)
                np.testing.assert_array_equal(ours, ref)
                assert ours.any()
                assert brush_rle_encode(ours) == rle
                n += 1
    assert n == 190


def test_coco_rle_roundtrip_and_counts_forms() -> None:
    rng = np.random.default_rng(3)
    m = _blobs(rng, 45, 70, 4)
    rle = coco_rle_encode(m)
    assert rle["size"] == [45, 70] and isinstance(rle["counts"], str)
    json.dumps(rle)  # JSON-ready
    np.testing.assert_array_equal(coco_rle_decode(rle), m)
    np.testing.assert_array_equal(coco_rle_decode({"size": [45, 70], "counts": rle["counts"].encode()}), m)
    # agrees with pycocotools' area / bbox
    ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    assert int(mask_utils.area(ref)) == mask_area(m)
    assert tuple(float(v) for v in mask_utils.toBbox(ref)) == mask_to_bbox(m)


def test_coco_uncompressed_counts_are_column_major() -> None:
    # 3x2 mask, column-major order: col0 = [0,1,1], col1 = [1,0,0] → counts 1 (zeros), 3 (ones), 2 (zeros)
    expected = np.array([[0, 1], [1, 0], [1, 0]], dtype=bool)
    np.testing.assert_array_equal(coco_rle_decode({"size": [3, 2], "counts": [1, 3, 2]}), expected)
    with pytest.raises(ValueError, match="sum to 5"):
        coco_rle_decode({"size": [3, 2], "counts": [1, 3, 1]})
    with pytest.raises(ValueError, match="size"):
        coco_rle_decode({"counts": "abc"})  # type: ignore[arg-type]


def test_polygons_keep_holes_as_separate_rings() -> None:
    m = np.zeros((60, 80), bool)
    m[10:50, 10:70] = True
    m[20:40, 30:50] = False  # hole
    m[2:5, 75:78] = True  # second component
    polys = mask_to_polygons(m)
    assert len(polys) == 3
    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
    union = polygons_to_mask(polys, 60, 80)
    assert union[30, 40]  # COCO readers union the rings: the hole comes back filled
    eo = polygons_to_mask(polys, 60, 80, even_odd=True)
    assert not eo[30, 40] and eo[15, 15] and eo[3, 76]
    # vertices are boundary-pixel centres, so the re-rasterised polygon loses at most a 1-px rim
    assert np.count_nonzero(eo & m) / np.count_nonzero(eo | m) > 0.9
    assert not (eo & ~m).any() or np.count_nonzero(eo & ~m) < 0.02 * m.sum()


def test_polygons_union_fills_holes_like_coco_readers() -> None:
    m = np.zeros((60, 60), bool)
    m[5:55, 5:55] = True
    m[25:35, 25:35] = False
    polys = mask_to_polygons(m)
    assert len(polys) == 2
    union = polygons_to_mask(polys, 60, 60)
    assert union[30, 30]  # hole filled: the reason RLE is the lossless default
    eo = polygons_to_mask(polys, 60, 60, even_odd=True)
    assert not eo[30, 30] and eo[10, 10]


def test_polygons_drop_degenerate_rings_and_empty() -> None:
    m = np.zeros((10, 10), bool)
    m[3, 3] = True  # single pixel: one-point contour
    assert mask_to_polygons(m) == []
    assert mask_to_polygons(np.zeros((4, 4), bool)) == []
    assert not polygons_to_mask([], 4, 4).any()


def test_bbox_and_area() -> None:
    m = np.zeros((10, 12), bool)
    m[4, 3] = True
    assert mask_to_bbox(m) == (3.0, 4.0, 1.0, 1.0)
    m[6:9, 5:11] = True
    assert mask_to_bbox(m) == (3.0, 4.0, 8.0, 5.0)
    assert mask_area(m) == 1 + 18
    assert mask_to_bbox(np.zeros((3, 3), bool)) == (0.0, 0.0, 0.0, 0.0)
    assert mask_area(np.zeros((3, 3), bool)) == 0


def test_multi_block_packing_is_identical(monkeypatch) -> None:
    """Masks with more runs than one packing block (bounded memory path) give the same bytes."""
    from converters.labelstudio import brush as masks

    rng = np.random.default_rng(11)
    m = rng.random((50, 77)) > 0.5  # ~1900 runs
    ref = mask2rle(m.astype(np.uint8) * 255)
    monkeypatch.setattr(masks, "_PY_PACK_MAX_RUNS", -1)
    for block in (1, 7, 64, 1000):
        monkeypatch.setattr(masks, "_BLOCK_CHUNKS", block)
        assert brush_rle_encode(m) == ref


def test_segmentation_to_mask_reads_every_dataset_spelling() -> None:
    from annotate.masks import SegmentationError, segmentation_to_mask, to_rle_list

    m = np.zeros((20, 30), bool)
    m[4:10, 6:16] = True
    m[14:18, 20:28] = True
    rle = coco_rle_encode(m)
    assert np.array_equal(segmentation_to_mask(rle, 20, 30), m)  # compressed, counts as str
    assert np.array_equal(segmentation_to_mask({**rle, "counts": rle["counts"].encode()}, 20, 30), m)
    column_major = m.T.ravel()  # COCO runs go down the columns and start with background
    boundaries = np.flatnonzero(column_major[1:] != column_major[:-1]) + 1
    counts = ([0] if column_major[0] else []) + np.diff(np.r_[0, boundaries, m.size]).tolist()
    assert np.array_equal(segmentation_to_mask({"size": [20, 30], "counts": counts}, 20, 30), m)  # uncompressed
    assert np.array_equal(segmentation_to_mask([rle], 20, 30), m)  # RRSIS-D: a list holding the RLE dict
    top, bottom = np.zeros_like(m), np.zeros_like(m)
    top[4:10, 6:16], bottom[14:18, 20:28] = True, True
    parts = [coco_rle_encode(top), coco_rle_encode(bottom)]
    assert np.array_equal(segmentation_to_mask(parts, 20, 30), m) and len(to_rle_list(parts, 20, 30)) == 2
    square = [6.0, 4.0, 16.0, 4.0, 16.0, 10.0, 6.0, 10.0]
    from_polys = segmentation_to_mask([square], 20, 30)
    assert np.array_equal(segmentation_to_mask(square, 20, 30), from_polys)  # a bare flat polygon
    assert from_polys[5:9, 7:15].all() and not from_polys[12:, :].any()
    for bad, why in [({"size": [20, 30]}, "no 'counts'"), ({**rle, "size": [10, 30]}, "differs from the image"),
                     ([], "empty"), ([[1.0, 2.0, 3.0, 4.0]], "3 or more points"), ([1.0, 2.0], "fewer than 3"),
                     ("abc", "unsupported"), ({"size": [20, 30], "counts": [5, 5]}, "sum to 10"),
                     ({"size": [20, 30], "counts": 7}, "str, bytes or a list")]:
        with pytest.raises(SegmentationError, match=why):
            segmentation_to_mask(bad, 20, 30)

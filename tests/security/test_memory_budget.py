"""Issue 17 item 2: the pixel limit did not bound memory. It counted pixels, not bytes a pixel or bands, and the
stretch made float64 copies of whole bands (a 2.8 MB float TIFF cost 6.35 GB); training held every corrected
mask at full size at once. Decoding now reserves its peak from a budget in bytes, reads GeoTIFFs in windows and
stretches in chunks; training keeps each mask's crop to its box only."""

from __future__ import annotations

import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotate import image_io
from annotate.image_io import ImageLoadError, load_image
from tests.security.isolated import run_isolated

MiB = 1024 * 1024


def _float_tiff(path: Path, side: int) -> Path:
    import rasterio

    rng = np.random.default_rng(0)
    profile = dict(driver="GTiff", height=side, width=side, count=3, dtype="float64", compress="deflate", tiled=True,
                   blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        for b in (1, 2, 3):
            band = np.zeros((side, side))
            band[::7, ::5] = rng.random(band[::7, ::5].shape) * 1000.0 * b  # compresses well, still varied
            dst.write(band, b)
    return path


def test_a_small_float_geotiff_decodes_in_bounded_memory(tmp_path: Path):
    """25 megapixels of 3 float64 bands (600 MB of samples, a few MB on disk): the whole-band stretch peaked
    above 1 GB; windows and chunks keep it near the 75 MB RGB result."""
    path = _float_tiff(tmp_path / "float.tif", 5000)
    result = run_isolated(f"""
        import re
        from annotate.image_io import load_image
        before = int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
        im = load_image({str(path)!r})
        _result.update(shape=list(im.rgb.shape), before=before, corner=im.rgb[:14:7, :10:5].tolist())
    """, memory_limit=3 * 1024**3)
    assert result["shape"] == [5000, 5000, 3]
    assert result["peak_rss"] - result["before"] < 300 * MiB, (result["peak_rss"] - result["before"]) / MiB


def test_chunked_stretch_equals_the_whole_band_stretch(tmp_path: Path, monkeypatch):
    """Sampling every step-th valid pixel chunk by chunk gives the same percentiles as on the whole band, also
    past STRETCH_SAMPLE valid pixels and with nodata and NaN spread over the chunks."""
    import rasterio

    monkeypatch.setattr(image_io, "CHUNK_PIXELS", 1000)  # many chunks
    monkeypatch.setattr(image_io, "STRETCH_SAMPLE", 777)  # a sampling step above 1
    rng = np.random.default_rng(3)
    band = rng.gamma(2.0, 300.0, (90, 70)).astype(np.float32)
    band[rng.random(band.shape) < 0.1] = np.nan
    band[:5] = -9999.0
    path = tmp_path / "b.tif"
    with rasterio.open(path, "w", driver="GTiff", height=90, width=70, count=1, dtype="float32", nodata=-9999.0,
                       blockxsize=16, blockysize=16, tiled=True) as dst:
        dst.write(band, 1)
    got = load_image(path).rgb[:, :, 0]
    valid = np.isfinite(band) & (band != -9999.0)
    vals = band[valid]
    vals = vals[:: -(-vals.size // 777)]
    lo, hi = np.percentile(vals.astype(np.float64), (2, 98))
    expected = np.where(valid, np.rint(np.clip((band.astype(np.float64) - lo) * 255.0 / (hi - lo), 0, 255)), 0)
    np.testing.assert_array_equal(got, expected.astype(np.uint8))


def test_an_image_above_the_budget_is_refused_from_its_header(tmp_path: Path):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((3000, 3000, 3), np.uint8)).save(path)  # needs ~63 MB (Pillow's 4 B + 3 B a pixel)
    with pytest.raises(ImageLoadError, match=r"big\.png: decoding needs about .* MiB, above the memory budget of 32 "
                                             r"MiB \(PSLG_MAX_DECODE_BYTES\)"):
        load_image(path, budget=image_io.DecodeBudget(32 * MiB))
    assert load_image(path, budget=image_io.DecodeBudget(96 * MiB)).rgb.shape == (3000, 3000, 3)


def test_concurrent_decodes_wait_for_the_budget_instead_of_adding_up(tmp_path: Path):
    """Four threads decoding 2000² PNGs (about 36 MB each at their peak) through a 48 MB budget: never more
    than one holds it, and all four finish."""
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (2000, 2000, 3), np.uint8)).save(path)
    budget = image_io.DecodeBudget(48 * MiB)
    most = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            most[0] = max(most[0], budget.used)
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    shapes: list[tuple] = []
    threads = [threading.Thread(target=lambda: shapes.append(load_image(path, budget=budget).rgb.shape)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    watcher.join()
    assert shapes == [(2000, 2000, 3)] * 4
    assert 28 * MiB < most[0] <= 48 * MiB and budget.used == 0


def test_the_backend_budget_fails_the_task_not_the_batch(tmp_path: Path, make_app):
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    Image.fromarray(np.zeros((3000, 3000, 3), np.uint8)).save(big)
    Image.fromarray(np.full((32, 40, 3), 128, np.uint8)).save(small)
    client = make_app(local_image_root=str(tmp_path), max_decode_bytes=32 * MiB)
    from tests.security.conftest import CONFIG, box_task

    tasks = [box_task(1, str(big)), box_task(2, str(small))]
    r = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG, "project": "1"})
    assert r.status_code == 200
    first, second = r.get_json()["results"]
    assert first["result"] == [] and "PSLG_MAX_DECODE_BYTES" in first["error"]
    assert second["result"]


def test_retraining_keeps_only_each_mask_crop(tmp_path: Path):
    """24 corrections of small objects on 2000² images: the trainer held all 24 full masks (96 MB of bool)."""
    from backend.config import Settings
    from tests.support.backend import runtime_clients

    image = tmp_path / "scene.png"
    Image.fromarray(np.full((2000, 2000, 3), 90, np.uint8)).save(image)
    with runtime_clients() as make:  # an engine of its own: the learned version it adopts stays in this test
        client = make(Settings(model_dir=tmp_path / "model", local_image_root=str(tmp_path), prior_min_samples=1))
        _learn_from_24_corrections(client, image)


def _learn_from_24_corrections(client, image: Path) -> None:
    from converters.labelstudio import brush_region
    from tests.security.conftest import CONFIG

    runtime = client.application.config["PSLG_RUNTIME"]
    runtime.remember_label_config(4, CONFIG)
    for i in range(24):
        mask = np.zeros((2000, 2000), bool)
        mask[100 + 60 * i: 140 + 60 * i, 300:360] = True
        task = {"id": 100 + i, "data": {"image": str(image), "expression": "the car"}}
        runtime.store.upsert("ANNOTATION_CREATED", 4, task,
                             {"id": 500 + i, "task": 100 + i,
                              "result": [brush_region(mask, "vehicle", from_name="mask", region_id=f"r{i}")]})
    tracemalloc.start()
    try:
        version, learned, skipped = runtime.trainer.learn_stage2()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert learned == 24 and not skipped, skipped
    assert peak < 64 * MiB, peak / MiB


def test_images_a_request_holds_count_until_it_ends_and_never_deadlock():
    """The backend holds each request's decoded images against the budget until the request ends: another
    request's decode waits for them; the holder's own next decode never waits (no deadlock)."""
    budget = image_io.DecodeBudget(100)
    order: list[str] = []
    held = threading.Event()
    done = threading.Event()

    def first() -> None:
        budget.hold(80)
        held.set()
        with budget.reserve(60, "own second image"):  # over the budget, but this thread never waits on itself
            order.append("first decoded again")
        time.sleep(0.2)
        order.append("first released")
        budget.release_held()
        done.set()

    def second() -> None:
        held.wait()
        with budget.reserve(50, "other request"):
            order.append("second decoded")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert order == ["first decoded again", "first released", "second decoded"] and budget.used == 0


def test_cached_images_give_way_when_a_decode_needs_room():
    """Decoded images kept for later clicks and images being decoded share the byte budget: a reservation
    shrinks the cache to the room left, least recently used first, so the two never add up past the budget. A
    cache that is gone (its runtime dropped) is not kept alive and does not break later decodes."""
    import gc

    from converters.labelstudio.fetch import LRUCache

    budget = image_io.DecodeBudget(1000)
    cache = LRUCache(size=8, max_bytes=1000, sizeof=lambda value: value)
    for key in ("a", "b", "c"):
        cache.put(key, 300)
    cache.get("a")  # most recently used: kept longest
    budget.add_reclaimer(cache.shrink_to)
    with budget.reserve(600, "large image"):
        assert cache.nbytes <= 400 and cache.get("a") == 300 and cache.get("b") is None
    budget.hold(900)
    assert cache.nbytes <= 100
    budget.release_held()

    del cache
    gc.collect()
    with budget.reserve(500, "after the cache is gone"):
        assert budget.used == 500


def _working_intervals(path: Path, budget: image_io.DecodeBudget, hold_before_decode: bool) -> list[tuple[float, float]]:
    """Four requests on large images, as the backend runs them: decode, work a moment, release what they hold.
    Returns each request's (decode start, release) interval."""
    starts: dict[int, float] = {}
    reserve = budget.reserve

    def recording_reserve(nbytes: int, name: str):
        starts.setdefault(threading.get_ident(), time.perf_counter())
        return reserve(nbytes, name)

    budget.reserve = recording_reserve  # type: ignore[method-assign]
    intervals: list[tuple[float, float]] = []
    lock = threading.Lock()

    def request() -> None:
        if hold_before_decode:
            image = load_image(path, budget=budget, hold_per_pixel=8)
        else:  # the order before: the working set counted only once the decode was done
            image = load_image(path, budget=budget)
            budget.hold(image.height * image.width * 8)
        time.sleep(0.05)  # predicting on it
        end = time.perf_counter()
        with lock:
            intervals.append((starts[threading.get_ident()], end))
        budget.release_held()

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return sorted(intervals)


def test_a_request_holds_its_working_set_before_its_decode_starts(tmp_path: Path):
    """The soak's four bombs at once reached ~1.8 GiB in one worker: each request's working set was counted only
    after its decode, so the next request's decode started in that gap and all four ended up worked on at once.
    Held from the header on, the requests take turns: no two are between decode and release together."""
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (1500, 1500, 3), np.uint8)).save(path)
    one = 1500 * 1500 * 8
    budget = image_io.DecodeBudget(int(one * 1.5))  # one working set and one decode fit; two working sets do not
    intervals = _working_intervals(path, budget, hold_before_decode=True)
    assert len(intervals) == 4 and budget.used == 0
    for (_, end), (start, _) in zip(intervals, intervals[1:]):
        assert start >= end, intervals


def test_a_working_set_above_the_whole_budget_waits_until_nothing_else_is_counted():
    budget = image_io.DecodeBudget(100)
    budget.hold(30)
    order: list[str] = []

    def big() -> None:
        budget.hold(500, wait=True)
        order.append("big")
        budget.release_held()

    t = threading.Thread(target=big)
    t.start()
    time.sleep(0.1)
    order.append("small released")
    budget.release_held()
    t.join(10)
    assert order == ["small released", "big"] and budget.used == 0

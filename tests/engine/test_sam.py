"""SamSegmenter through the real ``SamPredictor`` with a tiny real SAM: masks, cache, checkpoints, errors."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import sam_model_registry

from annotate.device import DeviceError, resolve_device
from annotate.segmenters import build_segmenter
from annotate.segmenters.sam import (
    SamCheckpointError,
    SamCheckpointNotFoundError,
    SamSegmenter,
    build_sam_from_architecture,
    detect_model_type,
)
from tests.support.tiny_models import TINY_SAM_ARCHITECTURE, build_tiny_sam, save_tiny_sam_checkpoint, tiny_sam_state_dict


def _image(seed: int, h: int = 120, w: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    img[30:80, 50:120] = (220, 40, 40)
    return img


class EncoderCounter:
    """Counts forward passes of SAM's image encoder (the expensive step the cache must avoid)."""

    def __init__(self, segmenter: SamSegmenter) -> None:
        self.calls = 0
        segmenter.model.image_encoder.register_forward_hook(self._hook)

    def _hook(self, *_args) -> None:
        self.calls += 1


@pytest.fixture()
def seg() -> SamSegmenter:
    return SamSegmenter.from_model(build_tiny_sam(0), device="cpu", cache_size=2)


def test_set_image_and_box_prompt_give_image_sized_mask_and_unit_score(seg: SamSegmenter) -> None:
    img = _image(0)
    seg.set_image(img, image_key="a")
    out = seg.predict(box=np.array([50, 30, 120, 80]))
    assert out.mask.shape == img.shape[:2]
    assert out.mask.dtype == bool
    assert 0.0 <= out.score <= 1.0
    # the tiny model's mask is deterministic for fixed weights and prompt
    again = seg.predict(box=np.array([50, 30, 120, 80]))
    assert np.array_equal(out.mask, again.mask) and out.score == again.score


def test_n_prompts_on_one_image_run_the_encoder_once(seg: SamSegmenter) -> None:
    counter = EncoderCounter(seg)
    img = _image(1)
    boxes = [(10, 10, 60, 60), (50, 30, 120, 80), (100, 20, 190, 110), (0, 0, 200, 120)]
    for box in boxes:
        seg.set_image(img, image_key="same")  # callers may set the image before each prompt
        seg.predict(box=np.array(box, dtype=float))
    assert counter.calls == 1
    assert seg.cache_info()["misses"] == 1 and seg.cache_info()["hits"] == len(boxes) - 1


def test_switching_back_is_a_cache_hit_with_the_same_answer(seg: SamSegmenter) -> None:
    counter = EncoderCounter(seg)
    a, b = _image(2), _image(3)
    box = np.array([40.0, 20.0, 150.0, 100.0])
    seg.set_image(a, image_key="a")
    first_a = seg.predict(box=box)
    seg.set_image(b, image_key="b")
    on_b = seg.predict(box=box)
    seg.set_image(a, image_key="a")
    second_a = seg.predict(box=box)
    assert counter.calls == 2
    assert np.array_equal(first_a.mask, second_a.mask) and first_a.score == second_a.score
    # different pixels give a different embedding, hence (with overwhelming probability) a different mask
    assert not np.array_equal(first_a.mask, on_b.mask) or first_a.score != on_b.score


def test_lru_evicts_the_least_recently_used_embedding(seg: SamSegmenter) -> None:
    counter = EncoderCounter(seg)
    imgs = {k: _image(i) for i, k in enumerate("abc")}
    for k in "ab":
        seg.set_image(imgs[k], image_key=k)
    seg.set_image(imgs["a"], image_key="a")  # a is now the most recent: b is the one to evict
    seg.set_image(imgs["c"], image_key="c")  # capacity 2 → evicts b
    assert counter.calls == 3 and seg.cache_info()["size"] == 2
    seg.set_image(imgs["a"], image_key="a")
    assert counter.calls == 3  # kept
    seg.set_image(imgs["b"], image_key="b")
    assert counter.calls == 4  # was evicted, encoded again


def test_cache_size_zero_encodes_every_time() -> None:
    seg = SamSegmenter.from_model(build_tiny_sam(0), device="cpu", cache_size=0)
    counter = EncoderCounter(seg)
    img = _image(4)
    for _ in range(3):
        seg.set_image(img, image_key="k")
        seg.predict(box=np.array([10.0, 10.0, 90.0, 90.0]))
    assert counter.calls == 3 and seg.cache_info()["size"] == 0


def test_image_set_in_one_thread_is_not_overwritten_by_another(seg: SamSegmenter) -> None:
    a, b = _image(5), _image(6)
    box = np.array([40.0, 20.0, 150.0, 100.0])
    seg.set_image(a, image_key="a")
    expected_a = seg.predict(box=box)
    seg.clear_cache()

    a_is_set, b_is_set = threading.Event(), threading.Event()
    got: dict[str, object] = {}

    def worker_a() -> None:
        seg.set_image(a, image_key="a")
        a_is_set.set()
        b_is_set.wait(10)
        got["a"] = seg.predict(box=box)

    def worker_b() -> None:
        a_is_set.wait(10)
        seg.set_image(b, image_key="b")
        got["b"] = seg.predict(box=box)
        b_is_set.set()

    threads = [threading.Thread(target=worker_a), threading.Thread(target=worker_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert np.array_equal(got["a"].mask, expected_a.mask) and got["a"].score == expected_a.score


def test_multimask_only_for_a_lone_point(seg: SamSegmenter, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    real = seg._predictor.predict

    def spy(*args, **kwargs):
        calls.append(kwargs["multimask_output"])
        masks, ious, low = real(*args, **kwargs)
        assert len(masks) == (3 if kwargs["multimask_output"] else 1)
        return masks, ious, low

    monkeypatch.setattr(seg._predictor, "predict", spy)
    seg.set_image(_image(7), image_key="m")
    seg.predict(box=np.array([10.0, 10.0, 90.0, 90.0]))
    seg.predict(box=np.array([10.0, 10.0, 90.0, 90.0]), point_coords=np.array([[50.0, 50.0]]), point_labels=np.array([1]))
    out = seg.predict(point_coords=np.array([[50.0, 50.0]]), point_labels=np.array([1]))
    seg.predict(point_coords=np.array([[50.0, 50.0], [20.0, 20.0]]), point_labels=np.array([1, 0]))
    assert calls == [False, False, True, False]
    assert out.mask.shape == (120, 200)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"box": np.array([300.0, 10.0, 400.0, 50.0])}, "outside"),
        ({"box": np.array([50.0, 50.0, 40.0, 60.0])}, "empty"),
        ({}, "needs a box or at least one point"),
        ({"point_coords": np.array([[500.0, 5.0]]), "point_labels": np.array([1])}, "outside"),
        ({"point_coords": np.array([[5.0, 5.0]]), "point_labels": np.array([2])}, "0 or 1"),
    ],
)
def test_bad_prompts_raise_value_error(seg: SamSegmenter, kwargs: dict, message: str) -> None:
    seg.set_image(_image(8), image_key="p")
    with pytest.raises(ValueError, match=message):
        seg.predict(**kwargs)


def test_predict_before_set_image_is_a_runtime_error(seg: SamSegmenter) -> None:
    with pytest.raises(RuntimeError, match="before set_image"):
        seg.predict(box=np.array([0.0, 0.0, 10.0, 10.0]))


def test_box_partly_outside_is_clipped_not_rejected(seg: SamSegmenter) -> None:
    seg.set_image(_image(9), image_key="c")
    out = seg.predict(box=np.array([-20.0, -20.0, 60.0, 60.0]))
    assert out.mask.shape == (120, 200)


# ---------------------------------------------------------------- checkpoints


def test_tiny_checkpoint_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    path = save_tiny_sam_checkpoint(tmp_path / "tiny.pt", seed=3)
    loaded = SamSegmenter(path, device="cpu")
    direct = SamSegmenter.from_model(build_tiny_sam(3), device="cpu")
    assert loaded.model_type == TINY_SAM_ARCHITECTURE.name  # the embedded architecture wins over model_type
    assert loaded.name.startswith("sam-tiny-test-")
    img = _image(10)
    box = np.array([50.0, 30.0, 120.0, 80.0])
    for s in (loaded, direct):
        s.set_image(img, image_key="x")
    a, b = loaded.predict(box=box), direct.predict(box=box)
    assert np.array_equal(a.mask, b.mask) and a.score == pytest.approx(b.score)


def test_name_changes_with_the_weights(tmp_path: Path) -> None:
    p0 = save_tiny_sam_checkpoint(tmp_path / "a.pt", seed=0)
    p1 = save_tiny_sam_checkpoint(tmp_path / "b.pt", seed=1)
    p0_copy = save_tiny_sam_checkpoint(tmp_path / "c.pt", seed=0)
    n0, n1, n0c = (SamSegmenter(p, device="cpu").name for p in (p0, p1, p0_copy))
    assert n0 != n1
    assert n0 == n0c  # same weights, different file: same model version


def test_missing_checkpoint_error_names_file_and_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "sam_vit_b.pth"
    with pytest.raises(SamCheckpointNotFoundError) as info:
        SamSegmenter(missing, model_type="vit_b", device="cpu")
    text = str(info.value)
    assert f"SAM checkpoint not found: {missing}" in text and "pslg models pull vit_b" in text
    assert isinstance(info.value, FileNotFoundError)


def test_unknown_model_type(tmp_path: Path) -> None:
    path = save_tiny_sam_checkpoint(tmp_path / "t.pt")
    with pytest.raises(SamCheckpointError, match="unknown SAM model type 'vit_x'.*vit_h, vit_l, vit_b"):
        SamSegmenter(path, model_type="vit_x", device="cpu")


def test_corrupt_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a torch file" * 10)
    with pytest.raises(SamCheckpointError, match=f"cannot read SAM checkpoint {bad}"):
        SamSegmenter(bad, device="cpu")


def test_bare_state_dict_of_unknown_architecture(tmp_path: Path) -> None:
    path = tmp_path / "bare.pth"
    torch.save(tiny_sam_state_dict(), path)
    with pytest.raises(SamCheckpointError, match="does not hold an official SAM architecture"):
        SamSegmenter(path, model_type="vit_b", device="cpu")


def test_official_checkpoint_of_another_size_names_the_right_model_type(tmp_path: Path) -> None:
    # only the shapes detection reads: a ViT-H encoder is 1280 wide with 32 blocks
    fake = {"image_encoder.patch_embed.proj.weight": torch.zeros(1280, 1, 1, 1)}
    fake.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(32)})
    path = tmp_path / "sam_vit_h.pth"
    torch.save(fake, path)
    with pytest.raises(SamCheckpointError, match="holds a vit_h model but model type vit_b.*--model-type vit_h"):
        SamSegmenter(path, model_type="vit_b", device="cpu")


def test_checkpoint_whose_weights_do_not_fit_its_architecture(tmp_path: Path) -> None:
    from dataclasses import replace

    from annotate.segmenters.sam import save_sam_checkpoint

    path = save_sam_checkpoint(build_tiny_sam(0), replace(TINY_SAM_ARCHITECTURE, encoder_depth=3), tmp_path / "m.pt")
    with pytest.raises(SamCheckpointError, match="does not match the tiny-test architecture"):
        SamSegmenter(path, device="cpu")


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_official_architectures_are_detected_from_their_state_dict(model_type: str) -> None:
    with torch.device("meta"):  # shapes only: no memory, no time
        sam = sam_model_registry[model_type]()
    assert detect_model_type(sam.state_dict()) == model_type


def test_architecture_builder_matches_the_official_builder() -> None:
    from annotate.segmenters.sam import SamArchitecture

    arch = SamArchitecture(
        name="vit_b", encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12, encoder_global_attn_indexes=(2, 5, 8, 11)
    )
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in build_sam_from_architecture(arch).state_dict().items()}
        official = {k: tuple(v.shape) for k, v in sam_model_registry["vit_b"]().state_dict().items()}
    assert ours == official


# ---------------------------------------------------------------- factory and devices


def test_factory_builds_sam_from_a_checkpoint(tmp_path: Path) -> None:
    seg = build_segmenter(save_tiny_sam_checkpoint(tmp_path / "t.pt"), device="cpu")
    assert isinstance(seg, SamSegmenter)


def test_factory_without_checkpoint_is_classical() -> None:
    from annotate.segmenters.classical import ClassicalSegmenter

    assert isinstance(build_segmenter(None), ClassicalSegmenter)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    assert resolve_device(None) == resolve_device("auto")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:1")
    else:
        with pytest.raises(DeviceError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_cuda_gives_the_cpu_answer_and_caches_on_the_gpu() -> None:
    cpu = SamSegmenter.from_model(build_tiny_sam(0), device="cpu")
    gpu = SamSegmenter.from_model(build_tiny_sam(0), device="auto")
    assert gpu.device.type == "cuda" and next(gpu.model.parameters()).is_cuda
    counter = EncoderCounter(gpu)
    img = _image(11)
    box = np.array([50.0, 30.0, 120.0, 80.0])
    cpu.set_image(img, image_key="g")
    expected = cpu.predict(box=box)
    for _ in range(3):
        gpu.set_image(img, image_key="g")
        got = gpu.predict(box=box)
    assert counter.calls == 1
    assert gpu._cache[gpu._cache_key("g")].features.is_cuda
    # float kernels differ between devices: a few border pixels may flip, the score barely moves
    from annotate.metrics import iou

    assert iou(got.mask, expected.mask) > 0.98 or (not got.mask.any() and not expected.mask.any())
    assert got.score == pytest.approx(expected.score, abs=1e-3)


# --- the disk tier of the embedding cache (pslg prelabel --cache-embeddings / PSLG_EMBEDDING_CACHE) ----------

def test_disk_cache_lets_another_instance_skip_the_encoder(tmp_path: Path) -> None:
    from annotate.segmenters.embedding_store import DiskEmbeddingCache

    img, box = _image(5), np.array([50.0, 30.0, 120.0, 80.0])
    first = SamSegmenter.from_model(build_tiny_sam(0), device="cpu")
    first.attach_disk_cache(DiskEmbeddingCache(tmp_path / "emb"))
    first.set_image(img, image_key="k5")
    expected = first.predict(box=box)

    second = SamSegmenter.from_model(build_tiny_sam(0), device="cpu")  # a fresh process would build the same
    second.attach_disk_cache(DiskEmbeddingCache(tmp_path / "emb"))
    counter = EncoderCounter(second)
    second.set_image(img, image_key="k5")
    got = second.predict(box=box)
    assert counter.calls == 0 and second.cache_info()["disk_hits"] == 1
    assert np.array_equal(got.mask, expected.mask) and got.score == pytest.approx(expected.score)

    other = SamSegmenter.from_model(build_tiny_sam(1), device="cpu")  # other weights: never another model's entry
    other.attach_disk_cache(DiskEmbeddingCache(tmp_path / "emb"))
    other_counter = EncoderCounter(other)
    other.set_image(img, image_key="k5")
    assert other_counter.calls == 1 and other.cache_info()["disk_hits"] == 0


def test_disk_cache_is_bounded_and_evicts_the_least_recently_used(tmp_path: Path) -> None:
    import os

    from annotate.segmenters.embedding_store import DiskEmbeddingCache

    features = torch.zeros(1, 8, 16, 16)
    probe = DiskEmbeddingCache(tmp_path / "probe")
    probe.put("x", features, (10, 10), (16, 16))
    entry = probe.size_bytes()

    cache = DiskEmbeddingCache(tmp_path / "emb", max_bytes=2 * entry + entry // 2)  # room for two entries
    cache.put("a", features, (10, 10), (16, 16))
    cache.put("b", features + 1, (10, 10), (16, 16))
    for i, key in enumerate(("a", "b")):  # make the write order unambiguous whatever the mtime resolution
        os.utime(cache._path(key), (1000 + i, 1000 + i))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", features + 2, (10, 10), (16, 16))
    assert cache.get("b") is None and cache.get("a") is not None
    assert torch.equal(cache.get("c")["features"], features + 2)
    assert cache.size_bytes() <= cache.max_bytes


def test_unreadable_disk_entry_is_dropped_and_the_encoder_runs(tmp_path: Path) -> None:
    from annotate.segmenters.embedding_store import DiskEmbeddingCache

    cache = DiskEmbeddingCache(tmp_path / "emb")
    seg = SamSegmenter.from_model(build_tiny_sam(0), device="cpu")
    seg.attach_disk_cache(cache)
    cache._path(seg._cache_key("k6")).write_bytes(b"truncated")
    counter = EncoderCounter(seg)
    seg.set_image(_image(6), image_key="k6")
    assert counter.calls == 1
    assert cache.get(seg._cache_key("k6")) is not None  # rewritten with the fresh embedding

"""What the SAM embedding cache saves: N box prompts on one image, with the cache vs. re-encoding per prompt.

A real ``segment_anything`` ViT (``sam_model_registry[model_type](checkpoint=None)``: the true architecture with
random weights, since no checkpoint is needed to measure time) answers ``--prompts`` box prompts on one
synthetic 1024×1024 scene twice, through ``SamSegmenter``:

* cached   (``cache_size=8``): ``set_image`` + ``predict`` per prompt; the encoder runs once;
* uncached (``cache_size=0``): the same calls; the encoder runs for every prompt (what a server without a
  cache does when each request carries one prompt).

It prints both wall times, the ratio, the encoder passes counted by a forward hook, and checks that both runs
gave identical masks. No arguments needed: ``python bench/embedding_cache.py`` uses CUDA when present
(``--device auto``). On a GPU one untimed warm-up encode runs first (CUDA context, kernel selection); on CPU
it is skipped because it would only add another encoder pass to the run time.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from segment_anything import sam_model_registry

from annotate.device import resolve_device
from annotate.segmenters.sam import SamSegmenter
from annotate.synthetic import make_scene


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _boxes(scene, n: int, rng: np.random.Generator, size: int) -> list[np.ndarray]:
    """The scene's object boxes, jittered copies of them when more prompts than objects are asked for."""
    base = [np.array(o.box, dtype=np.float64) for o in scene.objects]
    boxes = []
    for i in range(n):
        b = base[i % len(base)].copy()
        if i >= len(base):
            wh = np.array([b[2] - b[0], b[3] - b[1]] * 2)
            b = np.clip(b + rng.uniform(-0.1, 0.1, 4) * wh, 0, size)
        boxes.append(b)
    return boxes


def _run(
    seg: SamSegmenter, image: np.ndarray, boxes: list[np.ndarray], device: torch.device
) -> tuple[float, list[float], float, list]:
    """Return (total s, per-prompt set_image s, predict s, outputs) for one pass over the prompts."""
    t_set: list[float] = []
    t_pred = 0.0
    outs = []
    _sync(device)
    start = time.perf_counter()
    for box in boxes:
        t0 = time.perf_counter()
        seg.set_image(image, image_key="bench-image")
        _sync(device)
        t1 = time.perf_counter()
        outs.append(seg.predict(box=box))
        _sync(device)
        t2 = time.perf_counter()
        t_set.append(t1 - t0)
        t_pred += t2 - t1
    return time.perf_counter() - start, t_set, t_pred, outs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA → MPS → CPU), cpu, cuda, cuda:N, mps")
    ap.add_argument("--model-type", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    ap.add_argument("--prompts", type=int, default=8, help="box prompts on the image (default 8)")
    ap.add_argument("--size", type=int, default=1024, help="side of the square synthetic scene (default 1024)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.prompts < 1:
        ap.error("--prompts must be >= 1")

    device = resolve_device(args.device)
    scene = make_scene(seed=args.seed, height=args.size, width=args.size, n_objects=min(args.prompts, 8))
    boxes = _boxes(scene, args.prompts, np.random.default_rng(args.seed), args.size)

    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        sam = sam_model_registry[args.model_type](checkpoint=None)
    build_s = time.perf_counter() - t0
    cached = SamSegmenter.from_model(sam, model_type=args.model_type, device=device, cache_size=8, name=f"sam-{args.model_type}-random")
    uncached = SamSegmenter.from_model(sam, model_type=args.model_type, device=device, cache_size=0, name=f"sam-{args.model_type}-random")
    encodes = {"n": 0}
    sam.image_encoder.register_forward_hook(lambda *_: encodes.__setitem__("n", encodes["n"] + 1))

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"device: {device}{f' ({gpu})' if gpu else ''}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"{platform.processor() or platform.machine()}")
    print(f"model: {args.model_type} (random weights, built in {build_s:.1f} s); image {args.size}×{args.size}; "
          f"{args.prompts} box prompts")

    if device.type != "cpu":
        warm = SamSegmenter.from_model(sam, model_type=args.model_type, device=device, cache_size=0, name="warmup")
        warm.set_image(scene.image, image_key="warm")
        warm.predict(box=boxes[0])
        _sync(device)
        encodes["n"] = 0

    c_total, c_set, c_pred, c_outs = _run(cached, scene.image, boxes, device)
    c_enc = encodes["n"]
    encodes["n"] = 0
    u_total, u_set, u_pred, u_outs = _run(uncached, scene.image, boxes, device)
    u_enc = encodes["n"]

    same = all(np.array_equal(a.mask, b.mask) for a, b in zip(c_outs, u_outs))
    max_dscore = max(abs(a.score - b.score) for a, b in zip(c_outs, u_outs))
    n = args.prompts
    print(f"{'run':<10}{'encoder passes':>16}{'total s':>10}{'set_image s':>13}{'predict s':>11}{'per prompt ms':>15}")
    print(f"{'cached':<10}{c_enc:>16}{c_total:>10.2f}{sum(c_set):>13.2f}{c_pred:>11.2f}{1000 * c_total / n:>15.1f}")
    print(f"{'uncached':<10}{u_enc:>16}{u_total:>10.2f}{sum(u_set):>13.2f}{u_pred:>11.2f}{1000 * u_total / n:>15.1f}")
    # the encoder passes themselves, so a reader can see whether the machine was equally loaded in both runs
    print(f"encoder pass s: cached run {c_set[0]:.3f}; uncached run min {min(u_set):.3f} / median "
          f"{float(np.median(u_set)):.3f} / max {max(u_set):.3f}; cache hit (set_image) median "
          f"{1000 * float(np.median(c_set[1:])) if n > 1 else 0.0:.2f} ms")
    print(f"speed-up (uncached / cached): {u_total / c_total:.2f}×")
    print(f"identical masks cached vs uncached: {same} (max score difference {max_dscore:.2e})")
    print(f"cache: {cached.cache_info()}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""What each segmenter costs: per-image encoder time and per-prompt decoder time, as ratios to SAM ViT-B.

Every model is the real architecture at its released size with random weights (time does not depend on the
weight values), run through the toolkit's own segmenter classes on one synthetic 1024×1024 scene:

* SAM ViT-B (``segment_anything``, the baseline) — ``SamSegmenter``
* SAM 2.1 Hiera-tiny and Hiera-base+ (``Sam2Model``), SAM-HQ ViT-B (``SamHQModel``), EdgeTAM (``EdgeTamModel``,
  timm RepViT-M1) — ``HFSamSegmenter``
* SAM 3 (``Sam3Model``, ViT-L-sized 32-layer encoder at 1008 px, CLIP text encoder, DETR decoder) —
  ``Sam3OneStage``: its "prompt" is a text phrase (DETR + mask head on the cached vision features)

Encoder: ``set_image`` (pre-processing + encoder), best of ``--reps`` with the cache cleared; decoder: ``--prompts``
box prompts (a text phrase for SAM 3) on the encoded image, per prompt, after one untimed prompt (first-call
set-up); the decoder time includes upscaling the mask to the image (SAM 3: its 20 best instances). Ratios are against SAM ViT-B measured in
the same run. ``--only`` picks families (comma-separated), e.g. ``--only sam_vit_b,edgetam``.

    python bench/segmenter_cost.py --reps 1 --prompts 5
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages (and tests.support for SAM 3's tokenizer)

from annotate.synthetic import make_scene  # noqa: E402


def _sam_vit_b():
    from segment_anything import sam_model_registry

    from annotate.segmenters.sam import SamSegmenter

    return SamSegmenter.from_model(sam_model_registry["vit_b"](checkpoint=None), model_type="vit_b", device="cpu",
                                   name="sam-vit_b-random")


def _hf(model, processor, name: str):
    from annotate.segmenters.hf_sam import HFSamSegmenter

    return HFSamSegmenter(model=model.eval(), processor=processor, device="cpu", name=name)


def _sam2(variant: str):
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor

    if variant == "tiny":  # transformers' defaults are Hiera-tiny (facebook/sam2.1-hiera-tiny)
        config = Sam2Config()
    else:  # Hiera-base+ (facebook/sam2.1-hiera-base-plus)
        backbone = dict(model_type="sam2_hiera_det_model", hidden_size=112, num_attention_heads=2,
                        blocks_per_stage=[2, 3, 16, 3], embed_dim_per_stage=[112, 224, 448, 896],
                        num_attention_heads_per_stage=[2, 4, 8, 16], window_size_per_stage=[8, 4, 14, 7],
                        global_attention_blocks=[12, 16, 20], window_positional_embedding_background_size=[14, 14])
        config = Sam2Config(vision_config=dict(backbone_config=backbone, backbone_channel_list=[896, 448, 224, 112]))
    return _hf(Sam2Model(config), Sam2Processor(image_processor=Sam2ImageProcessor()), f"sam2.1-{variant}-random")


def _sam_hq():
    from transformers import SamHQConfig, SamHQModel, SamHQProcessor, SamImageProcessor

    return _hf(SamHQModel(SamHQConfig()), SamHQProcessor(image_processor=SamImageProcessor()), "samhq-vit_b-random")


def _edgetam():
    from transformers import EdgeTamConfig, EdgeTamModel, Sam2ImageProcessor, Sam2Processor, TimmWrapperConfig

    backbone = TimmWrapperConfig(architecture="repvit_m1",
                                 model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]})
    config = EdgeTamConfig(vision_config=dict(backbone_config=backbone))
    return _hf(EdgeTamModel(config), Sam2Processor(image_processor=Sam2ImageProcessor()), "edgetam-random")


def _sam3():
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    from annotate.segmenters.one_stage import Sam3OneStage
    from tests.support.tiny_grounders import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(["storage", "tank", "ship", "plane", "car"])
    model = Sam3Model(Sam3Config()).eval()  # facebook/sam3's sizes; the text encoder's vocabulary stays 49 408
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(), tokenizer=tokenizer)
    return Sam3OneStage(model=model, processor=processor, device="cpu", name="sam3-random")


FAMILIES: dict[str, Callable] = {
    "sam_vit_b": _sam_vit_b,
    "sam2.1_tiny": lambda: _sam2("tiny"),
    "sam2.1_base_plus": lambda: _sam2("base_plus"),
    "sam_hq_vit_b": _sam_hq,
    "edgetam": _edgetam,
    "sam3": _sam3,
}


def _params(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def measure(name: str, reps: int, n_prompts: int, image: np.ndarray, boxes: list[np.ndarray]) -> dict:
    t = time.perf_counter()
    built = FAMILIES[name]()
    build_s = time.perf_counter() - t
    if name == "sam3":
        owner = built
        params = _params(owner.model)
        encode_times = []
        for r in range(reps):
            owner._features.clear()
            owner._instances.clear()
            t = time.perf_counter()
            owner.features(image, f"img-{r}")
            encode_times.append(time.perf_counter() - t)
        phrases = ["storage tank", "ship", "plane", "car", "tank"]
        owner.instances(image, f"img-{reps - 1}", "warm up")  # untimed: first-call set-up of the decoder
        t = time.perf_counter()
        for i in range(n_prompts):
            owner.instances(image, f"img-{reps - 1}", phrases[i % len(phrases)] + " " * (i // len(phrases)))
        decode = (time.perf_counter() - t) / n_prompts
    else:
        seg = built
        params = _params(seg.model)
        encode_times = []
        for r in range(reps):
            seg.clear_cache()
            t = time.perf_counter()
            seg.set_image(image, image_key=f"img-{r}")
            encode_times.append(time.perf_counter() - t)
        seg.predict(box=boxes[-1] + 1.0)  # untimed: first-call set-up of the decoder
        t = time.perf_counter()
        for i in range(n_prompts):
            seg.predict(box=boxes[i % len(boxes)])
        decode = (time.perf_counter() - t) / n_prompts
    del built
    gc.collect()
    return {"name": name, "params_m": params, "build_s": build_s, "encode_s": float(np.min(encode_times)),
            "decode_ms": decode * 1000.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1, help="encoder passes per model (the fastest counts: least disturbed by other load)")
    parser.add_argument("--prompts", type=int, default=5, help="prompts per model for the decoder time")
    parser.add_argument("--only", default=",".join(FAMILIES), help="comma-separated families (sam_vit_b is the baseline)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(FAMILIES)
    if unknown:
        raise SystemExit(f"unknown families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    if "sam_vit_b" not in names:
        names.insert(0, "sam_vit_b")
    scene = make_scene(seed=0, height=1024, width=1024, n_objects=6)
    boxes = [np.array(o.box, dtype=np.float64) for o in scene.objects]
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"reps={args.reps}, prompts={args.prompts}, 1024×1024 image, random weights at the released sizes")
    rows = []
    with torch.inference_mode():
        for name in names:
            try:
                rows.append(measure(name, args.reps, args.prompts, scene.image, boxes))
            except Exception as exc:  # a family whose stack is missing (timm for EdgeTAM) is reported, not fatal
                print(f"{name}: skipped ({type(exc).__name__}: {exc})")
                continue
            r = rows[-1]
            print(f"{name}: {r['params_m']:.1f} M params, encoder {r['encode_s']:.2f} s, decoder {r['decode_ms']:.1f} ms/prompt",
                  flush=True)
    base = next(r for r in rows if r["name"] == "sam_vit_b")
    print()
    print("| segmenter | params (M) | encoder s/image | × SAM ViT-B | decoder ms/prompt | × SAM ViT-B |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['params_m']:.1f} | {r['encode_s']:.2f} | {r['encode_s'] / base['encode_s']:.2f}× | "
              f"{r['decode_ms']:.1f} | {r['decode_ms'] / base['decode_ms']:.2f}× |")


if __name__ == "__main__":
    main()

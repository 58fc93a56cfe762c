"""Time text → box → mask per referring expression: Grounding DINO (stage 1) + SAM (stage 2), random weights.

Why random weights: timing depends on the architecture, not on the values, and no weights can be downloaded
here. Both models are built at their real sizes offline:
- Grounding DINO with the ``IDEA-Research/grounding-dino-tiny`` architecture (transformers' default
  ``GroundingDinoConfig``: Swin-T image backbone, BERT-base text encoder, 900 queries, 6+6 layers; 172 M
  parameters) and the processor settings of that checkpoint (shortest edge 800, longest 1333). The tokenizer
  is an offline BERT WordPiece vocabulary with bert-base-uncased's special ids (tests/support/tiny_grounders.py):
  per-expression cost depends on the token count, which is of the same order.
- SAM ViT-B (``sam_model_registry["vit_b"]``), through the toolkit's ``SamSegmenter`` and ``Pipeline`` with its
  default CFPG / MBO switches, so the figure is what ``pslg segment --text`` costs per expression.

Each image gets several expressions: SAM encodes the image once (its embedding is cached), Grounding DINO runs
once per expression (it fuses text and image, nothing to cache). Printed: per-stage means and the per-expression
total, with the SAM encoder amortised over the expressions of an image.

    .venv/bin/python bench/grounding_speed.py                 # CPU here; --device auto picks CUDA when present
    .venv/bin/python bench/grounding_speed.py --device auto --images 3 --expressions 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build_grounder(size: str, device: str):
    from transformers import BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection
    from transformers import GroundingDinoImageProcessor, GroundingDinoProcessor

    from annotate.grounding.hf import GroundingDinoGrounder
    from tests.support.tiny_grounders import build_bert_tokenizer, tiny_grounding_dino_config

    tokenizer = build_bert_tokenizer()
    torch.manual_seed(0)
    if size == "tiny":
        config = tiny_grounding_dino_config(len(tokenizer))
        image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 128})
    else:  # the grounding-dino-tiny architecture (transformers' defaults), with a BERT-base text encoder
        config = GroundingDinoConfig(text_config=BertConfig())
        image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 800, "longest_edge": 1333})
    model = GroundingDinoForObjectDetection(config)
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    grounder = GroundingDinoGrounder(model, processor, device=device, model_version=f"random-gdino-{size}")
    return grounder, sum(p.numel() for p in model.parameters())


def build_sam(device: str):
    from segment_anything import sam_model_registry

    from annotate.segmenters.sam import SamSegmenter

    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"](checkpoint=None)
    return SamSegmenter(None, model=sam, device=device, name="sam-vit_b-random")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--expressions", type=int, default=3, help="expressions per image")
    ap.add_argument("--image-size", type=int, default=800, help="square synthetic image side (RRSIS-D: 800)")
    ap.add_argument("--grounding-size", choices=["base", "tiny"], default="base",
                    help="base = grounding-dino-tiny architecture (default); tiny = the 0.5 M test model")
    args = ap.parse_args()

    from annotate.device import resolve_device
    from annotate.image_io import image_key
    from annotate.synthetic import make_scene
    from annotate.types import Prompt

    device = resolve_device(args.device)
    print(f"# grounding_speed  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"# device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f"; CPU {_cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}")
    t = time.perf_counter()
    grounder, n_params = build_grounder(args.grounding_size, str(device))
    print(f"# Grounding DINO ({args.grounding_size}, random weights): {n_params / 1e6:.1f} M parameters, "
          f"built in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    segmenter = build_sam(str(device))
    print(f"# SAM vit_b (random weights) built in {time.perf_counter() - t:.1f} s")
    from annotate.factory import build_pipeline

    pipeline = build_pipeline(segmenter=segmenter, grounding=grounder)
    print(f"# pipeline: {pipeline.model_version}")

    # warm-up (CUDA kernels, allocator) on a small image, not timed
    warm = make_scene(seed=99, height=256, width=256, n_objects=1)
    pipeline.run(warm.image, [Prompt(text=warm.objects[0].expression)])
    if device.type == "cuda":
        torch.cuda.synchronize()

    per_image_wall, stage = [], {"set_image": [], "grounding": [], "cfpg": [], "segment": [], "mbo": [], "total": []}
    n_expr = 0
    for i in range(args.images):
        scene = make_scene(seed=i, height=args.image_size, width=args.image_size, n_objects=max(1, args.expressions))
        exprs = [o.expression for o in scene.objects][: args.expressions]
        while len(exprs) < args.expressions:
            exprs.append(f"the largest {scene.objects[0].category.replace('_', ' ')}")
        t = time.perf_counter()
        results = pipeline.run(scene.image, [Prompt(text=e) for e in exprs], image_key=image_key(scene.image))
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_image_wall.append(time.perf_counter() - t)
        for r in results:
            if not r.ok:
                raise SystemExit(f"prompt failed: {r.error}")
            n_expr += 1
            for k in stage:
                stage[k].append(r.timings_ms.get(k, 0.0))

    mean = lambda v: statistics.fmean(v) if v else 0.0  # noqa: E731
    encode_per_image = sum(stage["set_image"]) / args.images
    print(f"images {args.images} × expressions {args.expressions} ({args.image_size}×{args.image_size}); "
          f"{n_expr} expressions")
    print(f"SAM image encoder        {encode_per_image:9.1f} ms / image (once per image, cached)")
    print(f"Grounding DINO           {mean(stage['grounding']):9.1f} ms / expression")
    print(f"CFPG point               {mean(stage['cfpg']):9.1f} ms / expression")
    print(f"SAM prompt + decoder     {mean(stage['segment']):9.1f} ms / expression")
    print(f"MBO refinement           {mean(stage['mbo']):9.1f} ms / expression")
    wall = sum(per_image_wall)
    print(f"end to end               {1000 * wall / n_expr:9.1f} ms / expression "
          f"(wall {wall:.1f} s, SAM encoder amortised over {args.expressions} expressions)")
    grounding_share = sum(stage["grounding"]) / (1000 * wall)
    print(f"grounding share of time  {100 * grounding_share:9.1f} %")


if __name__ == "__main__":
    main()

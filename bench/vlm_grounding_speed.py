"""Per-expression cost of every grounder, side by side: Grounding DINO, OWLv2, Florence-2, Qwen2.5-VL.

Why random weights at real sizes: quality needs the released weights (not downloadable here), but cost depends
only on the architecture, the input size and the number of generated tokens. Each model is built offline with
the published checkpoint's architecture and processor settings:

- Grounding DINO: ``IDEA-Research/grounding-dino-tiny`` (Swin-T + BERT-base, 900 queries; shortest edge 800).
- OWLv2: ``google/owlv2-base-patch16-ensemble`` (ViT-B/16 at 960×960, CLIP text encoder).
- Florence-2: ``florence-community/Florence-2-base`` (DaViT + BART-base, 768×768, 577 image tokens), answering
  ``--florence-tokens`` tokens (the expression echoed + four location tokens + end).
- Qwen2.5-VL: ``Qwen/Qwen2.5-VL-3B-Instruct`` widths (text 2048 wide, 36 layers, vocabulary 151 936, tied
  embeddings; vision 1280 wide, 32 layers; default pixel limits, so an 800×800 image is 812×812 = 841 visual
  tokens), answering ``--qwen-tokens`` tokens (the JSON ``bbox_2d`` answer). The full 3.8 B model does not fit
  a small CPU box in float32 at a useful speed, so it is timed with reduced depth at full width in three
  configurations (text layers T, vision layers V) = (1, 2), (5, 2), (1, 10) and extrapolated linearly per layer
  to (36, 32): cost = fixed + T·per-text-layer + V·per-vision-layer. Printed as such. Full-attention vision
  blocks sit at every 8th index as in the real tower (7, 15, ...), so the 8 added vision layers hold one, the
  real share (4 of 32). Differences of 4 and 8 layers keep the per-layer figures above the load noise.

All models are built first, then timed round-robin (each round: one expression per grounder), and the median
per grounder is reported: on a shared machine the load drifts, and every grounder then sees the same drift.

A random model answers noise, so generation is held to the stated answer length (``min_new_tokens`` =
``max_new_tokens``): the time is that of a real answer of that length. The VLM's strict parser then rejects
the noise; that rejection is part of the timed call and costs nothing measurable.

    .venv/bin/python bench/vlm_grounding_speed.py                     # CPU; all four, ratios to Grounding DINO
    .venv/bin/python bench/vlm_grounding_speed.py --device auto --rounds 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _params(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def grounding_dino(device: str):
    from transformers import BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection
    from transformers import GroundingDinoImageProcessor, GroundingDinoProcessor

    from annotate.grounding.hf import GroundingDinoGrounder
    from tests.support.tiny_grounders import build_bert_tokenizer

    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(GroundingDinoConfig(text_config=BertConfig()))
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 800, "longest_edge": 1333}),
        tokenizer=build_bert_tokenizer())
    return GroundingDinoGrounder(model, processor, device=device), _params(model)


def owlv2(device: str):
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    from annotate.grounding.hf import Owlv2Grounder
    from tests.support.tiny_grounders import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    vocab = tokenizer.get_vocab()
    config = Owlv2Config(
        text_config=dict(vocab_size=len(vocab), bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(image_size=960, patch_size=16))
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(config)
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 960, "width": 960}),
                               tokenizer=tokenizer)
    return Owlv2Grounder(model, processor, device=device), _params(model)


def florence2(device: str, answer_tokens: int):
    from transformers import (BartConfig, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor, Florence2VisionConfig)

    from annotate.grounding.vlm import Florence2Grounder
    from tests.support.tiny_vlms import build_florence_tokenizer

    tokenizer = build_florence_tokenizer()
    text = BartConfig(vocab_size=51289, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                      decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                      max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      decoder_start_token_id=tokenizer.eos_token_id)
    config = Florence2Config(vision_config=Florence2VisionConfig(projection_dim=768), text_config=text,
                             image_token_id=tokenizer.image_token_id)
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(config)
    _hold_answer_length(model, answer_tokens)
    processor = Florence2Processor(
        image_processor=CLIPImageProcessor(size={"height": 768, "width": 768}, do_center_crop=False,
                                           image_seq_length=577),
        tokenizer=tokenizer)
    return Florence2Grounder(model, processor, device=device, max_new_tokens=answer_tokens), _params(model)


def qwen25_vl(device: str, answer_tokens: int, text_layers: int, vision_layers: int):
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    from annotate.grounding.vlm import Qwen25VLGrounder
    from tests.support.tiny_vlms import QWEN_CHAT_TEMPLATE, QWEN_SPECIALS, build_qwen_tokenizer

    tokenizer = build_qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=text_layers,
                         num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": [16, 24, 24]},
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                         bos_token_id=ids["<|endoftext|>"], tie_word_embeddings=True),
        vision_config=dict(depth=vision_layers, hidden_size=1280, intermediate_size=3420, num_heads=16,
                           out_hidden_size=2048, window_size=112, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, fullatt_block_indexes=list(range(7, vision_layers, 8))),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config)
    _hold_answer_length(model, answer_tokens)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056), tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_CHAT_TEMPLATE)
    return Qwen25VLGrounder(model, processor, device=device, max_new_tokens=answer_tokens), _params(model)


def _hold_answer_length(model, tokens: int) -> None:
    model.generation_config.min_new_tokens = tokens
    model.generation_config.max_new_tokens = tokens


def time_once(grounder, image, expression: str, device: torch.device) -> float:
    """Seconds for one expression, the answer's rejection by the strict parser included."""
    from annotate.grounding.base import GroundingError

    t = time.perf_counter()
    try:
        grounder.ground(image, expression, top_k=1)
    except GroundingError:
        pass  # a random VLM's answer has no box: the cost of generating it is what is measured
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu (default) | auto | cuda | cuda:N | mps")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (one expression per grounder per round)")
    ap.add_argument("--image-size", type=int, default=800, help="square synthetic image side (RRSIS-D: 800)")
    ap.add_argument("--florence-tokens", type=int, default=16, help="answer length of Florence-2 (tokens)")
    ap.add_argument("--qwen-tokens", type=int, default=40, help="answer length of Qwen2.5-VL (tokens)")
    ap.add_argument("--only", nargs="*", default=None, help="subset: gdino owlv2 florence2 qwen")
    args = ap.parse_args()

    from annotate.device import resolve_device
    from annotate.synthetic import make_scene

    device = resolve_device(args.device)
    dev = str(device)
    print(f"# vlm_grounding_speed  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"# device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f"; CPU {_cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}")
    scene = make_scene(seed=0, height=args.image_size, width=args.image_size, n_objects=3)
    expressions = [o.expression for o in scene.objects]
    wanted = set(args.only or ["gdino", "owlv2", "florence2", "qwen"])
    qwen_depths = ((1, 2), (5, 2), (1, 10))  # (text layers, vision layers) at full width
    builders: list[tuple[str, object]] = []
    if "gdino" in wanted:
        builders.append(("gdino", lambda: grounding_dino(dev)))
    if "owlv2" in wanted:
        builders.append(("owlv2", lambda: owlv2(dev)))
    if "florence2" in wanted:
        builders.append(("florence2", lambda: florence2(dev, args.florence_tokens)))
    if "qwen" in wanted:
        for t_layers, v_layers in qwen_depths:
            builders.append((f"qwen-{t_layers}-{v_layers}",
                             lambda t_layers=t_layers, v_layers=v_layers: qwen25_vl(dev, args.qwen_tokens, t_layers, v_layers)))
    grounders = {}
    for name, build in builders:
        t = time.perf_counter()
        grounder, params = build()
        print(f"# {name}: {params:.1f} M parameters, built in {time.perf_counter() - t:.1f} s")
        time_once(grounder, scene.image, expressions[0], device)  # warm-up, not timed
        grounders[name] = grounder
    # round-robin: on a shared machine the load drifts; every grounder sees the same drift
    times: dict[str, list[float]] = {name: [] for name in grounders}
    for r in range(args.rounds):
        expression = expressions[r % len(expressions)]
        for name, grounder in grounders.items():
            times[name].append(time_once(grounder, scene.image, expression, device))
        print(f"# round {r + 1}/{args.rounds} ({expression!r}): "
              + ", ".join(f"{n} {1000 * times[n][-1]:.0f} ms" for n in grounders))
    median = {name: statistics.median(v) for name, v in times.items()}

    rows: list[tuple[str, float, str]] = []
    if "gdino" in median:
        rows.append(("Grounding DINO (tiny: Swin-T + BERT-base)", median["gdino"], "measured"))
    if "owlv2" in median:
        rows.append(("OWLv2 (base/16, 960 px)", median["owlv2"], "measured"))
    if "florence2" in median:
        rows.append((f"Florence-2 base ({args.florence_tokens}-token answer)", median["florence2"], "measured"))
    if "qwen" in wanted:
        (t0, v0), (t1, _), (_, v2) = qwen_depths
        a, b, c = (median[f"qwen-{t}-{v}"] for t, v in qwen_depths)
        per_text = (b - a) / (t1 - t0)
        per_vision = (c - a) / (v2 - v0)
        fixed = a - t0 * per_text - v0 * per_vision
        full = fixed + 36 * per_text + 32 * per_vision
        print(f"# qwen2.5-vl-3b extrapolated: fixed {1000 * fixed:.0f} ms (embeddings, lm head, patching, decoding "
              f"loop) + 36 × {1000 * per_text:.0f} ms per text layer + 32 × {1000 * per_vision:.0f} ms per vision layer")
        rows.append((f"Qwen2.5-VL-3B ({args.qwen_tokens}-token answer)", full,
                     f"extrapolated from {t0}–{t1} text / {v0}–{v2} vision layers"))

    base = median.get("gdino")
    print(f"median of {args.rounds} rounds, one {args.image_size}×{args.image_size} image")
    print(f"{'grounder':48s} {'ms / expression':>16s} {'× Grounding DINO':>17s}  how")
    for name, seconds, how in rows:
        ratio = f"{seconds / base:.2f}" if base else "-"
        print(f"{name:48s} {1000 * seconds:16.1f} {ratio:>17s}  {how}")


if __name__ == "__main__":
    main()

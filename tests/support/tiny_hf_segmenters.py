"""Tiny *real* SAM 2.1 / SAM-HQ / EdgeTAM / SAM 3 model folders (random weights), saved like hub checkpoints.

Each builder constructs the actual ``transformers`` architecture with a shrunken config, saves it with its
processor (``save_pretrained``) into a folder, and returns the folder: exactly what ``--checkpoint DIR`` /
``--one-stage DIR`` / ``PSLG_SAM_CHECKPOINT`` read, with no download. EdgeTAM keeps its real timm RepViT-M1
backbone (timm builds it from its architecture name, no weights needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if not all(hasattr(transformers, n) for n in ("Sam2Model", "SamHQModel", "EdgeTamModel", "Sam3Model")):
    pytest.skip("this transformers lacks the SAM 2 / SAM-HQ / EdgeTAM / SAM 3 classes ([segmenters] extra)",
                allow_module_level=True)

#: Input side of the tiny segmenters (pixels); embeddings are side/16.
TINY_SIDE = 64


def _seeded(seed: int):
    rng = torch.random.fork_rng(devices=[])
    rng.__enter__()
    torch.manual_seed(seed)
    return rng


def _noise_positional(model) -> None:
    """Some real builders start positional embeddings at zero; noise makes seeds and prompts matter."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "pos_embed" in name and float(p.abs().sum()) == 0.0:
                p.normal_(0.0, 0.02)


def tiny_sam2_config(side: int = TINY_SIDE):
    from transformers import Sam2Config

    vision = dict(
        backbone_config=dict(model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1,
                             image_size=[side, side], blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64],
                             num_attention_heads_per_stage=[1, 1, 2, 2], window_size_per_stage=[4, 4, 4, 4],
                             global_attention_blocks=[3], window_positional_embedding_background_size=[2, 2]),
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[side // 4] * 2, [side // 8] * 2, [side // 16] * 2], fpn_hidden_size=32)
    return Sam2Config(vision_config=vision,
                      prompt_encoder_config=dict(hidden_size=32, image_size=side, patch_size=16, mask_input_channels=4),
                      mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2,
                                               iou_head_hidden_dim=32))


def save_tiny_sam2(path: str | Path, seed: int = 0, side: int = TINY_SIDE) -> Path:
    """A tiny SAM 2.1 folder (Hiera backbone, FPN, SAM 2 decoder) with its ``Sam2Processor``."""
    from transformers import Sam2ImageProcessor, Sam2Model, Sam2Processor

    rng = _seeded(seed)
    try:
        model = Sam2Model(tiny_sam2_config(side)).eval()
        _noise_positional(model)
    finally:
        rng.__exit__(None, None, None)
    processor = Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": side, "width": side},
                                                                 mask_size={"height": side // 4, "width": side // 4}))
    return _save(path, model, processor)


def save_tiny_sam_hq(path: str | Path, seed: int = 0, side: int = TINY_SIDE) -> Path:
    """A tiny SAM-HQ folder (ViT encoder with intermediate features, HQ decoder) with its ``SamHQProcessor``."""
    from transformers import SamHQConfig, SamHQModel, SamHQProcessor, SamImageProcessor

    cfg = SamHQConfig(
        vision_config=dict(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                           image_size=side, patch_size=16, window_size=2, global_attn_indexes=[1], mlp_dim=64,
                           num_pos_feats=8),
        prompt_encoder_config=dict(hidden_size=16, image_size=side, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=16, vit_dim=32))
    rng = _seeded(seed)
    try:
        model = SamHQModel(cfg).eval()
        _noise_positional(model)
    finally:
        rng.__exit__(None, None, None)
    image_processor = SamImageProcessor(size={"longest_edge": side}, pad_size={"height": side, "width": side},
                                        mask_size={"longest_edge": side // 4},
                                        mask_pad_size={"height": side // 4, "width": side // 4})
    return _save(path, model, SamHQProcessor(image_processor=image_processor))


def save_tiny_edgetam(path: str | Path, seed: int = 0, side: int = TINY_SIDE) -> Path:
    """A tiny EdgeTAM folder: the real RepViT-M1 timm backbone (4.7 M parameters), a shrunken FPN and decoder."""
    pytest.importorskip("timm")
    from transformers import EdgeTamConfig, EdgeTamModel, Sam2ImageProcessor, Sam2Processor, TimmWrapperConfig

    backbone = TimmWrapperConfig(architecture="repvit_m1",
                                 model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]})
    cfg = EdgeTamConfig(
        vision_config=dict(backbone_config=backbone, backbone_channel_list=[384, 192, 96, 48],
                           backbone_feature_sizes=[[side // 4] * 2, [side // 8] * 2, [side // 16] * 2],
                           fpn_hidden_size=32),
        prompt_encoder_config=dict(hidden_size=32, image_size=side, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=32))
    rng = _seeded(seed)
    try:
        model = EdgeTamModel(cfg).eval()
    finally:
        rng.__exit__(None, None, None)
    processor = Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": side, "width": side},
                                                                 mask_size={"height": side // 4, "width": side // 4}))
    return _save(path, model, processor)


SAM3_WORDS: tuple[str, ...] = ("the", "storage", "tank", "car", "ship", "plane", "building", "at", "on", "left",
                               "right", "top", "bottom")


def save_tiny_sam3(path: str | Path, seed: int = 0, side: int = 56, words: Sequence[str] = SAM3_WORDS,
                   num_queries: int = 10) -> Path:
    """A tiny SAM 3 folder (ViT + CLIP text encoder + DETR + mask decoder) with an offline CLIP tokenizer."""
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    from tests.support.tiny_grounders import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(words)
    vocab = tokenizer.get_vocab()
    grid = side // 14
    cfg = Sam3Config(
        vision_config=dict(
            backbone_config=dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, image_size=side, patch_size=14, window_size=2,
                                 global_attn_indexes=[1], pretrain_image_size=28),
            fpn_hidden_size=32, backbone_feature_sizes=[[grid * 4] * 2, [grid * 2] * 2, [grid] * 2]),
        text_config=dict(model_type="clip_text_model", vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                         projection_dim=32, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"]),
        geometry_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_decoder_config=dict(hidden_size=32, num_layers=1, num_queries=num_queries, num_attention_heads=2,
                                 intermediate_size=64),
        mask_decoder_config=dict(hidden_size=32, num_upsampling_stages=3, num_attention_heads=2))
    rng = _seeded(seed)
    try:
        model = Sam3Model(cfg).eval()
    finally:
        rng.__exit__(None, None, None)
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(size={"height": side, "width": side},
                                                                 mask_size={"height": grid * 4, "width": grid * 4}),
                              tokenizer=tokenizer)
    return _save(path, model, processor)


def _save(path: str | Path, model, processor) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


#: family → builder, for parametrised tests.
BUILDERS = {"sam2": save_tiny_sam2, "sam_hq": save_tiny_sam_hq, "edgetam": save_tiny_edgetam}

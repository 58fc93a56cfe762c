"""Tiny *real* models for tests: the actual ``segment_anything`` classes, shrunk so they run in milliseconds.

Random weights are fine for tests of plumbing (shapes, caching, checkpoint loading, CLI wiring); tests that need
*good* masks use the weights-free classical segmenter instead.

Other areas import :func:`build_tiny_sam` (a ``segment_anything.modeling.Sam``) and
:func:`save_tiny_sam_checkpoint` (a self-describing checkpoint file that ``SamSegmenter`` and
``pslg segment --checkpoint`` load without any test-only registry).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# the light install has no model stack: a test that needs a tiny SAM skips there (the full install always has it)
torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")
from segment_anything.modeling import Sam  # noqa: E402

from annotate.segmenters.sam import SamArchitecture, build_sam_from_architecture, save_sam_checkpoint

#: The measured tiny configuration of ../shared/reference/environment.md: 88 K parameters, 256-pixel input,
#: 16×16 image embedding of 32 channels, ~18 ms for set_image + predict(box) on CPU.
TINY_SAM_ARCHITECTURE = SamArchitecture(
    name="tiny-test",
    image_size=256,
    patch_size=16,
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_mlp_ratio=2.0,
    encoder_window_size=4,
    encoder_global_attn_indexes=(1,),
    prompt_embed_dim=32,
    decoder_depth=1,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
    mask_in_chans=4,
)


def build_tiny_sam(seed: int = 0) -> Sam:
    """A tiny ``Sam`` (eval mode, CPU) with deterministic random weights for ``seed``.

    The global torch RNG is left untouched, so building one does not change other tests' random streams.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = build_sam_from_architecture(TINY_SAM_ARCHITECTURE)
        # The real builders leave some parameters at zero (e.g. positional embeddings); give them noise so
        # different seeds give visibly different embeddings and masks.
        with torch.no_grad():
            if sam.image_encoder.pos_embed is not None:
                sam.image_encoder.pos_embed.normal_(0.0, 0.02)
    return sam


def save_tiny_sam_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny SAM checkpoint (state_dict + its architecture) to ``path`` and return the path.

    Load it with ``SamSegmenter(path)`` or ``pslg segment --checkpoint path``: the embedded architecture
    overrides ``model_type``.
    """
    return save_sam_checkpoint(build_tiny_sam(seed), TINY_SAM_ARCHITECTURE, path)


def tiny_sam_state_dict(seed: int = 0) -> dict[str, Any]:
    """A bare state_dict (the format of the official SAM checkpoints) of the tiny model."""
    return build_tiny_sam(seed).state_dict()

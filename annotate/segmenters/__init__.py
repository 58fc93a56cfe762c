"""Stage-2 segmenters: SAM, the Hugging Face SAM family (SAM 2.1, SAM-HQ, EdgeTAM) and the weights-free classical
segmenter, behind one interface.

Use :func:`build_segmenter` rather than the classes when the choice comes from configuration: it keeps the
"no checkpoint → classical" rule in one place for the CLI, the backend and the benchmarks. The factory takes
arguments only; reading environment variables (``PSLG_SAM_CHECKPOINT`` ...) is the job of the CLI / backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from annotate.segmenters.base import Segmenter

__all__ = ["Segmenter", "build_segmenter"]


def build_segmenter(
    checkpoint: Optional[str | Path] = None,
    model_type: str = "vit_b",
    device: str = "auto",
    cache_size: int = 8,
) -> Segmenter:
    """A ``SamSegmenter`` for a SAM ``checkpoint`` file, an ``HFSamSegmenter`` for a Hugging Face model folder
    (``config.json`` with model_type sam2 / sam_hq / edgetam / sam) or hub id, or the ``ClassicalSegmenter`` when
    ``checkpoint`` is None.

    Heavy imports (torch, segment_anything, transformers) are only paid when a checkpoint is given; without the
    ``[sam]`` / ``[segmenters]`` extra that raises ``MissingExtraError`` naming the pip command.
    """
    if checkpoint is None or str(checkpoint).strip() == "":
        from annotate.segmenters.classical import ClassicalSegmenter

        return ClassicalSegmenter()
    from annotate.extras import require_extra
    from annotate.segmenters.hf_spec import hf_spec_kind

    if hf_spec_kind(checkpoint) is not None:
        require_extra("segmenters", "SAM 2 / SAM-HQ / EdgeTAM")
        from annotate.segmenters.hf_sam import HFSamSegmenter

        return HFSamSegmenter(checkpoint, device=device, cache_size=cache_size)
    require_extra("sam", "SAM")
    from annotate.segmenters.sam import SamSegmenter

    return SamSegmenter(checkpoint, model_type=model_type, device=device, cache_size=cache_size)

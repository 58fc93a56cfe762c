"""The grounder families the toolkit loads: what each reads, how it is fine-tuned, what it needs.

One table shared by ``pslg models list`` and the documentation, so what the CLI says about a family and what
the loader accepts (``model_types``, the ``config.json`` ``model_type`` values) cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GrounderFamily:
    """One family of grounding models."""

    name: str
    #: ``config.json`` ``model_type`` values the loader maps to this family
    model_types: tuple[str, ...]
    #: a published checkpoint (hub id) to start from
    example: str
    #: how the expression is read
    reads: str
    #: what ``pslg train grounding --base`` does with it
    fine_tuning: str
    #: the pip extra it needs
    extra: str


FAMILIES: tuple[GrounderFamily, ...] = (
    GrounderFamily("Grounding DINO", ("grounding-dino", "mm-grounding-dino"), "IDEA-Research/grounding-dino-tiny",
                   "expression as one phrase; boxes scored, spatial words re-rank", "full fine-tune", "grounding"),
    GrounderFamily("OWLv2", ("owlv2",), "google/owlv2-base-patch16-ensemble",
                   "expression as one text query; boxes scored, spatial words re-rank", "zero-shot only", "grounding"),
    GrounderFamily("Florence-2", ("florence2",), "florence-community/Florence-2-base",
                   "whole sentence; answers location tokens", "LoRA adapter", "vlm"),
    GrounderFamily("Qwen2.5-VL", ("qwen2_5_vl",), "Qwen/Qwen2.5-VL-3B-Instruct",
                   "whole sentence; answers JSON bbox_2d", "LoRA adapter", "vlm"),
)

"""Stage 1: referring expression → box.

Importing this package is cheap (no torch / transformers): the model-backed grounders are imported when
``load_grounder`` is called, so the pipeline and the CLI's ``--help`` do not pay for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from annotate.grounding.base import Grounder, GroundingCandidate, GroundingError
from annotate.grounding.given import GivenBoxGrounder

__all__ = ["Grounder", "GroundingCandidate", "GroundingError", "GivenBoxGrounder", "load_grounder", "choose_box"]


def load_grounder(spec: "str | Path | Grounder", device: str = "auto", **kwargs: Any) -> Grounder:
    """A local model directory (Grounding DINO, OWLv2, Florence-2, Qwen2.5-VL, ``pslg train grounding`` output) or
    hub id → Grounder.

    Model-backed grounders need the ``[grounding]`` extra (``MissingExtraError`` names it when absent).
    """
    if not isinstance(spec, Grounder):
        from annotate.extras import require_extra

        require_extra("grounding", "A grounding model")
    from annotate.grounding.loader import load_grounder as _load

    return _load(spec, device=device, **kwargs)


def choose_box(grounder: Grounder, image: Any, expression: str) -> GroundingCandidate:
    """The one box ``expression`` names: the grounder's best candidate (spatially re-ranked for detectors)."""
    candidates = grounder.ground(image, expression, top_k=1)
    if not candidates:
        raise GroundingError(f"the grounding model proposed no box for {expression!r}")
    return candidates[0]

"""The one place a PSLG-SAM pipeline is assembled: segmenter, grounder and the CFPG/MBO switches.

Why one factory: the backend, every CLI command and the benchmarks must mean the same thing by the same
settings. A checkpoint given by registry name (``vit_b``, as ``pslg models pull vit_b`` downloads it) resolves
through ``annotate.checkpoints`` to the cached file and sets the SAM model type; a path is used as given; none
means the weights-free classical segmenter; a Hugging Face model folder (``config.json``) or hub id is SAM 2.1,
SAM-HQ or EdgeTAM by its model_type (``annotate.segmenters.hf_spec``). A one-stage spec (SAM 3) replaces both
stages' models: it grounds and segments. A grounding spec may be a model directory, a hub id or a model
store (its current version, see ``annotate.modelstore``). The factory takes arguments only: reading
environment variables is the job of the CLI and the backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from annotate.checkpoints import KNOWN_CHECKPOINTS, resolve_checkpoint
from annotate.grounding.base import Grounder
from annotate.pipeline import Pipeline
from annotate.segmenters.base import Segmenter


def resolve_segmenter_checkpoint(checkpoint: Optional[str | Path], model_type: str = "vit_b") -> tuple[Optional[Path], str]:
    """``(checkpoint file or None, SAM model type)``: a registry name gives its cached file and its own model type."""
    if checkpoint is None or str(checkpoint).strip() == "":
        return None, model_type
    name = str(checkpoint).strip()
    if name in KNOWN_CHECKPOINTS and not Path(name).exists():
        return resolve_checkpoint(name), name
    return Path(name).expanduser(), model_type


def build_segmenter(
    checkpoint: Optional[str | Path] = None, model_type: str = "vit_b", device: str = "auto", cache_size: int = 8,
    precision: Optional[str] = None,
) -> Segmenter:
    """SAM (or a Hugging Face SAM-family model) for a checkpoint name, path or folder; the classical segmenter
    without one. ``precision`` (auto | fp32 | bf16 | tf32, see ``annotate.precision``) applies on CUDA; None
    leaves the model as loaded (fp32)."""
    from annotate.segmenters import build_segmenter as _build

    path, model_type = resolve_segmenter_checkpoint(checkpoint, model_type)
    segmenter = _build(path, model_type=model_type, device=device, cache_size=cache_size)
    if precision is not None and path is not None:
        from annotate.precision import apply_precision

        apply_precision(segmenter, precision)
    return segmenter


def build_one_stage_pipeline(
    spec: str | Path,
    device: str = "auto",
    use_cfpg: Optional[bool] = None,
    use_mbo: Optional[bool] = None,
    precision: Optional[str] = None,
    spatial_weight: Optional[float] = None,
) -> Pipeline:
    """The pipeline of a one-stage model (SAM 3): its grounder (instances re-ranked by the expression's spatial
    cues) and its segmenter (the referred instance's mask); CFPG/MBO switches as for any segmenter."""
    from annotate.segmenters.one_stage import build_one_stage

    kwargs = {} if spatial_weight is None else {"spatial_weight": spatial_weight}
    model = build_one_stage(spec, device=device, **kwargs)
    if precision is not None:
        from annotate.precision import apply_precision

        apply_precision(model.segmenter, precision)
    return Pipeline(model.segmenter, model.grounder, use_cfpg=use_cfpg, use_mbo=use_mbo)


def load_grounding(spec: "str | Path | Grounder | None", device: str = "auto", **kwargs) -> Optional[Grounder]:
    """A grounder for a model directory, hub id or model store; None when no spec is given."""
    if spec is None or (isinstance(spec, (str, Path)) and str(spec).strip() == ""):
        return None
    from annotate.grounding import load_grounder

    return load_grounder(spec, device=device, **kwargs)


def build_pipeline(
    checkpoint: Optional[str | Path] = None,
    model_type: str = "vit_b",
    grounding: "str | Path | Grounder | None" = None,
    device: str = "auto",
    use_cfpg: Optional[bool] = None,
    use_mbo: Optional[bool] = None,
    segmenter: Optional[Segmenter] = None,
    cache_size: int = 8,
    cfpg_params: Optional[dict] = None,
    mbo_params: Optional[dict] = None,
) -> Pipeline:
    """The pipeline for these settings (``segmenter`` replaces building one, e.g. to share its cache or to measure
    a configured variant; ``cfpg_params`` / ``mbo_params`` override those steps' hyperparameters)."""
    seg = segmenter if segmenter is not None else build_segmenter(checkpoint, model_type, device, cache_size)
    grounder = load_grounding(grounding, device=device)
    return Pipeline(seg, grounder, use_cfpg=use_cfpg, use_mbo=use_mbo, cfpg_params=cfpg_params, mbo_params=mbo_params)

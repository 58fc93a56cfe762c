"""Defaults of the stage-2 method, chosen by measurement (see bench/RESULTS.md and docs/stage2-method.md).

They live in one place so the CLI, the backend and the benchmarks agree. The switches may differ per
segmenter: SAM follows the paper (box + CFPG point, then MBO), the weights-free classical segmenter uses
whatever measured best for it on the iSAID benchmark.
"""

#: Whether the clustering-based foreground point generator adds a positive point to the box prompt (SAM).
USE_CFPG: bool = True
#: Whether the mask boundary iterative optimisation refines the segmenter's mask (SAM).
USE_MBO: bool = True

#: The same switches for the weights-free classical segmenter (measured on bench/stage2_isaid.py, 190 iSAID
#: instances + 116 held out): MBO helps it (mIoU +0.007 / +0.002, oIoU +0.010 / +0.011); CFPG hurts it (mIoU
#: -0.018 / -0.065): its point becomes a hard foreground seed and shape constraint, and a point on a shadow or
#: a roof detail then drags the mask off the object. SAM uses a point as a soft cue, as the paper does.
CLASSICAL_USE_CFPG: bool = False
CLASSICAL_USE_MBO: bool = True


def _is_classical(segmenter_name: str) -> bool:
    return segmenter_name.split(":")[0].startswith("classical")


def use_cfpg_for(segmenter_name: str) -> bool:
    """The CFPG default for a segmenter, by its ``Segmenter.name``."""
    return CLASSICAL_USE_CFPG if _is_classical(segmenter_name) else USE_CFPG


def use_mbo_for(segmenter_name: str) -> bool:
    """The MBO default for a segmenter, by its ``Segmenter.name``."""
    return CLASSICAL_USE_MBO if _is_classical(segmenter_name) else USE_MBO

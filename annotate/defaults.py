"""Defaults of the stage-2 method, chosen by measurement (see bench/RESULTS.md).

They live in one place so the CLI, the backend and the benchmarks agree.
"""

#: Whether the clustering-based foreground point generator adds a positive point to the box prompt.
USE_CFPG: bool = True
#: Whether the mask boundary iterative optimisation refines the segmenter's mask.
USE_MBO: bool = True

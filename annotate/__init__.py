"""PSLG-SAM engine: image I/O, grounding (stage 1), segmenters, CFPG, MBO (stage 2), masks, metrics.

This package knows nothing about Label Studio or the command line; `backend` and `converters` use it.
"""

__version__ = "0.1.0"

"""``pslg``: one Typer app; each area of the toolkit registers its sub-commands from its own module.

Modules are imported lazily per area so ``pslg --help`` stays fast and an optional heavy import (torch,
transformers) is only paid by the command that needs it.
"""

from __future__ import annotations

import typer

from converters.cli import dataset, grounding, models, segment, serve

app = typer.Typer(
    name="pslg",
    help=(
        "Build referring remote-sensing segmentation (RRSIS) datasets: PSLG-SAM pre-labelling "
        "(grounding box → SAM or a weights-free segmenter → CFPG point → MBO refinement), "
        "Label Studio ML backend, and converters to COCO and the RRSIS-D layout."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

for module in (segment, models, dataset, grounding, serve):
    module.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()

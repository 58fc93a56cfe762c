"""``pslg``: one Typer app; each area of the toolkit registers its sub-commands from its own module.

Modules are imported lazily per area so ``pslg --help`` stays fast and an optional heavy import (torch,
transformers) is only paid by the command that needs it.
"""

from __future__ import annotations

from typing import Optional

import typer

from converters.cli import dataset, geo, grounding, models, prelabel, segment, select, serve
from converters.cli.common import HELP_MARKUP, version_callback

app = typer.Typer(
    rich_markup_mode=HELP_MARKUP,
    name="pslg",
    help=(
        "Build referring remote-sensing segmentation (RRSIS) datasets: PSLG-SAM pre-labelling "
        "(grounding box → SAM or a weights-free segmenter → CFPG point → MBO refinement), "
        "Label Studio ML backend, and converters to COCO and the RRSIS-D layout."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)



@app.callback()
def main(
    version: Optional[bool] = typer.Option(None, "--version", callback=version_callback, is_eager=True,
                                           help="Show the version and exit."),
) -> None:
    """Build referring remote-sensing segmentation (RRSIS) datasets (see ``pslg COMMAND --help``)."""


for module in (segment, models, dataset, geo, grounding, serve, prelabel, select):
    module.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()

"""The ``pslg`` Typer application; each module registers one family of sub-commands."""

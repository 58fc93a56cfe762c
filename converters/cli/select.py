"""``pslg select``: which tasks to annotate next (uncertainty + diversity), from a tasks file or a live project.

The choosing lives in ``converters.batch_select`` / ``annotate.selection``; this module reads options, writes the
batch as JSON and, with a live project, puts it in a Data Manager tab.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add ``pslg select`` to ``app``."""

    @app.command("select")
    def select_command(
        tasks: Optional[Path] = typer.Argument(None, help="Label Studio tasks / export JSON (omit with --project)."),
        url: Optional[str] = typer.Option(None, help="Label Studio URL of the live project; default $LABEL_STUDIO_URL."),
        project: Optional[int] = typer.Option(None, help="Live project id: select from its tasks and save a tab."),
        token: Optional[str] = typer.Option(None, help="API token (PAT or legacy); default $LABEL_STUDIO_API_KEY.",
                                            show_default=False),
        size: int = typer.Option(20, "--size", "-n", min=1, help="How many tasks the batch holds."),
        per_image_cap: Optional[int] = typer.Option(3, "--per-image-cap", min=0,
                                                    help="At most this many tasks of one image (0: no cap)."),
        seed: int = typer.Option(0, help="Seed of the tie-breaks and of the cold-start random sample."),
        out: Optional[Path] = typer.Option(None, "--out", help="Write the batch (task ids in order, a rationale each) "
                                           "to this JSON file; default: print it."),
        view_title: str = typer.Option("Next batch (pslg select)", help="Title of the Data Manager tab (live project)."),
        image_key: str = typer.Option("image", help="The task data key holding the image."),
    ) -> None:
        """Choose the next batch to annotate: least certain pre-labels first, spread over images and kinds of region.

        Tasks without an id (what `pslg import` writes) are chosen by their position in the file, which the
        batch lists under "positions" (task ids are null then).

        Examples:

        \b
          pslg select --project 7 --url http://localhost:8080 --size 20 --out batch.json

        \b
          pslg select tasks.json --size 20 --per-image-cap 2
        """
        from annotate.atomic import atomic_write_text
        from converters.batch_select import LiveTasks, SelectionError, batch_json, load_tasks_file, select_from_tasks

        if (tasks is None) == (project is None):
            raise typer.BadParameter("give a tasks file or --project (one of them)")
        live = None
        try:
            if project is not None:
                url = url or os.environ.get("LABEL_STUDIO_URL")
                token = token or os.environ.get("LABEL_STUDIO_API_KEY")
                if not url or not token:
                    raise typer.BadParameter("--project needs --url and --token (or LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY)")
                live = LiveTasks(url, token, project)
                items, source = live.tasks(), f"project {project}"
            else:
                assert tasks is not None
                try:
                    items, source = load_tasks_file(tasks.read_text(encoding="utf-8")), str(tasks.name)
                except (OSError, ValueError) as exc:
                    raise typer.BadParameter(f"{tasks}: {exc}") from None
            cap = per_image_cap or None
            choices, problems = select_from_tasks(items, size, cap, seed, image_key)
            for message in problems:
                typer.echo(f"left out: {message}", err=True)
            if items and len(problems) == len(items):
                typer.echo(f"error: none of the {len(items)} task(s) of {source} can be selected (see above)", err=True)
                raise typer.Exit(1)
            result = batch_json(choices, source, seed, cap)
            if live is not None and choices:
                result["view_id"] = live.save_view([c.task_id for c in choices], view_title)
                result["view_title"] = view_title
        except SelectionError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        text = json.dumps(result, indent=2)
        if out is not None:
            atomic_write_text(out, text + "\n")
            typer.echo(f"{len(choices)} task(s) selected from {source}; written to {out}"
                       + (f"; Data Manager tab {view_title!r} (view {result['view_id']})" if "view_id" in result else ""),
                       err=True)
        else:
            typer.echo(text)

"""``pslg serve``: the Label Studio ML backend (see docs/serve-backend.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an interface to listen on) is reachable from this machine only."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    """Add ``pslg serve`` to ``app``."""

    @app.command("serve")
    def serve_command(
        host: str = typer.Option("0.0.0.0", "--host", help="Interface to listen on."),
        port: int = typer.Option(9090, "--port", help="Port (Label Studio's ML backends default to 9090)."),
        threads: int = typer.Option(8, "--threads", help="gunicorn threads of the single worker."),
        dev: bool = typer.Option(False, "--dev", help="Flask's development server instead of gunicorn."),
        local_image_root: Optional[Path] = typer.Option(None, "--local-image-root", help="Read tasks whose image "
                                                        "is a plain file path from this folder (default "
                                                        "$PSLG_LOCAL_IMAGE_ROOT)."),
        label_map: Optional[str] = typer.Option(None, "--label-map", help="Label for task categories that are "
                                                "none of the config's labels: CATEGORY=LABEL[,...] or a JSON file "
                                                "(default $PSLG_LABEL_MAP); unmapped ones fail."),
    ) -> None:
        """Serve the Label Studio ML backend: batch pre-labels, interactive refinement, learning from corrections.

        Configured by environment variables (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, MODEL_DIR, BASIC_AUTH_USER,
        BASIC_AUTH_PASS, PSLG_SAM_CHECKPOINT, PSLG_SAM_MODEL_TYPE, PSLG_GROUNDING_MODEL, PSLG_DEVICE,
        PSLG_TRAIN_EVERY, ...; docs/serve-backend.md has the table); with none set it runs weights-free (classical
        segmenter, boxes from the tasks). Ctrl-C or SIGTERM stops it ("interrupted").

        Examples:

        \b
          pslg serve --port 9090

        \b
          LABEL_STUDIO_URL=http://localhost:8080 LABEL_STUDIO_API_KEY=TOKEN pslg serve --local-image-root /data/scenes
        """
        import dataclasses

        from backend.config import Settings
        from backend.server import serve

        try:
            settings = Settings.from_env()
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        if local_image_root is not None:
            settings = dataclasses.replace(settings, local_image_root=str(local_image_root))
        if label_map is not None:
            from converters.labelstudio.labels import parse_label_map

            try:
                parse_label_map(label_map)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--label-map") from None
            settings = dataclasses.replace(settings, label_map=label_map)
        typer.echo(f"pslg backend on http://{host}:{port} (models load in the background; see /health)", err=True)
        if not settings.basic_auth_enabled and not is_loopback(host):
            typer.echo(f"warning: listening on {host} (beyond this machine) without BASIC_AUTH_USER/BASIC_AUTH_PASS: "
                       "anyone who reaches the port can call /predict and /setup; set both (and the same in Label "
                       "Studio's model settings) or use --host 127.0.0.1", err=True)
        from converters.cli.common import EXIT_INTERRUPTED, interruptible

        try:
            with interruptible():  # --dev: SIGTERM unwinds like Ctrl-C (gunicorn handles both itself)
                serve(host=host, port=port, threads=threads, dev=dev, settings=settings)
        except KeyboardInterrupt:
            typer.echo("interrupted: the backend stopped", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except SystemExit as exc:  # gunicorn's master exits after a SIGTERM/SIGINT (graceful: requests finished)
            if exc.code in (0, None):
                typer.echo("interrupted: the backend stopped", err=True)
            raise

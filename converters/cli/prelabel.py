"""``pslg prelabel``: pre-label a whole Label Studio project (or a tasks JSON) in bulk, resumably.

The job itself lives in ``backend.prelabel``; this module turns options into a job and shows progress.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Optional

import typer

EXIT_TASK_ERRORS = 1
EXIT_INTERRUPTED = 130


def _settings(url: Optional[str], token: Optional[str], sam_checkpoint: Optional[str], model_type: Optional[str],
              grounding: Optional[str], device: Optional[str], local_files_root: Optional[Path],
              cache_embeddings: Optional[Path], local_image_root: Optional[Path] = None,
              label_map: Optional[str] = None):
    """The backend's settings (same environment variables, hence the same model_version), overridden by options."""
    from backend.config import Settings

    try:
        s = Settings.from_env()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    changes: dict = {}
    if url:
        changes["label_studio_url"] = url.rstrip("/")
    if token:
        changes["label_studio_api_key"] = token
    if sam_checkpoint:
        changes["sam_checkpoint"] = sam_checkpoint
    if model_type:
        changes["sam_model_type"] = model_type
    if grounding:
        changes["grounding_model"] = grounding
    if device:
        changes["device"] = device
    if local_files_root:
        changes["local_files_root"] = str(local_files_root)
    if cache_embeddings:
        changes["embedding_cache"] = cache_embeddings
    if local_image_root:
        changes["local_image_root"] = str(local_image_root)
    if label_map:
        from converters.labelstudio.labels import parse_label_map

        try:
            parse_label_map(label_map)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--label-map") from None
        changes["label_map"] = label_map
    return dataclasses.replace(s, **changes)


def register(app: typer.Typer) -> None:
    """Add ``pslg prelabel`` to ``app``."""

    @app.command("prelabel")
    def prelabel_command(
        tasks: Optional[Path] = typer.Argument(None, help="Label Studio tasks JSON (omit with --project)."),
        url: Optional[str] = typer.Option(None, help="Label Studio URL (a live project, and task images on it)."),
        project: Optional[int] = typer.Option(None, help="Live project id: predictions are imported into it."),
        token: Optional[str] = typer.Option(None, help="API token (PAT or legacy); default $LABEL_STUDIO_API_KEY.",
                                            show_default=False),
        out: Optional[Path] = typer.Option(None, "--out", help="Write the tasks with their predictions to this JSON "
                                           "(importable into Label Studio) instead of importing them into the project."),
        config: Optional[Path] = typer.Option(None, help="Labeling config XML for a tasks file (default: the "
                                              "shipped one-expression-per-task config)."),
        progress_file: Optional[Path] = typer.Option(None, "--progress-file", help="Progress file (default: OUT.progress.jsonl, or "
                                                  "prelabel-project-N.progress.jsonl here); a rerun resumes from it."),
        workers: int = typer.Option(0, "--workers", min=0, show_default=False,
                                    help="Local worker processes, each loading the models once (default: one per "
                                    "core; 1: in this process)."),
        ray: Optional[str] = typer.Option(None, "--ray", help="Run on Ray: auto (this machine's cluster), an address (ray://head:10001), or local (start one here)."),
        ray_actors: int = typer.Option(0, "--ray-actors", min=0, help="Ray actors (default: one per cluster CPU, "
                                       "or per GPU with --ray-gpus)."),
        ray_gpus: float = typer.Option(0.0, "--ray-gpus", min=0.0, help="GPUs per Ray actor (1 for SAM on a GPU)."),
        cache_embeddings: Optional[Path] = typer.Option(None, "--cache-embeddings", help="Store SAM image embeddings "
                                                        "here, for a backend started with PSLG_EMBEDDING_CACHE=DIR."),
        chunk_size: int = typer.Option(8, "--chunk-size", min=1, help="Tasks per worker call."),
        batch_size: int = typer.Option(64, "--batch-size", min=1, help="Predictions imported per request."),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Stop after this many tasks."),
        sam_checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="SAM checkpoint, a path or a name pulled with `pslg models pull` (default $PSLG_SAM_CHECKPOINT; "
                                                     "none: the weights-free segmenter)."),
        model_type: Optional[str] = typer.Option(None, help="SAM model type (default $PSLG_SAM_MODEL_TYPE)."),
        grounding: Optional[str] = typer.Option(None, help="Grounding model (default $PSLG_GROUNDING_MODEL; "
                                                "none: boxes from the tasks)."),
        device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:1 (default $PSLG_DEVICE)."),
        local_files_root: Optional[Path] = typer.Option(None, help="Read /data/local-files/ images from this folder "
                                                        "(default: the variable LABEL_STUDIO_LOCAL_FILES_"
                                                        "DOCUMENT_ROOT)."),
        local_image_root: Optional[Path] = typer.Option(None, "--local-image-root", help="Read tasks whose image is "
                                                        "a plain file path from this folder (default "
                                                        "$PSLG_LOCAL_IMAGE_ROOT)."),
        label_map: Optional[str] = typer.Option(None, "--label-map", help="Label for task categories that are none "
                                                "of the config's labels: CATEGORY=LABEL[,...] or a JSON file "
                                                "(default $PSLG_LABEL_MAP); unmapped ones fail."),
    ) -> None:
        """Pre-label every task that has no prediction of the current model version yet.

        Same models, settings (PSLG_* variables) and model_version as `pslg serve`: after a retrain, a rerun
        re-predicts only the stale tasks. Interrupted or killed runs resume from the progress file without ever
        storing a second prediction of one model version for a task. The progress file is removed once a run
        finishes every task; it stays while tasks failed or the run was cut short.

        Task categories are matched to the config's labels by name (case, spaces/underscores, plurals); a task
        whose category is none of them fails (listed with its position) unless --label-map maps it.

        Examples:

        \b
          pslg prelabel tasks.json --out tasks-with-predictions.json --local-image-root /data/scenes

        \b
          pslg prelabel --url http://localhost:8080 --project 7 --workers 4
        """
        from rich.console import Console
        from rich.markup import escape

        console = Console(stderr=True)
        token = token or os.environ.get("LABEL_STUDIO_API_KEY")
        if (tasks is None) == (project is None):
            raise typer.BadParameter("give a tasks JSON, or --url, --project and --token (or LABEL_STUDIO_API_KEY)")
        if project is not None and not (url and token):
            raise typer.BadParameter("--project needs --url and --token (or LABEL_STUDIO_API_KEY)")
        if tasks is not None and out is None:
            raise typer.BadParameter("a tasks file needs --out (the tasks with predictions are written there)")
        if workers and ray:
            raise typer.BadParameter("give --workers or --ray, not both")
        workers = workers or (os.cpu_count() or 1)
        settings = _settings(url, token, sam_checkpoint, model_type, grounding, device, local_files_root,
                             cache_embeddings, local_image_root, label_map)

        from backend.prelabel.worker import quiet_task_warnings
        from converters.cli.common import interruptible

        quiet_task_warnings()

        def secret_free(text: str) -> str:
            return text.replace(token, "***") if token else text

        from backend.prelabel.checkpoint import Checkpoint
        from backend.prelabel.job import assemble_output, run_prelabel
        from backend.prelabel.sources import LiveProjectTasks, TaskFile
        from backend.prelabel.worker import WorkerSpec

        try:
            if tasks is not None:
                source = TaskFile(tasks, config.read_text(encoding="utf-8") if config else None)
            else:
                source = LiveProjectTasks(url, token, project, post=out is None)  # type: ignore[arg-type]
            label_config = source.label_config()
            from backend.model import parse_schema

            image_key = parse_schema(label_config).image_key
        except Exception as exc:  # unreadable file, unreachable server, refused token, unusable config
            console.print(f"[red]error[/red] {escape(secret_free(str(exc)))}")
            raise typer.Exit(2) from None
        if progress_file is None:
            progress_file = Path(f"{out}.progress.jsonl") if out else Path(f"prelabel-project-{project}.progress.jsonl")
        spec = WorkerSpec(settings=settings, label_config=label_config,
                          project=str(project) if project is not None else None)

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        bar = Progress(TextColumn("prelabel"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)
        task_id = bar.add_task("prelabel", total=None)

        def progress(finished: int, total: int) -> None:
            bar.update(task_id, completed=finished, total=total)

        executor = None
        try:
            with interruptible(), bar:
                t0 = time.perf_counter()
                executor = _executor(spec, workers, ray, ray_actors, ray_gpus)
                built_s = time.perf_counter() - t0  # in-process models load here; worker processes start later
                report = run_prelabel(source, executor, Checkpoint(progress_file), image_key=image_key,
                                      chunk_size=chunk_size, store_every=batch_size, keep_predictions=out is not None,
                                      limit=limit, progress=progress)
                report.startup_seconds += built_s
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted[/yellow]: finished tasks are recorded in {escape(str(progress_file))}; "
                          "run the same command again to resume")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            console.print(f"[red]error[/red] {type(exc).__name__}: {escape(secret_free(str(exc))[:500])}")
            raise typer.Exit(2) from None
        finally:
            if executor is not None:
                executor.close()
        checkpoint = Checkpoint(progress_file)
        if out is not None:
            written = assemble_output(source, checkpoint, out)
            console.print(f"wrote {written} task(s) with predictions to {escape(str(out))}")
        console.print(f"model_version {escape(report.model_version)}: {report.predicted} predicted, "
                      f"{report.skipped} already up to date, {len(report.errors)} failed, of {report.total} task(s) "
                      f"in {report.seconds:.1f} s ({report.tasks_per_second:.1f} tasks/s) after "
                      f"{report.startup_seconds:.1f} s of model loading", highlight=False)
        labels = report.labels
        if labels.by_name or labels.by_map or labels.unmatched:
            console.print(escape(labels.summary()), highlight=False)
        if report.errors:
            console.print(f"[red]{len(report.errors)} task(s) failed[/red] (not recorded: a rerun retries them):")
            for key, reason in report.errors:  # one line per failed task, with its position
                console.print(f"{escape(source.describe(key))}: {escape(secret_free(reason))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(EXIT_TASK_ERRORS)
        if report.complete:
            checkpoint.remove()  # every task is done: nothing to resume (a failed or --limit run keeps it)


def _executor(spec, workers: int, ray: Optional[str], ray_actors: int, ray_gpus: float):
    """In this process, local worker processes, or Ray actors, as the options say."""
    from backend.prelabel.executors import InProcessExecutor, ProcessExecutor, RayExecutor

    if ray:
        from annotate.extras import require_extra

        require_extra("ray", "--ray")
        address = None if ray == "local" else ray
        return RayExecutor(spec, address, actors=ray_actors or None, num_gpus=ray_gpus)
    if workers > 1:
        return ProcessExecutor(spec, workers)
    return InProcessExecutor(spec)

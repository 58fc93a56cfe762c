"""Label Studio export (file or live project) → COCO or RRSIS folder: the engine behind ``pslg export``.

Streaming end to end: tasks are parsed one at a time (ijson), each task's masks are decoded, encoded to COCO
RLE and written out before the next task is read. The output folder is built in a staging folder and moved
into place only at the end (atomic; Ctrl-C leaves nothing). A syntax error in the export stops the reading at
that point: the tasks before it are exported and the error says where.

An export that yields no object at all (every task failed, or nothing was annotated) writes nothing: an empty
dataset would pass ``pslg validate`` and hide the failure, and would make the next run need ``--overwrite``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Literal, Optional, Sequence

from converters.atomic import staged_dir
from converters.coco import CocoWriter
from converters.labelstudio import (ImageResolver, LabelSchema, LiveProject, MalformedExportError, iter_export,
                                    iter_items)
from converters.model import Report
from converters.rrsis import RRSISWriter
from converters.writer import ImageMode, SegFormat

Kind = Literal["coco", "rrsis"]


class _NothingToWrite(Exception):
    """Raised inside the staging context so that an export without objects leaves no folder behind."""


@dataclass
class ExportOptions:
    image_root: Optional[Path] = None
    config_xml: Optional[str] = None
    selection: str = "latest"
    missing_expression: Optional[str] = None
    """error | label | skip | allow; default: error for rrsis, allow for coco."""
    image_mode: ImageMode = "copy"
    seg_format: SegFormat = "rle"
    dataset_name: str = "rrsisd"
    split_ratios: Sequence[float] = (0.8, 0.1, 0.1)
    seed: int = 0
    overwrite: bool = False


def export_file(kind: Kind, export_path: Path | BinaryIO, out: Path, opts: ExportOptions,
                live: Optional[LiveProject] = None,
                progress: Optional[Callable[[int, int], None]] = None) -> Report:
    """Convert one Label Studio JSON export (a file, a named pipe, or a binary stream such as stdin) to
    ``out`` (see the module docstring)."""
    report = Report()
    is_path = isinstance(export_path, (str, Path))
    if is_path:
        export_path = Path(export_path)
    schema = LabelSchema.parse(opts.config_xml) if opts.config_xml else LabelSchema()
    missing = opts.missing_expression or ("error" if kind == "rrsis" else "allow")
    base_dir = export_path.parent if is_path else Path.cwd()  # type: ignore[union-attr]
    resolver = ImageResolver(opts.image_root, base_dir=base_dir, fetcher=live)
    total = os.path.getsize(export_path) if is_path and Path(export_path).is_file() else 0
    where = str(export_path) if is_path else "<stdin>"
    try:
        with staged_dir(out, overwrite=opts.overwrite) as stage:
            if kind == "coco":
                writer = CocoWriter(stage, report=report, image_mode=opts.image_mode, categories=schema.labels,
                                    seg_format=opts.seg_format)
            else:
                writer = RRSISWriter(stage, report=report, dataset_name=opts.dataset_name,
                                     image_mode=opts.image_mode, categories=schema.labels,
                                     seg_format=opts.seg_format, split_ratios=opts.split_ratios, seed=opts.seed)
            try:
                tasks = iter_export(export_path, (lambda pos: progress(pos, total)) if progress else None)
                try:
                    for item in iter_items(tasks, schema, resolver, report, opts.selection, missing):
                        writer.add(item)
                except MalformedExportError as exc:
                    report.error(where, str(exc))
                if not report.counts.get("annotations") and not report.counts.get("no-target refs"):
                    raise _NothingToWrite
                writer.close()
            except BaseException:
                writer.abort()
                raise
    except _NothingToWrite:
        report.nothing_written = True
        report.counts.clear()
    finally:
        resolver.close()
    return report


def export_live(kind: Kind, url: str, token: str, project_id: int, out: Path, opts: ExportOptions,
                progress: Optional[Callable[[int, int], None]] = None) -> Report:
    """Export a live project: its config and JSON export through label-studio-sdk, images over HTTP."""
    live = LiveProject(url, token, project_id)
    if opts.config_xml is None:
        opts.config_xml = live.label_config()
    if opts.selection.startswith("annotator:") and "@" in opts.selection:
        uid = live.user_id(opts.selection.split(":", 1)[1])  # exports carry completed_by as a user id
        if uid is not None:
            opts.selection = f"annotator:{uid}"
    with tempfile.TemporaryDirectory(prefix="pslg-export-") as tmp:
        path = live.download_export(Path(tmp) / f"project-{project_id}.json")
        return export_file(kind, path, out, opts, live=live, progress=progress)

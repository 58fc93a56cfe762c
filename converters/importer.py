"""RRSIS / COCO datasets → Label Studio tasks JSON, so existing ground truth can be reviewed in Label Studio.

* RRSIS: **one task per expression** (the RRSIS-D labeling set-up, ``configs/rrsis_expression_per_task.xml``):
  ``data = {image, expression, bbox [x, y, w, h] px, category, split, ref_id, ann_id}`` and one brush region,
  the referred object. A generalized ref (``configs/generalized_expression_per_task.xml``) has one brush region
  per object it names, or the "no target" choice; its ``data`` carries ``ann_id`` as a list and ``no_target``.
* COCO: **one task per image** (``configs/expressions_per_region.xml``): every instance is a brush region;
  expressions, when the COCO file carries them (``expressions`` on an annotation), become per-region TextArea
  results.

The ground truth goes in as ``predictions`` (default: reviewers accept or fix them, and Label Studio keeps
them apart from human work) or as ``annotations`` (``ground_truth: true``). Tasks are written as one JSON
array, streamed and atomically replaced.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import Iterator, Literal, Optional

from converters.atomic import atomic_file
from converters.coco import read_coco
from converters.labelstudio import brush_region, textarea_region
from converters.model import Report
from converters.rrsis import read_rrsis
from annotate.masks import SegmentationError

As = Literal["predictions", "annotations"]


def image_url(path: Path, *, url_prefix: Optional[str] = None, document_root: Optional[Path] = None) -> str:
    """The task's image reference: ``url_prefix + file name``, a ``/data/local-files/?d=`` URL relative to
    ``document_root`` (Label Studio's LOCAL_FILES_DOCUMENT_ROOT), or else the absolute local path."""
    if url_prefix is not None:
        return url_prefix + urllib.parse.quote(path.name)
    if document_root is not None:
        rel = os.path.relpath(Path(path).resolve(), Path(document_root).resolve())
        if rel.startswith(".."):
            raise ValueError(f"image {path} is not under the document root {document_root}")
        return "/data/local-files/?d=" + Path(rel).as_posix()
    return str(Path(path).resolve())


def _wrap(result: list[dict], as_: As, model_version: str) -> dict:
    if as_ == "predictions":
        return {"predictions": [{"result": result, "score": 1.0, "model_version": model_version}]}
    return {"annotations": [{"result": result, "ground_truth": True, "was_cancelled": False}]}


def rrsis_tasks(root: Path, report: Report, *, split: Optional[str] = None, as_: As = "predictions",
                url_prefix: Optional[str] = None, document_root: Optional[Path] = None,
                image_dir: Optional[Path] = None, from_name: str = "tag", to_name: str = "image",
                model_version: str = "rrsis-ground-truth", choice_name: str = "target",
                no_target_value: str = "no target") -> Iterator[dict]:
    """One task per expression of an RRSIS-layout dataset (quirks of the real RRSIS-D files accepted).

    A generalized ref (several objects or none) becomes tasks for ``configs/generalized_expression_per_task.xml``:
    one brush region per object, or the ``choice_name`` choice ``no_target_value`` and no region.
    """
    from converters.labelstudio.regions import no_target_region
    from converters.labelstudio.schema import LabelSchema

    for ref in read_rrsis(root, split, image_dir=image_dir, report=report):
        where = f"ref {ref.ref_id}"
        if not ref.sentences:
            report.error(where, "ref without a sentence")
            continue
        url = image_url(ref.image_path, url_prefix=url_prefix, document_root=document_root)
        try:
            if ref.generalized:
                regions = [brush_region(obj.mask, obj.category, from_name=from_name, to_name=to_name,
                                        region_id=f"ref{ref.ref_id}-{k}")
                           for k, obj in enumerate(ref.to_item().objects)]
                if ref.no_target:
                    schema = LabelSchema(image_name=to_name, no_target_name=choice_name,
                                         no_target_value=no_target_value)
                    regions = [dict(no_target_region(schema), id=f"ref{ref.ref_id}")]
            else:
                regions = [brush_region(ref.load_mask(), ref.category, from_name=from_name, to_name=to_name,
                                        region_id=f"ref{ref.ref_id}")]
        except SegmentationError as exc:
            report.error(where, str(exc))
            continue
        for sentence in ref.sentences:
            data: dict = {"image": url, "expression": sentence}
            if ref.generalized:
                data.update({"category": ref.category, "split": ref.split, "ref_id": ref.ref_id,
                             "ann_id": list(ref.ann_ids) or [-1], "no_target": ref.no_target})
            else:
                x0, y0, x1, y1 = ref.bbox_xyxy  # type: ignore[misc]
                data.update({"bbox": [x0, y0, x1 - x0, y1 - y0], "category": ref.category, "split": ref.split,
                             "ref_id": ref.ref_id, "ann_id": ref.ann_id})
            task = {"data": data}
            task.update(_wrap(regions, as_, model_version))
            report.counts["tasks"] += 1
            yield task


def coco_tasks(annotations: Path, report: Report, *, as_: As = "predictions", url_prefix: Optional[str] = None,
               document_root: Optional[Path] = None, image_dir: Optional[Path] = None, from_name: str = "tag",
               to_name: str = "image", text_name: str = "expression",
               model_version: str = "coco-ground-truth") -> Iterator[dict]:
    """One task per COCO image, every instance a brush region (its expressions as per-region TextAreas)."""
    for item in read_coco(annotations, image_dir=image_dir, report=report):
        path = item.path if item.path is not None else (Path(image_dir or Path(annotations).parent) / item.source)
        result: list[dict] = []
        for k, obj in enumerate(item.objects):
            rid = f"obj{k}"
            result.append(brush_region(obj.mask, obj.category, from_name=from_name, to_name=to_name, region_id=rid))
            if obj.expressions:
                result.append(textarea_region(obj.expressions, rid, from_name=text_name, to_name=to_name))
        task = {"data": {"image": image_url(path, url_prefix=url_prefix, document_root=document_root)}}
        task.update(_wrap(result, as_, model_version))
        report.counts["tasks"] += 1
        yield task


def write_tasks(tasks: Iterator[dict], out: Path) -> int:
    """Stream tasks into one JSON array at ``out`` (atomic: the file appears only when complete)."""
    n = 0
    with atomic_file(Path(out)) as fh:
        fh.write("[")
        for task in tasks:
            fh.write(("\n" if n == 0 else ",\n") + json.dumps(task, separators=(",", ":")))
            n += 1
        fh.write("\n]\n")
    return n

"""Choosing a task's annotation and turning it into (image, expressions, mask, category) items.

This is the one place where a Label Studio annotation becomes training/export data: the converters and the
backend's training store both call it. In a generalized config (``LabelSchema.generalized``) an expression may
name several regions or none: those expressions become the item's ``Referral``s.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional

from converters.labelstudio.media import ImageResolveError, ImageSource
from converters.labelstudio.polygons import accepts_polygon, read_polygon_region
from converters.labelstudio.schema import LabelSchema, expressions_of
from converters.model import ImageItem, ObjectItem, Referral, Report

Selection = str  # "latest" | "ground-truth" | "annotator:<email or id>"


def _annotator_matches(ann: dict, who: str) -> bool:
    cb = ann.get("completed_by")
    values: list[str] = []
    if isinstance(cb, dict):
        values += [str(cb.get("email", "")), str(cb.get("id", "")), str(cb.get("username", ""))]
    elif cb is not None:
        values.append(str(cb))
    values += [str(ann.get("created_username", "")).split(",")[0].strip(), str(ann.get("email", ""))]
    return who.strip().lower() in {v.strip().lower() for v in values if v}


def _ann_time(ann: dict) -> tuple[str, int]:
    return (str(ann.get("updated_at") or ann.get("created_at") or ""), int(ann.get("id") or 0))


def select_annotation(task: dict, selection: Selection, report: Report) -> Optional[dict]:
    """The annotation that wins for this task, or None (the reason is counted in ``report.skipped``).

    Cancelled (skipped) and empty annotations never win. ``latest``: most recently updated; ``ground-truth``:
    the ground-truth one (latest of them); ``annotator:X``: that annotator's latest (X = email or user id).
    """
    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    if not anns:
        report.skipped["task without annotation"] += 1
        return None
    live = [a for a in anns if not a.get("was_cancelled")]
    if not live:
        report.skipped["cancelled annotation"] += 1
        return None
    live = [a for a in live if a.get("result")]
    if not live:
        report.skipped["empty annotation"] += 1
        return None
    if selection == "ground-truth":
        live = [a for a in live if a.get("ground_truth")]
        if not live:
            report.skipped["no ground-truth annotation"] += 1
            return None
    elif selection.startswith("annotator:"):
        who = selection.split(":", 1)[1]
        live = [a for a in live if _annotator_matches(a, who)]
        if not live:
            report.skipped["no annotation by the chosen annotator"] += 1
            return None
    elif selection != "latest":
        raise ValueError(f"unknown selection {selection!r} (latest, ground-truth, annotator:EMAIL)")
    return max(live, key=_ann_time)



MissingExpression = str  # "error" | "label" | "skip" | "allow"


def label_to_phrase(label: str) -> str:
    return label.replace("_", " ").strip().lower()


def task_to_item(task: dict, annotation: dict, schema: LabelSchema, resolver: ImageSource, report: Report,
                 missing_expression: MissingExpression = "error") -> Optional[ImageItem]:
    """Turn one task + its chosen annotation into an :class:`ImageItem`; per-item problems go to ``report``."""
    from converters.labelstudio.brush import brush_rle_decode

    tid = task.get("id", "?")
    where = f"task {tid}"
    data = task.get("data")
    if not isinstance(data, dict):
        report.error(where, "task has no 'data' object")
        return None
    src = data.get(schema.image_key)
    if not isinstance(src, str) or not src:
        report.error(where, f"task has no data.{schema.image_key}")
        return None
    try:
        path, width, height = resolver.resolve(src)
    except ImageResolveError as exc:
        report.error(where, str(exc))
        return None
    results = [r for r in annotation.get("result") or [] if isinstance(r, dict)]
    texts: dict[str, list[str]] = {}
    for r in results:
        if str(r.get("type", "")).lower() == "textarea" and schema.accepts_expression_area(r.get("from_name")):
            texts.setdefault(str(r.get("id")), []).extend(expressions_of((r.get("value") or {}).get("text")))
    task_exprs = schema.task_expressions(data)
    per_task = task_exprs is not None
    objects: list[ObjectItem] = []
    region_ids: list[str] = []
    for i, r in enumerate(results):
        rtype = str(r.get("type", "")).lower()
        if rtype == "polygonlabels" and accepts_polygon(schema, r.get("from_name")):
            read = read_polygon_region(r, data, schema, width, height, report, f"task {tid} region {r.get('id', i)}")
            if read is not None:
                exprs = list(task_exprs) if task_exprs is not None else list(texts.get(str(r.get("id")), []))
                objects.append(ObjectItem(mask=read[0], category=read[1], expressions=exprs,
                                          where=f"task {tid} region {r.get('id', i)}", score=_score(r)))
                region_ids.append(str(r.get("id")))
            continue
        if rtype != "brushlabels":
            continue
        if not schema.accepts_brush(r.get("from_name")):
            continue
        rwhere = f"task {tid} region {r.get('id', i)}"
        value = r.get("value") or {}
        if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
            report.error(rwhere, "brush region without an RLE mask")
            continue
        labels = value.get("brushlabels") or []
        label = labels[0] if labels else data.get("category")
        if not label:
            report.error(rwhere, "brush region without a label")
            continue
        if schema.labels is not None and label not in schema.labels:
            report.error(rwhere, f"unknown label {label!r} (not in the labeling config)")
            continue
        h, w = r.get("original_height", height), r.get("original_width", width)  # absent: the RLE length decides
        if (h, w) != (height, width):
            report.error(rwhere, f"mask size {w}x{h} disagrees with image {src} of size {width}x{height}")
            continue
        try:
            mask = brush_rle_decode(value["rle"], height, width)
        except Exception as exc:
            report.error(rwhere, f"brush RLE does not decode: {exc}")
            continue
        exprs = list(task_exprs) if task_exprs is not None else list(texts.get(str(r.get("id")), []))
        objects.append(ObjectItem(mask=mask, category=str(label), expressions=exprs, where=rwhere, score=_score(r)))
        region_ids.append(str(r.get("id")))
    referrals: list[Referral] = []
    # one expression per task whose regions are separate objects: a config with the "no target" choice; a
    # per-region config groups by relations instead (and keeps merging a task expression's strokes, as before)
    apart = per_task and schema.no_target_name is not None
    if apart or (schema.generalized and not per_task):
        grouped = _generalized_referrals(results, schema, objects, region_ids, task_exprs if apart else None,
                                         where, report)
        if grouped is None:
            return None
        referrals = grouped
    if not objects and not referrals:
        report.skipped["annotation without a brush mask or polygon"] += 1
        return None
    if per_task and len(objects) > 1 and not apart:  # one task = one referred object: strokes / polygons merged
        cats = {o.category for o in objects}
        if len(cats) > 1:
            report.error(where, f"one-expression task has brush regions with different labels {sorted(cats)}")
            return None
        merged = objects[0].mask.copy()
        for o in objects[1:]:
            merged |= o.mask
        scores = [o.score for o in objects if o.score is not None]
        objects = [ObjectItem(mask=merged, category=objects[0].category, expressions=objects[0].expressions,
                              where=where, score=max(scores) if scores else None)]
    named = {k for ref in referrals for k in ref.objects}
    kept: list[ObjectItem] = []
    for k, o in enumerate(objects):
        if k in named:  # an object of a multi-object expression: the referral names it
            kept.append(o)
            continue
        if not o.expressions:
            if missing_expression == "error":
                report.error(o.where, "result without an expression (--missing-expression label uses the label instead)")
                continue
            if missing_expression == "skip":
                report.skipped["object without an expression"] += 1
                continue
            if missing_expression == "label":
                o.expressions = [label_to_phrase(o.category)]
        kept.append(o)
    if len(kept) < len(objects):  # indices into objects change: keep the referrals pointing at the same objects
        position = {id(o): k for k, o in enumerate(kept)}
        for ref in referrals:
            ref.objects = [position[id(objects[k])] for k in ref.objects]
    if not kept and not referrals:
        return None
    split = data.get("split") if isinstance(data.get("split"), str) else None
    tile = data.get("tile") if isinstance(data.get("tile"), dict) else None
    return ImageItem(source=src, path=path, width=width, height=height, objects=kept, split=split, where=where,
                     referrals=referrals, tile=tile)


def _chose_no_target(results: list[dict], schema: LabelSchema) -> bool:
    """Whether the annotation holds the config's explicit "no target" choice."""
    for r in results:
        if str(r.get("type", "")).lower() == "choices" and r.get("from_name") == schema.no_target_name:
            chosen = (r.get("value") or {}).get("choices") or []
            if schema.no_target_value in chosen:
                return True
    return False


def _related_groups(results: list[dict], region_ids: list[str]) -> list[list[int]]:
    """Objects joined by Label Studio relations (either direction), as groups of object indices, in order.

    Relations to regions that are not objects (a box nested under a mask, a keypoint) join nothing.
    """
    index = {rid: k for k, rid in enumerate(region_ids)}
    parent = list(range(len(region_ids)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for r in results:
        if str(r.get("type", "")).lower() != "relation":
            continue
        a, b = index.get(str(r.get("from_id"))), index.get(str(r.get("to_id")))
        if a is not None and b is not None:
            parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for k in range(len(region_ids)):
        groups.setdefault(root(k), []).append(k)
    return list(groups.values())


def _generalized_referrals(results: list[dict], schema: LabelSchema, objects: list[ObjectItem],
                           region_ids: list[str], task_exprs: Optional[list[str]], where: str,
                           report: Report) -> Optional[list[Referral]]:
    """The multi-object and no-target expressions of a generalized annotation (None: the task failed).

    One expression per task: every region is one object of it (never merged); the "no target" choice with no
    region is the answer "nothing", with a region a contradiction. Per-region expressions: regions joined by
    relations share their expressions; the task-level no-target TextArea holds expressions naming nothing.
    """
    referrals: list[Referral] = []
    if task_exprs is not None:
        no_target = _chose_no_target(results, schema)
        if no_target and objects:
            report.error(where, f"marked {schema.no_target_value!r} but has {len(objects)} region(s): "
                                "remove the regions or the choice")
            return None
        if no_target or len(objects) > 1:
            if not task_exprs:
                report.error(where, "a no-target or multi-object task without an expression")
                return None
            referrals.append(Referral(list(task_exprs), list(range(len(objects))), where))
            for o in objects:
                o.expressions = []
        return referrals
    for group in _related_groups(results, region_ids):
        if len(group) < 2:
            continue
        exprs = list(dict.fromkeys(e for k in group for e in objects[k].expressions))
        if not exprs:
            report.error(where, f"related regions {', '.join(region_ids[k] for k in group)} have no expression")
            return None
        referrals.append(Referral(exprs, group, where))
        for k in group:
            objects[k].expressions = []
    if schema.no_target_area:
        nothing = [e for r in results if str(r.get("type", "")).lower() == "textarea"
                   and r.get("from_name") == schema.no_target_area
                   for e in expressions_of((r.get("value") or {}).get("text"))]
        if nothing:
            referrals.append(Referral(list(dict.fromkeys(nothing)), [], where))
    return referrals


def _score(region: dict) -> Optional[float]:
    """A region's pre-label score (finite number), else None."""
    score = region.get("score")
    if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score):
        return float(score)
    return None


def iter_items(tasks: Iterator[dict], schema: LabelSchema, resolver: ImageSource, report: Report,
               selection: Selection = "latest", missing_expression: MissingExpression = "error",
               ) -> Iterator[ImageItem]:
    """Tasks → items, one at a time (bounded memory); bad tasks are reported and skipped."""
    for i, task in enumerate(tasks):
        report.counts["tasks"] += 1
        if not isinstance(task, dict):
            report.error(f"task #{i}", f"not a JSON object ({type(task).__name__})")
            continue
        ann = select_annotation(task, selection, report)
        if ann is None:
            continue
        item = task_to_item(task, ann, schema, resolver, report, missing_expression)
        if item is not None:
            yield item

"""``pslg validate`` and ``pslg stats`` for COCO folders/files and RRSIS-layout datasets.

Validation is what a training run would otherwise discover hours in: masks that do not decode, masks or
images whose size disagrees with ``images[]``, boxes outside the image, refs pointing at nothing, duplicate
ids, an image in two splits. Every finding names the record; the whole dataset is always checked.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from pycocotools import mask as mask_utils

from converters.labelstudio import ImageResolveError, image_size
from converters.model import Report
from converters.rrsis import find_rrsis_files, load_refs, tokenize
from annotate.masks import SegmentationError, to_rle_list

#: Mask area bins (pixels) for the histogram: COCO's small / medium / large split, refined.
AREA_BINS: tuple[int, ...] = (0, 16**2, 32**2, 64**2, 96**2, 128**2, 256**2, 512**2)


@dataclass
class Dataset:
    kind: str  # "coco" | "rrsis"
    instances_path: Path
    image_dir: Optional[Path]
    refs_path: Optional[Path] = None
    instances: dict = field(default_factory=dict)
    refs: Optional[list[dict]] = None


def open_dataset(path: Path, image_dir: Optional[Path] = None) -> Dataset:
    """Detect the layout: an RRSIS root / dataset folder (``refs(*).p``), or a COCO JSON file / folder."""
    path = Path(path)
    if path.is_dir():
        try:
            refs_path, inst_path, found_dir = find_rrsis_files(path)
        except FileNotFoundError:
            refs_path = None
        if refs_path is not None:
            refs = load_refs(refs_path)
            inst = _instances(inst_path)
            return Dataset("rrsis", inst_path, Path(image_dir) if image_dir else found_dir, refs_path, inst, refs)
        for name in ("annotations.json", "instances.json"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"{path}: neither an RRSIS dataset (refs(*).p) nor a COCO folder")
    inst = _instances(path)
    guess = path.parent / "images"
    return Dataset("coco", path, Path(image_dir) if image_dir else (guess if guess.is_dir() else path.parent),
                   None, inst)


def _instances(path: Path) -> dict:
    """A COCO instances file as a dict; ``ValueError`` naming the file when it is not JSON or not an object."""
    try:
        with open(path, encoding="utf-8") as fh:
            inst = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: not a JSON file ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(inst, dict):
        raise ValueError(f"{path}: holds a JSON {type(inst).__name__}, not a COCO object with images/annotations")
    return inst


def compressed_rle_counts(counts: bytes) -> np.ndarray:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``), vectorised.

    pycocotools itself decodes malformed strings without complaint (into uninitialised memory), so validation
    reads them here. Each run is a little-endian base-32 number, one character (value + 48) per 5 bits, bit 0x20
    meaning "more follows" and bit 0x10 of the last character the sign; from the third run on, a run is stored
    as the difference to the run two places before. Raises ``ValueError`` saying what is wrong.
    """
    chars = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    bad = np.flatnonzero((chars < 0) | (chars > 63))
    if bad.size:
        raise ValueError(f"RLE counts hold the invalid character {chr(counts[int(bad[0])])!r} at {int(bad[0])}")
    last = (chars & 0x20) == 0
    if not last[-1]:
        raise ValueError("RLE counts end in the middle of a number")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    digit = np.arange(chars.size) - np.repeat(starts, ends - starts + 1)
    if digit.max() > 11:
        raise ValueError("RLE counts hold a number too large for any image")
    values = np.add.reduceat((chars & 0x1F) << (5 * digit), starts)
    negative = (chars[ends] & 0x10) != 0
    values = np.where(negative, values - (1 << (5 * (digit[ends] + 1))), values)
    runs = values.copy()
    runs[3::2] = np.cumsum(values[1::2])[1:] if values.size > 3 else runs[3::2]
    runs[4::2] = np.cumsum(values[2::2])[1:] if values.size > 4 else runs[4::2]
    return runs


def check_rle(rle: dict) -> None:
    """``ValueError`` unless ``rle``'s run lengths are non-negative and cover exactly height × width pixels."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    runs = compressed_rle_counts(counts if isinstance(counts, bytes) else str(counts).encode("ascii"))
    if (runs < 0).any():
        raise ValueError("RLE counts hold a negative run")
    total = int(runs.sum())
    if total != h * w:
        raise ValueError(f"RLE counts cover {total} pixels, the mask has {h}x{w} = {h * w}")


def polygon_overshoot(segm: Any, width: int, height: int) -> float:
    """How far (px) the farthest polygon point of ``segm`` lies outside the ``width``×``height`` image (0 inside
    or for RLE); rings that are not lists of numbers count 0 here (decoding reports them)."""
    rings = segm if isinstance(segm, list) and segm and isinstance(segm[0], (list, tuple)) else (
        [segm] if isinstance(segm, list) and segm and isinstance(segm[0], (int, float)) else [])
    worst = 0.0
    for ring in rings:
        try:
            arr = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError, OverflowError):
            continue
        if arr.size == 0 or not np.isfinite(arr).all():
            continue
        beyond = np.maximum(np.maximum(-arr, arr - np.array([width, height], dtype=np.float64)), 0.0)
        worst = max(worst, float(beyond.max()))
    return worst


def _list(inst: dict, key: str) -> list:
    """``inst[key]`` when it is a list (a wrong type is reported once, by the caller), else []."""
    value = inst.get(key)
    return value if isinstance(value, list) else []


def _hashable(value: Any) -> bool:
    """An id a record may have: a number or a string (a list or an object cannot key anything)."""
    return isinstance(value, (int, float, str)) and not isinstance(value, bool) or value is None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _category_id(ann: dict) -> Any:
    return ann.get("category_id", ann.get("categories_id"))


def validate(ds: Dataset, *, check_images: bool = True) -> Report:
    """Check the dataset; findings are per-record errors in the returned report (warnings for doubtful boxes)."""
    rep = Report()
    inst = ds.instances
    for key in ("images", "annotations", "categories"):
        if not isinstance(inst.get(key), list):
            rep.error(str(ds.instances_path), f"no '{key}' list")
    images: dict[int, dict] = {}
    sized: set = set()
    for k, img in enumerate(_list(inst, "images")):
        if not isinstance(img, dict):
            rep.error(f"images[{k}]", f"is a {type(img).__name__}, not an object")
            continue
        iid = img.get("id")
        if not _hashable(iid):
            rep.error(f"images[{k}]", f"id {_short(iid)} is not a number or string")
            continue
        if iid in images:
            rep.error(f"image {iid}", "duplicate image id")
        images[iid] = img
        w, h = img.get("width"), img.get("height")
        if not (isinstance(w, int) and isinstance(h, int) and not isinstance(w, bool) and not isinstance(h, bool)
                and w > 0 and h > 0):
            rep.error(f"image {iid}", f"bad width/height {_short(w)}x{_short(h)}")
            continue
        sized.add(iid)
        if check_images and ds.image_dir is not None:
            f = ds.image_dir / str(img.get("file_name"))
            if not f.is_file():
                rep.error(f"image {iid} ({img.get('file_name')})", f"image file missing: {f}")
            else:
                try:
                    fw, fh_ = image_size(f)
                except ImageResolveError as exc:
                    rep.error(f"image {iid}", str(exc))
                else:
                    if (fw, fh_) != (w, h):
                        rep.error(f"image {iid} ({img.get('file_name')})",
                                  f"file is {fw}x{fh_}, images[] says {w}x{h}")
    rep.counts["images"] = len(images)
    cat_ids: set = set()
    for k, cat in enumerate(_list(inst, "categories")):
        if not isinstance(cat, dict) or not _hashable(cat.get("id")):
            rep.error(f"categories[{k}]", "is not an object with a number or string id")
            continue
        if cat.get("id") in cat_ids:
            rep.error(f"category {cat.get('id')}", "duplicate category id")
        cat_ids.add(cat.get("id"))
    anns: dict[int, dict] = {}
    for k, ann in enumerate(_list(inst, "annotations")):
        if not isinstance(ann, dict) or not _hashable(ann.get("id")) or not _hashable(ann.get("image_id")):
            rep.error(f"annotations[{k}]", "is not an object with number or string id and image_id")
            continue
        aid = ann.get("id")
        where = f"annotation {aid}"
        if aid in anns:
            rep.error(where, "duplicate annotation id")
        anns[aid] = ann
        img = images.get(ann.get("image_id"))
        if img is None:
            rep.error(where, f"image_id {ann.get('image_id')} is not in images[]")
            continue
        if not _hashable(_category_id(ann)) or _category_id(ann) not in cat_ids:
            known = ", ".join(f"{c.get('id')} ({c.get('name')})" for c in _list(inst, "categories")[:20]
                              if isinstance(c, dict))
            rep.error(where, f"category {_short(_category_id(ann))} is not in categories[] (it has: {known or 'none'})")
        if ann.get("image_id") not in sized:
            rep.error(where, f"image {ann.get('image_id')} has no valid width/height to decode the mask on")
            continue
        h, w = int(img["height"]), int(img["width"])
        try:
            rles = to_rle_list(ann.get("segmentation"), h, w)
            for part in rles:  # area/toBbox/decode read counts without checking them
                check_rle(part)
            rle = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
            area = int(mask_utils.area(rle))
            mx, my, mw, mh = (float(v) for v in mask_utils.toBbox(rle))
        except (SegmentationError, TypeError, ValueError, UnicodeEncodeError, OverflowError, KeyError) as exc:
            rep.error(where, f"mask does not decode: {str(exc)[:300]}")
            continue
        overshoot = polygon_overshoot(ann.get("segmentation"), w, h)
        if overshoot > max(w, h):  # a corrupt coordinate: the mask is the polygon clipped to the image
            rep.error(where, f"a polygon point lies {overshoot:.3g} px outside the {w}x{h} image")
        elif overshoot > 1:
            rep.warnings.append(f"{where}: a polygon point lies {overshoot:.3g} px outside the {w}x{h} image "
                                "(the mask is cut at the border)")
        if area == 0:
            rep.error(where, "empty mask")
        box = ann.get("bbox")
        if box is not None:
            if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e15 for v in box)):
                rep.error(where, f"bbox {_short(box)} is not 4 numbers")
            else:
                x, y, bw, bh = (float(v) for v in box)
                if x < 0 or y < 0 or bw < 0 or bh < 0 or x + bw > w + 0.5 or y + bh > h + 0.5:
                    # RRSIS-D writes x1y1x2y2: say so when that reading fits the mask
                    hint = " (looks like x1,y1,x2,y2)" if abs(bw - (mx + mw)) <= 1 and abs(bh - (my + mh)) <= 1 else ""
                    rep.error(where, f"bbox {box} is not inside the {w}x{h} image{hint}")
                elif area and (abs(x - mx) > 1 or abs(y - my) > 1 or abs(bw - mw) > 1 or abs(bh - mh) > 1):
                    rep.warnings.append(f"{where}: bbox {box} differs from the mask's box "
                                        f"{[mx, my, mw, mh]}")
    rep.counts["annotations"] = len(anns)
    if ds.refs is not None:
        _validate_refs(ds.refs, anns, images, rep)
    return rep


def _validate_refs(refs: list[dict], anns: dict, images: dict, rep: Report) -> None:
    ref_ids: set = set()
    sent_ids: set = set()
    split_of_image: dict[Any, str] = {}
    for ref in refs:
        rid = ref.get("ref_id")
        where = f"ref {_short(rid)}"
        ann_ids = _ref_ann_ids(ref.get("ann_id"))
        if ann_ids is None or not all(_hashable(ref.get(k)) for k in ("ref_id", "image_id", "split")):
            rep.error(where, "ref_id, image_id and split must be numbers or strings, ann_id one or a list of them")
            continue
        if rid in ref_ids:
            rep.error(where, "duplicate ref_id")
        ref_ids.add(rid)
        if "no_target" in ref and bool(ref.get("no_target")) != (not ann_ids):
            rep.error(where, f"no_target is {ref.get('no_target')!r} but ann_id is {_short(ref.get('ann_id'))}")
        if not ann_ids and "no_target" not in ref:
            rep.error(where, "ann_id names no annotation and the ref does not say no_target")
        for ann_id in ann_ids:
            ann = anns.get(ann_id)
            if ann is None:
                rep.error(where, f"ann_id {ann_id} is not in annotations[]")
            elif ann.get("image_id") != ref.get("image_id"):
                rep.error(where, f"image_id {ref.get('image_id')} differs from its annotation's {ann.get('image_id')}")
        if ref.get("image_id") not in images:
            rep.error(where, f"image_id {ref.get('image_id')} is not in images[]")
        split = ref.get("split")
        if not split:
            rep.error(where, "no split")
        else:
            prev = split_of_image.setdefault(ref.get("image_id"), split)
            if prev != split:
                rep.error(where, f"image {ref.get('image_id')} is in two splits ({prev!r} and {split!r})")
        sents = ref.get("sentences") or []
        if not isinstance(sents, list) or not all(isinstance(x, dict) for x in sents):
            rep.error(where, "sentences must be a list of objects")
            continue
        if not sents:
            rep.error(where, "no sentences")
        ids = [s.get("sent_id") for s in sents]
        if list(ref.get("sent_ids", ids)) != ids:
            rep.error(where, "sent_ids do not match the sentences' sent_id")
        for s in sents:
            if s.get("sent_id") in sent_ids:
                rep.error(where, f"duplicate sent_id {s.get('sent_id')}")
            sent_ids.add(s.get("sent_id"))
            if not str(s.get("raw") or s.get("sent") or "").strip():
                rep.error(where, f"sentence {s.get('sent_id')} is empty")
    rep.counts["refs"] = len(refs)
    rep.counts["sentences"] = len(sent_ids)


def _ref_ann_ids(value: Any) -> Optional[list]:
    """A ref's annotation ids: REFER's one id, or a generalized ref's list (``[-1]`` = no target); None if neither."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not all(_hashable(v) and not isinstance(v, (list, tuple)) for v in values):
        return None
    return [v for v in values if v != -1]


# ------------------------------------------------------------------------------------------------------ stats
def area_bin_labels() -> list[str]:
    edges = list(AREA_BINS) + [None]
    return [f"{a}–{b - 1}" if b is not None else f"≥{a}" for a, b in zip(edges[:-1], edges[1:])]


def stats(ds: Dataset) -> dict:
    """Counts per split and category, expression lengths (tokens) and the mask-area histogram."""
    inst = ds.instances
    images = {i["id"]: i for i in _list(inst, "images") if isinstance(i, dict) and _hashable(i.get("id"))}
    cats = {c["id"]: str(c.get("name", c["id"])) for c in _list(inst, "categories")
            if isinstance(c, dict) and _hashable(c.get("id"))}
    ann_split: dict[Any, str] = {}
    per_split: Counter = Counter()
    per_cat_split: dict[str, Counter] = defaultdict(Counter)
    lengths: list[int] = []
    images_per_split: dict[str, set] = defaultdict(set)
    if ds.refs is not None:
        for ref in ds.refs:
            ann_ids = _ref_ann_ids(ref.get("ann_id"))
            category = ref.get("category_id")
            if isinstance(category, (list, tuple)):  # a generalized ref: its first object's category, or none
                category = next((c for c in category if c != -1), "no target")
            if ann_ids is None or not all(_hashable(v) for v in (ref.get("image_id"), category)):
                continue  # validate names it
            split = str(ref.get("split", "?"))
            for ann_id in ann_ids:
                ann_split[ann_id] = split
            per_split[split] += 1
            images_per_split[split].add(ref.get("image_id"))
            per_cat_split[cats.get(category, str(category))][split] += 1
            for s in (ref.get("sentences") if isinstance(ref.get("sentences"), list) else []):
                if not isinstance(s, dict):
                    continue
                lengths.append(len(s.get("tokens") or tokenize(str(s.get("raw") or s.get("sent") or ""))))
    hist = np.zeros(len(AREA_BINS), dtype=int)
    for ann in _list(inst, "annotations"):
        if not isinstance(ann, dict) or not _hashable(ann.get("image_id")):
            continue
        img = images.get(ann.get("image_id"))
        if img is None:
            continue
        try:
            rles = to_rle_list(ann.get("segmentation"), int(img["height"]), int(img["width"]))
            area = int(mask_utils.area(mask_utils.merge(rles) if len(rles) > 1 else rles[0]))
        except (SegmentationError, TypeError, ValueError, OverflowError, KeyError):
            continue
        hist[int(np.searchsorted(AREA_BINS, area, side="right")) - 1] += 1
        if ds.refs is None:
            split = "all"
            per_split[split] += 1
            images_per_split[split].add(ann.get("image_id"))
            per_cat_split[cats.get(_category_id(ann), str(_category_id(ann)))][split] += 1
    exprs = None
    if lengths:
        exprs = {"count": len(lengths), "min": min(lengths), "mean": round(statistics.fmean(lengths), 2),
                 "median": statistics.median(lengths), "max": max(lengths)}
    return {"kind": ds.kind, "images": len(images), "annotations": len(_list(inst, "annotations")),
            "per_split": dict(per_split), "images_per_split": {k: len(v) for k, v in images_per_split.items()},
            "per_category": {k: dict(v) for k, v in sorted(per_cat_split.items())},
            "expression_tokens": exprs, "area_histogram": dict(zip(area_bin_labels(), hist.tolist()))}

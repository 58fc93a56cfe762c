"""The RRSIS-D / RefCOCO layout read by REFER-style loaders (lichengunc/refer, reused by LAVT and RMSIN).

Written layout (docs/formats.md)::

    <root>/<name>/refs(unc).p            pickle (protocol 4) of a list of ref dicts
    <root>/<name>/instances.json         COCO images / annotations / categories
    <root>/images/<name>/JPEGImages/<f>  image files: 8-bit RGB sources with their original names and bytes;
                                         any other source (RGBA, grayscale, 16-bit, multi-band) as an
                                         8-bit RGB <stem>.png (the loaders open images without converting)

One ref per object; every expression naming that object is one of its sentences. An expression naming several
objects or none (a generalized one: NWPU-Refer, gRefCOCO) is a ref whose ``ann_id`` is a *list* (gRefCOCO's
spelling: ``[-1]`` and ``category_id`` ``[-1]`` for no target) and which carries ``no_target``; one-object refs
keep REFER's integer ``ann_id`` and no ``no_target`` key, so a dataset without generalized expressions is byte for
byte what RMSIN loads. Segmentations are written
as a *list* holding one compressed RLE dict (what RRSIS-D ships, and what REFER's ``getMask`` needs: it
indexes ``segmentation[0]``), annotations carry both ``category_id`` and ``categories_id``.

Reading accepts the RRSIS-D quirks: ``categories_id``, 0-based ids, RLE in a list, x1y1x2y2 boxes (boxes and
areas are recomputed from the masks, never trusted).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from annotate.types import Box
from converters.model import ImageItem, ObjectItem, Referral, Report
from annotate.masks import SegmentationError, segmentation_to_mask, to_rle_list
from converters.writer import DatasetWriter, ImageMode, SegFormat

SPLITS: tuple[str, ...] = ("train", "val", "test")
PICKLE_PROTOCOL = 4
_TOKEN = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")


def tokenize(raw: str) -> list[str]:
    """Lower-case word tokens: runs of letters/digits, keeping inner hyphens and apostrophes ("t-shaped").

    Punctuation is dropped, as in the RefCOCO/RRSIS-D ``tokens`` field; ``sent`` is ``" ".join(tokens)``.
    """
    return _TOKEN.findall(raw.lower())


def assign_split(key: str, ratios: Sequence[float], seed: int = 0) -> str:
    """Deterministic split for one image: a hash of (seed, key) placed on the cumulative ``ratios``.

    Per image (not per ref), so no image is in two splits; the same name always lands in the same split,
    whatever order the tasks come in, so re-exports are stable.
    """
    total = float(sum(ratios))
    if total <= 0:
        raise ValueError("split ratios must sum to a positive number")
    u = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2.0**64
    acc = 0.0
    for name, r in zip(SPLITS, ratios):
        acc += r / total
        if u < acc:
            return name
    return SPLITS[len(ratios) - 1]


def parse_ratios(text: str) -> tuple[float, ...]:
    """``"0.8,0.1,0.1"`` → (0.8, 0.1, 0.1) for train/val/test (1 to 3 values, non-negative)."""
    vals = tuple(float(v) for v in text.split(",") if v.strip())
    if not 1 <= len(vals) <= 3 or any(v < 0 for v in vals) or sum(vals) <= 0:
        raise ValueError(f"split ratios {text!r}: give 1–3 non-negative numbers for train,val,test")
    return vals


class RRSISWriter(DatasetWriter):
    """Streams :class:`ImageItem` values into the RRSIS-D layout (see the module docstring)."""

    def __init__(self, root: Path, *, report: Report, dataset_name: str = "rrsisd", image_mode: ImageMode = "copy",
                 categories: Optional[Sequence[str]] = None, seg_format: SegFormat = "rle",
                 split_ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0, split_by: str = "unc") -> None:
        root = Path(root)
        super().__init__(root, root / "images" / dataset_name / "JPEGImages", root / dataset_name / "instances.json",
                         report=report, image_mode=image_mode, categories=categories, seg_format=seg_format,
                         segmentation_as_list=True, extra_category_key="categories_id")
        self.dataset_name = dataset_name
        self.refs_path = root / dataset_name / f"refs({split_by}).p"
        self.split_ratios = tuple(split_ratios)
        self.seed = seed
        self.refs: list[dict] = []
        self._ref_by_ann: dict[int, dict] = {}
        self._ref_by_group: dict[tuple[int, tuple[int, ...]], dict] = {}
        self._ann_category: dict[int, int] = {}
        self._next_sent = 1

    def place(self, item: ImageItem, name: str) -> Optional[str]:
        """Copy (or link) an 8-bit RGB source; write any other source (RGBA, grayscale, palette, 16-bit,
        multi-band) as an 8-bit RGB PNG with the stretch ``pslg segment`` uses. RMSIN's loader opens images
        without converting them, so only 8-bit RGB files load; the original file is left untouched."""
        if is_rgb8(item.path):  # type: ignore[arg-type]
            return super().place(item, name)
        from annotate.image_io import ImageLoadError, load_image

        try:
            rgb = load_image(item.path).rgb  # type: ignore[arg-type]
        except ImageLoadError as exc:
            self.report.error(item.where, f"cannot convert {item.source} to 8-bit RGB: {exc}")
            return None
        if rgb.shape[:2] != (item.height, item.width):
            self.report.error(item.where, f"image {item.source} is {rgb.shape[1]}x{rgb.shape[0]}, the task says "
                              f"{item.width}x{item.height}")
            return None
        png = f"{Path(name).stem}.png"
        if png in self._names or (self.image_dir / png).exists():
            png = f"{Path(name).stem}_{hashlib.sha1(item.source.encode()).hexdigest()[:8]}.png"
        from PIL import Image

        self.image_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb, "RGB").save(self.image_dir / png, format="PNG")
        self.report.counts["images converted to 8-bit RGB"] += 1
        return png

    def _split_for(self, entry: Any, item: ImageItem) -> Optional[str]:
        if entry.split is None:
            entry.split = item.split or assign_split(entry.file_name, self.split_ratios, self.seed)
        elif item.split and item.split != entry.split:
            self.report.error(item.where, f"image {entry.file_name} is already in split {entry.split!r}, "
                              f"this task says {item.split!r}: an image cannot be in two splits")
            return None
        return entry.split

    def add(self, item: ImageItem) -> None:
        entry = self.image_entry(item)
        if entry is None:
            return
        split = self._split_for(entry, item)
        if split is None:
            return
        named = {k for referral in item.referrals for k in referral.objects}
        for k, obj in enumerate(item.objects):
            if k in named and not obj.expressions:  # written with its multi-object ref
                continue
            if not obj.expressions:
                self.report.error(obj.where, "no referring expression for this object")
                continue
            ann_id, _ = self.add_object(entry, obj)
            if ann_id is None:
                continue
            ref = self._ref_by_ann.get(ann_id)
            if ref is None:
                ref = {"ref_id": len(self.refs) + 1, "ann_id": ann_id, "image_id": entry.id,
                       "category_id": self.categories[obj.category], "file_name": entry.file_name,
                       "split": split, "sent_ids": [], "sentences": []}
                if item.tile is not None:  # RRSIS-D keeps per-tile images; the ref says where its tile lies
                    ref["tile"] = item.tile
                self.refs.append(ref)
                self._ref_by_ann[ann_id] = ref
                self.report.counts[f"refs:{split}"] += 1
            self._add_sentences(ref, obj.expressions)
        self._add_referrals(item, entry, split)

    def _add_sentences(self, ref: dict, expressions: Sequence[str]) -> None:
        known = {s["raw"] for s in ref["sentences"]}
        for raw in expressions:
            raw = raw.strip()
            if not raw or raw in known:
                continue
            known.add(raw)
            tokens = tokenize(raw)
            sid = self._next_sent
            self._next_sent += 1
            ref["sent_ids"].append(sid)
            ref["sentences"].append({"sent_id": sid, "sent": " ".join(tokens), "raw": raw, "tokens": tokens})
            self.report.counts["sentences"] += 1

    def _add_referrals(self, item: ImageItem, entry: Any, split: str) -> None:
        """The item's multi-object and no-target expressions, one ref per (image, set of objects)."""
        for referral in item.referrals:
            if not any(e.strip() for e in referral.expressions):
                self.report.error(referral.where, "no referring expression for this no-target or multi-object ref")
                continue
            ann_ids: list[int] = []
            for k in referral.objects:
                ann_id, _ = self.add_object(entry, item.objects[k])
                if ann_id is None:
                    break
                ann_ids.append(ann_id)
            if len(ann_ids) < len(referral.objects):
                self.report.error(referral.where, "an object of this multi-object expression could not be written")
                continue
            group = tuple(sorted(set(ann_ids)))
            key = (entry.id, group)
            ref = self._ref_by_group.get(key)
            if ref is None:
                cats = [self._ann_category[a] for a in group]
                ref = {"ref_id": len(self.refs) + 1, "ann_id": list(group) or [-1], "image_id": entry.id,
                       "category_id": cats or [-1], "file_name": entry.file_name, "split": split,
                       "sent_ids": [], "sentences": [], "no_target": not group}
                self.refs.append(ref)
                self._ref_by_group[key] = ref
                self.report.counts[f"refs:{split}"] += 1
                self.report.counts["no-target refs" if not group else "multi-object refs"] += 1
            self._add_sentences(ref, referral.expressions)

    def add_object(self, entry: Any, obj: ObjectItem, with_expressions: bool = False) -> tuple[Optional[int], bool]:
        ann_id, new = super().add_object(entry, obj, with_expressions)
        if ann_id is not None and new:
            self._ann_category[ann_id] = self.categories[obj.category]
        return ann_id, new

    def close(self) -> None:
        self._write_instances()
        with open(self.refs_path, "wb") as fh:
            pickle.dump(self.refs, fh, protocol=PICKLE_PROTOCOL)


def is_rgb8(path: Path) -> bool:
    """True when PIL opens ``path`` as 8-bit RGB as it is (what REFER / RMSIN loaders need)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.mode == "RGB"
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def write_rrsis(root: Path, items: Iterable["ImageItem | RefRecord"], *, dataset_name: str = "rrsisd",
                image_mode: ImageMode = "copy", categories: Optional[Sequence[str]] = None,
                seg_format: SegFormat = "rle", split_ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                overwrite: bool = False) -> Report:
    """Write ``items`` (:class:`ImageItem` values, or :class:`RefRecord` values from :func:`read_rrsis`) in
    the RRSIS-D layout under ``root``, atomically. Per-item problems are in the returned report."""
    from converters.atomic import staged_dir

    report = Report()
    with staged_dir(Path(root), overwrite=overwrite) as stage:
        writer = RRSISWriter(stage, report=report, dataset_name=dataset_name, image_mode=image_mode,
                             categories=categories, seg_format=seg_format, split_ratios=split_ratios, seed=seed)
        try:
            for item in items:
                writer.add(item.to_item() if isinstance(item, RefRecord) else item)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    return report


# ---------------------------------------------------------------------------------------------------- reading
@dataclass
class RefRecord:
    """One RRSIS ref with its sentences; the mask is decoded on demand by :meth:`load_mask`.

    A generalized ref (gRefCOCO layout: ``ann_id`` a list) names several objects (``ann_ids``; the mask is the
    union of theirs, as gRefCOCO scores it) or none (``no_target``: an empty mask, ``bbox_xyxy`` None).
    """

    ref_id: int
    ann_id: int
    image_id: int
    image_path: Path
    width: int
    height: int
    category: str
    split: str
    sentences: list[str]
    bbox_xyxy: Optional[Box]
    segmentation: Any = field(default=None, repr=False)
    ann_ids: list[int] = field(default_factory=list)
    """Every object the ref names (one for an RRSIS-D ref, none for a no-target one)."""
    parts: Optional[list[tuple[Any, str, Box]]] = field(default=None, repr=False)
    """A generalized ref's objects: (segmentation, category, box) each; None for a one-object ref."""
    _mask: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def no_target(self) -> bool:
        return self.parts is not None and not self.parts

    @property
    def generalized(self) -> bool:
        """A multi-object or no-target ref (scored with gIoU / N-acc; not what RMSIN loads)."""
        return self.parts is not None

    @property
    def boxes(self) -> list[Box]:
        """The box of each object named (one for a one-object ref)."""
        if self.parts is None:
            return [self.bbox_xyxy] if self.bbox_xyxy is not None else []
        return [box for _, _, box in self.parts]

    def load_mask(self) -> np.ndarray:
        """The bool (H, W) mask, decoded with pycocotools exactly as REFER's ``getMask`` does (cached); for a
        generalized ref the union of its objects' masks (all False for no target)."""
        if self._mask is None:
            if self.parts is None:
                self._mask = segmentation_to_mask(self.segmentation, self.height, self.width)
            else:
                mask = np.zeros((self.height, self.width), dtype=bool)
                for segm, _, _ in self.parts:
                    mask |= segmentation_to_mask(segm, self.height, self.width)
                self._mask = mask
        return self._mask

    @property
    def mask(self) -> np.ndarray:
        return self.load_mask()

    def to_item(self) -> ImageItem:
        """This ref as an :class:`ImageItem` (for :func:`write_rrsis` / the COCO writer): one object, or a
        generalized ref's objects with one :class:`Referral` naming them all (or none)."""
        where = f"ref {self.ref_id}"
        if self.parts is None:
            return ImageItem(source=str(self.image_path), path=self.image_path, width=self.width,
                             height=self.height, objects=[ObjectItem(mask=self.load_mask(), category=self.category,
                                                                     expressions=list(self.sentences), where=where)],
                             split=self.split or None, where=where)
        objects = [ObjectItem(mask=segmentation_to_mask(segm, self.height, self.width), category=cat, where=where)
                   for segm, cat, _ in self.parts]
        return ImageItem(source=str(self.image_path), path=self.image_path, width=self.width, height=self.height,
                         objects=objects, split=self.split or None, where=where,
                         referrals=[Referral(list(self.sentences), list(range(len(objects))), where)])


class RefsFileError(ValueError):
    """A ``refs(*).p`` that is not a plain pickle of a list of ref dicts (the message names the file)."""


class _PlainUnpickler(pickle.Unpickler):
    """Reads only what the refs format holds: lists, dicts, tuples, strings, bytes, numbers, booleans, None.

    Why: unpickling calls any importable function a file names (``os.system`` included), and a ``refs(unc).p``
    comes from a downloaded dataset. Those plain types need no global at all; the only globals allowed are the
    ``set``/``frozenset`` constructors (Python 2 pickles name them), which run nothing.
    """

    _ALLOWED = {("builtins", "set"), ("builtins", "frozenset"), ("__builtin__", "set"), ("__builtin__", "frozenset")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return set if name == "set" else frozenset
        raise pickle.UnpicklingError(f"it names the global {module}.{name}; a refs file holds only lists, dicts, "
                                     "strings and numbers, so nothing else is loaded (no code from a dataset runs)")


def load_refs(path: Path) -> list[dict]:
    """The ref dicts of a ``refs(*).p``, unpickled with :class:`_PlainUnpickler`; ``RefsFileError`` otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            refs = _PlainUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, MemoryError, RecursionError, OverflowError) as exc:
        raise RefsFileError(f"{path}: not a readable refs pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(refs, list):
        raise RefsFileError(f"{path}: holds a {type(refs).__name__}, not a list of refs")
    bad = next((i for i, r in enumerate(refs) if not isinstance(r, dict)), None)
    if bad is not None:
        raise RefsFileError(f"{path}: ref #{bad} is a {type(refs[bad]).__name__}, not a dict")
    return refs


def find_rrsis_files(root: Path, dataset_name: Optional[str] = None) -> tuple[Path, Path, Path]:
    """(refs pickle, instances.json, image folder) for a root in the layout above, or the dataset folder itself."""
    root = Path(root)
    candidates = []
    if dataset_name:
        candidates.append(root / dataset_name)
    candidates += [root] + sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for ds in candidates:
        refs = sorted(ds.glob("refs(*).p"), key=lambda p: (p.name != "refs(unc).p", p.name))
        if refs and (ds / "instances.json").is_file():
            name = ds.name if ds != root else (dataset_name or ds.name)
            data_root = ds.parent
            image_dirs = [data_root / "images" / name / "JPEGImages", ds / "images" / name / "JPEGImages",
                          ds / "JPEGImages", ds / "images", data_root / "JPEGImages", ds]
            image_dir = next((d for d in image_dirs if d.is_dir() and d != ds), ds)
            return refs[0], ds / "instances.json", image_dir
    raise FileNotFoundError(f"no refs(*).p + instances.json under {root}")


def _bbox_from_segmentation(segm: Any, h: int, w: int) -> Box:
    rles = to_rle_list(segm, h, w)
    rle = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
    x, y, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
    return (x, y, x + bw, y + bh)


def read_rrsis(root: Path, split: Optional[str] = None, *, dataset_name: Optional[str] = None,
               image_dir: Optional[Path] = None, report: Optional[Report] = None) -> list[RefRecord]:
    """All refs (optionally one split) of an RRSIS-layout dataset, with lazily decoded masks.

    ``root`` is the data root (holding ``<name>/refs(unc).p``) or the dataset folder itself; ``image_dir``
    overrides where the image files are looked for (default ``<root>/images/<name>/JPEGImages``). Refs whose
    annotation is missing or undecodable are reported in ``report`` (when given) and left out.
    """
    refs_path, inst_path, found_dir = find_rrsis_files(Path(root), dataset_name)
    image_dir = Path(image_dir) if image_dir is not None else found_dir
    refs = load_refs(refs_path)
    with open(inst_path, encoding="utf-8") as fh:
        inst = json.load(fh)
    images = {int(i["id"]): i for i in inst.get("images", [])}
    anns = {int(a["id"]): a for a in inst.get("annotations", [])}
    cats = {int(c["id"]): str(c.get("name", c["id"])) for c in inst.get("categories", [])}
    out: list[RefRecord] = []
    for ref in refs:
        if split is not None and ref.get("split") != split:
            continue
        where = f"ref {ref.get('ref_id')}"
        img = images.get(int(ref["image_id"]))
        if img is None:
            if report is not None:
                report.error(where, "points to a missing image")
            continue
        h, w = int(img["height"]), int(img["width"])
        sentences = [str(s.get("raw") or s.get("sent") or "") for s in ref.get("sentences", [])]
        common = dict(ref_id=int(ref["ref_id"]), image_id=int(img["id"]),
                      image_path=image_dir / str(img.get("file_name", ref.get("file_name"))), width=w, height=h,
                      split=str(ref.get("split", "")), sentences=[s for s in sentences if s])
        ids = _ann_ids(ref["ann_id"])
        if bool(ref.get("no_target")) and ids:
            if report is not None:
                report.error(where, f"says no_target but names {len(ids)} annotation(s)")
            continue
        if isinstance(ref["ann_id"], (list, tuple)) and len(ids) != 1:  # generalized: several objects or none
            record = _generalized_record(ref, ids, anns, cats, h, w, common, where, report)
            if record is not None:
                out.append(record)
            continue
        ann = anns.get(ids[0]) if ids else None
        if ann is None:
            if report is not None:
                report.error(where, "points to a missing annotation")
            continue
        try:
            bbox = _bbox_from_segmentation(ann["segmentation"], h, w)
        except (SegmentationError, KeyError, TypeError, ValueError) as exc:
            if report is not None:
                report.error(where, f"annotation {ann.get('id')}: {exc}")
            continue
        cid = ref.get("category_id", ann.get("category_id", ann.get("categories_id")))
        if isinstance(cid, (list, tuple)):
            cid = cid[0] if cid else None
        out.append(RefRecord(ann_id=int(ann["id"]), ann_ids=[int(ann["id"])],
                             category=cats.get(int(cid), str(cid)) if cid is not None else "",
                             bbox_xyxy=bbox, segmentation=ann["segmentation"], **common))
    return out


def _ann_ids(value: Any) -> list[int]:
    """A ref's annotation ids: REFER's one integer, or gRefCOCO's list (``[-1]`` = no target)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [int(v) for v in values if int(v) != -1]


def _generalized_record(ref: dict, ids: list[int], anns: dict, cats: dict, h: int, w: int, common: dict,
                        where: str, report: Optional[Report]) -> Optional[RefRecord]:
    """A gRefCOCO-style ref (several objects or none) as a :class:`RefRecord`; None (reported) when unreadable."""
    parts: list[tuple[Any, str, Box]] = []
    for ann_id in ids:
        ann = anns.get(ann_id)
        if ann is None:
            if report is not None:
                report.error(where, f"points to a missing annotation {ann_id}")
            return None
        try:
            box = _bbox_from_segmentation(ann["segmentation"], h, w)
        except (SegmentationError, KeyError, TypeError, ValueError) as exc:
            if report is not None:
                report.error(where, f"annotation {ann_id}: {exc}")
            return None
        cid = ann.get("category_id", ann.get("categories_id"))
        parts.append((ann["segmentation"], cats.get(int(cid), str(cid)) if cid is not None else "", box))
    union: Optional[Box] = None
    if parts:
        boxes = [b for _, _, b in parts]
        union = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                 max(b[3] for b in boxes))
    return RefRecord(ann_id=ids[0] if ids else -1, ann_ids=ids, category=parts[0][1] if parts else "",
                     bbox_xyxy=union, parts=parts, **common)

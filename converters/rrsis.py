"""The RRSIS-D / RefCOCO layout read by REFER-style loaders (lichengunc/refer, reused by LAVT and RMSIN).

Written layout (docs/formats.md)::

    <root>/<name>/refs(unc).p            pickle (protocol 4) of a list of ref dicts
    <root>/<name>/instances.json         COCO images / annotations / categories
    <root>/images/<name>/JPEGImages/<f>  image files: 8-bit RGB sources with their original names and bytes;
                                         any other source (RGBA, grayscale, 16-bit, multi-band) as an
                                         8-bit RGB <stem>.png (the loaders open images without converting)

One ref per object; every expression naming that object is one of its sentences. Segmentations are written
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
from converters.model import ImageItem, ObjectItem, Report
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
        for obj in item.objects:
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
            known = {s["raw"] for s in ref["sentences"]}
            for raw in obj.expressions:
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
    """One RRSIS ref (one object) with its sentences; the mask is decoded on demand by :meth:`load_mask`."""

    ref_id: int
    ann_id: int
    image_id: int
    image_path: Path
    width: int
    height: int
    category: str
    split: str
    sentences: list[str]
    bbox_xyxy: Box
    segmentation: Any = field(default=None, repr=False)
    _mask: Optional[np.ndarray] = field(default=None, repr=False)

    def load_mask(self) -> np.ndarray:
        """The bool (H, W) mask, decoded with pycocotools exactly as REFER's ``getMask`` does (cached)."""
        if self._mask is None:
            self._mask = segmentation_to_mask(self.segmentation, self.height, self.width)
        return self._mask

    @property
    def mask(self) -> np.ndarray:
        return self.load_mask()

    def to_item(self) -> ImageItem:
        """This ref as an :class:`ImageItem` with one object (for :func:`write_rrsis` / the COCO writer)."""
        return ImageItem(source=str(self.image_path), path=self.image_path, width=self.width, height=self.height,
                         objects=[ObjectItem(mask=self.load_mask(), category=self.category,
                                             expressions=list(self.sentences), where=f"ref {self.ref_id}")],
                         split=self.split or None, where=f"ref {self.ref_id}")


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
        ann = anns.get(int(ref["ann_id"]))
        img = images.get(int(ref["image_id"]))
        if ann is None or img is None:
            if report is not None:
                report.error(where, f"points to a missing {'annotation' if ann is None else 'image'}")
            continue
        h, w = int(img["height"]), int(img["width"])
        try:
            bbox = _bbox_from_segmentation(ann["segmentation"], h, w)
        except (SegmentationError, KeyError, TypeError, ValueError) as exc:
            if report is not None:
                report.error(where, f"annotation {ann.get('id')}: {exc}")
            continue
        cid = ref.get("category_id", ann.get("category_id", ann.get("categories_id")))
        sentences = [str(s.get("raw") or s.get("sent") or "") for s in ref.get("sentences", [])]
        out.append(RefRecord(ref_id=int(ref["ref_id"]), ann_id=int(ann["id"]), image_id=int(img["id"]),
                             image_path=image_dir / str(img.get("file_name", ref.get("file_name"))),
                             width=w, height=h, category=cats.get(int(cid), str(cid)) if cid is not None else "",
                             split=str(ref.get("split", "")), sentences=[s for s in sentences if s],
                             bbox_xyxy=bbox, segmentation=ann["segmentation"]))
    return out

"""What the COCO and RRSIS writers share: image files, category ids, annotation ids, streaming JSON.

Memory stays bounded: each object's mask is encoded to compressed RLE as soon as it arrives and written as
one JSON line to a scratch file; ``instances.json`` is assembled from those lines at the end. What stays in
memory per object is a 20-byte mask digest (to merge the same object named by several tasks) and, for RRSIS,
the ref (a few strings).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Optional, Sequence

import numpy as np

from converters.model import ImageItem, ObjectItem, Report

ImageMode = Literal["copy", "link", "symlink", "none"]
SegFormat = Literal["rle", "polygon"]


def place_image(src: Path, dst: Path, mode: ImageMode) -> None:
    """Copy / hard-link / symlink one image file (never re-encoded, so pixels and bytes stay identical)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "copy":
        shutil.copyfile(src, dst)
    elif mode == "link":
        try:
            os.link(src, dst)
        except OSError:  # other file system, or links not allowed: fall back to a symlink
            os.symlink(os.path.abspath(src), dst)
    elif mode == "symlink":
        os.symlink(os.path.abspath(src), dst)


@dataclass
class _ImageEntry:
    id: int
    file_name: str
    width: int
    height: int
    split: Optional[str] = None


def mask_digest(mask: np.ndarray) -> bytes:
    return hashlib.sha1(np.packbits(mask, axis=None).tobytes() + repr(mask.shape).encode()).digest()


class DatasetWriter:
    """Base writer: subclasses choose the layout (``image_dir``, ``instances_path``) and extra records."""

    def __init__(
        self,
        root: Path,
        image_dir: Path,
        instances_path: Path,
        *,
        report: Report,
        image_mode: ImageMode = "copy",
        categories: Optional[Sequence[str]] = None,
        seg_format: SegFormat = "rle",
        segmentation_as_list: bool = False,
        extra_category_key: Optional[str] = None,
        category_id_start: int = 1,
    ) -> None:
        self.root = Path(root)
        self.image_dir = Path(image_dir)
        self.instances_path = Path(instances_path)
        self.report = report
        self.image_mode = image_mode
        self.seg_format = seg_format
        self.segmentation_as_list = segmentation_as_list
        self.extra_category_key = extra_category_key
        self.category_id_start = category_id_start
        self.fixed_categories = categories is not None
        self.categories: dict[str, int] = {}
        for name in categories or []:
            self.categories.setdefault(name, len(self.categories) + category_id_start)
        self.images: dict[str, _ImageEntry] = {}
        self._names: set[str] = set()
        self._objects: dict[tuple[int, bytes], int] = {}
        self._more_expressions: dict[int, list[str]] = {}
        self._next_ann = 1
        self.instances_path.parent.mkdir(parents=True, exist_ok=True)
        self._scratch_images = self.instances_path.parent / ".images.jsonl"
        self._scratch_anns = self.instances_path.parent / ".annotations.jsonl"
        self._img_fh: IO[str] = open(self._scratch_images, "w", encoding="utf-8")
        self._ann_fh: IO[str] = open(self._scratch_anns, "w", encoding="utf-8")

    # ---- images -------------------------------------------------------------------------------------------
    def _unique_name(self, item: ImageItem) -> str:
        base = os.path.basename((item.path.name if item.path is not None else item.source).split("?")[0]) or "image"
        if base not in self._names:
            return base
        stem, ext = os.path.splitext(base)
        return f"{stem}_{hashlib.sha1(item.source.encode()).hexdigest()[:8]}{ext}"

    def image_entry(self, item: ImageItem) -> Optional[_ImageEntry]:
        """The image's entry, registering (and copying) it on first sight; None when the file is missing."""
        entry = self.images.get(item.source)
        if entry is not None:
            if (entry.width, entry.height) != (item.width, item.height):
                self.report.error(item.where, f"image {item.source} seen before with size "
                                  f"{entry.width}x{entry.height}, now {item.width}x{item.height}")
                return None
            return entry
        name = self._unique_name(item)
        if self.image_mode != "none":
            if item.path is None or not item.path.is_file():
                self.report.error(item.where, f"image file for {item.source} not found")
                return None
            placed = self.place(item, name)
            if placed is None:
                return None
            name = placed
        self._names.add(name)
        entry = _ImageEntry(len(self.images) + 1, name, item.width, item.height)
        self.images[item.source] = entry
        record = {"id": entry.id, "file_name": name, "width": item.width, "height": item.height}
        if item.tile is not None:  # a tile of a larger scene: where it lies there (scene, window, transform)
            record["tile"] = item.tile
        self._img_fh.write(json.dumps(record) + "\n")
        self.report.counts["images"] += 1
        return entry

    def place(self, item: ImageItem, name: str) -> Optional[str]:
        """Put the image file of ``item`` into ``image_dir`` as ``name``; returns the name used (None: failed)."""
        place_image(item.path, self.image_dir / name, self.image_mode)  # type: ignore[arg-type]
        return name

    # ---- categories / annotations -------------------------------------------------------------------------
    def category_id(self, name: str, where: str) -> Optional[int]:
        cid = self.categories.get(name)
        if cid is None:
            if self.fixed_categories:
                self.report.error(where, f"unknown label {name!r} (not in the labeling config: "
                                  f"{', '.join(self.categories)})")
                return None
            cid = len(self.categories) + self.category_id_start
            self.categories[name] = cid
        return cid

    def segmentation(self, mask: np.ndarray, where: str) -> object:
        from annotate import masks as M

        if self.seg_format == "polygon":
            holes = M.mask_hole_count(mask)
            polys = M.mask_to_polygons(mask) if not holes else []
            if polys:
                return polys
            self.report.warnings.append(
                f"{where}: mask has {holes} hole(s), which COCO polygons cannot express (readers disagree on "
                f"them), written as RLE" if holes else f"{where}: mask too thin for a polygon, written as RLE")
        rle = M.coco_rle_encode(mask)
        counts = rle["counts"]
        rle = {"size": [int(rle["size"][0]), int(rle["size"][1])],
               "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
        return [rle] if self.segmentation_as_list else rle

    def add_object(self, entry: _ImageEntry, obj: ObjectItem, with_expressions: bool = False,
                   ) -> tuple[Optional[int], bool]:
        """Write the object's annotation; returns (annotation id, is_new). Same mask on same image = same id.

        ``with_expressions`` stores the object's expressions in an extra ``expressions`` field (COCO readers
        ignore unknown fields; ``pslg import coco`` reads it back), merged over every task naming the object.
        """
        from annotate import masks as M

        if obj.mask.shape != (entry.height, entry.width):
            self.report.error(obj.where, f"mask size {obj.mask.shape[1]}x{obj.mask.shape[0]} differs from the "
                              f"image size {entry.width}x{entry.height}")
            return None, False
        area = int(M.mask_area(obj.mask))
        if area == 0:
            self.report.error(obj.where, "empty mask")
            return None, False
        cid = self.category_id(obj.category, obj.where)
        if cid is None:
            return None, False
        key = (entry.id, mask_digest(obj.mask))
        if key in self._objects:
            ann_id = self._objects[key]
            if with_expressions and obj.expressions:
                self._more_expressions.setdefault(ann_id, []).extend(obj.expressions)
            return ann_id, False
        ann_id = self._next_ann
        self._next_ann += 1
        self._objects[key] = ann_id
        ann = {"id": ann_id, "image_id": entry.id, "category_id": cid,
               "segmentation": self.segmentation(obj.mask, obj.where), "area": area,
               "bbox": [float(v) for v in M.mask_to_bbox(obj.mask)], "iscrowd": 0}
        if self.extra_category_key:
            ann[self.extra_category_key] = cid
        if with_expressions and obj.expressions:
            ann["expressions"] = list(dict.fromkeys(obj.expressions))
        self._ann_fh.write(json.dumps(ann, separators=(",", ":")) + "\n")
        self.report.counts["annotations"] += 1
        return ann_id, True

    def category_records(self) -> list[dict]:
        return [{"id": cid, "name": name, "supercategory": name} for name, cid in self.categories.items()]

    # ---- finishing ----------------------------------------------------------------------------------------
    def _write_instances(self, extra: Optional[dict] = None) -> None:
        self._img_fh.close()
        self._ann_fh.close()
        with open(self.instances_path, "w", encoding="utf-8") as out:
            out.write("{")
            if extra:
                for k, v in extra.items():
                    out.write(f"{json.dumps(k)}: {json.dumps(v)}, ")
            for key, scratch in (("images", self._scratch_images), ("annotations", self._scratch_anns)):
                out.write(f'"{key}": [')
                first = True
                with open(scratch, encoding="utf-8") as fh:
                    for line in fh:
                        line = line.rstrip("\n")
                        if key == "annotations" and self._more_expressions:
                            line = self._merge_expressions(line)
                        out.write(("" if first else ",\n") + line)
                        first = False
                out.write("],\n")
            out.write('"categories": ' + json.dumps(self.category_records()) + "}\n")
        os.unlink(self._scratch_images)
        os.unlink(self._scratch_anns)

    def _merge_expressions(self, line: str) -> str:
        ann = json.loads(line)
        more = self._more_expressions.get(ann["id"])
        if not more:
            return line
        ann["expressions"] = list(dict.fromkeys(ann.get("expressions", []) + more))
        return json.dumps(ann, separators=(",", ":"))

    def abort(self) -> None:
        for fh in (self._img_fh, self._ann_fh):
            if not fh.closed:
                fh.close()


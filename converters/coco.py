"""COCO instance files: writing (compressed RLE by default, lossless with holes; polygons on request) and
reading (any spelling, including the RRSIS-D quirks) into :class:`~converters.model.ImageItem` values.

Layout written by :class:`CocoWriter`::

    <out>/annotations.json      images / annotations / categories
    <out>/images/<file_name>    the image files, copied or linked unchanged (``--images none`` skips them)
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Optional, Sequence

from converters.model import ImageItem, ObjectItem, Report
from annotate.masks import SegmentationError, segmentation_to_mask
from converters.writer import DatasetWriter, ImageMode, SegFormat


class CocoWriter(DatasetWriter):
    """Streams :class:`ImageItem` values into a COCO folder (one annotation per distinct mask per image)."""

    def __init__(self, root: Path, *, report: Report, image_mode: ImageMode = "copy",
                 categories: Optional[Sequence[str]] = None, seg_format: SegFormat = "rle") -> None:
        super().__init__(root, Path(root) / "images", Path(root) / "annotations.json", report=report,
                         image_mode=image_mode, categories=categories, seg_format=seg_format)

    def add(self, item: ImageItem) -> None:
        entry = self.image_entry(item)
        if entry is None:
            return
        for obj in item.objects:
            self.add_object(entry, obj, with_expressions=True)

    def close(self) -> None:
        self._write_instances({"info": {"description": "written by pslg export coco"}})


def _category_key(ann: dict) -> Optional[int]:
    for key in ("category_id", "categories_id"):
        if key in ann and ann[key] is not None:
            return int(ann[key])
    return None


def load_instances(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_coco(annotations: Path, image_dir: Optional[Path] = None, report: Optional[Report] = None,
              ) -> Iterator[ImageItem]:
    """Yield one :class:`ImageItem` per COCO image with all its annotations decoded to masks.

    ``annotations`` may be the JSON file or a folder holding ``annotations.json`` / ``instances.json``.
    Images are looked up in ``image_dir`` (default: ``images/`` beside the JSON, then the JSON's folder).
    Annotations that cannot be decoded are reported in ``report`` and left out; the rest continue.
    """
    annotations = Path(annotations)
    if annotations.is_dir():
        for name in ("annotations.json", "instances.json"):
            if (annotations / name).is_file():
                annotations = annotations / name
                break
        else:
            raise FileNotFoundError(f"no annotations.json or instances.json in {annotations}")
    report = report if report is not None else Report()
    data = load_instances(annotations)
    cats = {int(c["id"]): str(c.get("name", c["id"])) for c in data.get("categories", [])}
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in data.get("annotations", []):
        by_image[int(ann["image_id"])].append(ann)
    dirs = [image_dir] if image_dir is not None else [annotations.parent / "images", annotations.parent]
    for img in data.get("images", []):
        h, w = int(img["height"]), int(img["width"])
        path = next((Path(d) / img["file_name"] for d in dirs if d and (Path(d) / img["file_name"]).is_file()),
                    None)
        item = ImageItem(source=str(img["file_name"]), path=path, width=w, height=h,
                         where=f"image {img['id']} ({img['file_name']})")
        for ann in by_image.get(int(img["id"]), []):
            where = f"annotation {ann.get('id')} (image {img['file_name']})"
            try:
                mask = segmentation_to_mask(ann.get("segmentation"), h, w)
            except SegmentationError as exc:
                report.error(where, str(exc))
                continue
            cid = _category_key(ann)
            category = cats.get(cid, str(cid)) if cid is not None else "object"
            exprs = [str(e) for e in ann.get("expressions", []) if str(e).strip()]
            item.objects.append(ObjectItem(mask=mask, category=category, expressions=exprs, where=where))
        yield item

"""A minimal REFER reader, written the way lichengunc/refer (reused by LAVT / RMSIN for RRSIS-D) reads data.

It is deliberately independent of ``converters``: it loads ``refs(unc).p`` with plain pickle and
``instances.json`` with json, builds the same indexes (``Refs``, ``Anns``, ``Imgs``, ``Cats``, ``refToAnn``,
``imgToRefs``), and decodes masks like REFER's ``getMask``: a segmentation whose first element is a list is
a polygon set (``frPyObjects``), anything else is passed to ``mask.decode`` as is (a list of RLE dicts),
then summed over the parts. If our writer's output loads here, it loads in RRSIS-D training code.
"""

from __future__ import annotations

import json
import os.path as osp
import pickle

import numpy as np
from pycocotools import mask as maskUtils


class REFER:
    def __init__(self, data_root: str, dataset: str = "rrsisd", splitBy: str = "unc") -> None:
        self.DATA_DIR = osp.join(data_root, dataset)
        self.IMAGE_DIR = osp.join(data_root, "images", dataset, "JPEGImages")
        with open(osp.join(self.DATA_DIR, f"refs({splitBy}).p"), "rb") as fh:
            self.data = {"refs": pickle.load(fh)}
        with open(osp.join(self.DATA_DIR, "instances.json")) as fh:
            instances = json.load(fh)
        self.data["images"] = instances["images"]
        self.data["annotations"] = instances["annotations"]
        self.data["categories"] = instances["categories"]
        self.createIndex()

    def createIndex(self) -> None:
        self.Anns, self.Imgs, self.Cats, self.imgToAnns = {}, {}, {}, {}
        for ann in self.data["annotations"]:
            self.Anns[ann["id"]] = ann
            self.imgToAnns[ann["image_id"]] = self.imgToAnns.get(ann["image_id"], []) + [ann]
        for img in self.data["images"]:
            self.Imgs[img["id"]] = img
        for cat in self.data["categories"]:
            self.Cats[cat["id"]] = cat["name"]
        self.Refs, self.refToAnn, self.annToRef, self.imgToRefs, self.Sents = {}, {}, {}, {}, {}
        for ref in self.data["refs"]:
            self.Refs[ref["ref_id"]] = ref
            self.refToAnn[ref["ref_id"]] = self.Anns[ref["ann_id"]]
            self.annToRef[ref["ann_id"]] = ref
            self.imgToRefs[ref["image_id"]] = self.imgToRefs.get(ref["image_id"], []) + [ref]
            for sent in ref["sentences"]:
                self.Sents[sent["sent_id"]] = sent

    def getRefIds(self, split: str = "") -> list[int]:
        return [r["ref_id"] for r in self.data["refs"] if not split or r["split"] == split]

    def loadRefs(self, ref_ids):
        return [self.Refs[i] for i in ref_ids]

    def getMask(self, ref: dict) -> dict:
        ann = self.refToAnn[ref["ref_id"]]
        image = self.Imgs[ref["image_id"]]
        if type(ann["segmentation"][0]) == list:  # polygon
            rle = maskUtils.frPyObjects(ann["segmentation"], image["height"], image["width"])
        else:
            rle = ann["segmentation"]
        m = maskUtils.decode(rle)
        m = np.sum(m, axis=2)
        m = m.astype(np.uint8)
        area = sum(maskUtils.area(rle))
        return {"mask": m, "area": area}

"""bench/noc.py end to end on a generated COCO set: the SAM checkpoint's own architecture is used by default."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.support.tiny_models import build_tiny_sam, tiny_sam_state_dict


def _noc():
    path = Path(__file__).resolve().parents[2] / "bench" / "noc.py"
    spec = importlib.util.spec_from_file_location("noc_bench", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("noc_bench", module)
    spec.loader.exec_module(module)
    return module


def _coco(tmp_path: Path) -> Path:
    from pycocotools import mask as mask_utils

    img = np.full((96, 96, 3), 90, np.uint8)
    obj = np.zeros((96, 96), np.uint8)
    obj[30:60, 25:70] = 1
    img[obj.astype(bool)] = (220, 210, 200)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    rle = mask_utils.encode(np.asfortranarray(obj))
    rle["counts"] = rle["counts"].decode()
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 96, "height": 96}],
            "categories": [{"id": 1, "name": "slab"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle, "iscrowd": 0}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_a_checkpoint_of_another_architecture_runs_with_the_default_model_type(tmp_path: Path, monkeypatch) -> None:
    import annotate.segmenters.sam as sam_mod

    # an official-format (bare state_dict) checkpoint that detection reads as ViT-H; "ViT-H" is the tiny model here
    ckpt = tmp_path / "sam_vit_h.pth"
    torch.save(tiny_sam_state_dict(), ckpt)
    monkeypatch.setattr(sam_mod, "detect_model_type", lambda state_dict: "vit_h")
    monkeypatch.setitem(sam_mod.sam_model_registry, "vit_h", lambda checkpoint=None: build_tiny_sam(0))
    noc = _noc()
    args = ["--coco", str(_coco(tmp_path)), "--image-root", str(tmp_path), "--max-clicks", "2", "--device", "cpu",
            "--checkpoint", str(ckpt), "--json", str(tmp_path / "out.json")]
    assert noc.main(args) == 0
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["segmenter"].startswith("sam-vit_h")
    assert report["overall"]["n"] == 1 and report["overall"]["ignored_share"] == 0.0
    # asking for another architecture still fails with the message that names the right one
    from annotate.segmenters.sam import SamCheckpointError

    with pytest.raises(SamCheckpointError, match="holds a vit_h model but model type vit_b"):
        noc.main(args + ["--model-type", "vit_b"])

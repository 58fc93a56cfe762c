"""Synthetic Label Studio exports with exact masks (from :func:`annotate.synthetic.make_scene`).

Used by the converter tests and by ``bench/export_speed.py``: the masks that went into the brush RLE are
returned alongside, so a round trip can be checked pixel by pixel without any real data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from converters.labelstudio.brush import brush_rle_encode
from annotate.synthetic import make_scene
from converters.labelstudio import brush_region, textarea_region

Layout = Literal["per-task", "per-region"]


@dataclass
class TruthObject:
    image: Path
    mask: np.ndarray
    category: str
    expressions: list[str]


def write_synthetic_export(folder: Path, *, n_images: int = 3, tasks_per_image: int = 4, layout: Layout = "per-task",
                           size: int = 256, seed: int = 0, relative: bool = True, repeat_scenes: int = 0,
                           ) -> tuple[Path, list[TruthObject]]:
    """Write images and ``export.json`` under ``folder``; return (export path, objects with exact masks).

    ``per-task``: one task per (object, expression) with ``data.expression`` (RRSIS-D set-up);
    ``per-region``: one image-only task per image, each object a brush region with a per-region TextArea.
    ``relative`` stores image paths relative to ``folder`` (resolved with ``--image-root``), else absolute.
    ``repeat_scenes`` > 0 draws only that many distinct scenes and reuses them (for fast big benchmarks);
    every image file is still distinct.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    tasks: list[dict] = []
    truth: list[TruthObject] = []
    scenes: dict[int, tuple] = {}
    by_object: dict[tuple[int, int], TruthObject] = {}
    task_id = 1
    for i in range(n_images):
        key = i % repeat_scenes if repeat_scenes else i
        if key not in scenes:
            scene = make_scene(seed=seed + key, height=size, width=size, n_objects=4)
            ok, png = cv2.imencode(".png", cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
            assert ok
            rles = [brush_rle_encode(o.mask) for o in scene.objects]
            scenes[key] = (scene, png.tobytes(), rles)
        scene, png, rles = scenes[key]
        img_path = folder / "images" / f"scene_{i:05d}.png"
        img_path.write_bytes(png)
        ref = f"images/{img_path.name}" if relative else str(img_path)
        objs = scene.objects
        if layout == "per-task":
            for k in range(tasks_per_image):
                j = k % len(objs)
                o = objs[j]
                expr = o.expression if k < len(objs) else f"{o.expression} (variant {k // len(objs)})"
                region = {"id": f"r{task_id}", "type": "brushlabels", "from_name": "tag", "to_name": "image",
                          "original_width": size, "original_height": size, "image_rotation": 0,
                          "value": {"format": "rle", "rle": rles[j], "brushlabels": [o.category]}}
                tasks.append({"id": task_id, "data": {"image": ref, "expression": expr, "category": o.category},
                              "annotations": [{"id": task_id, "was_cancelled": False, "ground_truth": False,
                                               "result": [region], "completed_by": 1,
                                               "updated_at": "2026-01-01T00:00:00Z"}]})
                existing = by_object.get((i, j))
                if existing is None:
                    by_object[(i, j)] = TruthObject(img_path, o.mask, o.category, [expr])
                    truth.append(by_object[(i, j)])
                else:
                    existing.expressions.append(expr)
                task_id += 1
        else:
            result: list[dict] = []
            for j, o in enumerate(objs):
                rid = f"t{task_id}r{j}"
                result.append(brush_region(o.mask, o.category, region_id=rid))
                exprs = [o.expression, f"{o.category.replace('_', ' ')} number {j}"]
                result.append(textarea_region(exprs, rid))
                truth.append(TruthObject(img_path, o.mask, o.category, exprs))
            tasks.append({"id": task_id, "data": {"image": ref},
                          "annotations": [{"id": task_id, "was_cancelled": False, "result": result,
                                           "completed_by": 1, "updated_at": "2026-01-01T00:00:00Z"}]})
            task_id += 1
    export = folder / "export.json"
    with open(export, "w", encoding="utf-8") as fh:
        fh.write("[\n")
        for n, t in enumerate(tasks):
            fh.write(("" if n == 0 else ",\n") + json.dumps(t))
        fh.write("\n]\n")
    return export, truth

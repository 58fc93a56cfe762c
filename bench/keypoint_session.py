"""Clicks as Label Studio's browser sends them: pre-label → 3 keypoint-only requests, through the backend's routes.

What the browser sends (docs/formats.md): a batch ``/predict`` pre-labels the task (its expression and its box,
here the ground-truth box jittered by ±10 % per side, ``numpy.random.default_rng(seed)``); Label Studio stores
that prediction and sends it back inside the task with every interactive request; each smart-keypoint click
then posts ``params.context.result`` = the keypoints on the canvas (no rectangle, no pre-label). Two flows:

* ``keep`` (default): the annotator leaves the suggestions pending, so each request carries every keypoint so far;
* ``accept``: each suggestion is accepted (auto-accept on), which removes the keypoints: each request carries
  only the newest click.

Each click goes where ``bench/noc.py``'s simulator puts it (the innermost pixel of the larger error of the mask
the annotator sees). The requests go through the real Flask app (``backend.app.create_app`` with its runtime,
as ``pslg serve`` runs it) in this process, so the figures include parsing, the image cache, the RLE codec and
the sessions, but not a socket.

Printed per class and overall: ``n``, mean IoU of the pre-label and after 1, 2 and 3 clicks, the share of
clicks after which IoU is lower than before (``lowered``), and the share of answers after 3 clicks with more
than 10 % of their area outside the task's box (``spill``), and the share of clicks answered with an error
(``failed``: Label Studio then shows no suggestion, so the mask the annotator sees stays as it was).

    python bench/keypoint_session.py --coco INSTANCES.json --image-root DIR [--flow keep|accept] [--json OUT]
    python bench/keypoint_session.py --isaid ISAID_DEVKIT_DIR [...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from noc import coco_images, isaid_images, jittered_box, next_click

CLICKS = 3


def _keypoint(point: tuple[float, float], label: int, w: int, h: int) -> dict:
    return {"type": "keypointlabels", "from_name": "point", "to_name": "image", "original_width": w,
            "original_height": h, "is_positive": bool(label),
            "value": {"x": 100.0 * point[0] / w, "y": 100.0 * point[1] / h, "keypointlabels": ["object"]}}


def _client(settings):
    """The backend's Flask app around its own runtime (what ``pslg serve`` runs), as an in-process client."""
    from backend.app import create_app
    from backend.runtime import Runtime

    runtime = Runtime(settings)
    if not runtime.engine.wait_ready(300):
        raise SystemExit(f"the backend's models did not load: {runtime.engine.error}")
    app = create_app(settings, runtime=runtime)
    return app.test_client()


def _config(categories: Sequence[str]) -> str:
    labels = "".join(f'<Label value="{c}"/>' for c in sorted(set(categories)))
    return (f'<View><Text name="expression" value="$expression"/><Image name="image" value="$image"/>'
            f'<BrushLabels name="tag" toName="image">{labels}</BrushLabels>'
            f'<RectangleLabels name="box" toName="image" smart="true">{labels}</RectangleLabels>'
            f'<KeyPointLabels name="point" toName="image" smart="true" smartOnly="true">{labels}</KeyPointLabels>'
            f'</View>')


def _mask_of(prediction: dict, h: int, w: int) -> np.ndarray:
    from converters.labelstudio.brush import brush_rle_decode

    brushes = [r for r in prediction.get("result", []) if r.get("type") == "brushlabels"]
    if not brushes:
        return np.zeros((h, w), bool)
    return brush_rle_decode(brushes[0]["value"]["rle"], h, w)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def _spill(mask: np.ndarray, box) -> float:
    area = np.count_nonzero(mask)
    if not area:
        return 0.0
    x0, y0, x1, y1 = box
    inside = np.zeros_like(mask)
    inside[int(max(0, np.floor(y0))):int(np.ceil(y1)), int(max(0, np.floor(x0))):int(np.ceil(x1))] = True
    return float(np.count_nonzero(mask & ~inside) / area)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--coco", type=Path)
    src.add_argument("--isaid", type=Path)
    ap.add_argument("--image-root", type=Path)
    ap.add_argument("--flow", choices=("keep", "accept"), default="keep")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="at most this many instances (0 = all)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import logging

    from backend.config import Settings

    logging.getLogger("pslg").setLevel(logging.ERROR)  # failed clicks are counted, not logged one by one

    if args.coco is not None:
        if args.image_root is None:
            ap.error("--coco needs --image-root")
        images = list(coco_images(args.coco, args.image_root))
    else:
        images = list(isaid_images(args.isaid))
    rng = np.random.default_rng(args.seed)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="pslg-kp-") as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        categories = [inst.category for _, _, insts in images for inst in insts]
        config = _config(categories)
        client = _client(Settings(model_dir=Path(tmp) / "model", local_files_root=str(root), workers=1))
        task_id = 0
        for name, rgb, instances in images:
            h, w = rgb.shape[:2]
            fname = f"img{len(rows)}_{Path(name).stem}.png"
            cv2.imwrite(str(root / fname), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            for inst in instances:
                if args.limit and len(rows) >= args.limit:
                    break
                task_id += 1
                box = jittered_box(inst.mask, rng)
                task = {"id": task_id, "data": {"image": f"/data/local-files/?d={fname}", "expression": inst.category,
                                                "category": inst.category,
                                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]},
                        "annotations": [], "predictions": [], "drafts": []}
                [pre] = client.post("/predict", json={"tasks": [task], "project": "1.1", "label_config": config,
                                                      "params": {}}).get_json()["results"]
                task["predictions"] = [dict(pre, id=task_id)]
                shown = _mask_of(pre, h, w)
                ious = [_iou(shown, inst.mask)]
                failed = 0
                keypoints: list[dict] = []
                for _ in range(CLICKS):
                    click = next_click(shown, inst.mask)
                    if click is None:
                        ious.append(ious[-1])
                        continue
                    kp = _keypoint(click[0], click[1], w, h)
                    keypoints = keypoints + [kp] if args.flow == "keep" else [kp]
                    [ans] = client.post("/predict", json={"tasks": [task], "project": "1.1", "label_config": config,
                                                          "params": {"context": {"result": keypoints}}}).get_json()["results"]
                    if ans.get("result"):  # a failed answer shows no suggestion: the annotator still sees the mask
                        shown = _mask_of(ans, h, w)
                    else:
                        failed += 1
                    ious.append(_iou(shown, inst.mask))
                rows.append({"category": inst.category, "ious": ious, "spill": _spill(shown, box), "failed": failed})
    report = summarise(rows)
    report["flow"] = args.flow
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


def summarise(rows: Sequence[dict]) -> dict:
    def block(rs: Sequence[dict]) -> dict:
        ious = np.array([r["ious"] for r in rs])
        lowered = np.mean(ious[:, 1:] < ious[:, :-1] - 1e-9) if len(rs) else 0.0
        return {"n": len(rs), **{f"iou@{k}": float(ious[:, k].mean()) for k in range(CLICKS + 1)},
                "lowered": float(lowered), "spill": float(np.mean([r["spill"] > 0.10 for r in rs])),
                "failed": float(np.mean([r["failed"] for r in rs]) / CLICKS) if rs else 0.0}

    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["category"]].append(r)
    return {"overall": block(rows), "per_class": {c: block(rs) for c, rs in sorted(by.items())}}


def _print(report: dict) -> None:
    cols = ["n"] + [f"iou@{k}" for k in range(CLICKS + 1)] + ["lowered", "spill", "failed"]
    print(f"flow: {report['flow']}")
    print("| class | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, b in list(report["per_class"].items()) + [("**all**", report["overall"])]:
        cells = [str(b["n"])] + [f"{b[c]:.3f}" for c in cols[1:]]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    raise SystemExit(main())

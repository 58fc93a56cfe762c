"""Stage 2 on real iSAID instances: does the weights-free segmenter (± CFPG, ± MBO) beat filling the box?

Protocol (fixed, so runs are comparable): iSAID train/images/P0005 + val/images/P0003 (190 human instance
masks); each instance's ground-truth box is jittered by ±10 % of its width/height, uniformly and independently
per side, with ``numpy.random.default_rng(0)`` drawn in image order then instance-id order (what a loose
annotator's or a grounding model's box looks like); every method gets the same boxes. ``--dev`` adds
val/images/P0004 (116 instances) as a separate held-out line: hyperparameters were chosen on it and on the
method's own logic, never per instance.

    python bench/stage2_isaid.py [--data ../shared/data] [--protocol both] [--dev] [--limit N]

Timings are wall ms per instance in this process (single thread OpenCV by default, ``--threads``), noisy on a
shared machine: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from annotate import defaults
from annotate.factory import build_pipeline, build_segmenter
from annotate.metrics import rrsis_scores
from annotate.pipeline import Pipeline
from annotate.segmenters.base import Segmenter
from annotate.types import Box, Prompt

REPO_ROOT = Path(__file__).resolve().parents[1]

BENCH_IMAGES: tuple[str, ...] = ("train/images/P0005", "val/images/P0003")
DEV_IMAGES: tuple[str, ...] = ("val/images/P0004",)
JITTER = 0.10
CLASS_COLOURS = {(0, 0, 127): "small_vehicle", (0, 127, 127): "large_vehicle", (0, 63, 63): "storage_tank"}


@dataclass
class Instance:
    mask: np.ndarray
    box: Box  # jittered
    category: str


@dataclass
class BenchImage:
    name: str
    rgb: np.ndarray
    instances: list[Instance]


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_isaid(data: Path, images: Sequence[str], jitter: float = JITTER, seed: int = 0) -> list[BenchImage]:
    """The iSAID images with their instance masks and jittered boxes (see the module docstring)."""
    root = data / "isaid_devkit"
    if not root.is_dir():
        raise SystemExit(
            f"iSAID sample data not found at {root}: pass --data pointing at the shared data folder "
            "(the one holding isaid_devkit/), it is only present on project machines"
        )
    rng = np.random.default_rng(seed)
    out: list[BenchImage] = []
    for rel in images:
        rgb, found = isaid_instances(root, rel)
        instances = []
        for mask, cat in found:
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
            w, h = x1 - x0, y1 - y0
            j = rng.uniform(-jitter, jitter, size=4)
            box = (x0 + j[0] * w, y0 + j[1] * h, x1 + j[2] * w, y1 + j[3] * h)
            instances.append(Instance(mask=mask, box=box, category=cat))
        out.append(BenchImage(name=Path(rel).name, rgb=rgb, instances=instances))
    return out


def isaid_instances(root: Path, rel: str) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
    """One iSAID image (``rel`` without extension, under ``root``) and its instances as (mask, class name):
    ids from ``*_instance_id_RGB.png`` (R + 256·G + 65536·B, 0 = background), classes from the colour PNG."""
    rgb = _read_rgb(root / f"{rel}.png")
    ids_rgb = _read_rgb(root / f"{rel}_instance_id_RGB.png").astype(np.int64)
    colour = _read_rgb(root / f"{rel}_instance_color_RGB.png")
    ids = ids_rgb[..., 0] + 256 * ids_rgb[..., 1] + 65536 * ids_rgb[..., 2]
    found = []
    for iid in np.unique(ids):
        if iid == 0:
            continue
        mask = ids == iid
        ys, xs = np.nonzero(mask)
        found.append((mask, CLASS_COLOURS.get(tuple(int(v) for v in colour[ys[0], xs[0]]), "other")))
    return rgb, found


def box_fill(shape: tuple[int, int], box: Box) -> np.ndarray:
    """The baseline: every pixel of the (rounded, clipped) box is foreground."""
    m = np.zeros(shape, bool)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    m[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
    return m


@dataclass
class MethodResult:
    name: str
    preds: list[np.ndarray]
    gts: list[np.ndarray]
    scores: list[float]
    ms_per_instance: float
    cpu_ms_per_instance: float


def run_method(name: str, images: list[BenchImage], make: Optional[Callable[[], Pipeline]]) -> MethodResult:
    preds, gts, scores = [], [], []
    n = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    for img in images:
        if make is None:
            for inst in img.instances:
                preds.append(box_fill(img.rgb.shape[:2], inst.box))
                scores.append(1.0)
        else:
            pipe = make()
            results = pipe.run(img.rgb, [Prompt(box=inst.box) for inst in img.instances])
            for res in results:
                if not res.ok:
                    raise SystemExit(f"{name}: a prompt failed on {img.name}: {res.error}")
                preds.append(res.mask)
                scores.append(res.score)
        gts.extend(inst.mask for inst in img.instances)
        n += len(img.instances)
    ms = (time.perf_counter() - t0) * 1000.0 / max(1, n)
    cpu = (time.process_time() - c0) * 1000.0 / max(1, n)
    return MethodResult(name, preds, gts, scores, ms, cpu)


def methods(segmenter_factory: Callable[[], Segmenter]) -> list[tuple[str, Optional[Callable[[], Pipeline]]]]:
    def pipe(cfpg: bool, mbo: bool) -> Callable[[], Pipeline]:
        return lambda: build_pipeline(segmenter=segmenter_factory(), use_cfpg=cfpg, use_mbo=mbo)

    return [
        ("box fill (baseline)", None),
        ("segmenter, box only", pipe(False, False)),
        ("+ CFPG point", pipe(True, False)),
        ("+ MBO", pipe(False, True)),
        ("full (CFPG + MBO)", pipe(True, True)),
        ("defaults for this segmenter", lambda: build_pipeline(segmenter=segmenter_factory())),
    ]


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if np.ptp(np.asarray(a, float)) == 0 or np.ptp(np.asarray(b, float)) == 0:
        return float("nan")  # a constant score ranks nothing
    return float(spearmanr(a, b)[0])


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data", help="shared data folder")
    ap.add_argument("--protocol", choices=("native", "480", "both"), default="both")
    ap.add_argument("--dev", action="store_true", help="also report the held-out dev image val/P0004")
    ap.add_argument("--limit", type=int, default=0, help="only the first N instances per image (quick look)")
    ap.add_argument("--threads", type=int, default=1, help="OpenCV threads (1 = per-instance cost on one core)")
    ap.add_argument("--checkpoint", default=None, help="a SAM checkpoint: bench SAM instead of the classical segmenter")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    cv2.setNumThreads(max(1, args.threads))
    console = Console(width=120)
    shared: dict[str, Segmenter] = {}

    def factory() -> Segmenter:  # one segmenter per run (SAM loads once)
        if "seg" not in shared:
            shared["seg"] = build_segmenter(args.checkpoint, device=args.device)
        return shared["seg"]

    sets = [("bench (P0005 + P0003)", BENCH_IMAGES)]
    if args.dev:
        sets.append(("dev (P0004, held out)", DEV_IMAGES))
    protocols = ["native", "480"] if args.protocol == "both" else [args.protocol]
    for title, rels in sets:
        images = load_isaid(args.data, rels)
        if args.limit:
            for img in images:
                img.instances = img.instances[: args.limit]
        n = sum(len(i.instances) for i in images)
        seg_name = factory().name
        results = [run_method(name, images, make) for name, make in methods(factory)]
        for protocol in protocols:
            table = Table(title=f"stage 2 on iSAID — {title}, {n} instances, boxes ±{JITTER:.0%} jitter, "
                          f"segmenter {seg_name}, protocol {protocol}")
            for col in ("method", "mIoU", "oIoU", "Pr@0.5", "Pr@0.7", "Pr@0.9", "ms/inst", "CPU ms/inst", "score ρ"):
                table.add_column(col, justify="left" if col == "method" else "right")
            for r in results:
                s = rrsis_scores(r.preds, r.gts, protocol=protocol)
                ious = [float(np.count_nonzero(p & g)) / max(1, np.count_nonzero(p | g)) for p, g in zip(r.preds, r.gts)]
                rho = _spearman(r.scores, ious)
                table.add_row(
                    r.name, f"{s.miou:.3f}", f"{s.oiou:.3f}", f"{s.precision[0.5]:.3f}", f"{s.precision[0.7]:.3f}",
                    f"{s.precision[0.9]:.3f}", f"{r.ms_per_instance:.1f}", f"{r.cpu_ms_per_instance:.1f}", "—" if np.isnan(rho) else f"{rho:.2f}",
                )
            console.print(table)
    console.print("ms/inst: wall time per instance including set_image (noisy on a shared machine); CPU ms/inst: "
                  "this process's CPU time per instance (OpenCV threads: %d); 'score ρ': Spearman rank correlation "
                  "between the returned confidence and the instance's IoU; defaults for %s: CFPG %s, MBO %s."
                  % (args.threads, seg_name, defaults.use_cfpg_for(seg_name), defaults.use_mbo_for(seg_name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

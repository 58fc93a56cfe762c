"""The active-learning loop, measured: do corrections improve the next pre-labels, and does `select` pick better?

Simulated annotators: the human masks of a COCO instances file stand in for corrections. Prompts are the
ground-truth boxes jittered by ±10 % of their size per side (``numpy.random.default_rng(seed)``, in annotation
order), with the instance's category as the task's label. Round 0 pre-labels every instance with today's
weights-free stage 2 (no learned priors, today's score). Each round then

1. chooses a batch (``--batch`` share of all instances) from the not-yet-labelled pool, by ``annotate.selection``
   (``--strategy select``: uncertainty + diversity, stratified random while the quality estimate is unfitted)
   or uniformly at random (``--strategy random``);
2. "corrects" it: its human masks join the labelled set, each beside the pre-label it replaced;
3. learns as the backend's Start Training does: a candidate (shape priors from the labelled masks in their prompt
   boxes, ``annotate.priors``; the quality estimate from the (pre-label features, IoU) pairs, ``annotate.quality``)
   validated on the labelled instances held out by image (``annotate.promotion``): each class keeps what it is
   served until its learned prior wins there (``--no-promotion``: every prior served at once, as before);
4. pre-labels the remaining pool again with the learned priors and scores them with the quality estimate.

Per round it prints and writes ``{"rounds": [{"round", "labelled", "pool_miou", "pool_pr70",
"needs_correction" (share with IoU < 0.85), "score_spearman", "score_ties", "per_class": {"class": {"miou", "n"}},
"pool_miou_round0", "per_class_round0", "pool_miou_previous", "per_class_previous", "adoption"}], "worst"}``
(``worst``: the largest pooled and per-class losses, classes with ≥ 5 pool instances); with ``--seeds`` one such
run per seed under ``"runs"``. ``--plot`` draws the learning curves of every JSON given with ``--compare``
beside this run's; ``--plot-classes`` the per-class curves.

    python bench/active_loop.py --coco INSTANCES.json --image-root DIR [--rounds 3] [--batch 0.1 | --batch 6]
        [--strategy select|random] [--seed 0] [--seeds 0,1,2] [--no-promotion] [--json OUT.json]
        [--plot OUT.png] [--plot-classes OUT.png] [--compare OTHER.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from annotate.factory import build_pipeline
from annotate.geometry import clip_box, mask_iou
from annotate.masks import segmentation_to_mask
from annotate.priors import PriorSample, ShapePriors
from annotate.promotion import ADOPT_MIN_SAMPLES, Pair, pipeline_segment, validate_priors
from annotate.quality import ADOPT_MARGIN, QualityModel, spearman
from annotate.segmenters.classical import ClassicalSegmenter
from annotate.selection import Candidate, region_features, select_batch
from annotate.types import Box, Prompt

JITTER = 0.10
NEEDS_CORRECTION_IOU = 0.85
#: instances timed at the end (with and without what was learned) for the cost ratio
COST_INSTANCES = 60


@dataclass
class Instance:
    index: int
    image: str
    mask: np.ndarray
    box: Box  # jittered prompt box
    category: str
    features: list[float] = field(default_factory=list)


def load_coco(coco: Path, image_root: Path, seed: int, jitter: float = JITTER) -> tuple[dict[str, np.ndarray], list[Instance]]:
    data = json.loads(coco.read_text(encoding="utf-8"))
    cats = {c["id"]: c["name"] for c in data["categories"]}
    cat_index = {name: i for i, name in enumerate(sorted(set(cats.values())))}
    images = {im["id"]: im for im in data["images"]}
    rng = np.random.default_rng(seed)
    pixels: dict[str, np.ndarray] = {}
    instances: list[Instance] = []
    for ann in data["annotations"]:
        im = images[ann["image_id"]]
        name = im["file_name"]
        if name not in pixels:
            bgr = cv2.imread(str(image_root / name), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SystemExit(f"cannot read image {image_root / name}")
            pixels[name] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = pixels[name].shape[:2]
        mask = segmentation_to_mask(ann["segmentation"], h, w).astype(bool)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            continue
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0
        bw, bh = x1 - x0, y1 - y0
        d = rng.uniform(-jitter, jitter, 4) * np.array([bw, bh, bw, bh])
        box = clip_box((x0 + d[0], y0 + d[1], x1 + d[2], y1 + d[3]), w, h)
        category = cats[ann["category_id"]]
        ix0, iy0, ix1, iy1 = (int(round(v)) for v in box)
        mean_rgb = pixels[name][iy0:max(iy1, iy0 + 1), ix0:max(ix1, ix0 + 1)].reshape(-1, 3).mean(axis=0)
        feats = region_features(box, (w, h), None, cat_index[category], len(cat_index), mean_rgb)
        instances.append(Instance(len(instances), name, mask, box, category, feats))
    return pixels, instances


@dataclass
class Prelabel:
    mask: np.ndarray
    iou: float
    score: float
    features: dict


def prelabel(pixels: dict[str, np.ndarray], instances: Sequence[Instance], priors: Optional[ShapePriors],
             quality: QualityModel) -> dict[int, Prelabel]:
    """Pre-label ``instances`` with the weights-free pipeline (learned priors when given), one image at a time."""
    pipeline = build_pipeline(segmenter=ClassicalSegmenter(priors=priors))
    out: dict[int, Prelabel] = {}
    by_image: dict[str, list[Instance]] = {}
    for inst in instances:
        by_image.setdefault(inst.image, []).append(inst)
    for name, group in by_image.items():
        results = pipeline.run(pixels[name], [Prompt(box=i.box, category=i.category) for i in group], image_key=name)
        for inst, res in zip(group, results):
            mask = res.mask if res.ok else np.zeros_like(inst.mask)
            out[inst.index] = Prelabel(mask, mask_iou(mask, inst.mask), quality.score(res), dict(res.features))
    return out


def per_class(pool: dict[int, Prelabel], instances: Sequence[Instance]) -> dict[str, dict]:
    """``{"class": {"miou", "n"}}`` over the pool."""
    by: dict[str, list[float]] = {}
    for i, p in pool.items():
        by.setdefault(instances[i].category, []).append(p.iou)
    return {c: {"miou": round(float(np.mean(v)), 4), "n": len(v)} for c, v in sorted(by.items())}


def ties(scores: Sequence[float]) -> float:
    """Share of pool tasks whose score equals another task's exactly: what sorting by score cannot order."""
    if not len(scores):
        return 0.0
    _, counts = np.unique(np.asarray(scores, float), return_counts=True)
    return round(float(counts[counts > 1].sum()) / len(scores), 4)


def round_stats(r: int, labelled: int, pool: dict[int, Prelabel], instances: Sequence[Instance] = ()) -> dict:
    ious = np.array([p.iou for p in pool.values()])
    scores = [p.score for p in pool.values()]
    row = {"round": r, "labelled": labelled, "pool": len(pool),
           "pool_miou": round(float(ious.mean()), 4) if len(ious) else None,
           "pool_pr70": round(float((ious >= 0.7).mean()), 4) if len(ious) else None,
           "needs_correction": round(float((ious < NEEDS_CORRECTION_IOU).mean()), 4) if len(ious) else None,
           "score_spearman": round(spearman(scores, list(ious)), 4) if len(ious) > 1 else None,
           "score_ties": ties(scores)}
    if instances:
        row["per_class"] = per_class(pool, instances)
    return row


def learn(pixels, instances: Sequence[Instance], labelled: Sequence[int], pairs: list[tuple[dict, float, float]],
          served_priors: Optional[ShapePriors], served_quality: QualityModel, promotion: bool,
          min_samples: int = ADOPT_MIN_SAMPLES) -> tuple[Optional[ShapePriors], QualityModel, Optional[dict]]:
    """What the backend's Start Training serves after these corrections.

    With ``promotion`` (the backend's rule, ``annotate.promotion``): per class, the learned prior only where it wins
    on held-out corrections, the quality estimate only where it ranks them better than the served score. Without:
    every class with enough samples gets its prior, the others the pooled one, and the quality estimate is used
    as soon as it is fitted (the loop before validation).
    """
    quality = QualityModel.fit([f for f, _, _ in pairs], [v for _, v, _ in pairs])
    if not promotion:
        return ShapePriors.fit(PriorSample(instances[j].mask, instances[j].box, instances[j].category)
                               for j in labelled), quality, None
    segment = pipeline_segment(build_pipeline(), pixels.__getitem__)
    held = [Pair(instances[j].image, instances[j].box, instances[j].category, instances[j].mask) for j in labelled]
    v = validate_priors(held, segment, served_priors, min_samples=min_samples)
    served_rho = spearman([s for _, _, s in pairs], [v_ for _, v_, _ in pairs]) if len(pairs) > 1 else 0.0
    if not (quality.fitted and quality.cv_spearman is not None and quality.cv_spearman > served_rho + ADOPT_MARGIN):
        quality = served_quality
    priors = v.priors if v.changed and v.no_worse else served_priors
    decisions = {c: {"choice": d.choice, "n": d.n, "hand": round(d.hand, 4),
                     "learned": None if d.learned is None else round(d.learned, 4)} for c, d in v.classes.items()}
    return priors, quality, decisions


def run_loop(pixels, instances: list[Instance], rounds: int, batch: float, strategy: str, seed: int,
             per_image_cap: Optional[int] = None, log=print, promotion: bool = True,
             first: Optional[dict[int, Prelabel]] = None, cost: bool = True) -> dict:
    """``batch`` < 1 is a share of all instances per round, ≥ 1 a number of instances. ``first``: round 0's
    pre-labels when already made (they do not depend on ``seed``: the prompt jitter has its own seed)."""
    batch_n = int(batch) if batch >= 1 else max(1, int(round(batch * len(instances))))
    quality = QualityModel()
    priors: Optional[ShapePriors] = None
    t = time.perf_counter()
    if first is None:
        first = prelabel(pixels, instances, priors, quality)
    current = dict(first)
    ms = (time.perf_counter() - t) * 1000 / max(1, len(instances))
    labelled: list[int] = []
    pairs: list[tuple[dict, float, float]] = []
    rows = [dict(round_stats(0, 0, current, instances), ms_per_instance=round(ms, 1))]
    log(json.dumps({k: v for k, v in rows[-1].items() if k != "per_class"}))
    rng = np.random.default_rng(seed)
    for r in range(1, rounds + 1):
        pool = [i for i in instances if i.index not in set(labelled)]
        if not pool:
            break
        if strategy == "random":
            picked = [int(v) for v in rng.choice([i.index for i in pool], size=min(batch_n, len(pool)), replace=False)]
        else:
            cands = [Candidate(i.index, i.image, i.features, quality.predict_features(current[i.index].features),
                               None, i.category) for i in pool]
            labelled_feats = [instances[j].features for j in labelled]
            picked = [c.task_id for c in select_batch(cands, batch_n, per_image_cap, seed + r, labelled_feats)]
        for j in picked:  # the annotator corrects the pre-label: the pair (its features, its IoU, its score) is kept
            pairs.append((current[j].features, current[j].iou, current[j].score))
        labelled += picked
        served = (priors, quality)
        priors, quality, decisions = learn(pixels, instances, labelled, pairs, priors, quality, promotion)
        rest = [i for i in instances if i.index not in set(labelled)]
        t = time.perf_counter()
        previous = {i.index: current[i.index] for i in rest}
        if priors is not served[0] or quality is not served[1]:  # nothing new served: the same pre-labels
            current = {**current, **prelabel(pixels, rest, priors, quality)}
        ms = (time.perf_counter() - t) * 1000 / max(1, len(rest))
        row = round_stats(r, len(labelled), {i.index: current[i.index] for i in rest}, instances)
        # the same pool pre-labelled by round 0 (nothing learned) and by the previous round: what learning changed
        row["pool_miou_round0"] = round(float(np.mean([first[i.index].iou for i in rest])), 4) if rest else None
        row["pool_miou_previous"] = round(float(np.mean([previous[i.index].iou for i in rest])), 4) if rest else None
        row["per_class_round0"] = per_class({i.index: first[i.index] for i in rest}, instances)
        row["per_class_previous"] = per_class(previous, instances)
        if decisions is not None:
            row["adoption"] = decisions
        rows.append(dict(row, ms_per_instance=round(ms, 1), quality_fitted=quality.fitted))
        log(json.dumps({k: v for k, v in rows[-1].items() if not k.startswith(("per_class", "adoption"))}))
    out = {"strategy": strategy, "seed": seed, "batch": batch, "instances": len(instances), "rounds": rows,
           "promotion": promotion, "worst": worst_losses(rows)}
    c = cost_ratio(pixels, instances[:COST_INSTANCES], priors, quality) if cost and priors is not None else None
    if c is not None:
        log(json.dumps({"cost": c}))
    out["cost"] = c
    return out


def worst_losses(rows: Sequence[dict], min_n: int = 5) -> dict:
    """The largest losses of any round against round 0 and against the previous round on the same pool: pooled,
    and per class with at least ``min_n`` pool instances (negative = learning made pre-labels worse)."""
    out = {"pool_vs_round0": 0.0, "pool_vs_previous": 0.0, "class_vs_round0": 0.0, "class_vs_previous": 0.0,
           "class_vs_round0_at": None, "class_vs_previous_at": None}
    for row in rows[1:]:
        out["pool_vs_round0"] = min(out["pool_vs_round0"], row["pool_miou"] - row["pool_miou_round0"])
        out["pool_vs_previous"] = min(out["pool_vs_previous"], row["pool_miou"] - row["pool_miou_previous"])
        for ref in ("round0", "previous"):
            for c, v in row["per_class"].items():
                if v["n"] < min_n:
                    continue
                d = v["miou"] - row[f"per_class_{ref}"][c]["miou"]
                if d < out[f"class_vs_{ref}"]:
                    out[f"class_vs_{ref}"], out[f"class_vs_{ref}_at"] = d, f"round {row['round']}: {c}"
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def cost_ratio(pixels, sample: Sequence[Instance], priors: ShapePriors, quality: QualityModel, repeats: int = 2) -> dict:
    """Wall ms per instance without and with the learned priors + quality score, interleaved in this process."""
    times: dict[str, list[float]] = {"today": [], "learned": []}
    for _ in range(repeats):
        for name, p, q in (("today", None, QualityModel()), ("learned", priors, quality)):
            t = time.perf_counter()
            prelabel(pixels, sample, p, q)
            times[name].append((time.perf_counter() - t) * 1000 / max(1, len(sample)))
    today, learned = min(times["today"]), min(times["learned"])
    return {"instances": len(sample), "today_ms": round(today, 1), "learned_ms": round(learned, 1),
            "ratio": round(learned / today, 3)}


def plot(runs: Sequence[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for run in runs:
        x = [row["labelled"] for row in run["rounds"]]
        label = f"{run.get('dataset', '')} {run['strategy']}".strip()
        for ax, key in zip(axes, ("pool_miou", "needs_correction", "score_spearman")):
            ax.plot(x, [row[key] for row in run["rounds"]], marker="o", label=label)
    for ax, key in zip(axes, ("pool mIoU", "share needing correction (IoU < 0.85)", "Spearman ρ(score, IoU)")):
        ax.set_xlabel("instances labelled")
        ax.set_title(key, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def plot_classes(runs: Sequence[dict], out: Path, title: str) -> None:
    """Per-class curves: each class's pool mIoU minus the same pool's round-0 mIoU, per round (one line per run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted({c for run in runs for row in run["rounds"][1:] for c in row["per_class"]})
    cols = min(5, len(classes))
    fig, axes = plt.subplots((len(classes) + cols - 1) // cols, cols, figsize=(3.0 * cols, 2.4 * ((len(classes) + cols - 1) // cols)),
                             squeeze=False)
    for ax, c in zip(axes.flat, classes):
        for run in runs:
            xs, ys = [0], [0.0]
            for row in run["rounds"][1:]:
                if c in row["per_class"]:
                    xs.append(row["labelled"])
                    ys.append(row["per_class"][c]["miou"] - row["per_class_round0"][c]["miou"])
            ax.plot(xs, ys, marker="o", ms=3, label=f"{run.get('label', run['strategy'])} s{run['seed']}")
        n = runs[0]["rounds"][-1]["per_class"].get(c, {}).get("n", 0)
        ax.axhline(0, color="k", lw=0.6)
        ax.axhline(-0.02, color="r", lw=0.6, ls="--")
        ax.set_title(f"{c} (pool n={n})", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(classes):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coco", type=Path, required=True)
    ap.add_argument("--image-root", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=float, default=0.1,
                    help="per round: a share of all instances (< 1) or a number of instances (>= 1, e.g. 6)")
    ap.add_argument("--strategy", choices=("select", "random"), default="select")
    ap.add_argument("--seed", type=int, default=0, help="prompt jitter and, without --seeds, batch choice")
    ap.add_argument("--seeds", default=None, help="several batch-choice seeds, e.g. 0,1,2 (one run each, same prompts)")
    ap.add_argument("--no-promotion", action="store_true",
                    help="learn as before validation: every class's prior (pooled below 3 samples), no held-out check")
    ap.add_argument("--per-image-cap", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--plot-classes", type=Path, default=None, help="per-class curves of this run's seeds")
    ap.add_argument("--compare", type=Path, action="append", default=[], help="earlier --json outputs to plot too")
    ap.add_argument("--name", default=None, help="dataset name in the plot (default: the COCO file's stem)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    pixels, instances = load_coco(args.coco, args.image_root, args.seed)
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
    promotion = not args.no_promotion
    print(f"{len(instances)} instances on {len(pixels)} images; strategy {args.strategy}, seeds {seeds}, "
          f"promotion {'on' if promotion else 'off'}", file=sys.stderr)
    first = prelabel(pixels, instances, None, QualityModel())
    runs = []
    for seed in seeds:
        run = run_loop(pixels, instances, args.rounds, args.batch, args.strategy, seed, args.per_image_cap,
                       promotion=promotion, first=first, cost=len(seeds) == 1)
        run["dataset"] = args.name or args.coco.stem
        run["label"] = f"{args.strategy}{'' if promotion else ' no-promotion'}"
        print(json.dumps({"seed": seed, "worst": run["worst"]}))
        runs.append(run)
    result = runs[0] if len(runs) == 1 else {
        "dataset": args.name or args.coco.stem, "strategy": args.strategy, "batch": args.batch, "seeds": seeds,
        "promotion": promotion, "runs": runs,
        "worst": {k: min(r["worst"][k] for r in runs) for k in runs[0]["worst"] if not k.endswith("_at")},
        "worst_at": [r["worst"] for r in runs],
    }
    if len(runs) > 1:
        print(json.dumps({"worst over seeds": result["worst"]}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.plot:
        others = [json.loads(p.read_text(encoding="utf-8")) for p in args.compare]
        plot([r for o in others for r in o.get("runs", [o])] + runs, args.plot,
             "active loop: weights-free stage 2 learning from simulated corrections")
    if args.plot_classes:
        plot_classes(runs, args.plot_classes, f"{result['dataset']}: per-class pool mIoU − round 0, batch {args.batch:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fine-tuning Grounding DINO on referring expressions (``pslg train grounding``).

How a referring expression becomes a Grounding DINO training target: the expression is the *single phrase* of
the prompt (``"the storage tank at the top left."``) and its one box gets class label 0, which transformers'
loss maps to that phrase's tokens (phrase label maps are built from the text, split at "."). So the model learns
"this whole expression ↔ this box", and the other queries learn "not this expression" — exactly the
referring task, with the detector's own Hungarian-matched loss (focal + L1 + GIoU, encoder and decoder).

Each run writes a new versioned directory ``<out>/grounding-vNNNN-<UTC timestamp>/`` (weights as safetensors,
processor files, ``metrics.json``, ``train_data.json``, ``MODEL_CARD.md``, ``pslg_grounder.json``); the directory
name is the ``model_version`` the backend reports, so Label Studio re-predicts after a retrain. While training,
the directory carries a ``.partial`` suffix and holds ``training_state.pt`` (model + optimiser state after each
epoch): running the same command again resumes from the last finished epoch. The rename to the final name is
the last step, so a finished-looking directory is always complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from annotate.atomic import atomic_path, atomic_write_text
from annotate.device import resolve_device
from annotate.grounding.base import GroundingError
from annotate.grounding.evaluation import BoxScores, GroundingSample, evaluate_boxes, load_rgb
from annotate.grounding.loader import GDINO_TYPES, METADATA_FILE, read_metadata
from annotate.grounding.text import grounding_dino_prompt

VERSION_PREFIX = "grounding-v"
_VERSION_RE = re.compile(r"^grounding-v(\d{4,})-(\d{8}T\d{6}Z)(\.partial)?$")
STATE_FILE = "training_state.pt"
RUN_FILE = "run.json"


@dataclass
class TrainConfig:
    """Hyper-parameters of one fine-tuning run (all recorded in the model directory)."""

    epochs: int = 10
    lr: float = 1e-4
    batch_size: int = 4
    seed: int = 0
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    #: Also update the Swin image backbone and the BERT text encoder. Off by default: with a few hundred or
    #: thousand referring expressions, updating them over-fits and costs most of the memory and time.
    train_backbones: bool = False


@dataclass
class TrainResult:
    path: Path
    version: str
    history: list[float]
    val: Optional[BoxScores]
    resumed_from_epoch: int = 0
    skipped: list[str] = field(default_factory=list)


def list_versions(out_dir: Path, include_partial: bool = False) -> list[Path]:
    """Model directories written by ``pslg train grounding`` under ``out_dir``, oldest first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for p in out_dir.iterdir():
        m = _VERSION_RE.match(p.name)
        if m and p.is_dir() and (include_partial or not m.group(3)):
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_version(out_dir: Path) -> Optional[Path]:
    """The newest finished model directory under ``out_dir`` (None when there is none)."""
    versions = list_versions(out_dir)
    return versions[-1] if versions else None


def _next_version_name(out_dir: Path) -> str:
    numbers = [int(_VERSION_RE.match(p.name).group(1)) for p in list_versions(out_dir, include_partial=True)]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{VERSION_PREFIX}{(max(numbers) + 1 if numbers else 1):04d}-{stamp}"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _signature(base: str, samples: Sequence[GroundingSample], config: TrainConfig) -> str:
    """What must match for a partial run to be resumed: base model, data and hyper-parameters (not epochs)."""
    hp = {k: v for k, v in asdict(config).items() if k != "epochs"}
    data = [(str(s.image_path), s.expression, [round(v, 3) for v in s.box]) for s in samples]
    blob = json.dumps({"base": base, "hp": hp, "data": data}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _find_resumable(out_dir: Path, signature: str) -> Optional[Path]:
    for path in reversed(list_versions(out_dir, include_partial=True)):
        if not path.name.endswith(".partial"):
            continue
        with contextlib.suppress(OSError, ValueError):
            run = json.loads((path / RUN_FILE).read_text(encoding="utf-8"))
            if run.get("signature") == signature:
                return path
    return None


def _resolve_base(base: str | Path) -> str:
    path = Path(str(base)).expanduser()
    return str(path.resolve()) if path.is_dir() else str(base)


def load_trainable(base: str) -> tuple[Any, Any]:
    """The base Grounding DINO model and processor, or ``GroundingError`` naming what is wrong with ``base``."""
    from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor

    try:
        config = AutoConfig.from_pretrained(base)
    except Exception as exc:
        raise GroundingError(f"cannot load the base model {base!r}: {exc}") from exc
    if config.model_type not in GDINO_TYPES:
        raise GroundingError(
            f"the base model {base!r} is {config.model_type!r}; fine-tuning supports Grounding DINO "
            f"({', '.join(GDINO_TYPES)}). OWLv2 is used zero-shot (pslg segment/eval --grounding)."
        )
    try:
        model = AutoModelForZeroShotObjectDetection.from_pretrained(base)
        processor = AutoProcessor.from_pretrained(base)
    except Exception as exc:
        raise GroundingError(f"cannot load the base model {base!r}: {exc}") from exc
    return model, processor


def normalised_cxcywh(box: Sequence[float], width: int, height: int) -> list[float]:
    """A pixel ``(x0, y0, x1, y1)`` box as Grounding DINO's target: centre x/y, width, height in [0, 1]."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    return [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]


def cosine_lr(base_lr: float, step: int, total_steps: int, floor: float = 0.1) -> float:
    """Cosine decay from ``base_lr`` to ``floor × base_lr`` over the run.

    A function of the step alone (no scheduler state), so a resumed run follows the same schedule.
    """
    import math

    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return base_lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _check_samples(samples: Sequence[GroundingSample]) -> tuple[list[GroundingSample], list[str]]:
    """Keep samples with a usable expression, box and existing image; describe the others."""
    good, bad = [], []
    for s in samples:
        where = f"ref {s.ref_id} ({Path(s.image_path).name})"
        try:
            grounding_dino_prompt(s.expression)
        except GroundingError as exc:
            bad.append(f"{where}: {exc}")
            continue
        x0, y0, x1, y1 = s.box
        if not (x1 > x0 and y1 > y0):
            bad.append(f"{where}: empty box {s.box}")
        elif not Path(s.image_path).is_file():
            bad.append(f"{where}: image file {s.image_path} not found")
        else:
            good.append(s)
    return good, bad


def _model_card(meta: dict[str, Any], val: Optional[BoxScores]) -> str:
    lines = [
        f"# {meta['version']}",
        "",
        "Stage-1 grounding model (referring expression → box) fine-tuned by `pslg train grounding`.",
        "",
        f"- Base model: `{meta['base']}`" + (f" (version `{meta['base_version']}`)" if meta.get("base_version") else ""),
        f"- Architecture: {meta['architecture']}",
        f"- Training data: `{meta['data']['root']}` split `train`: {meta['data']['train_samples']} expressions "
        f"({meta['data']['train_refs']} objects); validation: {meta['data']['val_samples']} expressions",
        f"- Created: {meta['created']}; device: {meta['device']}",
        f"- Hyper-parameters: {', '.join(f'{k}={v}' for k, v in meta['train'].items())}",
        f"- Training loss per epoch: {', '.join(f'{v:.4g}' for v in meta['history'])}",
        "",
        "## Validation (box Acc@0.5 = share of expressions whose chosen box has IoU ≥ 0.5)",
        "",
    ]
    if val is None or val.n == 0:
        lines.append("No validation expressions were available.")
    else:
        lines += ["| category | Acc@0.5 | mean IoU | n |", "|---|---|---|---|",
                  f"| **all** | {val.acc50:.3f} | {val.mean_iou:.3f} | {val.n} |"]
        lines += [f"| {c} | {r['acc@0.5']:.3f} | {r['mean_iou']:.3f} | {r['n']} |" for c, r in val.per_category.items()]
    lines += [
        "",
        "## Use",
        "",
        f"`pslg segment IMAGE --text \"...\" --grounding {meta['version']}` (give the directory path), "
        "`pslg eval --grounding DIR`, or as the backend's grounding model. Each expression is one phrase; "
        "spatial words re-rank the detector's candidates (docs/grounding.md).",
        "",
        "## Limitations",
        "",
        "Trained on boxes derived from masks of the data above only; expect lower accuracy on other sensors, "
        "resolutions and object categories. Box accuracy on validation data says nothing about mask quality "
        "(stage 2): use `pslg eval` for the full RRSIS table.",
        "",
    ]
    return "\n".join(lines)


def train_grounder(
    train_samples: Sequence[GroundingSample],
    val_samples: Sequence[GroundingSample],
    base: str | Path,
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    device: str = "auto",
    data_root: str = "",
    resume: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
    image_loader: Callable[[Path], np.ndarray] = load_rgb,
) -> TrainResult:
    """Fine-tune ``base`` on ``train_samples``, evaluate on ``val_samples``, write a new version directory."""
    from tqdm.auto import tqdm

    from annotate.grounding.hf import GroundingDinoGrounder

    if config.epochs < 1 or config.batch_size < 1 or not config.lr > 0:
        raise ValueError(f"epochs and batch size must be ≥ 1 and lr > 0 (got {config})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base_spec = _resolve_base(base)
    train, skipped = _check_samples(train_samples)
    for msg in skipped:
        log(f"skipping {msg}")
    if not train:
        raise GroundingError("no usable training expressions (every sample was skipped; see the messages above)")
    val, val_skipped = _check_samples(val_samples)

    signature = _signature(base_spec, train, config)
    work = _find_resumable(out_dir, signature) if resume else None
    dev = resolve_device(device)
    model, processor = load_trainable(base_spec)
    state = None
    if work is not None and (work / STATE_FILE).is_file():
        state = torch.load(work / STATE_FILE, map_location="cpu", weights_only=False)
        log(f"resuming {work.name} after epoch {state['epoch']}")
    if work is None:
        work = out_dir / (_next_version_name(out_dir) + ".partial")
        work.mkdir()
        atomic_write_text(work / RUN_FILE, json.dumps({"signature": signature, "base": base_spec, "data_root": data_root,
                                                       "train": asdict(config)}, indent=2))
    version = work.name[: -len(".partial")] if work.name.endswith(".partial") else work.name

    _seed_everything(config.seed)
    if not config.train_backbones:
        for name, param in model.named_parameters():
            if name.startswith(("model.backbone.", "model.text_backbone.")):
                param.requires_grad_(False)
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    history: list[float] = []
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])
    grounder = GroundingDinoGrounder(model, processor, device=dev, model_version=version)

    load_failures: list[str] = []
    for epoch in range(start_epoch, config.epochs):
        model.train()
        # every epoch's randomness (order, dropout) derives from (seed, epoch): a resumed run equals an
        # uninterrupted one
        _seed_everything(config.seed * 100_003 + epoch)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch)).tolist()
        batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        losses: list[float] = []
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress, leave=False)
        for step_in_epoch, batch in enumerate(bar):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(config.lr, epoch * len(batches) + step_in_epoch, config.epochs * len(batches))
            images, prompts, labels = [], [], []
            for i in batch:
                s = train[i]
                try:
                    rgb = image_loader(Path(s.image_path))
                except (OSError, ValueError) as exc:
                    load_failures.append(f"ref {s.ref_id} ({Path(s.image_path).name}): {exc}")
                    continue
                h, w = rgb.shape[:2]
                images.append(rgb)
                prompts.append(grounding_dino_prompt(s.expression))
                labels.append({"class_labels": torch.zeros(1, dtype=torch.long, device=dev),
                               "boxes": torch.tensor([normalised_cxcywh(s.box, w, h)], dtype=torch.float32, device=dev)})
            if not images:
                continue
            inputs = grounder.encode(images, prompts)
            out = model(**inputs, labels=labels)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            losses.append(float(out.loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if not losses:
            raise GroundingError("no training image could be read (see the messages above)")
        history.append(float(np.mean(losses)))
        with atomic_path(work / STATE_FILE) as tmp:
            torch.save({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "history": history, "signature": signature}, tmp)
        log(f"epoch {epoch + 1}/{config.epochs}: mean training loss {history[-1]:.4f}")

    model.eval()
    val_scores = None
    if val:
        val_scores = evaluate_boxes(
            grounder, val, image_loader=image_loader,
            progress=(lambda it: tqdm(it, desc="validation", unit="expr", leave=False)) if progress else None,
        )
        log(f"validation: box Acc@0.5 {val_scores.acc50:.3f}, mean IoU {val_scores.mean_iou:.3f} (n={val_scores.n})")

    base_meta = read_metadata(Path(base_spec)) if Path(base_spec).is_dir() else None
    meta = {
        "format": 1,
        "version": version,
        "architecture": model.config.model_type,
        "base": base_spec,
        "base_version": (base_meta or {}).get("version"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(dev),
        "train": asdict(config),
        "history": history,
        "data": {"root": data_root, "train_refs": len({s.ref_id for s in train}), "train_samples": len(train),
                 "val_samples": len(val)},
        "prompt": "the referring expression, lower-case, as one phrase ending with '.'; box class 0",
    }
    model.save_pretrained(work)
    processor.save_pretrained(work)
    metrics = {"version": version, "train_loss": history,
               "val": val_scores.as_dict() if val_scores else None,
               "skipped_train": skipped + load_failures, "skipped_val": val_skipped}
    atomic_write_text(work / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(work / "train_data.json", json.dumps({
        "data_root": data_root, "split": "train",
        "samples": [{"ref_id": s.ref_id, "image": str(s.image_path), "expression": s.expression, "box": list(s.box),
                     "category": s.category} for s in train],
        "skipped": skipped + load_failures,
    }, indent=2))
    atomic_write_text(work / "MODEL_CARD.md", _model_card(meta, val_scores))
    atomic_write_text(work / METADATA_FILE, json.dumps(meta, indent=2))
    (work / STATE_FILE).unlink(missing_ok=True)
    (work / RUN_FILE).unlink(missing_ok=True)
    final = out_dir / version
    if final.exists():
        raise GroundingError(f"{final} already exists; refusing to overwrite a finished model version")
    os.replace(work, final)
    log(f"wrote {final}")
    return TrainResult(path=final, version=version, history=history, val=val_scores,
                       resumed_from_epoch=start_epoch, skipped=skipped + load_failures)

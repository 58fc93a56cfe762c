"""Fine-tuning Grounding DINO on referring expressions (``pslg train grounding``).

How a referring expression becomes a Grounding DINO training target: the expression is the *single phrase* of
the prompt (``"the storage tank at the top left."``) and its one box gets class label 0, which transformers'
loss maps to that phrase's tokens (phrase label maps are built from the text, split at "."). So the model learns
"this whole expression ↔ this box", and the other queries learn "not this expression" — exactly the
referring task, with the detector's own Hungarian-matched loss (focal + L1 + GIoU, encoder and decoder).

Each run adds a version to a model store (``annotate.modelstore``: ``<out>/vNNNN/`` with weights as
safetensors, processor files, ``metrics.json``, ``train_data.json``, ``MODEL_CARD.md``, ``pslg_grounder.json`` and
the store's ``card.json``); the card's label (``grounding-vNNNN-<UTC timestamp>``) is the ``model_version`` the
backend reports, so Label Studio re-predicts after a retrain. While training, the files live in the store's
staging directory for this run (keyed by base model, data and hyper-parameters) with ``training_state.pt``
(model + optimiser state after each epoch): running the same command again resumes from the last finished
epoch. The store's commit (an atomic rename) is the last step, so a version directory is always complete.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
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
from annotate.grounding.loader import GDINO_TYPES, LOAD_LOCK, METADATA_FILE, read_metadata
from annotate.grounding.text import grounding_dino_prompt
from annotate.modelstore import ModelCard, ModelStore, is_store

#: The store ``kind`` of a fine-tuned grounding model.
KIND = "grounding"
STATE_FILE = "training_state.pt"


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


def _resolve_base(base: str | Path) -> str:
    """A directory as its absolute path; a model store as its current grounding version; a hub id as given."""
    path = Path(str(base)).expanduser()
    if is_store(path):
        current = ModelStore(path).current(KIND)
        if current is None:
            raise GroundingError(f"the model store {path} has no usable grounding version to start from")
        return str(current.path.resolve())
    return str(path.resolve()) if path.is_dir() else str(base)


def data_digest(samples: Sequence[GroundingSample]) -> str:
    """What identifies a training set: each sample's image (name and size), expression and box."""
    rows = []
    for s in samples:
        path = Path(s.image_path)
        size = path.stat().st_size if path.is_file() else -1
        rows.append((path.name, size, s.expression, [round(float(v), 3) for v in s.box]))
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def _parent_in(store: ModelStore, base_spec: str) -> Optional[str]:
    """The version name of ``base_spec`` when it is a version of ``store`` (the lineage link of the new card)."""
    path = Path(base_spec)
    if path.is_dir() and path.parent.resolve() == store.root.resolve():
        return path.name
    return None


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
        with LOAD_LOCK:  # from_pretrained is not thread-safe (see annotate.grounding.loader.LOAD_LOCK)
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
        "# Grounding model",
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
        "`pslg segment IMAGE --text \"...\" --grounding DIR` (this version's directory, or the models directory "
        "for its current version), `pslg eval --grounding DIR`, or as the backend's grounding model. Each expression is one phrase; "
        "spatial words re-rank the detector's candidates (docs/train-and-evaluate.md).",
        "",
        "## Limitations",
        "",
        "Trained on boxes derived from masks of the data above only; expect lower accuracy on other sensors, "
        "resolutions and object categories. Box accuracy on validation data says nothing about mask quality "
        "(stage 2): use `pslg eval` for the full RRSIS table.",
        "",
    ]
    return "\n".join(lines)


def _load_state(path: Path, log: Callable[[str], None]) -> Optional[dict]:
    """The checkpoint of an interrupted run, or None (start over) when there is none or it cannot be trusted.

    Read with ``weights_only=True``: tensors, numbers, strings, lists and dicts, which is all the checkpoint
    holds; a full unpickle would run any code a planted ``training_state.pt`` names. A checkpoint that is not
    of that shape (truncated, foreign, or naming code) is set aside with a message and the run starts over.
    """
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(state, dict) and isinstance(state.get("epoch"), int) and isinstance(state.get("model"), dict)
                and isinstance(state.get("optimizer"), dict) and isinstance(state.get("history"), list)):
            raise ValueError("not a training checkpoint (epoch, model, optimizer, history)")
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        log(f"not resuming from {path.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
            "starting over")
        path.unlink(missing_ok=True)
        return None
    return state


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
    configured: Optional[str] = None,
) -> TrainResult:
    """Fine-tune ``base`` on ``train_samples``, evaluate on ``val_samples``, commit a new version to the store ``out_dir``.

    ``base`` may be a model directory, a hub id or a model store (its current version). A vision-language base
    (Florence-2, Qwen2.5-VL) trains a LoRA adapter instead (``annotate.grounding.vlm_training``). ``configured`` is the
    model spec the calling process was configured with (the backend's ``PSLG_GROUNDING_MODEL``), recorded in
    the card so a backend never serves a version trained for another configuration.
    """
    from tqdm.auto import tqdm

    from annotate.grounding.hf import GroundingDinoGrounder

    if config.epochs < 1 or config.batch_size < 1 or not config.lr > 0:
        raise ValueError(f"epochs and batch size must be ≥ 1 and lr > 0 (got {config})")
    store = ModelStore(out_dir)
    base_spec = _resolve_base(base)
    from annotate.grounding.vlm_training import train_vlm_adapter, vlm_model_type

    family = vlm_model_type(base_spec)
    if family is not None:  # Florence-2 / Qwen2.5-VL: a LoRA adapter in the model's own answer format
        return train_vlm_adapter(train_samples, val_samples, base_spec, family, store, config, device=device,
                                 data_root=data_root, progress=progress, log=log, image_loader=image_loader,
                                 configured=configured, parent=_parent_in(store, base_spec))
    train, skipped = _check_samples(train_samples)
    for msg in skipped:
        log(f"skipping {msg}")
    if not train:
        raise GroundingError("no usable training expressions (every sample was skipped; see the messages above)")
    val, val_skipped = _check_samples(val_samples)

    signature = _signature(base_spec, train, config)
    dev = resolve_device(device)
    model, processor = load_trainable(base_spec)
    work = store.staging(f"{KIND}-{signature}")
    if not resume:
        shutil.rmtree(work)
        work = store.staging(f"{KIND}-{signature}")
    state = _load_state(work / STATE_FILE, log)
    if state is not None:
        log(f"resuming the interrupted run in {work} after epoch {state['epoch']}")

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
    grounder = GroundingDinoGrounder(model, processor, device=dev, model_version=f"{KIND}-training")

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
    parent = _parent_in(store, base_spec)
    meta = {
        "format": 2,
        "architecture": model.config.model_type,
        "base": base_spec,
        "base_version": parent or (base_meta or {}).get("version"),
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
    metrics = {"train_loss": history,
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
    card = ModelCard(
        kind=KIND, base=base_spec, parent=parent, configured=configured, data_digest=data_digest(train),
        samples=len(train), metrics={"val": val_scores.as_dict()} if val_scores else None,
        extra={"architecture": model.config.model_type, "train": asdict(config), "data_root": data_root},
    )
    committed = store.commit(work, card)
    log(f"wrote {committed.path}")
    return TrainResult(path=committed.path, version=committed.card.label, history=history, val=val_scores,
                       resumed_from_epoch=start_epoch, skipped=skipped + load_failures)

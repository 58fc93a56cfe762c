"""LoRA fine-tuning of the vision-language grounders (Florence-2, Qwen2.5-VL) on referring expressions.

``pslg train grounding --base <VLM>`` (and the backend's retraining when it serves a VLM) comes here from
``annotate.grounding.training.train_grounder``. Each (image, expression, box) triple becomes one supervised
answer in the model's *own* box format, so training teaches exactly what inference parses:

- Florence-2: the phrase-grounding prompt → ``"<expression><loc_x0><loc_y0><loc_x1><loc_y1>"``;
- Qwen2.5-VL: the grounding question → the ```json ``[{"bbox_2d": [...], "label": ...}]`` answer in pixels of
  the resized input (the loss covers the answer only, not the question).

Why LoRA (peft) rather than full fine-tuning: the base models have 0.23–3.8 B parameters; an adapter of a few
MB trains on one GPU (or slowly on a CPU), is one version in the model store (``adapter_config.json`` +
``adapter_model.safetensors`` + processor files, no copy of the base weights), and the loader serves it on the
base model it names. Training again from a store whose current version is an adapter continues that adapter.

Unlike the Grounding DINO trainer, an interrupted adapter run starts over (runs are short; a resumable
checkpoint would be the adapter itself).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from annotate.atomic import atomic_write_text
from annotate.grounding.base import GroundingError
from annotate.grounding.evaluation import BoxScores, GroundingSample, evaluate_boxes, load_rgb
from annotate.grounding.loader import LOAD_LOCK, METADATA_FILE
from annotate.grounding.text import normalise_expression
from annotate.grounding import vlm
from annotate.modelstore import ModelCard, ModelStore

KIND = "grounding"


@dataclass(frozen=True)
class LoraSettings:
    """The adapter's shape: rank, scaling and which projections get one.

    ``q_proj``/``v_proj`` are the attention projections of both families' language models (BART in Florence-2,
    Qwen2 in Qwen2.5-VL); the vision encoders use fused ``qkv`` layers and stay frozen, as in the LoRA paper.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


def vlm_model_type(base_spec: str) -> Optional[str]:
    """The VLM family of ``base_spec`` (a directory, an adapter directory or a hub id), or None for a detector."""
    path = Path(base_spec)
    try:
        if vlm.is_adapter_dir(path):
            base_spec = vlm.adapter_base(path)
        from transformers import AutoConfig

        model_type = str(AutoConfig.from_pretrained(base_spec).model_type)
    except GroundingError:
        raise
    except Exception:  # not loadable here: the detector trainer reports it with its own message
        return None
    return model_type if model_type in vlm.VLM_TYPES else None


def _check(samples: Sequence[GroundingSample]) -> tuple[list[GroundingSample], list[str]]:
    good, bad = [], []
    for s in samples:
        where = f"ref {s.ref_id} ({Path(s.image_path).name})"
        try:
            normalise_expression(s.expression)
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


def load_trainable_vlm(base_spec: str, model_type: str, lora: LoraSettings) -> tuple[Any, Any, str]:
    """(peft model with a trainable adapter, processor, the base weights' spec).

    A base that is itself an adapter version continues that adapter on its own base model.
    """
    from annotate.extras import MissingExtraError, require_extra

    try:
        require_extra("vlm", "Fine-tuning a vision-language grounder")
    except MissingExtraError as exc:  # the CLI and the backend report GroundingError per run
        raise GroundingError(str(exc)) from None
    from peft import LoraConfig, get_peft_model
    from transformers import AutoProcessor

    path = Path(base_spec)
    adapter = path if vlm.is_adapter_dir(path) else None
    weights = vlm.adapter_base(path) if adapter else base_spec
    try:
        with LOAD_LOCK:
            processor = AutoProcessor.from_pretrained(base_spec)
            if adapter is not None:
                model = vlm.load_vlm_model(weights, model_type, adapter=adapter, trainable=True)
            else:
                model = get_peft_model(vlm.model_class(model_type).from_pretrained(weights), LoraConfig(
                    r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                    target_modules=list(lora.target_modules)))
    except GroundingError:
        raise
    except Exception as exc:
        raise GroundingError(f"cannot load the base model {base_spec!r}: {exc}") from exc
    for config in model.peft_config.values():  # what the loader reads to find the base again
        config.base_model_name_or_path = weights
    return model, processor, weights


def _model_card(meta: dict[str, Any], val: Optional[BoxScores]) -> str:
    lines = [
        "# Grounding model (LoRA adapter)",
        "",
        "A LoRA adapter for a vision-language grounder, fine-tuned by `pslg train grounding`; served on its base "
        "model (which must stay where the adapter names it).",
        "",
        f"- Base model: `{meta['base']}` ({meta['architecture']})",
        f"- Adapter: rank {meta['lora']['r']}, alpha {meta['lora']['alpha']}, on {', '.join(meta['lora']['target_modules'])}",
        f"- Training data: `{meta['data']['root']}`: {meta['data']['train_samples']} expressions; validation: "
        f"{meta['data']['val_samples']}",
        f"- Created: {meta['created']}; device: {meta['device']}",
        f"- Training loss per epoch: {', '.join(f'{v:.4g}' for v in meta['history'])}",
        "",
        "## Validation (box Acc@0.5)",
        "",
    ]
    if val is None or val.n == 0:
        lines.append("No validation expressions were available.")
    else:
        lines.append(f"Acc@0.5 {val.acc50:.3f}, mean IoU {val.mean_iou:.3f} (n={val.n}); an answer without a box "
                     "counts as a miss.")
    return "\n".join(lines + [""])


def train_vlm_adapter(
    train_samples: Sequence[GroundingSample],
    val_samples: Sequence[GroundingSample],
    base_spec: str,
    model_type: str,
    store: ModelStore,
    config: Any,
    device: str = "auto",
    data_root: str = "",
    progress: bool = True,
    log: Callable[[str], None] = print,
    image_loader: Callable[[Path], np.ndarray] = load_rgb,
    configured: Optional[str] = None,
    parent: Optional[str] = None,
    lora: LoraSettings = LoraSettings(),
) -> Any:
    """Train a LoRA adapter of ``base_spec`` on ``train_samples``; commit it as a new version of ``store``.

    ``config`` is the trainer's ``TrainConfig`` (epochs, lr, batch size, seed, weight decay, gradient clip);
    returns its ``TrainResult``.
    """
    import torch
    from tqdm.auto import tqdm

    from annotate.device import resolve_device
    from annotate.grounding.training import TrainResult, cosine_lr, data_digest

    train, skipped = _check(train_samples)
    for msg in skipped:
        log(f"skipping {msg}")
    if not train:
        raise GroundingError("no usable training expressions (every sample was skipped; see the messages above)")
    val, val_skipped = _check(val_samples)

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    dev = resolve_device(device)
    model, processor, weights = load_trainable_vlm(base_spec, model_type, lora)
    grounder = vlm.build_vlm_grounder(model_type, model, processor, device=dev, model_version=f"{KIND}-training")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    history: list[float] = []
    load_failures: list[str] = []
    images: dict[Path, np.ndarray] = {}
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch)).tolist()
        batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        losses: list[float] = []
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress, leave=False)
        for step, batch in enumerate(bar):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(config.lr, epoch * len(batches) + step, config.epochs * len(batches))
            optimizer.zero_grad(set_to_none=True)
            used = 0
            batch_loss = 0.0
            for i in batch:  # one answer per forward (their lengths differ), gradients summed over the batch
                s = train[i]
                try:
                    if s.image_path not in images:
                        if len(images) > 64:
                            images.clear()
                        images[s.image_path] = image_loader(Path(s.image_path))
                    rgb = images[s.image_path]
                except (OSError, ValueError) as exc:
                    load_failures.append(f"ref {s.ref_id} ({Path(s.image_path).name}): {exc}")
                    continue
                loss = model(**grounder.encode(rgb, s.expression, answer_box=s.box)).loss / len(batch)
                loss.backward()
                batch_loss += float(loss.detach())
                used += 1
            if not used:
                continue
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            losses.append(batch_loss * len(batch) / used)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if not losses:
            raise GroundingError("no training image could be read (see the messages above)")
        history.append(float(np.mean(losses)))
        log(f"epoch {epoch + 1}/{config.epochs}: mean training loss {history[-1]:.4f}")

    model.eval()
    val_scores = None
    if val:
        val_scores = evaluate_boxes(grounder, val, image_loader=image_loader,
                                    progress=(lambda it: tqdm(it, desc="validation", unit="expr", leave=False))
                                    if progress else None)
        log(f"validation: box Acc@0.5 {val_scores.acc50:.3f}, mean IoU {val_scores.mean_iou:.3f} (n={val_scores.n})")

    work = store.staging(f"{KIND}-lora-{data_digest(train)}")
    meta = {
        "format": 2,
        "architecture": model_type,
        "adapter": "lora",
        "base": weights,
        "base_version": parent,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(dev),
        "train": asdict(config),
        "lora": {**asdict(lora), "target_modules": list(lora.target_modules)},
        "history": history,
        "data": {"root": data_root, "train_samples": len(train), "val_samples": len(val)},
        "prompt": "Florence-2: <CAPTION_TO_PHRASE_GROUNDING> + expression → expression + 4 <loc_N>; "
                  "Qwen2.5-VL: grounding question → ```json [{\"bbox_2d\": [...]}] in resized-input pixels",
    }
    model.save_pretrained(work)
    processor.save_pretrained(work)
    metrics = {"train_loss": history, "val": val_scores.as_dict() if val_scores else None,
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
    card = ModelCard(
        kind=KIND, base=weights, parent=parent, configured=configured, data_digest=data_digest(train),
        samples=len(train), metrics={"val": val_scores.as_dict()} if val_scores else None,
        extra={"architecture": model_type, "adapter": "lora", "train": asdict(config), "data_root": data_root},
    )
    committed = store.commit(work, card)
    log(f"wrote {committed.path}")
    return TrainResult(path=committed.path, version=committed.card.label, history=history, val=val_scores,
                       skipped=skipped + load_failures)

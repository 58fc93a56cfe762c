"""``load_grounder(spec)``: a local model directory or a hub id → the right ``Grounder``.

What a directory is, is read from its files rather than guessed from its name: a model store
(``annotate.modelstore``, what ``pslg train grounding --out`` fills) means its current grounding version; a
version's ``card.json`` gives the version string the backend reports (older ``pslg_grounder.json`` files their
``version``);
``config.json``'s ``model_type`` says which architecture (``grounding-dino``, ``mm-grounding-dino``, ``owlv2``, or
the vision-language models ``florence2`` and ``qwen2_5_vl`` of ``annotate.grounding.vlm``); a directory with peft's
``adapter_config.json`` instead is a LoRA adapter, served on the base model it names.
A hub id (``IDEA-Research/grounding-dino-tiny``, ``google/owlv2-base-patch16-ensemble``) goes to
``from_pretrained`` on a machine that can reach the hub (or has it cached).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from annotate.grounding.base import Grounder, GroundingError
from annotate.modelstore import ModelStore, ModelStoreError, is_store, read_card

#: Written by ``pslg train grounding`` into each model directory it produces.
METADATA_FILE = "pslg_grounder.json"

#: Held while transformers builds a model: ``from_pretrained`` creates modules on the meta device through
#: process-wide switches, so two threads loading at once (a backend's store poller and its trainer) can leave
#: one model's tied weights on ``meta`` ("Cannot copy out of meta tensor"). Loading is rare; serialising it is free.
LOAD_LOCK = threading.RLock()

GDINO_TYPES = ("grounding-dino", "mm-grounding-dino")
OWLV2_TYPES = ("owlv2",)


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The ``pslg_grounder.json`` of a model directory, or None when it has none."""
    meta_path = Path(path) / METADATA_FILE
    if not meta_path.is_file():
        return None
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GroundingError(f"{meta_path}: unreadable grounding metadata ({exc})") from exc


def _weights_fingerprint(path: Path) -> str:
    """Short hash of the weight files' names, sizes and first/last MiB: changes when the weights change."""
    digest = hashlib.sha256()
    for f in sorted(list(path.glob("*.safetensors")) + list(path.glob("*.bin"))):
        size = f.stat().st_size
        digest.update(f"{f.name}:{size}".encode())
        with f.open("rb") as fh:
            digest.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), 2)
                digest.update(fh.read())
    return digest.hexdigest()[:10]


def _model_type(spec: str) -> str:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(spec)
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors ... : all mean "cannot load"
        raise GroundingError(f"cannot load a grounding model from {spec!r}: {exc}") from exc
    return str(config.model_type)


def load_grounder(spec: "str | Path | Grounder", device: str = "auto", **kwargs: Any) -> Grounder:
    """Load a grounder from a local directory (Grounding DINO, OWLv2, `pslg train grounding` output, a model store)
    or a hub id; one load at a time per process (see ``LOAD_LOCK``)."""
    if isinstance(spec, Grounder):
        return spec
    with LOAD_LOCK:
        return _load_grounder(spec, device, **kwargs)


def _load_grounder(spec: "str | Path", device: str, **kwargs: Any) -> Grounder:
    """Load a grounder from a local directory (Grounding DINO, OWLv2, or ``pslg train grounding`` output) or a hub id.

    ``kwargs`` go to the grounder (e.g. ``spatial_weight``). Raises ``GroundingError`` naming ``spec`` when it is
    neither a model directory nor a loadable id, or its architecture is not a supported detector.
    """
    path = Path(str(spec)).expanduser()
    meta = None
    card = None
    if is_store(path):
        current = ModelStore(path).current("grounding")
        if current is None:
            raise GroundingError(f"the model store {path} has no usable grounding version (see `pslg models versions {path}`)")
        path = current.path
    from annotate.grounding import vlm

    adapter = vlm.is_adapter_dir(path)
    if path.is_dir():
        if not (path / "config.json").is_file() and not adapter:
            raise GroundingError(f"{path} is a directory but not a model directory (no config.json)")
        meta = read_metadata(path)
        try:
            card = read_card(path)
        except ModelStoreError as exc:
            raise GroundingError(str(exc)) from exc
        source = str(path.resolve())
    elif path.exists():
        raise GroundingError(f"{path} is a file; --grounding expects a model directory or a hub id")
    elif str(spec).startswith((".", "/", "~")) or str(spec).count("/") > 1:
        raise GroundingError(f"grounding model directory {spec} does not exist")
    else:
        source = str(spec)

    weights = vlm.adapter_base(path) if adapter else source
    model_type = _model_type(weights)
    if model_type not in GDINO_TYPES + OWLV2_TYPES + vlm.VLM_TYPES:
        raise GroundingError(
            f"{spec} is a {model_type!r} model; grounding supports Grounding DINO "
            f"({', '.join(GDINO_TYPES)}), OWLv2 ({', '.join(OWLV2_TYPES)}) and the vision-language models "
            f"Florence-2 and Qwen2.5-VL ({', '.join(vlm.VLM_TYPES)})"
        )
    if adapter and model_type not in vlm.VLM_TYPES:
        raise GroundingError(f"{spec} is a LoRA adapter of a {model_type!r} model; adapters are served for "
                             f"vision-language grounders only ({', '.join(vlm.VLM_TYPES)})")
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(source)
    except Exception as exc:
        raise GroundingError(f"cannot load the processor (tokenizer + image processor) of {spec}: {exc}") from exc

    if card is not None:
        version = card.label
    elif meta and meta.get("version"):
        version = str(meta["version"])
    elif path.is_dir():
        version = f"{model_type}-{path.resolve().name}-{_weights_fingerprint(path)}"
    else:
        version = f"{model_type}-{source}"

    if model_type in vlm.VLM_TYPES:
        try:
            model = vlm.load_vlm_model(weights, model_type, adapter=path if adapter else None)
        except GroundingError:
            raise
        except Exception as exc:
            raise GroundingError(f"cannot load the weights of {spec}: {exc}") from exc
        if not path.is_dir():
            commit = getattr(model.config, "_commit_hash", None)
            if commit:
                version = f"{version}@{str(commit)[:10]}"
        return vlm.build_vlm_grounder(model_type, model, processor, device=device, model_version=version,
                                      source=source, **kwargs)

    from annotate.grounding import hf

    try:
        if model_type in GDINO_TYPES:
            from transformers import AutoModelForZeroShotObjectDetection

            model = AutoModelForZeroShotObjectDetection.from_pretrained(source)
            cls: type[hf.TransformersGrounder] = hf.GroundingDinoGrounder
        elif model_type in OWLV2_TYPES:
            from transformers import Owlv2ForObjectDetection

            model = Owlv2ForObjectDetection.from_pretrained(source)
            cls = hf.Owlv2Grounder
        else:  # checked above
            raise GroundingError(f"unsupported model type {model_type!r}")
    except GroundingError:
        raise
    except Exception as exc:
        raise GroundingError(f"cannot load the weights of {spec}: {exc}") from exc
    if not path.is_dir():
        commit = getattr(model.config, "_commit_hash", None)
        if commit:
            version = f"{version}@{str(commit)[:10]}"
    return cls(model, processor, device=device, model_version=version, source=source, **kwargs)

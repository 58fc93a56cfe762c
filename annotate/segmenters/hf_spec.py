"""Which Hugging Face segmenter a model spec names, read without importing torch or transformers.

Why a module of its own: the factory must decide "official SAM file, Hugging Face SAM-family folder or hub id,
or nothing" before paying for any model stack, and ``pslg models list`` shows the families without loading one.
A spec is a local folder with a ``config.json`` (its ``model_type`` names the family) or a hub id
(``facebook/sam2.1-hiera-tiny``); a ``.pth`` file stays the official SAM checkpoint of ``sam_checkpoint``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

#: ``config.json`` model_type → the family the toolkit serves as a stage-2 segmenter (box/points → mask).
SEGMENTER_FAMILIES: dict[str, str] = {
    "sam2": "SAM 2 / SAM 2.1 (Hiera)",
    "sam_hq": "SAM-HQ",
    "edgetam": "EdgeTAM (RepViT, CPU-friendly)",
    "sam": "SAM (Hugging Face format)",
}
#: model_type → one-stage models (text → instance masks), served with ``--one-stage`` / ``PSLG_ONE_STAGE_MODEL``.
ONE_STAGE_FAMILIES: dict[str, str] = {"sam3": "SAM 3 (text → instance masks)"}

#: Public checkpoints of each family, for ``pslg models list`` (downloaded by transformers on first use).
HUB_EXAMPLES: dict[str, tuple[str, ...]] = {
    "sam2": ("facebook/sam2.1-hiera-tiny", "facebook/sam2.1-hiera-small", "facebook/sam2.1-hiera-base-plus",
             "facebook/sam2.1-hiera-large"),
    "sam_hq": ("syscv-community/sam-hq-vit-base", "syscv-community/sam-hq-vit-large", "syscv-community/sam-hq-vit-huge"),
    "edgetam": ("yonigozlan/EdgeTAM-hf",),
    "sam": ("facebook/sam-vit-base",),
    "sam3": ("facebook/sam3",),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


class ModelSpecError(ValueError):
    """A model spec is not a model of the expected kind (the message says what it is and what to use)."""


def read_model_type(folder: Path) -> Optional[str]:
    """``model_type`` of ``folder/config.json``; None when the folder has no readable config.json."""
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("model_type") if isinstance(data, dict) else None
    return str(value) if value else None


def is_hub_id(spec: str) -> bool:
    """``owner/name`` that is not a local path and not a weights file name."""
    return bool(_HUB_ID.match(spec)) and not Path(spec).expanduser().exists() and not spec.lower().endswith(_WEIGHT_SUFFIXES)


def hf_spec_kind(spec: "str | Path | None") -> Optional[str]:
    """``"folder"`` for a local folder with ``config.json``, ``"hub"`` for a hub id, None otherwise (a SAM file)."""
    if spec is None or str(spec).strip() == "":
        return None
    text = str(spec).strip()
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return "folder"
    if is_hub_id(text):
        return "hub"
    return None

"""SAM checkpoints: the official files (bare ``state_dict``) and self-describing ones that carry their architecture.

Why a module of its own: reading, recognising and writing checkpoints is one job (used by the segmenter, by
``pslg models`` and by the tests' tiny models); running SAM on images is another (``annotate.segmenters.sam``).
A self-describing file is ``{"format": "pslg-sam/1", "architecture": {...}, "state_dict": {...}}``: its embedded
architecture is used instead of ``model_type``, which is how tiny test models and fine-tuned variants load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from annotate.atomic import atomic_path
from annotate.segmenters.checks import weights_digest as _weights_digest  # noqa: F401  (re-exported: SAM's name)

#: Value of the ``format`` key of a self-describing checkpoint.
CHECKPOINT_FORMAT = "pslg-sam/1"

#: The official architectures, by (encoder width, encoder depth) as found in a state_dict.
_OFFICIAL_BY_SHAPE: dict[tuple[int, int], str] = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
OFFICIAL_MODEL_TYPES: tuple[str, ...] = ("vit_h", "vit_l", "vit_b")
#: What to suggest to ``pslg models pull`` when a checkpoint of a model type is missing.
_PULL_NAME = {"vit_h": "vit_h", "vit_l": "vit_l", "vit_b": "vit_b", "default": "vit_h", "auto": "vit_b"}

_ENCODER_KEY = "image_encoder.patch_embed.proj.weight"


class SamCheckpointError(ValueError):
    """A SAM checkpoint cannot be used (unreadable, not SAM, or not the requested architecture)."""


class SamCheckpointNotFoundError(SamCheckpointError, FileNotFoundError):
    """The SAM checkpoint file does not exist."""


@dataclass(frozen=True)
class SamArchitecture:
    """Every number that defines a SAM network, so a checkpoint can carry its own architecture.

    The defaults are those shared by the official vit_h / vit_l / vit_b builders of ``segment_anything``.
    """

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    encoder_mlp_ratio: float = 4.0
    encoder_window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    num_multimask_outputs: int = 3
    pixel_mean: tuple[float, float, float] = field(default=(123.675, 116.28, 103.53))
    pixel_std: tuple[float, float, float] = field(default=(58.395, 57.12, 57.375))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["encoder_global_attn_indexes"] = list(self.encoder_global_attn_indexes)
        d["pixel_mean"] = list(self.pixel_mean)
        d["pixel_std"] = list(self.pixel_std)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SamArchitecture":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SAM architecture fields {sorted(unknown)}")
        d = dict(data)
        for key in ("encoder_global_attn_indexes", "pixel_mean", "pixel_std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def build_sam_from_architecture(arch: SamArchitecture) -> Sam:
    """Build a ``Sam`` (eval mode, random weights) exactly as ``segment_anything.build_sam`` does for ``arch``."""
    embedding = arch.image_size // arch.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.encoder_depth,
            embed_dim=arch.encoder_embed_dim,
            img_size=arch.image_size,
            mlp_ratio=arch.encoder_mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.encoder_num_heads,
            patch_size=arch.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(arch.encoder_global_attn_indexes),
            window_size=arch.encoder_window_size,
            out_chans=arch.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim,
            image_embedding_size=(embedding, embedding),
            input_image_size=(arch.image_size, arch.image_size),
            mask_in_chans=arch.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=arch.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=arch.decoder_depth,
                embedding_dim=arch.prompt_embed_dim,
                mlp_dim=arch.decoder_mlp_dim,
                num_heads=arch.decoder_num_heads,
            ),
            transformer_dim=arch.prompt_embed_dim,
            iou_head_depth=arch.iou_head_depth,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
        ),
        pixel_mean=list(arch.pixel_mean),
        pixel_std=list(arch.pixel_std),
    )
    sam.eval()
    return sam


def save_sam_checkpoint(sam: Sam, architecture: SamArchitecture, path: str | Path) -> Path:
    """Write ``sam``'s weights with its architecture (a self-describing checkpoint) atomically; return the path."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in sam.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "architecture": architecture.to_dict(), "state_dict": state}, tmp)
    return path


def detect_model_type(state_dict: dict[str, Any]) -> Optional[str]:
    """``vit_h`` / ``vit_l`` / ``vit_b`` for an official-shaped state_dict, None for anything else."""
    weight = state_dict.get(_ENCODER_KEY)
    if weight is None:
        return None
    depth = len({k.split(".")[2] for k in state_dict if k.startswith("image_encoder.blocks.")})
    return _OFFICIAL_BY_SHAPE.get((int(weight.shape[0]), depth))


def _read_checkpoint(path: Path) -> tuple[dict[str, Any], Optional[SamArchitecture]]:
    """Return ``(state_dict, embedded architecture or None)`` of a checkpoint file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean "not a checkpoint"
        raise SamCheckpointError(f"cannot read SAM checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise SamCheckpointError(f"SAM checkpoint {path} holds a {type(obj).__name__}, not a state_dict")
    if obj.get("format") == CHECKPOINT_FORMAT:
        try:
            arch = SamArchitecture.from_dict(obj["architecture"])
            return obj["state_dict"], arch
        except (KeyError, TypeError, ValueError) as exc:
            raise SamCheckpointError(f"SAM checkpoint {path} has a broken architecture block: {exc}") from exc
    for wrapper in ("model", "state_dict"):  # common wrappers of fine-tuning scripts
        if _ENCODER_KEY not in obj and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    return obj, None


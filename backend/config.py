"""Backend configuration from environment variables.

Names follow the Label Studio ML-backend ecosystem where one exists (``LABEL_STUDIO_URL``,
``LABEL_STUDIO_API_KEY``, ``BASIC_AUTH_USER``, ``BASIC_AUTH_PASS``, ``MODEL_DIR``) so existing compose files and
habits carry over; our own settings use the ``PSLG_`` prefix. Reading the environment happens here only:
the engine (``annotate``) takes arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
DEFAULT_IMAGE_TIMEOUT_S = 30.0
DEFAULT_MAX_PIXELS = 100_000_000


def _str(env: Mapping[str, str], name: str) -> Optional[str]:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = _str(env, name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def _bool(env: Mapping[str, str], name: str) -> Optional[bool]:
    """None (use the measured default for the segmenter) unless the variable says on/off."""
    raw = _str(env, name)
    if raw is None or raw.lower() == "auto":
        return None
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"environment variable {name}={raw!r} is not on/off/auto")


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _str(env, name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a number") from None


@dataclass
class Settings:
    """Everything the backend reads from its environment (see docs/backend.md for the table)."""

    label_studio_url: Optional[str] = None
    label_studio_api_key: Optional[str] = field(default=None, repr=False)
    basic_auth_user: Optional[str] = None
    basic_auth_pass: Optional[str] = field(default=None, repr=False)
    model_dir: Path = Path("pslg-backend-data")
    sam_checkpoint: Optional[str] = None
    sam_model_type: str = "vit_b"
    grounding_model: Optional[str] = None
    device: str = "auto"
    train_every: int = 0
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    image_timeout_s: float = DEFAULT_IMAGE_TIMEOUT_S
    max_pixels: int = DEFAULT_MAX_PIXELS
    local_files_root: Optional[str] = None
    predict_wait_s: float = 60.0
    train_epochs: Optional[int] = None
    use_cfpg: Optional[bool] = None
    use_mbo: Optional[bool] = None

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "Settings":
        env = os.environ if env is None else env
        url = _str(env, "LABEL_STUDIO_URL") or _str(env, "LABEL_STUDIO_HOST")
        epochs = _str(env, "PSLG_TRAIN_EPOCHS")
        return cls(
            label_studio_url=url.rstrip("/") if url else None,
            label_studio_api_key=_str(env, "LABEL_STUDIO_API_KEY") or _str(env, "LABEL_STUDIO_ACCESS_TOKEN"),
            basic_auth_user=_str(env, "BASIC_AUTH_USER"),
            basic_auth_pass=_str(env, "BASIC_AUTH_PASS"),
            model_dir=Path(_str(env, "MODEL_DIR") or "pslg-backend-data"),
            sam_checkpoint=_str(env, "PSLG_SAM_CHECKPOINT"),
            sam_model_type=_str(env, "PSLG_SAM_MODEL_TYPE") or "vit_b",
            grounding_model=_str(env, "PSLG_GROUNDING_MODEL"),
            device=_str(env, "PSLG_DEVICE") or "auto",
            train_every=_int(env, "PSLG_TRAIN_EVERY", 0),
            max_image_bytes=_int(env, "PSLG_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES),
            image_timeout_s=_float(env, "PSLG_IMAGE_TIMEOUT", DEFAULT_IMAGE_TIMEOUT_S),
            max_pixels=_int(env, "PSLG_MAX_PIXELS", DEFAULT_MAX_PIXELS),
            local_files_root=_str(env, "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"),
            predict_wait_s=_float(env, "PSLG_PREDICT_WAIT", 60.0),
            train_epochs=int(epochs) if epochs else None,
            use_cfpg=_bool(env, "PSLG_USE_CFPG"),
            use_mbo=_bool(env, "PSLG_USE_MBO"),
        )

    @property
    def basic_auth_enabled(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_pass)

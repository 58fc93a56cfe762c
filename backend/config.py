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

from annotate.image_io import DEFAULT_MAX_DECODE_BYTES, DEFAULT_MAX_PIXELS
from annotate.polygons import DEFAULT_POLYGON_TOLERANCE, Tolerance

DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
DEFAULT_IMAGE_TIMEOUT_S = 30.0
#: decoded images kept for clicks: bytes of pixels (a 10000×10000 RGB image is 300 MB) and entries
DEFAULT_IMAGE_CACHE_BYTES = 1024 * 1024 * 1024
DEFAULT_IMAGE_CACHE_ITEMS = 16
#: largest request body (``/predict``, ``/webhook``, ``/train``): Flask answers 413 above it
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: most tasks one /predict may carry (Label Studio sends one to a few dozen; pslg prelabel --batch-size)
DEFAULT_MAX_TASKS_PER_REQUEST = 1000
#: projects (and labeling configs) whose model, config and /setup credentials are kept, least recently used out
DEFAULT_MAX_PROJECTS = 64
#: largest labeling config accepted (real ones are a few KB)
DEFAULT_MAX_LABEL_CONFIG_BYTES = 1024 * 1024
#: the header carrying PSLG_WEBHOOK_SECRET (Label Studio webhooks send custom headers)
WEBHOOK_SECRET_HEADER = "X-PSLG-Webhook-Secret"


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


def _tolerance(env: Mapping[str, str], name: str) -> Tolerance:
    raw = _str(env, name)
    try:
        return Tolerance.parse(raw if raw is not None else DEFAULT_POLYGON_TOLERANCE)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}: {exc}") from None


def _label_map(env: Mapping[str, str], name: str) -> Optional[str]:
    """The label map as given, once checked to parse (``converters.labelstudio.labels.parse_label_map``)."""
    raw = _str(env, name)
    if raw is not None:
        from converters.labelstudio.labels import parse_label_map

        try:
            parse_label_map(raw)
        except ValueError as exc:
            raise ValueError(f"environment variable {name}: {exc}") from None
    return raw


@dataclass
class Settings:
    """Everything the backend reads from its environment (see docs/serve-backend.md for the table)."""

    label_studio_url: Optional[str] = None
    label_studio_api_key: Optional[str] = field(default=None, repr=False)
    basic_auth_user: Optional[str] = None
    basic_auth_pass: Optional[str] = field(default=None, repr=False)
    #: shared secret Label Studio's webhook sends (header X-PSLG-Webhook-Secret, or ?secret= in its URL); when
    #: set, /webhook requires it or Basic auth
    webhook_secret: Optional[str] = field(default=None, repr=False)
    model_dir: Path = Path("pslg-backend-data")
    sam_checkpoint: Optional[str] = None
    sam_model_type: str = "vit_b"
    grounding_model: Optional[str] = None
    #: a one-stage model (SAM 3 folder or hub id): grounds and segments, replacing the SAM checkpoint and grounder
    one_stage_model: Optional[str] = None
    #: model precision on CUDA (annotate.precision): auto | fp32 | bf16 | tf32
    precision: str = "auto"
    device: str = "auto"
    train_every: int = 0
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    image_timeout_s: float = DEFAULT_IMAGE_TIMEOUT_S
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: bytes the image decodes of the process may hold at once (shared by concurrent requests)
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES
    local_files_root: Optional[str] = None
    predict_wait_s: float = 60.0
    train_epochs: Optional[int] = None
    use_cfpg: Optional[bool] = None
    use_mbo: Optional[bool] = None
    #: seconds between looks at the grounding model store for a new version (0: only on /setup and retrains)
    model_poll_s: float = 5.0
    #: most seconds of inference one request may use; prompts not started by then fail (0: no limit)
    inference_budget_s: float = 300.0
    workers: int = 1  # inference processes; from the environment, PSLG_WORKERS unset or 0 = one per core
    embedding_cache: Optional[Path] = None
    embedding_cache_bytes: int = 2 * 1024**3
    local_image_root: Optional[str] = None
    image_cache_bytes: int = DEFAULT_IMAGE_CACHE_BYTES
    image_cache_items: int = DEFAULT_IMAGE_CACHE_ITEMS
    #: interactive sessions (backend.sessions): how many, how many bytes of masks, forgotten after this idle time
    session_items: int = 256
    session_bytes: int = 64 << 20
    session_ttl_s: float = 1800.0
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_projects: int = DEFAULT_MAX_PROJECTS
    max_tasks_per_request: int = DEFAULT_MAX_TASKS_PER_REQUEST
    #: the front (backend.front): seconds for a request head, for its body, for writing the answer; open connections
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    send_timeout_s: float = 60.0
    max_connections: int = 1024
    max_label_config_bytes: int = DEFAULT_MAX_LABEL_CONFIG_BYTES
    #: simplification of polygon predictions (PolygonLabels configs): px, or "p%" of each piece's diagonal
    polygon_tolerance: Tolerance = field(default_factory=lambda: Tolerance.parse(DEFAULT_POLYGON_TOLERANCE))
    #: learning from corrections without a grounding model: corrected masks a category needs for its own shape
    #: prior, and (pre-label, correction) pairs before the quality estimate replaces today's score
    prior_min_samples: int = 3
    quality_min_pairs: int = 20
    #: task categories that are not a label of the config → the label they get (``PSLG_LABEL_MAP``:
    #: ``airplane=vehicle,ship=vessel`` or a JSON file); without it such a task fails instead of being mislabelled
    label_map: Optional[str] = None
    #: held-out corrections of a class before a retrain may change its served prior (``annotate.promotion``)
    adopt_min_samples: int = 5
    #: seconds a Start Training request waits for the retrain's outcome to answer with it (Label Studio waits 100)
    train_wait_s: float = 25.0
    #: append the last training outcome to the model's title in Label Studio (``backend.model_title``)
    outcome_in_title: bool = True
    #: generalized configs (a "no target" choice): the re-ranked grounding score an object needs to be pre-labelled
    target_threshold: float = 0.3

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
            webhook_secret=_str(env, "PSLG_WEBHOOK_SECRET"),
            model_dir=Path(_str(env, "MODEL_DIR") or "pslg-backend-data"),
            sam_checkpoint=_str(env, "PSLG_SAM_CHECKPOINT"),
            sam_model_type=_str(env, "PSLG_SAM_MODEL_TYPE") or "vit_b",
            grounding_model=_str(env, "PSLG_GROUNDING_MODEL"),
            one_stage_model=_str(env, "PSLG_ONE_STAGE_MODEL"),
            precision=_str(env, "PSLG_PRECISION") or "auto",
            device=_str(env, "PSLG_DEVICE") or "auto",
            train_every=_int(env, "PSLG_TRAIN_EVERY", 0),
            max_image_bytes=_int(env, "PSLG_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES),
            image_timeout_s=_float(env, "PSLG_IMAGE_TIMEOUT", DEFAULT_IMAGE_TIMEOUT_S),
            max_pixels=_int(env, "PSLG_MAX_PIXELS", DEFAULT_MAX_PIXELS),
            max_decode_bytes=_int(env, "PSLG_MAX_DECODE_BYTES", DEFAULT_MAX_DECODE_BYTES),
            local_files_root=_str(env, "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"),
            predict_wait_s=_float(env, "PSLG_PREDICT_WAIT", 60.0),
            train_epochs=int(epochs) if epochs else None,
            use_cfpg=_bool(env, "PSLG_USE_CFPG"),
            use_mbo=_bool(env, "PSLG_USE_MBO"),
            model_poll_s=_float(env, "PSLG_MODEL_POLL", 5.0),
            target_threshold=_float(env, "PSLG_TARGET_THRESHOLD", 0.3),
            inference_budget_s=_float(env, "PSLG_INFERENCE_BUDGET", 300.0),
            workers=_int(env, "PSLG_WORKERS", 0),
            embedding_cache=Path(_str(env, "PSLG_EMBEDDING_CACHE")) if _str(env, "PSLG_EMBEDDING_CACHE") else None,
            embedding_cache_bytes=_int(env, "PSLG_EMBEDDING_CACHE_BYTES", 2 * 1024**3),
            local_image_root=_str(env, "PSLG_LOCAL_IMAGE_ROOT"),
            image_cache_bytes=_int(env, "PSLG_IMAGE_CACHE_BYTES", DEFAULT_IMAGE_CACHE_BYTES),
            image_cache_items=_int(env, "PSLG_IMAGE_CACHE_ITEMS", DEFAULT_IMAGE_CACHE_ITEMS),
            session_items=_int(env, "PSLG_SESSION_ITEMS", 256),
            session_bytes=_int(env, "PSLG_SESSION_BYTES", 64 << 20),
            session_ttl_s=float(_int(env, "PSLG_SESSION_TTL", 1800)),
            max_request_bytes=_int(env, "PSLG_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES),
            max_projects=_int(env, "PSLG_MAX_PROJECTS", DEFAULT_MAX_PROJECTS),
            max_tasks_per_request=max(1, _int(env, "PSLG_MAX_TASKS_PER_REQUEST", DEFAULT_MAX_TASKS_PER_REQUEST)),
            header_timeout_s=_float(env, "PSLG_HEADER_TIMEOUT", 10.0),
            body_timeout_s=_float(env, "PSLG_BODY_TIMEOUT", 60.0),
            send_timeout_s=_float(env, "PSLG_SEND_TIMEOUT", 60.0),
            max_connections=max(1, _int(env, "PSLG_MAX_CONNECTIONS", 1024)),
            max_label_config_bytes=_int(env, "PSLG_MAX_LABEL_CONFIG_BYTES", DEFAULT_MAX_LABEL_CONFIG_BYTES),
            polygon_tolerance=_tolerance(env, "PSLG_POLYGON_TOLERANCE"),
            prior_min_samples=max(1, _int(env, "PSLG_PRIOR_MIN_SAMPLES", 3)),
            quality_min_pairs=max(3, _int(env, "PSLG_QUALITY_MIN_PAIRS", 20)),
            label_map=_label_map(env, "PSLG_LABEL_MAP"),
            adopt_min_samples=max(1, _int(env, "PSLG_ADOPT_MIN_SAMPLES", 5)),
            train_wait_s=max(0.0, _float(env, "PSLG_TRAIN_WAIT", 25.0)),
            outcome_in_title=_bool(env, "PSLG_OUTCOME_IN_TITLE") is not False,
        )

    @property
    def basic_auth_enabled(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_pass)

    def startup_warnings(self) -> list[str]:
        """What a user should be told when the backend starts with these settings."""
        out = []
        if self.basic_auth_enabled and not self.webhook_secret:
            out.append(
                "BASIC_AUTH_USER/BASIC_AUTH_PASS are set but PSLG_WEBHOOK_SECRET is not: Label Studio (1.23) sends "
                "the webhook it creates for the backend without Basic auth, so every /webhook is refused (401) and no "
                "correction is learned from. Set PSLG_WEBHOOK_SECRET and add the header "
                f"{WEBHOOK_SECRET_HEADER}: <secret> to the project's webhook (Settings → Webhooks), see "
                "docs/serve-backend.md")
        return out

"""Choosing the torch device a model runs on.

``"auto"`` picks the fastest device present (CUDA, then Apple MPS, then CPU) so one command line works on a
laptop, a workstation and a GPU server. An *explicit* device that is not available is an error rather than a
silent fallback: a user who asks for ``cuda`` and silently gets a 100× slower CPU run has been misled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when a device is resolved: DeviceError stays importable without it
    import torch

__all__ = ["DeviceError", "resolve_device"]


class DeviceError(ValueError):
    """The requested device does not exist or is not usable on this machine."""


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"`` (or a ``torch.device``) into a usable ``torch.device``.

    ``None`` means ``"auto"``. Raises :class:`DeviceError` naming the device and what *is* available when an
    explicit device cannot be used.
    """
    import torch

    if device is None:
        device = "auto"
    if isinstance(device, torch.device):
        spec = str(device)
    else:
        spec = str(device).strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested but CUDA is not available here ({_available()})")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"device {spec!r} requested but only {count} CUDA device(s) exist (cuda:0..cuda:{count - 1})")
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise DeviceError(f"device {spec!r} requested but Apple MPS is not available here ({_available()})")
        return dev
    raise DeviceError(f"unsupported device {device!r}; use auto, cpu, cuda, cuda:N or mps")


def _available() -> str:
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names.append(f"cuda ×{torch.cuda.device_count()}")
    if _mps_available():
        names.append("mps")
    return "available: " + ", ".join(names)

"""Optional model stacks (pip extras) and the message a user gets when one is missing.

The toolkit is installed from a clone of its repository (it is not published on the package index):
``pip install .`` is the weights-free toolkit (classical segmenter, backend, converters) without torch; SAM and
the grounding models come with the ``[sam]`` / ``[grounding]`` extras, SAM 2 / SAM-HQ / EdgeTAM / SAM 3 with
``[segmenters]`` (``pip install '.[sam]'``; ``[vlm]`` adds peft for LoRA fine-tuning of the vision-language
grounders; ``[all]`` = all of them). :func:`install_command` is the one place that spells this; every hint uses it. Code that needs an extra
calls :func:`require_extra` *before* importing the stack, so the user reads which extra to install instead of a
bare ``ModuleNotFoundError: No module named 'torch'``.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "INSTALL_TARGET", "MissingExtraError", "install_command", "missing_modules", "require_extra"]

EXTRAS: dict[str, tuple[str, ...]] = {
    "sam": ("torch", "torchvision", "segment_anything"),
    "grounding": ("torch", "torchvision", "transformers"),
    "segmenters": ("torch", "transformers"),  # + timm, which only EdgeTAM needs (checked when one loads)
    "vlm": ("torch", "torchvision", "transformers", "peft"),
    "ray": ("ray",),
    "geo": ("shapely", "pyogrio"),
}
"""Import names each extra provides (the distributions are listed in pyproject.toml)."""

INSTALL_TARGET = "."
"""What ``pip install`` is given: the repository's root folder (a clone), where pyproject.toml is."""


def install_command(extra: str | None = None) -> str:
    """The command that installs the toolkit (``pip install .``) or it with ``extra`` (``pip install '.[sam]'``),
    run in the repository's root folder."""
    return f"pip install '{INSTALL_TARGET}[{extra}]'" if extra else f"pip install {INSTALL_TARGET}"


class MissingExtraError(ImportError):
    """A feature needs an optional extra that is not installed; the message names the pip command."""


def missing_modules(extra: str) -> list[str]:
    """The import names of ``extra`` that cannot be found in this environment (nothing is imported)."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(sorted(EXTRAS))}")
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def require_extra(extra: str, feature: str) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extra`` is installed.

    ``feature`` starts the message, e.g. ``require_extra("sam", "SAM")`` →
    ``SAM needs the [sam] extra: pip install '.[sam]' in the repository's folder (missing: torch, segment_anything)``.
    """
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(f"{feature} needs the [{extra}] extra: {install_command(extra)} in the repository's "
                                f"folder (missing: {', '.join(missing)})")

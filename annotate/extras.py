"""Optional model stacks (pip extras) and the message a user gets when one is missing.

``pip install pslg-annotate`` is the weights-free toolkit (classical segmenter, backend, converters) without
torch; SAM and the grounding models come with the ``[sam]`` / ``[grounding]`` extras (``[all]`` = both). Code
that needs one calls :func:`require_extra` *before* importing the stack, so the user reads which extra to
install instead of a bare ``ModuleNotFoundError: No module named 'torch'``.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtraError", "missing_modules", "require_extra"]

EXTRAS: dict[str, tuple[str, ...]] = {
    "sam": ("torch", "torchvision", "segment_anything"),
    "grounding": ("torch", "torchvision", "transformers"),
}
"""Import names each extra provides (the distributions are listed in pyproject.toml)."""


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
    ``SAM needs the [sam] extra: pip install 'pslg-annotate[sam]' (missing: torch, segment_anything)``.
    """
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(f"{feature} needs the [{extra}] extra: pip install 'pslg-annotate[{extra}]' "
                                f"(missing: {', '.join(missing)})")

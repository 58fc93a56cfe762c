"""Turning a referring expression into the text prompt each detector expects.

Why a module of its own: Grounding DINO splits its prompt into *phrases* at "." (and "?"), and its training loss
maps each box to one phrase. A referring expression is one phrase, so any "." or "?" inside it must go, the text
must be lower-case (the released checkpoints were trained on lower-case prompts) and it must end with ".".
OWLv2 takes the expression as a plain text query (no trailing period).
"""

from __future__ import annotations

import re

from annotate.grounding.base import GroundingError

_SPACES = re.compile(r"\s+")
_PHRASE_BREAKS = re.compile(r"[.?]+")


def normalise_expression(expression: object) -> str:
    """Lower-case, trim and collapse whitespace; raise ``GroundingError`` for a missing or empty expression."""
    if expression is None:
        raise GroundingError("no referring expression given (expected text such as 'the storage tank at the top left')")
    if not isinstance(expression, str):
        raise GroundingError(f"referring expression must be text, got {type(expression).__name__}")
    text = _SPACES.sub(" ", expression).strip().lower()
    if not _PHRASE_BREAKS.sub(" ", text).strip(" ,;:!"):
        raise GroundingError(f"referring expression {expression!r} is empty")
    return text


def grounding_dino_prompt(expression: str) -> str:
    """The expression as ONE Grounding DINO phrase: lower-case, no inner '.'/'?', ending with ' .'-style '.'."""
    text = normalise_expression(expression)
    text = _SPACES.sub(" ", _PHRASE_BREAKS.sub(" ", text)).strip(" ,;:!")
    return f"{text}."


def owlv2_query(expression: str) -> str:
    """The expression as an OWLv2 text query (lower-case, without trailing punctuation)."""
    text = normalise_expression(expression)
    return _SPACES.sub(" ", _PHRASE_BREAKS.sub(" ", text)).strip(" ,;:!")

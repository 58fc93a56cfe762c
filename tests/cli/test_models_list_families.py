"""`pslg models list` names every grounder family the loader accepts, with whether its extra is installed."""

from __future__ import annotations

from pathlib import Path

from annotate.extras import missing_modules
from annotate.grounding.families import FAMILIES
from annotate.grounding.loader import GDINO_TYPES, OWLV2_TYPES
from annotate.grounding.vlm import VLM_TYPES
from tests.support.cli import pslg


def test_the_families_table_is_what_the_loader_accepts() -> None:
    listed = [t for family in FAMILIES for t in family.model_types]
    assert sorted(listed) == sorted(GDINO_TYPES + OWLV2_TYPES + VLM_TYPES)


def test_models_list_shows_the_vlm_families(tmp_path: Path) -> None:
    result = pslg("models", "list", "--cache-dir", tmp_path, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for family in FAMILIES:
        row = next(line for line in result.output.splitlines() if family.name in line and family.example in line)
        assert family.fine_tuning in row
        assert ("yes" in row) == (not missing_modules(family.extra))
    assert "florence2" in result.output and "qwen2_5_vl" in result.output

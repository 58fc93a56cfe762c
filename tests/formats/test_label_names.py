"""Category → label by name (``converters.labelstudio.labels``): spellings that are one label, and the label map."""

from __future__ import annotations

import json

import pytest

from converters.labelstudio.labels import LabelMatcher, UnmatchedLabelError, label_key, parse_label_map

LABELS = ["vehicle", "storage_tank", "tennis court", "bus", "glass house"]


@pytest.mark.parametrize("category, label", [
    ("Vehicles", "vehicle"), ("storage-tanks", "storage_tank"), ("Storage Tank", "storage_tank"),
    ("tennis_courts", "tennis court"), ("buses", "bus"), ("Glass  Houses", "glass house"),
])
def test_spellings_of_one_label_match(category: str, label: str) -> None:
    assert LabelMatcher(LABELS).match(category) == (label, "name")


def test_an_unknown_category_fails_listing_the_labels_and_the_map_labels_it(tmp_path) -> None:
    with pytest.raises(UnmatchedLabelError) as err:
        LabelMatcher(LABELS).match("harbor")
    assert "'harbor'" in str(err.value) and "vehicle, storage_tank, tennis court, bus, glass house" in str(err.value)
    assert LabelMatcher(LABELS, parse_label_map("harbor=Vehicles, airplane = bus")).match("Harbors") == ("vehicle", "map")
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"ship": "storage tank"}))
    assert LabelMatcher(LABELS, parse_label_map(str(path))).match("ships") == ("storage_tank", "map")
    with pytest.raises(ValueError, match="'boat' is not a label"):
        LabelMatcher(LABELS, {"ship": "boat"})
    with pytest.raises(ValueError, match="not CATEGORY=LABEL"):
        parse_label_map("ship")
    assert LabelMatcher(["glass", "status"]).match("Glasses") == ("glass", "name")  # not every final s is a plural

"""The training outcome in the model's title: the person's title is kept and each outcome replaces the last."""

from backend.model_title import MARKER, MAX_OUTCOME_CHARS, OutcomeTitles, titled


def test_the_outcome_follows_the_persons_title_and_replaces_the_previous_one():
    first = titled("Buildings SAM", "served v0001: +0.083 mIoU on 4 held-out corrections")
    assert first == "Buildings SAM" + MARKER + "served v0001: +0.083 mIoU on 4 held-out corrections"
    second = titled(first, "kept v0001: candidate v0002 was worse on bridge (-0.031)")
    assert second == "Buildings SAM" + MARKER + "kept v0001: candidate v0002 was worse on bridge (-0.031)"
    assert second.count(MARKER) == 1
    assert titled(None, "served v0001").startswith("PSLG-SAM" + MARKER)


def test_a_long_outcome_is_cut_on_one_line():
    line = titled("m", "served v0003:\n" + "x" * 400)
    outcome = line.split(MARKER, 1)[1]
    assert len(outcome) == MAX_OUTCOME_CHARS and outcome.endswith("…") and "\n" not in line


def test_the_patch_repeats_what_label_studio_revalidates():
    backend = {"id": 3, "url": "http://localhost:9090", "auth_method": "NONE", "title": "m"}
    body = OutcomeTitles._patch_body(backend, 7, "m · x", None)
    assert body == {"title": "m · x", "url": "http://localhost:9090", "project": 7, "auth_method": "NONE"}
    basic = {**backend, "auth_method": "BASIC_AUTH"}
    assert OutcomeTitles._patch_body(basic, 7, "t", None) is None  # cannot re-validate without the password
    assert OutcomeTitles._patch_body(basic, 7, "t", ("u", "p"))["basic_auth_pass"] == "p"

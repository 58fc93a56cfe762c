"""Live project export through label-studio-sdk against a real Label Studio 1.23 (started by the tests):
legacy token and personal access token (JWT refresh), images fetched from the server with auth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import coco_masks, digest, pslg

CONFIG = Path(__file__).resolve().parents[2] / "converters" / "configs" / "expressions_per_region.xml"


@pytest.mark.e2e
def test_live_project_export_with_legacy_token_and_pat(labelstudio_server, tmp_path, monkeypatch):
    from converters.synthetic_export import write_synthetic_export

    ls = labelstudio_server
    img_dir = ls.local_files_dir("converters-live")
    export, truth = write_synthetic_export(img_dir, n_images=2, layout="per-region", seed=31, relative=False)
    tasks = json.loads(export.read_text())
    for t in tasks:
        t.pop("id")
        t["data"]["image"] = ls.local_file_url(Path(t["data"]["image"]))
        for a in t["annotations"]:
            a.pop("id")
    project = ls.api("POST", "/api/projects", json={"title": "converters live", "label_config": CONFIG.read_text()}).json()
    ls.connect_local_storage(project["id"], img_dir)
    ls.api("POST", f"/api/projects/{project['id']}/import", json=tasks)

    want: dict[str, set] = {}
    for t in truth:
        want.setdefault(t.image.name, set()).add(digest(t.mask))
    for kind, token in (("legacy", ls.legacy_token), ("pat", ls.pat)):
        out = tmp_path / f"coco-{kind}"
        if kind == "pat":  # the token may also come from the environment
            monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
            args = ["--url", ls.url, "--project", project["id"]]
        else:
            args = ["--url", ls.url, "--token", token, "--project", project["id"]]
        r = pslg("export", "coco", *args, "--out", out)
        assert r.exit_code == 0, r.output
        assert token not in r.output
        got = coco_masks(out / "annotations.json")
        assert {k: {digest(m) for m, _, _ in v} for k, v in got.items()} == want
        for name in want:  # images downloaded from Label Studio, byte for byte
            assert (out / "images" / name).read_bytes() == (img_dir / "images" / name).read_bytes()
    r = pslg("export", "rrsis", "--url", ls.url, "--token", ls.legacy_token, "--project", project["id"],
             "--out", tmp_path / "rr", "--select", f"annotator:{ls.username}")  # email → user id via the SDK
    assert r.exit_code == 0, r.output
    from converters.rrsis import read_rrsis

    recs = read_rrsis(tmp_path / "rr")
    assert sorted(len(x.sentences) for x in recs) == [2] * len(truth)
    r = pslg("export", "coco", "--url", ls.url, "--token", "0" * 40, "--project", project["id"],
             "--out", tmp_path / "bad")
    assert r.exit_code == 2 and "0" * 40 not in r.output and not (tmp_path / "bad").exists()

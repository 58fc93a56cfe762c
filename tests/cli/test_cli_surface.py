"""One CLI: the same option name for the same concept, an example in every help, flags without value hints,
``--version``, tables that show names in full, messages that list what exists, and ``eval`` modes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
import typer.main

from converters.cli.main import app
from tests.support.cli import pslg, write_rrsis_dataset

#: The commands of the datasets, segmentation, grounding and models areas (``serve`` and ``prelabel`` are
#: documented by their own areas).
COMMANDS = [
    ("segment",), ("export", "coco"), ("export", "rrsis"), ("import", "rrsis"), ("import", "coco"),
    ("validate",), ("stats",), ("eval",), ("train", "grounding"), ("models", "list"), ("models", "pull"),
    ("models", "verify"),
]


def _command(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return cmd


def _long_options(path: tuple[str, ...]) -> set[str]:
    return {o for p in _command(path).params for o in (*p.opts, *getattr(p, "secondary_opts", [])) if o.startswith("--")}


def test_version() -> None:
    res = pslg("--version")
    assert res.exit_code == 0
    assert re.fullmatch(r"pslg \d+\.\d+\.\d+\S*\n", res.output)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_help_has_an_example_and_no_bool_value_hints(path: tuple[str, ...]) -> None:
    res = pslg(*path, "--help", env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Example" in res.output, res.output
    assert "pslg " + " ".join(path) in res.output.split("Example", 1)[1], res.output  # an example of this command
    assert "<bool>" not in res.output


def _all_commands(cmd=None, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    cmd = cmd if cmd is not None else typer.main.get_command(app)
    if hasattr(cmd, "commands"):
        return [p for name, sub in cmd.commands.items() for p in _all_commands(sub, path + (name,))]
    return [path]


def test_every_command_is_listed_by_the_walk() -> None:
    found = _all_commands()
    assert {("serve",), ("prelabel",), ("select",), ("models", "versions"), ("segment",)} <= set(found)
    assert len(found) >= 18


@pytest.mark.parametrize("path", _all_commands(), ids=" ".join)
def test_help_at_80_columns_shows_an_example_and_every_name_in_full(path: tuple[str, ...]) -> None:
    res = pslg(*path, "--help", env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    text = res.output
    assert "Example" in text and "pslg " + " ".join(path) in text.split("Example", 1)[1], text
    examples = [line for line in text.splitlines() if line.strip().startswith(("pslg ", "curl ", "LABEL_STUDIO_URL="))]
    assert examples
    for line in examples:  # each example whole on its line (a terminal wraps it; nothing splits "--local-image-root")
        following = text.splitlines()[text.splitlines().index(line) + 1:][:1]
        assert not following or not following[0].strip() or following[0].strip().startswith("pslg "), (line, following)
    prose = [line for line in text.splitlines() if line not in examples]
    assert all(len(line) <= 80 for line in prose), max(prose, key=len)
    assert "<bool>" not in text
    flat = " ".join(text.split())
    for param in _command(path).params:  # every option name, whole (not "--train-backbo…")
        for name in (*param.opts, *getattr(param, "secondary_opts", [])):
            if name.startswith("--"):
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (name, text)
        envvar = getattr(param, "envvar", None)
        for var in ([envvar] if isinstance(envvar, str) else envvar or []):
            assert var in flat, (var, text)
    for var in re.findall(r"\$?\b(?:PSLG|LABEL_STUDIO)_[A-Z_]+", " ".join((_command(path).help or "").split())):
        assert var.lstrip("$") in flat.replace("-\n", ""), (var, text)


def test_one_option_name_per_concept() -> None:
    outputs = {path: _long_options(path) for path in COMMANDS}
    for path, opts in outputs.items():
        assert not opts & {"--out-dir", "--output", "--output-dir", "--image-dir", "--images-dir"}, (path, opts)
    for path in [("segment",), ("export", "coco"), ("export", "rrsis"), ("import", "rrsis"), ("import", "coco"),
                 ("eval",), ("train", "grounding")]:
        assert "--out" in outputs[path], path
    for path in [("export", "coco"), ("export", "rrsis"), ("import", "rrsis"), ("import", "coco"), ("validate",),
                 ("eval",), ("train", "grounding")]:
        assert "--image-root" in outputs[path], path


def test_export_coco_lists_no_rrsis_only_options() -> None:
    rrsis_only = {"--dataset-name", "--split-ratios", "--seed"}
    assert not _long_options(("export", "coco")) & rrsis_only
    assert rrsis_only <= _long_options(("export", "rrsis"))


def test_stats_and_eval_tables_show_long_category_names_in_full(tmp_path: Path) -> None:
    long_name = "Large_Vehicle_With_A_Long_Class_Name"
    data = write_rrsis_dataset(tmp_path, {"train": 2, "test": 2}, categories=(long_name, "ship"))
    res = pslg("stats", data, env={"COLUMNS": "60"})
    assert res.exit_code == 0, res.output
    assert long_name in res.output and "…" not in res.output
    res = pslg("eval", "--data", data, "--split", "test", "--oracle-box", "--no-progress", env={"COLUMNS": "60"})
    assert res.exit_code == 0, res.output
    assert long_name in res.output and "…" not in res.output


def test_eval_of_a_missing_split_names_the_splits_that_exist(tmp_path: Path) -> None:
    data = write_rrsis_dataset(tmp_path, {"train": 2})
    res = pslg("eval", "--data", data, "--split", "test", "--oracle-box", "--no-progress")
    assert res.exit_code == 2
    assert "no refs in split 'test'" in res.output and "'train'" in res.output
    res = pslg("import", "rrsis", data, "--split", "val", "--out", tmp_path / "tasks.json")
    assert res.exit_code == 2 and "'train'" in res.output and not (tmp_path / "tasks.json").exists()


def test_eval_without_split_scores_the_only_split_and_says_so(tmp_path: Path) -> None:
    data = write_rrsis_dataset(tmp_path, {"train": 2})  # an export that put everything in train
    res = pslg("eval", "--data", data, "--oracle-box", "--no-progress", "--out", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert "no 'test' split; scoring its only split, 'train'" in res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["split"] == "train" and report["settings"]["refs"] == 2
    both = write_rrsis_dataset(tmp_path / "two", {"train": 1, "val": 1})
    res = pslg("eval", "--data", both, "--oracle-box", "--no-progress")
    assert res.exit_code == 2 and "give --split, one of 'train', 'val'" in res.output


def test_eval_writes_a_report_file_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_rrsis_dataset(tmp_path, {"test": 2})
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    res = pslg("eval", "--data", data, "--oracle-box", "--no-progress")
    assert res.exit_code == 0, res.output
    assert list(work.iterdir()) == [] and "Pr@0.5" in res.output
    res = pslg("eval", "--data", data, "--oracle-box", "--no-progress", "--out", "report.json")
    assert res.exit_code == 0, res.output
    assert json.loads((work / "report.json").read_text())["overall"]["n"] == 2


class _TruthGrounder:
    """Answers every expression with the ground-truth box of the object it names (read from the refs)."""

    model_version = "truth-grounder"

    def __init__(self, boxes: dict[str, tuple[float, float, float, float]]) -> None:
        self.boxes = boxes
        self.calls = 0

    def ground(self, image, expression, top_k=1):
        from annotate.grounding import GroundingCandidate

        self.calls += 1
        return [GroundingCandidate(self.boxes[expression], 0.9)]


def test_eval_boxes_only_scores_stage_one_without_the_mask_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import annotate.factory
    import annotate.grounding
    from converters.rrsis import read_rrsis

    data = write_rrsis_dataset(tmp_path, {"test": 3}, categories=("vehicle", "ship"))
    grounder = _TruthGrounder({s: r.bbox_xyxy for r in read_rrsis(data, "test") for s in r.sentences})
    seen_kwargs: list[dict] = []

    def fake_load(spec, device="auto", **kwargs):
        seen_kwargs.append(kwargs)
        return grounder

    def no_segmenter(*args, **kwargs):
        raise AssertionError("--boxes-only must not build a segmenter")

    monkeypatch.setattr(annotate.grounding, "load_grounder", fake_load)
    monkeypatch.setattr(annotate.factory, "build_segmenter", no_segmenter)
    out = tmp_path / "boxes.json"
    res = pslg("eval", "--data", data, "--grounding", "some/grounder", "--boxes-only", "--no-spatial",
               "--no-progress", "--out", out)
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["overall"] == {"acc@0.5": 1.0, "mean_iou": 1.0, "n": 3}
    assert set(report["per_category"]) == {"vehicle", "ship"}
    assert "Pr@0.5" not in res.output and "Acc@0.5" in res.output
    assert grounder.calls == 3 and seen_kwargs == [{"spatial_weight": 0.0}]


def test_missing_local_model_folder_says_no_such_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")  # the light install names the missing [grounding] extra first
    data = write_rrsis_dataset(tmp_path, {"train": 1, "val": 1})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for base in ("./no-model", "models/grounder-v2", str(tmp_path / "a" / "b")):
        res = pslg("train", "grounding", "--data", data, "--base", base, "--out", tmp_path / "store",
                   "--epochs", "1", "--device", "cpu", "--no-progress")
        assert res.exit_code == 2, res.output
        assert "no such directory" in res.output and "Repo id" not in res.output
        assert not (tmp_path / "store").exists()
    image = next((data / "images" / "rrsisd" / "JPEGImages").iterdir())
    res = pslg("segment", image, "--text", "the vehicle", "--grounding", "models/grounder-v2", "--out", tmp_path / "seg")
    assert res.exit_code == 2 and "--grounding models/grounder-v2: no such directory" in res.output
    res = pslg("eval", "--data", data, "--split", "val", "--grounding", "./nope", "--no-progress")
    assert res.exit_code == 2 and "no such directory" in res.output


def test_failed_training_leaves_no_empty_out_folder(tmp_path: Path) -> None:
    data = write_rrsis_dataset(tmp_path, {"train": 1, "val": 1})
    not_a_model = tmp_path / "empty-model"
    not_a_model.mkdir()
    out = tmp_path / "store"
    res = pslg("train", "grounding", "--data", data, "--base", not_a_model, "--out", out, "--epochs", "1",
               "--device", "cpu", "--no-progress")
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_segment_and_eval_honour_max_pixels(tmp_path: Path) -> None:
    from annotate.image_io import DEFAULT_MAX_PIXELS
    from backend.config import Settings

    assert Settings.from_env({}).max_pixels == DEFAULT_MAX_PIXELS  # one default for the CLI and the backend
    data = write_rrsis_dataset(tmp_path, {"test": 1})
    image = next((data / "images" / "rrsisd" / "JPEGImages").iterdir())
    res = pslg("segment", image, "--box", "1,1,20,20", "--out", tmp_path / "seg", "--max-pixels", "1000")
    assert res.exit_code == 2 and "above the limit of 1,000" in res.output
    res = pslg("segment", image, "--box", "1,1,20,20", "--out", tmp_path / "seg", env={"PSLG_MAX_PIXELS": "1000"})
    assert res.exit_code == 2 and "above the limit of 1,000" in res.output
    res = pslg("eval", "--data", data, "--oracle-box", "--no-progress", env={"PSLG_MAX_PIXELS": "1000"})
    assert res.exit_code == 1 and "above the limit" in res.output

"""LoRA fine-tuning of the vision-language grounders: a training step changes what the adapter answers, the
adapter is a store version served on its base, training again continues it, and `pslg train grounding` /
`pslg eval --boxes-only` run on it (tiny random Florence-2 and Qwen2.5-VL, real peft)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("peft")

from annotate.grounding.base import GroundingError  # noqa: E402
from annotate.grounding.evaluation import load_rgb, samples_from_records  # noqa: E402
from annotate.grounding.training import TrainConfig, train_grounder  # noqa: E402
from annotate.modelstore import ModelStore  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from tests.support.tiny_grounders import write_fixed_layout_rrsis

    return write_fixed_layout_rrsis(tmp_path_factory.mktemp("fixed") / "data", {"train": 4, "val": 2})


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    from tests.support.tiny_vlms import save_tiny_florence2, save_tiny_qwen25_vl

    root = tmp_path_factory.mktemp("vlm-bases")
    return {"florence2": save_tiny_florence2(root / "florence"), "qwen2_5_vl": save_tiny_qwen25_vl(root / "qwen")}


def _samples(data: Path, split: str):
    from converters.rrsis import read_rrsis

    return samples_from_records(read_rrsis(data, split))


def _answer_loss_and_logits(spec, sample) -> tuple[float, np.ndarray]:
    """The loss of the training answer under the model at ``spec`` and its logits (eval mode, no dropout)."""
    import torch

    from annotate.grounding import load_grounder

    grounder = load_grounder(spec, device="cpu")
    with torch.inference_mode():
        out = grounder.model(**grounder.encode(load_rgb(sample.image_path), sample.expression, answer_box=sample.box))
    return float(out.loss), out.logits.float().numpy()


@pytest.mark.parametrize("family", ["florence2", "qwen2_5_vl"])
def test_one_training_step_changes_the_adapters_answer(family, bases, data, tmp_path) -> None:
    base = bases[family]
    train = _samples(data, "train")
    loss_before, logits_before = _answer_loss_and_logits(base, train[0])
    result = train_grounder(train, _samples(data, "val"), str(base), tmp_path / "store",
                            TrainConfig(epochs=1, batch_size=len(train), lr=1e-2, grad_clip=0.0),
                            device="cpu", progress=False, log=lambda _: None)
    version = result.path
    # an adapter, not a copy of the base weights
    assert (version / "adapter_config.json").is_file() and (version / "adapter_model.safetensors").is_file()
    assert not (version / "config.json").exists()
    assert json.loads((version / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base.resolve())
    card = ModelStore(tmp_path / "store").current("grounding").card
    assert card.extra["adapter"] == "lora" and card.extra["architecture"] == family and card.samples == 4
    assert len(result.history) == 1 and result.val is not None and result.val.n == 2
    # random weights answer no box: validation counts misses with the parser's message
    assert result.val.acc50 == 0.0 and all("answer" in e for e in result.val.errors)

    loss_after, logits_after = _answer_loss_and_logits(tmp_path / "store", train[0])
    assert logits_after.shape == logits_before.shape and not np.allclose(logits_after, logits_before)
    assert loss_after < loss_before  # the step moved the answer towards the training target


def test_training_from_an_adapter_version_continues_it(bases, data, tmp_path) -> None:
    base = bases["florence2"]
    train, store = _samples(data, "train"), tmp_path / "store"
    config = TrainConfig(epochs=1, batch_size=4, lr=1e-2, grad_clip=0.0)
    first = train_grounder(train, [], str(base), store, config, device="cpu", progress=False, log=lambda _: None)
    second = train_grounder(train, [], str(store), store, config, device="cpu", progress=False, log=lambda _: None)
    assert second.path.name == "v0002"
    card = ModelStore(store).current("grounding").card
    assert card.parent == first.path.name and card.base == str(base.resolve())
    _, logits_first = _answer_loss_and_logits(first.path, train[0])
    _, logits_second = _answer_loss_and_logits(second.path, train[0])
    assert not np.allclose(logits_first, logits_second)


def test_an_adapter_whose_base_is_gone_fails_clearly(bases, data, tmp_path) -> None:
    from annotate.grounding import load_grounder

    base = tmp_path / "base"
    shutil.copytree(bases["qwen2_5_vl"], base)
    result = train_grounder(_samples(data, "train")[:1], [], str(base), tmp_path / "store",
                            TrainConfig(epochs=1, batch_size=1), device="cpu", progress=False, log=lambda _: None)
    shutil.rmtree(base)
    with pytest.raises(GroundingError, match="no longer exists"):
        load_grounder(result.path, device="cpu")


def test_cli_trains_an_adapter_and_eval_reports_box_accuracy_before_and_after(bases, data, tmp_path) -> None:
    """The base is made to answer the dataset's box, so Acc@0.5 is 1 before; the adapter is served after."""
    from tests.support.cli import pslg
    from tests.support.tiny_grounders import FIXED_BOX
    from tests.support.tiny_vlms import force_answer

    base = tmp_path / "florence"
    shutil.copytree(bases["florence2"], base)
    bins = [int(v / 128 * 1000) for v in FIXED_BOX]
    force_answer(base, "the building in the center" + "".join(f"<loc_{b}>" for b in bins))

    before = pslg("eval", "--data", data, "--split", "val", "--grounding", base, "--boxes-only", "--no-progress",
                  "--device", "cpu", "--out", tmp_path / "before.json")
    assert before.exit_code == 0, before.output
    assert json.loads((tmp_path / "before.json").read_text())["overall"]["acc@0.5"] == 1.0

    store = tmp_path / "models"
    trained = pslg("train", "grounding", "--data", data, "--base", base, "--out", store, "--epochs", "1",
                   "--no-progress", "--device", "cpu")
    assert trained.exit_code == 0, trained.output
    assert "val box Acc@0.5 1.000" in trained.output

    after = pslg("eval", "--data", data, "--split", "val", "--grounding", store, "--boxes-only", "--no-progress",
                 "--device", "cpu", "--out", tmp_path / "after.json")
    assert after.exit_code == 0, after.output
    report = json.loads((tmp_path / "after.json").read_text())
    assert report["overall"] == {"acc@0.5": 1.0, "mean_iou": pytest.approx(report["overall"]["mean_iou"]), "n": 2}
    assert report["settings"]["model_version"] == ModelStore(store).current("grounding").card.label

"""PSLG_PRECISION: the decision logic (pure) and the bf16-vs-fp32 agreement check on a real loaded model (CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from annotate.precision import (AGREEMENT_IOU, PrecisionChoice, PrecisionError, decide, mask_iou, masks_agree,
                                parse_precision)


def _square(n: int, x0: int, y0: int, side: int) -> np.ndarray:
    m = np.zeros((n, n), bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def test_parse() -> None:
    assert parse_precision(None) == "auto" and parse_precision(" BF16 ") == "bf16"
    with pytest.raises(PrecisionError, match="fp16"):
        parse_precision("fp16")


def test_mask_agreement_threshold() -> None:
    a = _square(100, 10, 10, 50)  # 2500 px
    same = a.copy()
    one_row_more = a.copy()
    one_row_more[60, 10:60] = True  # 2550 px: IoU 0.980
    assert mask_iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    assert masks_agree([a, a], [same, same]) == (True, 1.0)
    ok, worst = masks_agree([a, a], [same, one_row_more])
    assert not ok and worst == pytest.approx(2500 / 2550) and worst < AGREEMENT_IOU
    assert masks_agree([a], [a, a])[0] is False and masks_agree([], [])[0] is False


def test_decisions() -> None:
    agree = lambda: (True, 0.997)  # noqa: E731
    differ = lambda: (False, 0.95)  # noqa: E731
    calls = []

    def counted():
        calls.append(1)
        return agree()

    # CPU and MPS: always fp32, the check is not even run
    for requested in ("auto", "bf16", "tf32", "fp32"):
        assert decide(requested, "cpu", counted).precision == "fp32"
    assert decide("auto", "mps", counted).precision == "fp32" and not calls
    # CUDA: explicit requests are honoured; auto follows the check
    assert decide("bf16", "cuda", differ).precision == "bf16"
    assert decide("tf32", "cuda", differ).precision == "tf32"
    assert decide("auto", "cuda", agree) == PrecisionChoice("bf16", "auto: bf16 masks agree with fp32 (lowest IoU 0.9970)", 0.997)
    choice = decide("auto", "cuda", differ)
    assert choice.precision == "fp32" and "0.9500" in choice.reason
    assert decide("auto", "cuda", None).precision == "fp32"


def test_bf16_check_on_a_loaded_model(tmp_path) -> None:
    """The check itself runs the model in fp32 and bf16 (bf16 works on CPU) and leaves it in fp32."""
    torch = pytest.importorskip("torch")
    from tests.support.tiny_hf_segmenters import save_tiny_sam2

    from annotate.precision import apply_precision, check_bf16
    from annotate.segmenters.hf_sam import HFSamSegmenter

    seg = HFSamSegmenter(save_tiny_sam2(tmp_path / "sam2"), device="cpu")
    ok, worst = check_bf16(seg)
    assert 0.0 <= worst <= 1.0 and ok == (worst >= AGREEMENT_IOU)
    assert seg.dtype == torch.float32 and next(seg.model.parameters()).dtype == torch.float32
    # bf16 really ran: the model in bf16 answers with float32 masks and logits
    seg.set_dtype(torch.bfloat16)
    seg.set_image(np.full((40, 50, 3), 128, np.uint8))
    out = seg.predict(box=np.array([5, 5, 30, 30]))
    assert next(seg.model.parameters()).dtype == torch.bfloat16 and out.logits.dtype == np.float32
    # on CPU every request resolves to fp32 and puts the model back there
    assert apply_precision(seg, "bf16").precision == "fp32"
    assert next(seg.model.parameters()).dtype == torch.float32

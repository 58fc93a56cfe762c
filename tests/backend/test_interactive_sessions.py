"""Clicks as the browser sends them (keypoints only) refine the mask the annotator sees, per task session.

Label Studio 1.23.2's browser sends, with a smart-keypoint click, only the keypoints of that session: no
rectangle, no pre-label (docs/formats.md). The task travels with its predictions (and the user's drafts), so
the backend must refine the pre-label shown, keep the clicks of a session across requests (an accepted
suggestion removes the keypoints from the canvas), and never mix sessions of different projects or users.
"""

from __future__ import annotations

import numpy as np
import pytest

from annotate.geometry import mask_iou
from backend.sessions import Session, Sessions
from converters.labelstudio.regions import brush_region
from tests.backend.test_protocol import _brush, _mask
from tests.support.scenes import CONFIG, task_for

W, H = 200, 160


def _keypoint(x: float, y: float, positive: bool = True) -> dict:
    return {"type": "keypointlabels", "original_width": W, "original_height": H, "is_positive": positive,
            "value": {"x": 100 * x / W, "y": 100 * y / H, "keypointlabels": ["vehicle"]}}


def _prediction(mask: np.ndarray, region_id: str, label: str, version: str = "pslg:old") -> dict:
    return {"id": 1, "model_version": version, "score": 0.5,
            "result": [brush_region(mask, label, from_name="mask", to_name="image", region_id=region_id)]}


def _interactive(client, task: dict, keypoints: list[dict], project: str = "7.1") -> dict:
    r = client.post("/predict", json={"tasks": [task], "project": project, "label_config": CONFIG,
                                      "params": {"context": {"result": keypoints}}})
    assert r.status_code == 200, r.get_data(as_text=True)
    [pred] = r.get_json()["results"]
    assert "error" not in pred, pred
    return pred


def _inner_point(mask: np.ndarray) -> tuple[float, float]:
    import cv2

    dt = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return float(x) + 0.5, float(y) + 0.5


def test_a_keypoint_refines_the_prelabel_shown_not_a_click_only_mask(make_client, scene):
    """The pre-label misses part of the object; a positive click there grows *that* mask, under its region id."""
    client = make_client()
    k = max(range(len(scene.objects)), key=lambda i: int(scene.objects[i].mask.sum()))
    obj = scene.objects[k]
    missed = obj.mask.copy()
    ys, xs = np.nonzero(obj.mask)
    cut = int(np.percentile(xs, 60))
    missed[:, cut:] = False  # the pre-label lost the right 40 % of the object
    task = task_for(scene, k, 11)
    task["data"].pop("bbox", None)  # no task box: the box must come from what the annotator sees
    task["predictions"] = [_prediction(missed, "prelabel01", obj.category)]
    lost = obj.mask & ~missed
    click = _inner_point(lost)

    pred = _interactive(client, task, [_keypoint(*click)])
    brush = _brush(pred)
    answer = _mask(brush)
    assert brush["id"] == "prelabel01"  # accepting the suggestion replaces the pre-label, no second mask
    assert answer[int(click[1]), int(click[0])]
    assert (answer & missed).sum() >= 0.95 * missed.sum()  # a refinement keeps what the pre-label had right
    assert mask_iou(answer, obj.mask) > mask_iou(missed, obj.mask)

    # what the pre-label had that the click does not touch is kept pixel for pixel: far from the click
    far = missed.copy()
    far[:, int(click[0]) - 12:] = False
    assert (answer[far]).all()


def test_clicks_persist_when_the_suggestion_is_accepted_and_the_keypoints_vanish(make_client, scene):
    """After an accept, Label Studio sends only the new keypoint: the earlier click still holds.

    The first click is positive on a part beyond the box (which only a click may add); the second, sent alone
    as the browser does after an accept, is negative on a leak. Were the first click forgotten, the box rule
    would drop that part again.
    """
    client = make_client()
    k = 0
    obj = scene.objects[k]
    leak = obj.mask.copy()
    x0, y0, x1, y1 = (int(v) for v in obj.box)
    leak[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = True  # the pre-label spills around the object
    task = task_for(scene, k, 21)
    task["predictions"] = [_prediction(leak, "prelabel02", obj.category)]
    far = max((o for i, o in enumerate(scene.objects) if i != k),
              key=lambda o: abs(o.box[0] - x0) + abs(o.box[1] - y0))
    first = _inner_point(far.mask)
    ring = leak & ~obj.mask
    ys, xs = np.nonzero(ring)
    second = (float(xs[0]) + 0.5, float(ys[0]) + 0.5)

    one = _mask(_brush(_interactive(client, task, [_keypoint(*first)])))
    assert one[int(first[1]), int(first[0])]
    two = _mask(_brush(_interactive(client, task, [_keypoint(*second, positive=False)])))
    assert not two[int(second[1]), int(second[0])]
    assert two[int(first[1]), int(first[0])]  # the accepted click is still honoured

    # another project's task with the same id does not see this session: its first click is not there
    other = _mask(_brush(_interactive(client, task, [_keypoint(*second, positive=False)], project="8.1")))
    assert not other[int(first[1]), int(first[0])]


def test_a_rectangle_starts_a_new_object_and_later_keypoints_refine_it(make_client, scene):
    client = make_client()
    k = 2
    obj = scene.objects[k]
    task = task_for(scene, k, 31)
    task["data"].pop("bbox", None)
    x0, y0, x1, y1 = obj.box
    rect = {"type": "rectanglelabels", "original_width": W, "original_height": H, "value": {
        "x": 100 * x0 / W, "y": 100 * y0 / H, "width": 100 * (x1 - x0) / W, "height": 100 * (y1 - y0) / H,
        "rectanglelabels": [obj.category]}}
    r = client.post("/predict", json={"tasks": [task], "project": "7.1", "label_config": CONFIG,
                                      "params": {"context": {"result": [rect]}}})
    boxed = _mask(_brush(r.get_json()["results"][0]))
    cx, cy = _inner_point(obj.mask)
    clicked = _mask(_brush(_interactive(client, task, [_keypoint(cx, cy)])))
    # the keypoint refines the drawn box's mask: the answer stays in the box (plus its margin)
    ys, xs = np.nonzero(clicked)
    assert xs.min() >= x0 - 0.1 * (x1 - x0) - 3 and xs.max() <= x1 + 0.1 * (x1 - x0) + 3
    assert mask_iou(clicked, boxed) > 0.8


def test_sessions_are_bounded_in_count_bytes_and_age():
    s = Sessions(max_items=2, max_bytes=10_000, ttl_s=3600)
    mask = np.ones((100, 100), bool)  # 1,250 bytes packed
    for i in range(3):
        s.start(Sessions.key("1", i, None), "img", None, mask, None, None, "prediction")
    assert len(s) == 2 and s.get(Sessions.key("1", 0, None), "img") is None
    big = np.ones((400, 400), bool)  # 20,000 bytes packed: more than the budget, not kept
    s.start(Sessions.key("1", 9, None), "img", None, big, None, None, "prediction")
    assert s.get(Sessions.key("1", 9, None), "img") is None and s.nbytes <= 10_000
    s.ttl_s = 0.0
    assert s.get(Sessions.key("1", 2, None), "img") is None
    # a session is tied to its image: the same task on another image starts afresh
    s.ttl_s = 3600
    s.start(Sessions.key("1", 5, None), "img-a", None, mask, None, None, "prediction")
    assert s.get(Sessions.key("1", 5, None), "img-b") is None
    assert Sessions.key("1", 5, 3) != Sessions.key("1", 5, 4) != Sessions.key("2", 5, 3)


def test_keypoints_deleted_by_hand_leave_the_session():
    session = Session(image_key="k", box=None, region_id=None, label=None, base=None, base_source="")
    a, b, c = ((1.0, 1.0), 1), ((2.0, 2.0), 0), ((3.0, 3.0), 1)
    assert session.take_keypoints([a]) == [a]
    assert session.take_keypoints([a, b]) == [a, b]
    assert session.take_keypoints([c]) == [a, b, c]  # accepted: the canvas lost them all, the clicks stay
    assert session.take_keypoints([c, a]) == [a, b, c]
    assert session.take_keypoints([a]) == [a, b]  # c deleted while a is still on the canvas: c goes


@pytest.mark.parametrize("positive_outside", [False, True])
def test_a_box_prompts_mask_stays_in_its_box(positive_outside):
    from annotate.confine import confine_to_box

    mask = np.zeros((100, 100), bool)
    mask[20:60, 20:90] = True  # the box is x 20..50: 40 px spill to the right
    box = (20.0, 20.0, 50.0, 60.0)
    points, labels = ([(80.5, 40.5)], [1]) if positive_outside else ([], [])
    out = confine_to_box(mask, box, points, labels)
    assert out[20:60, 20:50].all()  # nothing inside the box is lost
    assert out[40, 52]  # within the 10 % margin (3 px) of a loose box
    assert out[40, 80] == positive_outside  # beyond it only where a positive click says the object goes on


def test_a_session_continues_only_on_the_mask_it_made_or_started_from():
    """Reopening a task (or rejecting the suggestion) drops the clicks; an accepted answer keeps them."""
    from annotate.masks import mask_digest
    from backend.sessions import _pack

    base = np.zeros((20, 20), bool)
    base[5:10, 5:10] = True
    answer = base.copy()
    answer[10:12, 5:10] = True
    session = Session(image_key="k", box=None, region_id=None, label=None, base=_pack(base), base_source="prediction")
    a, b = ((6.0, 11.0), 1), ((15.0, 15.0), 0)
    session.take_keypoints([a])
    session.last_answer = mask_digest(answer)
    assert session.continues(mask_digest(answer), [b])  # the draft shows the accepted answer
    assert session.continues(mask_digest(base), [a, b])  # suggestion pending: its keypoint is still there
    assert session.continues(mask_digest(base), [b], grace_s=60)  # just accepted, not yet saved as a draft
    assert not session.continues(mask_digest(base), [b], grace_s=0)  # reopened: the old clicks are gone
    edited = base.copy()
    edited[0, 0] = True
    assert not session.continues(mask_digest(edited), [a, b])  # brushed by hand: start from what is shown

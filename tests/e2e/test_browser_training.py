"""Start Training in the real Label Studio UI (headless Chromium): the outcome is visible on the model's card.

Label Studio 1.23's Start Training dialog answers "Request Sent! Response: {}" whatever the backend says, and
the model card (Settings → Model) shows only the backend's title, state and URL. So the backend puts the
one-line outcome into the title (``backend.model_title``). This test does what a project manager does:

1. corrections are submitted (through the API: the webhook stores them);
2. Settings → Model → the card's menu → **Start Training** → the dialog's **Start Training** button — the
   request the browser sends (``POST /api/ml/<id>/train``), Label Studio calls the backend;
3. the page, opened again, shows the card titled ``pslg · last training: served v0001: …`` — the outcome
   ``/health`` reports, with the person's own title kept in front;
4. Start Training again with nothing new: the card says so, and no version is committed.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests

from annotate.modelstore import ModelStore
from annotate.synthetic import make_scene
from backend.model_title import MARKER
from converters.labelstudio.brush import brush_rle_encode
from tests.e2e.test_browser import _log_in, browser, chromium_binaries  # noqa: F401  (fixtures)
from tests.support.e2e import batch_predict, connect, make_project, start_backend, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

PAGE_TIMEOUT_S = 60.0
CARD_TITLE = "[class*='backend-card__title']:not([class*='title-container'])"


def _card_titles(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map((el) => el.textContent.trim());", CARD_TITLE)


def _click_text(driver, tag: str, text: str) -> None:
    """Click the last visible element ``tag`` whose text is ``text`` (the dialog opens over the menu)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def find(d):
        found = [e for e in d.find_elements(By.XPATH, f"//{tag}[normalize-space(.)='{text}']") if e.is_displayed()]
        return found[-1] if found else None

    WebDriverWait(driver, PAGE_TIMEOUT_S).until(find).click()


def _start_training_in_the_ui(driver, ls, project_id: int) -> str:
    """Settings → Model → menu → Start Training → the dialog's button; returns what the dialog then shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{ls.url}/projects/{project_id}/settings/ml")
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(lambda d: _card_titles(d))
    driver.find_element(By.CSS_SELECTOR, "[aria-label='Machine learning model options']").click()
    _click_text(driver, "*", "Start Training")  # the menu item
    _click_text(driver, "button", "Start Training")  # the dialog's button: POST /api/ml/<id>/train
    sent = WebDriverWait(driver, 150).until(
        lambda d: [e.text for e in d.find_elements(By.XPATH, "//pre[contains(., 'Response:')]") if e.is_displayed()])
    return sent[0]


def _title_on_reopen(driver, ls, project_id: int, wanted: str, timeout: float = 120.0) -> str:
    """The card's title once it contains ``wanted`` (the page reopened until then, as a person reloads it)."""
    from selenium.webdriver.support.ui import WebDriverWait

    deadline = time.monotonic() + timeout
    titles: list[str] = []
    while time.monotonic() < deadline:
        driver.get(f"{ls.url}/projects/{project_id}/settings/ml")
        titles = WebDriverWait(driver, PAGE_TIMEOUT_S).until(lambda d: _card_titles(d))
        if any(wanted in t for t in titles):
            return next(t for t in titles if wanted in t)
        time.sleep(2)
    raise AssertionError(f"the model card never showed {wanted!r}; it shows {titles}")


def test_start_training_in_the_ui_shows_the_outcome_on_the_model_card(labelstudio_server, browser,
                                                                      tmp_path_factory, tmp_path):
    ls = labelstudio_server
    kind = "legacy"
    scene = make_scene(seed=23, height=192, width=224, n_objects=5, kinds=("building",))
    work = tmp_path_factory.mktemp("e2e-browser-training")
    backend = start_backend(work, {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.legacy_token,
                                   "PSLG_ADOPT_MIN_SAMPLES": "3", "PSLG_QUALITY_MIN_PAIRS": "3", "PSLG_WORKERS": "1"})
    health = lambda: requests.get(f"{backend.url}/health", timeout=5).json()  # noqa: E731
    try:
        project_id, tasks = make_project(ls, "e2e-browser-training", scene, kind)
        ml_id = connect(ls, backend, project_id, kind)
        batch_predict(ls, project_id, kind)
        for task, obj in zip(tasks[:4], scene.objects):
            h, w = obj.mask.shape
            shrunk = np.zeros_like(obj.mask)  # a correction that differs from the pre-label: the object's core
            ys, xs = np.nonzero(obj.mask)
            cy, cx = int(ys.mean()), int(xs.mean())
            shrunk[max(0, cy - 12):cy + 12, max(0, cx - 12):cx + 12] = True
            region = {"id": f"m{task['id']}", "type": "brushlabels", "from_name": "tag", "to_name": "image",
                      "original_width": w, "original_height": h, "image_rotation": 0,
                      "value": {"format": "rle", "rle": brush_rle_encode(shrunk),
                                "brushlabels": [obj.category]}}
            ls.api("POST", f"/api/tasks/{task['id']}/annotations", kind=kind, json={"result": [region]})
        wait_for(lambda: health()["stored_annotations"] >= 4, 60, "the annotations to reach /webhook", backend)

        _log_in(browser, ls)
        try:
            shown = _start_training_in_the_ui(browser, ls, project_id)
            assert "Response:" in shown
            trained = wait_for(lambda: (lambda h: h if h["training"] in ("succeeded", "failed") else None)(health()),
                               300, "the retrain to end", backend)
            assert trained["training"] == "succeeded", trained
            outcome = " ".join(trained["training_outcome"].split())
            title = _title_on_reopen(browser, ls, project_id, MARKER.strip())
            # the person's title first, then the outcome /health reports (cut to the card's length)
            assert title.startswith("pslg" + MARKER), title
            assert title[len("pslg" + MARKER):].rstrip("…") in outcome, (title, outcome)
            assert outcome.split(":")[0] in title  # "served v0001" or "kept v0000"
            assert ls.api("GET", f"/api/ml/{ml_id}", kind=kind).json()["title"] == title
            versions = len(ModelStore(backend.model_dir / "grounders").versions("shape-priors"))

            # nothing new: the card says so and nothing is committed
            _start_training_in_the_ui(browser, ls, project_id)
            again = _title_on_reopen(browser, ls, project_id, "nothing new to learn (4 stored)")
            assert again.startswith("pslg" + MARKER) and again.count(MARKER) == 1, again
            assert len(ModelStore(backend.model_dir / "grounders").versions("shape-priors")) == versions
        except Exception:
            browser.save_screenshot(str(tmp_path / "model-card.png"))
            raise
    finally:
        backend.stop()

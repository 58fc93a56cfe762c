"""What an annotator sees: pre-labelled tasks opened in a real browser (headless Chromium) on Label Studio 1.23.

The API-level tests prove that Label Studio *stores* our predictions; this one proves that its frontend *shows*
them: each task, opened as an annotator opens it (logged in through the login form, then
``/projects/<id>/data?task=<id>``), lists the predicted brush region with its label and score in the region
list, the grounding box nested under it, and the browser console stays free of errors caused by our regions
(a relation to a brush mask used to make the relations overlay draw ``<rect x="NaN">``; see
``converters/labelstudio/regions.py``). Every task is opened twice because that failure was a race (about 3 in 4
opens).

Needs Debian's ``chromium`` and ``chromium-driver`` (``bash setup.sh --with-label-studio`` installs them where
it may use apt) and ``selenium`` (the ``dev`` extra). ``PSLG_CHROMIUM`` / ``PSLG_CHROMEDRIVER`` name other
binaries. Without them the test skips, except under ``PSLG_REQUIRE_E2E=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from annotate.synthetic import Scene, make_scene
from tests.support.e2e import Backend, batch_predict, connect, make_project, predictions_of, start_backend, wait_for
from tests.support.labelstudio_server import LabelStudioServer, skip_or_fail

pytestmark = pytest.mark.e2e

# Chromium as root in a container, without a network: no sandbox, no GPU, and none of the background
# connections (update checks, sync, QUIC) that a closed network refuses.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000")

# Console errors of Label Studio itself, unrelated to any region: a help-tips endpoint this build requests and
# does not serve, and the previous page's state tree being read while it is torn down on navigation.
LABEL_STUDIO_NOISE = (re.compile(r"/heidi-tips\b.*Failed to load resource"),
                      re.compile(r"no longer part of a state tree"))

PAGE_TIMEOUT_S = 60.0
SETTLE_S = 2.5  # after the region list appears: the relations overlay and the mask layer render in this time

BRUSH_NODE = ".lsf-tree__node_type_brushregion"
RECT_NODE = ".lsf-tree__node_type_rectangleregion"


def _binary(env_key: str, *names: str) -> str | None:
    explicit = os.environ.get(env_key)
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((found for found in map(shutil.which, names) if found), None)


@pytest.fixture(scope="session")
def chromium_binaries() -> tuple[str, str]:
    """Chromium and its driver, checked before Label Studio starts (a missing browser fails or skips at once)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        skip_or_fail("selenium is not installed (pip install -e '.[dev]')")
    chromium = _binary("PSLG_CHROMIUM", "chromium", "chromium-browser")
    chromedriver = _binary("PSLG_CHROMEDRIVER", "chromedriver")
    if chromium is None or chromedriver is None:
        skip_or_fail("headless Chromium is not installed (apt-get install chromium chromium-driver, which "
                     "`bash setup.sh --with-label-studio` does as root; or set PSLG_CHROMIUM and PSLG_CHROMEDRIVER)")
    return chromium, chromedriver


@pytest.fixture(scope="module")
def browser(chromium_binaries) -> Iterator:
    """A headless Chromium driven by selenium, with the console log captured."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = chromium_binaries
    profile = tempfile.mkdtemp(prefix="pslg-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={profile}",):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Prelabelled:
    ls: LabelStudioServer
    backend: Backend
    project_id: int
    tasks: list[dict]
    predictions: list[dict]
    scene: Scene


@pytest.fixture(scope="module")
def prelabelled(browser, labelstudio_server, tmp_path_factory) -> Iterator[Prelabelled]:
    """A project with the shipped per-task config, every task pre-labelled by `pslg serve` through Label Studio."""
    ls = labelstudio_server
    scene = make_scene(seed=11, height=192, width=224, n_objects=4)
    backend = start_backend(tmp_path_factory.mktemp("backend-browser"),
                            {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.legacy_token})
    try:
        project_id, tasks = make_project(ls, "e2e-browser", scene, "legacy")
        connect(ls, backend, project_id, "legacy")
        batch_predict(ls, project_id, "legacy")
        predictions = [wait_for(lambda t=task: predictions_of(ls, t["id"], "legacy"), 120,
                                f"the prediction of task {task['id']}", backend)[0] for task in tasks]
        yield Prelabelled(ls, backend, project_id, tasks, predictions, scene)
    finally:
        backend.stop()


def _log_in(driver, ls: LabelStudioServer) -> None:
    """Log in through Label Studio's own form, as a person does (the session cookie then opens every page)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{ls.url}/user/login/")
    driver.find_element(By.NAME, "email").send_keys(ls.username)
    driver.find_element(By.NAME, "password").send_keys(ls.password)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit], form input[type=submit]").click()
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(lambda d: "/user/login" not in d.current_url)


@dataclass
class RegionRow:
    label: str
    score: str
    depth: int


def _rows(driver, selector: str) -> list[RegionRow]:
    """The region list's rows of one region type: label, displayed score and nesting depth.

    Read in one script call: the list re-renders while the page settles, and element handles held across
    several calls go stale.
    """
    rows = driver.execute_script("""
        return Array.from(document.querySelectorAll(arguments[0])).map((node) => {
          const text = (sel) => { const el = node.querySelector(sel); return el ? el.textContent.trim() : ""; };
          return [text(".lsf-outliner-item__title"), text(".lsf-outliner-item__control_type_score"),
                  node.querySelectorAll(".lsf-tree-indent-unit").length];
        });""", selector)
    return [RegionRow(label, score, int(depth)) for label, score, depth in rows]


def _expand(driver, parent: str, child: str) -> None:
    """Open a collapsed parent row (Label Studio sometimes shows a region with children collapsed)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if driver.find_elements(By.CSS_SELECTOR, child):
        return
    driver.execute_script("document.querySelectorAll(arguments[0]).forEach((el) => el.click());",
                          f"{parent} .lsf-tree-switcher_close")
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, child))


def _our_console_errors(entries: list[dict]) -> list[str]:
    return [e["message"] for e in entries
            if e.get("level") == "SEVERE" and not any(p.search(e["message"]) for p in LABEL_STUDIO_NOISE)]


def test_prelabels_show_in_the_region_list_without_console_errors(chromium_binaries, prelabelled, browser,
                                                                  tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    ls = prelabelled.ls
    _log_in(browser, ls)
    for attempt in range(2):
        for task, obj, pred in zip(prelabelled.tasks, prelabelled.scene.objects, prelabelled.predictions):
            brush = next(r for r in pred["result"] if r["type"] == "brushlabels")
            browser.get_log("browser")  # drop what earlier pages logged
            browser.get(f"{ls.url}/projects/{prelabelled.project_id}/data?task={task['id']}")
            shot = tmp_path / f"task-{task['id']}-{attempt}.png"
            try:
                WebDriverWait(browser, PAGE_TIMEOUT_S).until(
                    lambda d: any(r.score for r in _rows(d, BRUSH_NODE)))
                time.sleep(SETTLE_S)
                _expand(browser, BRUSH_NODE, RECT_NODE)
                brushes, rects = _rows(browser, BRUSH_NODE), _rows(browser, RECT_NODE)
                errors = _our_console_errors(browser.get_log("browser"))
                where = f"task {task['id']} (open {attempt + 1})"
                assert [(r.label, r.score) for r in brushes] == [(obj.category, f"{brush['score']:.2f}")], where
                assert len(rects) == 1 and rects[0].label == obj.category, where
                assert rects[0].depth > brushes[0].depth, f"{where}: the box is not nested under its mask"
                assert errors == [], f"{where}: the browser console reported {errors}"
            except Exception as exc:
                browser.save_screenshot(str(shot))
                exc.add_note(f"what the browser showed: {shot}")
                raise

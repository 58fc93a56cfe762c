"""Refining a pre-label in the real Label Studio UI (headless Chromium), as an annotator does it.

The workflow docs/annotate-in-label-studio.md describes, driven through the browser against a real Label Studio
1.23 server and `pslg serve`:

1. open a pre-labelled task (the pre-label misses the object's right part and spills over its left edge);
2. Auto-Annotation on, the smart keypoint tool, its label;
3. **Ctrl+click** on the missed part (a plain click on a region only selects it: Label Studio lets a tool draw
   over a region only with Ctrl/Cmd held) → the browser sends the keypoint alone; the backend refines the mask
   shown (its session combines the keypoint with the pre-label and its box) and answers under the pre-label's
   region id; accepting the suggestion **replaces** the pre-label;
4. **Ctrl+Alt+click** on the spill → a negative keypoint, sent alone (accepting removed the first one): the
   mask shrinks there, the first click still holds; accept; submit.

Asserted: what the backend received (its log: keypoint-only requests, the pre-label refined), and the submitted
annotation (one brush region, the clicked pixels with their labels, a higher IoU with the object than the
pre-label). Screenshots of each step go to ``$PSLG_E2E_SCREENSHOTS`` when set (the docs' pictures come from there).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pytest

from annotate.geometry import mask_iou
from annotate.synthetic import make_scene
from converters.labelstudio.brush import brush_rle_decode
from converters.labelstudio.regions import brush_region, rectangle_region
from tests.e2e.test_browser import _log_in, browser, chromium_binaries  # noqa: F401  (fixtures)
from tests.support.e2e import CONFIG, connect, start_backend, wait_for
from tests.support.scenes import write_png

pytestmark = pytest.mark.e2e

PAGE_TIMEOUT_S = 60.0
PRELABEL_ID = "prelabel1"


def _shot(driver, name: str) -> None:
    folder = os.environ.get("PSLG_E2E_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def _innermost(region: np.ndarray) -> tuple[float, float]:
    dt = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return float(x) + 0.5, float(y) + 0.5


def _auto_annotation_on(driver) -> None:
    """Turn on Auto-Annotation (remembered by the browser between tasks, so only when it is off)."""
    state = driver.execute_script("""
        const s = Array.from(document.querySelectorAll('span')).find(e => e.textContent.trim() === 'Auto-Annotation');
        if (!s) return null;
        for (let p = s, i = 0; p && i < 4; p = p.parentElement, i++) {
          const input = p.querySelector && p.querySelector('input[type=checkbox]');
          if (input) return input.checked;
        }
        return null;""")
    assert state is not None, "no Auto-Annotation switch: is the backend connected as interactive?"
    if not state:
        driver.execute_script("""Array.from(document.querySelectorAll('span'))
            .find(e => e.textContent.trim() === 'Auto-Annotation').click();""")
        time.sleep(0.5)


def _keypoint_label(driver, category: str) -> None:
    """Pick the smart keypoint tool and its label (Label Studio deselects the label after every click)."""
    from selenium.webdriver.common.by import By

    tool = driver.find_element(By.CSS_SELECTOR, ".lsf-tool[aria-label=key-point-tool]")
    if "lsf-tool_active" not in (tool.get_attribute("class") or ""):
        driver.execute_script("arguments[0].click()", tool)
    groups = driver.find_elements(By.CSS_SELECTOR, ".lsf-labels")
    assert len(groups) >= 3, "the shipped config has brush, rectangle and keypoint labels"
    label = next(e for e in groups[2].find_elements(By.CSS_SELECTOR, ".lsf-label") if category in e.text)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", label)
    time.sleep(0.2)
    if "lsf-label_selected" not in (label.get_attribute("class") or ""):
        label.click()
    canvas = driver.find_element(By.CSS_SELECTOR, ".konvajs-content")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", canvas)
    time.sleep(0.3)


def _click(driver, point: tuple[float, float], size: tuple[int, int], *keys: str) -> None:
    """A click on the image at ``point`` (image pixels) with ``keys`` held, as a person clicks."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.CSS_SELECTOR, ".konvajs-content")
    left, top, width, height = driver.execute_script(
        "const b = arguments[0].getBoundingClientRect(); return [b.left, b.top, b.width, b.height];", canvas)
    w, h = size
    chain = ActionChains(driver).move_to_element_with_offset(
        canvas, point[0] * width / w - width / 2, point[1] * height / h - height / 2)
    for key in keys:
        chain = chain.key_down(key)
    chain = chain.click()
    for key in reversed(keys):
        chain = chain.key_up(key)
    chain.perform()


def _accept_suggestions(driver, shot: Optional[str] = None) -> None:
    """Wait for the backend's answer ("N suggestions" in the bottom bar), then click its ✓ (accept)."""
    from selenium.webdriver.support.ui import WebDriverWait

    def button():
        return driver.execute_script("""
            const t = Array.from(document.querySelectorAll('*')).find(e => /^\\d+ suggestions?$/.test(e.textContent.trim()));
            if (!t) return null;
            const buttons = Array.from(t.parentElement.querySelectorAll('button'));
            return buttons.length ? buttons[buttons.length - 1] : null;""")

    WebDriverWait(driver, PAGE_TIMEOUT_S).until(lambda d: button() is not None)
    time.sleep(0.5)  # the suggested mask is painted
    if shot:
        _shot(driver, shot)
    button().click()
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(lambda d: button() is None)


def _count(log: Path, pattern: str) -> int:
    return len(re.findall(pattern, log.read_text()))


def test_ctrl_click_refines_the_prelabel_and_accept_replaces_it(chromium_binaries, browser, labelstudio_server,
                                                                 tmp_path_factory):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    ls = labelstudio_server
    scene = make_scene(seed=11, height=192, width=224, n_objects=4)
    h, w = scene.image.shape[:2]
    k = max(range(len(scene.objects)), key=lambda i: int(scene.objects[i].mask.sum()))
    obj = scene.objects[k]
    ys, xs = np.nonzero(obj.mask)
    # the pre-label misses the object's right third and spills 8 px over its left edge (inside its loose box)
    prelabel = obj.mask & (np.arange(w)[None, :] < np.percentile(xs, 66))
    spill = np.zeros_like(prelabel)
    spill[int(ys.min()) + 2:int(ys.max()) - 1, max(0, int(xs.min()) - 8):int(xs.min())] = True
    spill &= ~obj.mask
    prelabel |= spill
    x0, y0, x1, y1 = obj.box
    box = (max(0.0, x0 - 10), max(0.0, y0 - 3), min(float(w), x1 + 3), min(float(h), y1 + 3))
    result = [brush_region(prelabel, obj.category, from_name="tag", to_name="image", region_id=PRELABEL_ID, score=0.5),
              dict(rectangle_region(box, w, h, obj.category, from_name="box", to_name="image", region_id="prebox1"),
                   parentID=PRELABEL_ID)]

    project = ls.api("POST", "/api/projects", json={"title": "e2e-browser-clicks", "label_config": CONFIG}).json()
    folder = ls.local_files_dir("e2e-browser-clicks")
    image = write_png(folder / "scene.png", scene.image)
    ls.connect_local_storage(project["id"], folder)
    ls.api("POST", f"/api/projects/{project['id']}/import", json=[{
        "data": {"image": ls.local_file_url(image), "expression": obj.expression},
        "predictions": [{"model_version": "pslg:e2e-prelabel", "score": 0.5, "result": result}]}])
    listed = ls.api("GET", f"/api/tasks?project={project['id']}&page_size=10").json()
    task = (listed["tasks"] if isinstance(listed, dict) else listed)[0]
    backend = start_backend(tmp_path_factory.mktemp("backend-browser-clicks"),
                            {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.legacy_token})
    try:
        connect(ls, backend, project["id"], "legacy")
        _log_in(browser, ls)
        browser.get(f"{ls.url}/projects/{project['id']}/data?task={task['id']}")
        WebDriverWait(browser, PAGE_TIMEOUT_S).until(
            lambda d: d.find_elements("css selector", ".lsf-tree__node_type_brushregion"))
        time.sleep(2.0)
        _auto_annotation_on(browser)
        _shot(browser, "1-prelabel.png")

        missed = _innermost(obj.mask & ~prelabel)
        _keypoint_label(browser, obj.category)
        _click(browser, missed, (w, h), Keys.CONTROL)
        wait_for(lambda: _count(backend.log, r"interactive request: 1 keypoint\(s\) \(0 negative\), no rectangle"),
                 60, "the positive keypoint at the backend", backend)
        assert _count(backend.log, rf"clicks refine the (draft|prediction) mask \(region {PRELABEL_ID}\)") == 1
        _accept_suggestions(browser, "2-ctrl-click-suggestion.png")
        _shot(browser, "3-accepted.png")

        leak = _innermost(spill)
        _keypoint_label(browser, obj.category)
        _click(browser, leak, (w, h), Keys.CONTROL, Keys.ALT)
        wait_for(lambda: _count(backend.log, r"interactive request: 1 keypoint\(s\) \(1 negative\), no rectangle"),
                 60, "the negative keypoint at the backend (sent alone: accepting removed the first)", backend)
        _accept_suggestions(browser, "4-ctrl-alt-click-suggestion.png")
        _shot(browser, "5-accepted.png")

        browser.execute_script("""Array.from(document.querySelectorAll('button'))
            .find(b => b.getAttribute('aria-label') === 'Submit current annotation').click();""")
        annotation = wait_for(lambda: _submitted(ls, task["id"]), 60, "the submitted annotation", backend)
    finally:
        backend.stop()

    brushes = [r for r in annotation["result"] if r["type"] == "brushlabels"]
    assert len(brushes) == 1, f"accepting must replace the pre-label, not add a mask: {annotation['result']}"
    final = brush_rle_decode(brushes[0]["value"]["rle"], h, w)
    assert final[int(missed[1]), int(missed[0])], "the positive click's region is not in the submitted mask"
    # the browser maps the click to a pixel within about one of ``leak``: the spill, not one pixel, is what counts
    assert (final & spill).sum() < 0.5 * spill.sum(), "the negative click did not cut the spill it was made on"
    before, after = mask_iou(prelabel, obj.mask), mask_iou(final, obj.mask)
    assert after > before + 0.05, f"two clicks did not improve the pre-label: IoU {before:.3f} → {after:.3f}"


def _submitted(ls, task_id: int) -> Optional[dict]:
    anns = ls.api("GET", f"/api/tasks/{task_id}/annotations").json()
    return anns[0] if anns else None

"""The annotator in a real browser: Voila serves a notebook, Chromium paints a stroke with the mouse.

The stroke must arrive in the project store on disk, at the image pixels that were under the
mouse. Also proves the Voila pitfall is handled: the canvas is checked for painted pixels, not only
for the presence of a ``<canvas>`` element. A screenshot goes to /tmp/annotator.png.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from workbench.store import Project
from workbench.annotate import Viewport

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CANVAS_W, CANVAS_H = 600, 450
SCREENSHOT = Path("/tmp/annotator.png")

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _notebook(project_path: Path) -> dict:
    code = (
        "from workbench.store._project import Project\n"
        "from workbench_widgets.annotator import Annotator\n"
        f"annotator = Annotator(Project.open({str(project_path)!r}), width={CANVAS_W}, height={CANVAS_H},\n"
        "                      save_delay=0.1)\n"
        "annotator.widget"
    )
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                   "source": code}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


@pytest.fixture()
def voila_url(tmp_path, nuclei_image):
    project = Project.create(tmp_path / "project", mode="instance", classes=["background", "nucleus"])
    project.add_image(nuclei_image, name="nuclei")
    (tmp_path / "nb.ipynb").write_text(json.dumps(_notebook(project.path)))
    port = _free_port()
    # This checkout's engine and widgets first (the installed package may be another checkout's).
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "widgets"), os.environ.get("PYTHONPATH", "")])}
    voila = Path(sys.executable).parent / "voila"
    log = open(tmp_path / "voila.log", "wb")
    process = subprocess.Popen(
        [str(voila), "nb.ipynb", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            if process.poll() is not None:
                raise AssertionError(f"voila exited early:\n{(tmp_path / 'voila.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url + "voila/static/favicon.ico", timeout=2)
                break
            except urllib.error.HTTPError:  # any HTTP answer means the server is up
                break
            except OSError:
                if time.time() > deadline:
                    raise AssertionError("voila did not start within 120 s")
                time.sleep(0.5)
        yield url, project.path
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # voila and the kernel it started, nothing else
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


_CANVAS_PIXELS = """
([w, h]) => {
    const canvas = [...document.querySelectorAll('canvas')].find(c => c.width === w && c.height === h);
    if (!canvas) return null;
    const data = canvas.getContext('2d').getImageData(0, 0, w, h).data;
    let painted = 0, sum = 0;
    for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] > 0 && (data[i] + data[i + 1] + data[i + 2]) > 0) painted++;
        sum += data[i] + data[i + 1] + data[i + 2];
    }
    return {painted: painted, mean: sum / (w * h * 3)};
}
"""

_PIXEL_AT = """
([w, h, x, y]) => {
    const canvas = [...document.querySelectorAll('canvas')].find(c => c.width === w && c.height === h);
    return Array.from(canvas.getContext('2d').getImageData(x, y, 1, 1).data);
}
"""


def test_paint_a_stroke_in_chromium_and_find_it_in_the_store(voila_url):
    from playwright.sync_api import sync_playwright

    url, project_path = voila_url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url, timeout=120_000)
            # The image is drawn from on_client_ready: wait for real pixels, not just the element.
            deadline = time.time() + 120
            stats = None
            while time.time() < deadline:
                stats = page.evaluate(_CANVAS_PIXELS, [CANVAS_W, CANVAS_H])
                if stats and stats["painted"] > 0.5 * CANVAS_W * CANVAS_H:
                    break
                page.wait_for_timeout(500)
            assert stats and stats["painted"] > 0.5 * CANVAS_W * CANVAS_H, f"canvas never painted: {stats}"

            canvas = page.locator(f"canvas[width='{CANVAS_W}'][height='{CANVAS_H}']").first
            box = canvas.bounding_box()
            # The canvas is shown at its pixel size (not stretched), so CSS and canvas pixels agree.
            assert box["width"] == pytest.approx(CANVAS_W, abs=1) and box["height"] == pytest.approx(CANVAS_H, abs=1)
            stroke = [(200, 150), (240, 170), (280, 190), (320, 200), (360, 200)]
            before = page.evaluate(_PIXEL_AT, [CANVAS_W, CANVAS_H, 280, 190])
            page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
            page.mouse.down()
            for x, y in stroke[1:]:
                page.mouse.move(box["x"] + x, box["y"] + y, steps=4)
            page.mouse.up()

            # The annotator opened the image fitted to the canvas: the same geometry, in Python.
            viewport = Viewport(CANVAS_W, CANVAS_H)
            viewport.fit((512, 512))
            expected = [viewport.canvas_to_pixel(x, y) for x, y in stroke]
            deadline = time.time() + 60
            labels = None
            while time.time() < deadline:
                labels = Project.open(project_path).read_labels("nuclei")
                if all(labels[p] == 2 for p in expected):
                    break
                time.sleep(0.3)
            assert all(labels[p] == 2 for p in expected), f"stroke not in the store: {[labels[p] for p in expected]}"
            assert set(np.unique(labels)) == {0, 2}
            assert (labels == 2).sum() > 100  # a brush of 8 image pixels along ~190 canvas pixels

            # The label overlay came back to the browser: the stroke's pixels changed colour.
            deadline = time.time() + 30
            after = before
            while time.time() < deadline and after == before:
                page.wait_for_timeout(300)
                after = page.evaluate(_PIXEL_AT, [CANVAS_W, CANVAS_H, 280, 190])
            assert after != before
            page.mouse.move(box["x"] + 420, box["y"] + 260)
            page.wait_for_timeout(500)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()


def _wait_for_the_image(page) -> dict:
    """Wait until the image layer has real pixels; return the canvas's box on the page."""
    deadline = time.time() + 120
    stats = None
    while time.time() < deadline:
        stats = page.evaluate(_CANVAS_PIXELS, [CANVAS_W, CANVAS_H])
        if stats and stats["painted"] > 0.5 * CANVAS_W * CANVAS_H:
            break
        page.wait_for_timeout(500)
    assert stats and stats["painted"] > 0.5 * CANVAS_W * CANVAS_H, f"canvas never painted: {stats}"
    return page.locator(f"canvas[width='{CANVAS_W}'][height='{CANVAS_H}']").first.bounding_box()


def test_a_partial_stroke_inside_a_nucleus_is_flagged(voila_url, nuclei_labels):
    """A short scribble inside a nucleus (instance mode) shows 'this looks like part of an object'."""
    from playwright.sync_api import sync_playwright
    from skimage.measure import regionprops

    url, project_path = voila_url
    # The widest nucleus away from the border, by the ground truth.
    nucleus = max((r for r in regionprops(nuclei_labels) if min(r.bbox[:2]) >= 8 and max(r.bbox[2:]) <= 504),
                  key=lambda r: r.axis_minor_length)
    cy, cx = nucleus.centroid
    viewport = Viewport(CANVAS_W, CANVAS_H)
    viewport.fit((512, 512))
    half = nucleus.axis_minor_length / 5  # image pixels either side of the middle
    start = viewport.image_to_canvas(cy, cx - half)
    end = viewport.image_to_canvas(cy, cx + half)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url, timeout=120_000)
            box = _wait_for_the_image(page)
            notice = page.get_by_text("this looks like part of an object")
            assert notice.count() == 0
            page.mouse.move(box["x"] + start[0], box["y"] + start[1])
            page.mouse.down()
            page.mouse.move(box["x"] + end[0], box["y"] + end[1], steps=6)
            page.mouse.up()
            notice.first.wait_for(timeout=60_000)
            assert "fill it whole or it will be learned as a small object" in notice.first.inner_text()
            labels = Project.open(project_path).read_labels("nuclei")
            deadline = time.time() + 30
            while not (labels == 2).any() and time.time() < deadline:
                time.sleep(0.3)
                labels = Project.open(project_path).read_labels("nuclei")
            inside = labels == 2
            assert inside.any() and (nuclei_labels[inside] == nucleus.label).all()  # the stroke is inside it
            page.screenshot(path=str(SCREENSHOT.with_name("annotator-partial-stroke.png")), full_page=True)
        finally:
            browser.close()

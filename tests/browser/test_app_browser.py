"""The Voila app in a real browser: paint, train for a few seconds, review, segment, download.

Voila serves ``notebooks/app.ipynb`` on a free localhost port over a temporary copy of the sample
project; Playwright drives Debian's Chromium through the steps a first visitor takes. Screenshots
of every step are kept in the test's temporary folder (``screenshots/app_*.png``), which CI keeps as
artefacts for a person to look at.
"""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from voila_app import VoilaApp, wait_for, wait_until_serving
from workbench_widgets.launch import app_notebook, free_port, voila_command, voila_environment
from workbench.store import Project
from workbench.datasets._sample import SAMPLE_NAME, build_sample_project

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TRAIN_SECONDS = 4

# Counts canvas pixels that are drawn (alpha > 0) and how varied they are: a blank or single-colour
# canvas means the drawing sent before the page connected was lost.
CANVAS_PIXELS = """() => Array.from(document.querySelectorAll('canvas')).map(c => {
    const ctx = c.getContext('2d');
    if (!ctx || !c.width || !c.height) return {drawn: 0, levels: 0};
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let drawn = 0; const levels = new Set();
    for (let i = 0; i < d.length; i += 4) { if (d[i + 3]) { drawn++; levels.add(d[i]); } }
    return {drawn: drawn, levels: levels.size, width: c.width, height: c.height};
})"""


@pytest.fixture()
def app_server(tmp_path):
    """Voila on the app, over a fresh sample project; yields (the running app, project folder)."""
    project = build_sample_project(tmp_path / "sample-project")
    port = free_port()
    env = voila_environment(project.path, train_seconds=TRAIN_SECONDS)
    env["MPLBACKEND"] = "Agg"
    log_path = tmp_path / "voila.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(voila_command(app_notebook(), port=port), env=env, cwd=app_notebook().parent,
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    wait_until_serving(url, process, log_path)
    try:
        yield VoilaApp(url, process, log_path), project.path
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _assert_no_error_on_page(page, app: VoilaApp) -> None:
    text = page.inner_text("body")
    for marker in ("Traceback", "There was an error when executing", "did not work", "unexpected problem"):
        assert marker not in text, f"{marker!r} on the page:\n{text[-2000:]}\nVoila log:\n{app.log(2000)}"
    assert page.locator(".wb-error").count() == 0
    assert page.locator('[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0, \
        "something was printed to stderr on the page"


def test_first_visitor_paints_trains_reviews_and_downloads(app_server, tmp_path):
    from playwright.sync_api import sync_playwright

    app, project_path = app_server
    url = app.url
    SCREENSHOTS = tmp_path / "screenshots"
    SCREENSHOTS.mkdir()
    labels_before = Project.open(project_path).read_labels(SAMPLE_NAME).copy()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.goto(url, timeout=180_000)
            page.get_by_text("Microscopy segmentation workbench").wait_for(timeout=180_000)
            page.get_by_text("512 × 512 (YX)").wait_for(timeout=60_000)
            page.screenshot(path=str(SCREENSHOTS / "app_1_project.png"), full_page=True)
            _assert_no_error_on_page(page, app)

            # --- 2 · Annotate: the canvas shows the image, and painting reaches the project on disk.
            page.get_by_role("tab", name="2 · Annotate").click()
            canvas = page.locator(".wb-app canvas").first
            canvas.wait_for(state="visible", timeout=60_000)
            drawn = wait_for(lambda: [c for c in page.evaluate(CANVAS_PIXELS) if c["drawn"] > 10_000 and c["levels"] > 50],
                              60, "the image to be drawn on the canvas", app)
            assert drawn[0]["width"] == 720 and drawn[0]["height"] == 520
            box = canvas.bounding_box()
            x0, y0 = box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.55
            page.mouse.move(x0, y0)
            page.mouse.down()
            for step in range(1, 16):
                page.mouse.move(x0 + 8 * step, y0 + 3 * step)
            page.mouse.up()

            def painted():
                labels = Project.open(project_path).read_labels(SAMPLE_NAME)
                return int((labels != labels_before).sum())
            changed = wait_for(painted, 60, "the painted stroke to be saved into the project", app)
            assert changed > 100
            page.screenshot(path=str(SCREENSHOTS / "app_2_annotate.png"), full_page=True)

            # --- 3 · Train: a few seconds; the loss plot picture changes and the new model is announced.
            page.get_by_role("tab", name="3 · Train").click()
            plot = page.locator(".wb-training img").first
            plot.wait_for(state="visible", timeout=30_000)
            plot_before = plot.get_attribute("src")
            page.get_by_role("button", name="Start training").click()
            page.get_by_text("Model version 1 is ready").wait_for(timeout=300_000)
            assert plot.get_attribute("src") != plot_before, "the loss plot did not update"
            page.screenshot(path=str(SCREENSHOTS / "app_3_train.png"), full_page=True)
            assert [m.version for m in Project.open(project_path).models] == [1]

            # --- 4 · Review: every image predicted after training; overlay and uncertain regions shown.
            page.get_by_role("tab", name="4 · Review").click()
            overlay = page.locator(f'.wb-gallery img[alt="{SAMPLE_NAME} prediction"]')
            overlay.wait_for(state="visible", timeout=180_000)
            assert overlay.evaluate("img => img.naturalWidth") > 100
            page.get_by_role("button", name="Annotate here").first.wait_for(state="visible", timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "app_4_review.png"), full_page=True)
            page.get_by_role("button", name="Annotate here").first.click()
            page.get_by_role("tab", name="2 · Annotate", selected=True).wait_for(timeout=30_000)
            page.get_by_role("tab", name="5 · Segment & measure").click()

            # --- 5 · Segment & measure: run, then download the measurements through the page's link.
            page.get_by_role("button", name="Segment and measure").click()
            page.get_by_text("Done: 1 image(s) segmented").wait_for(timeout=180_000)
            page.screenshot(path=str(SCREENSHOTS / "app_5_segment.png"), full_page=True)
            with page.expect_download(timeout=60_000) as download_info:
                page.get_by_role("link", name="Measurements (CSV)").click()
            download = download_info.value
            saved = tmp_path / download.suggested_filename
            download.save_as(saved)
            assert download.suggested_filename == "measurements.csv"
            assert saved.read_text().startswith("image,")
            with page.expect_download(timeout=60_000) as download_info:
                page.get_by_role("link", name=f"Labels: {SAMPLE_NAME}_labels.tif").click()
            import tifffile

            labels_path = tmp_path / "labels.tif"
            download_info.value.save_as(labels_path)
            assert tifffile.imread(labels_path).shape == (512, 512)
            assert np.asarray(tifffile.imread(labels_path)).max() >= 0
            _assert_no_error_on_page(page, app)
        finally:
            browser.close()

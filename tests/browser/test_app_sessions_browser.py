"""The app survives reloads: a training belongs to the project, not to the page, and closed pages
leave no kernels behind (issue 15). Voila serves the app over a temporary sample project; Chromium
reloads the page the way a person does."""

from __future__ import annotations

import json

import pytest

from workbench.datasets import build_sample_project
from workbench.store import Project
from workbench.store._lock import job_holder

from voila_app import browser, open_app, start_app, wait_for  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _record(project_path):
    path = project_path / ".workbench" / "training.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _train_tab(page):
    page.get_by_role("tab", name="3 · Train").click()
    page.locator(".wb-training img").first.wait_for(state="visible", timeout=60_000)


def test_reload_during_training_reattaches_and_the_old_run_cannot_overwrite_a_newer_version(
        start_app, browser, tmp_path):
    project = build_sample_project(tmp_path / "sample")
    app = start_app(project.path, train_seconds=600)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_app(page, app)
    _train_tab(page)
    page.get_by_role("button", name="Start training").click()
    first = wait_for(lambda: (r := _record(project.path)).get("step", 0) > 0 and r, 120, "training steps", app)
    assert first["version"] == 1 and first["state"] == "running"

    # A reload mid-training: the new page finds the project's training and shows it live.
    page.reload()
    page.get_by_text("Microscopy segmentation workbench").wait_for(timeout=180_000)
    _train_tab(page)
    page.get_by_text("training of this project is running (model version 1)").wait_for(timeout=60_000)
    assert page.get_by_role("button", name="Start training").is_disabled(), "a second run must not start"
    stop = page.locator(".wb-training").get_by_role("button", name="Stop")
    assert stop.is_enabled()
    plot = page.locator(".wb-training img").first
    before = plot.get_attribute("src")
    wait_for(lambda: plot.get_attribute("src") != before, 60, "the re-attached loss plot to move", app)
    page.screenshot(path=str(tmp_path / "reattached.png"), full_page=True)

    # Stop works from the new page (through the project); the run writes the version it was given.
    stop.click()
    page.get_by_text("Model version 1 is ready").wait_for(timeout=120_000)
    assert _record(project.path)["state"] == "stopped"
    card_v1 = (project.path / "models" / "v001-unet" / "card.json").read_text()

    # The next run gets the next version; the old one is over and can never write again.
    wait_for(lambda: job_holder(project.path) is None, 120, "the review's prediction after training", app)
    page.get_by_role("button", name="Start training").click()
    wait_for(lambda: (r := _record(project.path)).get("version") == 2 and r.get("step", 0) > 0, 120,
             "the second training", app)
    page.locator(".wb-training").get_by_role("button", name="Stop").click()
    page.get_by_text("Model version 2 is ready").wait_for(timeout=120_000)
    models = Project.open(project.path).models
    assert [(m.version, m.path) for m in models] == [(1, "models/v001-unet"), (2, "models/v002-unet")]
    assert (project.path / "models" / "v001-unet" / "card.json").read_text() == card_v1
    assert (project.path / "models" / "v002-unet" / "card.json").read_text() != card_v1
    page.screenshot(path=str(tmp_path / "second_version.png"), full_page=True)


def test_two_reloads_leave_one_kernel(start_app, browser, tmp_path):
    project = build_sample_project(tmp_path / "sample")
    app = start_app(project.path, cull_idle_seconds=3, cull_interval_seconds=1)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_app(page, app)
    for _ in range(2):
        page.reload()
        page.get_by_text("Microscopy segmentation workbench").wait_for(timeout=180_000)
    wait_for(lambda: len(app.kernels()) == 1, 90, "the kernels of the reloaded pages to be shut down", app)
    # The page left open keeps its kernel, and it still answers.
    _train_tab(page)
    page.get_by_text("Your labels:").wait_for(timeout=30_000)
    assert len(app.kernels()) == 1


def test_a_recent_project_reopens_after_a_reload(start_app, browser, tmp_path):
    project = build_sample_project(tmp_path / "sample")
    app = start_app(project.path)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_app(page, app)
    page.get_by_text("the sample project", exact=False).first.wait_for(timeout=60_000)
    page.get_by_text("Start a new project").click()
    page.locator(".wb-project input[placeholder='e.g. liver-nuclei']").fill("My nuclei")
    page.get_by_role("button", name="Create project").click()
    page.get_by_text("Created My nuclei").wait_for(timeout=60_000)
    created = tmp_path / "workbench-projects" / "My-nuclei"
    assert (created / "project.json").is_file(), "new projects go into the user's projects folder"

    page.reload()
    page.get_by_text("Microscopy segmentation workbench").wait_for(timeout=180_000)
    page.locator(".wb-app").get_by_text("project: My nuclei", exact=True).wait_for(timeout=60_000)
    page.get_by_text("You are working on My nuclei").wait_for(timeout=30_000)
    assert page.get_by_text("the sample project").count() == 0, "only the sample is called the sample project"
    recent = page.locator(".wb-project select").first
    assert str(project.path.resolve()) in recent.inner_text()
    page.screenshot(path=str(tmp_path / "reopened.png"), full_page=True)


def test_a_whole_image_object_warns(start_app, browser, tmp_path):
    """An image of another kind (the sample inverted: dark nuclei on a bright ground) segmented with a
    real forest trained on the sample comes out as one object over most of the image: Review says so,
    with the likely cause, and the painted image's result carries no such warning."""
    import numpy as np

    from workbench import pipeline

    project = build_sample_project(tmp_path / "sample")
    project.update_settings(forest={"n_estimators": 8, "max_depth": 8, "n_jobs": 1})
    pipeline.train_model(project, method="forest")
    image = project.image("nuclei")[...]
    project.add_image(np.squeeze(image.max() - image)[:256, :256], name="inverted")
    app = start_app(project.path)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_app(page, app)
    page.get_by_role("tab", name="4 · Review").click()
    page.get_by_role("button", name="Predict all images").click()
    warning = page.locator(".wb-gallery .wb-result-warning")
    warning.first.wait_for(state="visible", timeout=180_000)
    page.screenshot(path=str(tmp_path / "whole-image-object.png"), full_page=True)
    figures = page.locator(".wb-gallery figure")
    inverted = figures.filter(has=page.locator('img[alt="inverted prediction"]'))
    text = inverted.locator(".wb-result-warning").first.inner_text()
    assert text.startswith("⚠ One object covers") and "took the background for an object" in text, text
    assert "another kind of image" in text
    painted = figures.filter(has=page.locator('img[alt="nuclei prediction"]'))
    assert painted.locator(".wb-result-warning").count() == 0, painted.inner_text()
    assert "Traceback" not in page.inner_text("body")

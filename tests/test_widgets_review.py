"""Review, segment-and-download, project setup and the app's wiring, on the real sample project."""

from __future__ import annotations

import base64
import datetime
import io
import re
import shutil
import zipfile

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile

from workbench_widgets.project_setup import ProjectSetupPanel
from workbench_widgets.review import ReviewPanel, SegmentPanel, quality_hint
from workbench.results import least_certain_regions, segment_and_measure
from workbench.errors import WorkbenchError
from workbench.store import Project
from workbench.datasets._sample import SAMPLE_NAME, build_sample_project, sample_image_path


@pytest.fixture()
def trained_project(trained_sample_project) -> Project:
    """The session's sample project with a U-Net trained for three seconds (see conftest)."""
    return trained_sample_project


def _copy(project: Project, tmp_path) -> Project:
    shutil.copytree(project.path, tmp_path / "copy")
    return Project.open(tmp_path / "copy")


def test_review_predicts_every_image_and_offers_uncertain_regions(trained_project, tmp_path):
    project = _copy(trained_project, tmp_path)
    opened, actions = [], []
    review = ReviewPanel(project, open_annotator=lambda *where: opened.append(where),
                         on_add_images=lambda: actions.append("images"),
                         on_train_longer=lambda: actions.append("longer"), regions=4)
    assert review.gallery.value == "", "nothing predicted yet"
    assert review.predict() is True
    review.wait(timeout=120)
    assert review.error is None, review.error

    info = review.summary[SAMPLE_NAME]
    assert 0.0 <= info["mean_uncertainty"] <= 1.0 and info["model_version"] == 1
    assert project.prediction(SAMPLE_NAME, "instances") is not None
    gallery = review.gallery.value
    assert gallery.count("<figure") == 1 and 'src="data:image/png;base64,' in gallery
    labelled = 100 * project.label_stats(SAMPLE_NAME)["annotated_fraction"]
    assert f"labelled: {labelled:.1f} %" in gallery
    assert quality_hint(info["mean_uncertainty"])[0] in gallery

    assert len(review.regions) == 4
    assert [r.score for r in review.regions] == sorted((r.score for r in review.regions), reverse=True)
    assert all(box.layout.display == "flex" for box in review._region_boxes)
    assert all(bytes(image.value).startswith(b"\x89PNG") for image in review._region_images)

    review._region_buttons[2].click()
    region = review.regions[2]
    name, y, x, zoom = opened[-1]
    assert (name, y, x) == (region.name, region.y, region.x)
    assert 0 <= y < 512 and 0 <= x < 512 and zoom >= 1
    review.add_annotations_button.click()
    assert opened[-1][:3] == (review.regions[0].name, review.regions[0].y, review.regions[0].x)
    review.add_images_button.click()
    review.train_longer_button.click()
    assert actions == ["images", "longer"]


def test_uncertain_regions_are_where_the_probabilities_are_even(tmp_path):
    project = Project.create(tmp_path / "p", mode="semantic", classes=["background", "cell"])
    rng = np.random.default_rng(0)
    name = project.add_image(rng.integers(0, 255, (256, 256), dtype=np.uint8), name="noise")
    probabilities = np.zeros((2, 256, 256), np.float32)
    probabilities[0] = 0.97
    probabilities[1] = 0.03
    probabilities[:, 160:192, 64:96] = 0.5  # the model cannot decide here
    project.create_prediction(name, "probabilities", probabilities.shape, np.float32)[...] = probabilities
    project.create_prediction(name, "classes", (256, 256), np.uint8)[...] = 0
    project.mark_prediction_complete(name)
    regions = least_certain_regions(project, count=2, window=32)
    assert (regions[0].y, regions[0].x, regions[0].size) == (176, 80, 32)
    assert regions[0].score == pytest.approx(1.0) and regions[1].score < 0.1

    # Labels already painted there make the square less worth painting again.
    labels = np.zeros((256, 256), np.uint8)
    labels[160:192, 64:96] = 1
    project.write_labels(name, labels)
    assert least_certain_regions(project, count=1, window=32)[0].score == pytest.approx(0.2)


def test_review_without_a_model_says_what_to_do(tmp_path):
    project = build_sample_project(tmp_path / "sample")
    review = ReviewPanel(project)
    assert review.predict() is False
    assert "Train one first" in review.error and "Traceback" not in review.status.value
    review.annotate_region(0)
    assert "predict first" in review.error


def test_segment_panel_segments_a_folder_and_project_images_and_offers_downloads(trained_project, tmp_path):
    project = _copy(trained_project, tmp_path)
    folder = tmp_path / "new-images"
    folder.mkdir()
    shutil.copy(sample_image_path(), folder / "plate-A1.tif")
    panel = SegmentPanel(project, output_dir=tmp_path / "results")
    assert panel.model.value == 1 and panel.images.value == (SAMPLE_NAME,)
    panel.folder.value = str(folder)
    panel.tile_size.value = 256
    assert panel.run() is True
    outputs = panel.wait(timeout=180)
    assert panel.error is None, panel.error

    assert outputs.folder == tmp_path / "results" / "model-v001"
    assert [p.name for p in outputs.labels] == ["nuclei_labels.tif", "plate-A1_labels.tif"]
    for path in outputs.labels:
        labels = tifffile.imread(path)
        assert labels.shape == (512, 512) and labels.dtype.kind in "iu"
    assert np.array_equal(tifffile.imread(outputs.labels[0]), tifffile.imread(outputs.labels[1])), \
        "the same image segmented from the project and from a folder gives the same objects"
    overlay = iio.imread(outputs.overlays[1])
    assert overlay.shape == (512, 512, 3) and overlay.dtype == np.uint8
    table = pd.read_csv(outputs.measurements)
    assert {"image", "class", "z", "warning"} <= set(table.columns)
    assert len(table) == outputs.objects
    # Whatever looks wrong is said in the export: a warnings.txt (in the zip too) and a column per row.
    notes = (outputs.folder / "warnings.txt").read_text()
    assert notes.strip() and all(text in notes for texts in outputs.warnings.values() for text in texts)
    assert "warnings.txt" in zipfile.ZipFile(outputs.zip).namelist()
    assert set(table["image"]) <= {"nuclei", "plate-A1"}

    page = panel.results.value
    link = re.search(r'download="measurements.csv" href="data:text/csv;base64,([^"]+)"', page)
    assert link, "the measurements are offered as a download"
    assert base64.b64decode(link.group(1)) == outputs.measurements.read_bytes()
    assert 'download="results.zip"' in page and 'download="plate-A1_labels.tif"' in page
    assert 'download="nuclei_overlay.png"' in page
    assert "Done: 2 image(s) segmented" in panel.status.value


def test_segment_mistakes_are_messages(trained_project, tmp_path):
    panel = SegmentPanel(trained_project, output_dir=tmp_path / "results")
    panel.folder.value = str(tmp_path / "missing")
    assert panel.run() is False and "does not exist" in panel.error
    panel.folder.value = ""
    panel.images.value = ()
    assert panel.run() is False and "choose at least one" in panel.error
    with pytest.raises(WorkbenchError, match="tile_size"):
        segment_and_measure(trained_project, names=[SAMPLE_NAME], tile_size=8)


def test_project_setup_creates_projects_and_adds_uploaded_and_copied_images(tmp_path, nuclei_image):
    sample = build_sample_project(tmp_path / "sample")
    setup = ProjectSetupPanel(sample, projects_dir=tmp_path)
    seen = []
    setup.on_project_changed(seen.append)
    assert "Nuclei sample" in setup.current.value and "nuclei" in setup.current.value

    assert setup.create("", folder=tmp_path) is None and "name" in setup.error
    assert setup.create("Tissue", folder=tmp_path, mode="instance", classes="background, a, b") is None
    assert "one object class" in setup.error
    project = setup.create("Liver nuclei", folder=tmp_path, mode="instance", classes="background, nucleus")
    assert project is not None and project.path == tmp_path / "Liver-nuclei" and seen == [project]

    png = io.BytesIO()
    iio.imwrite(png, (nuclei_image >> 8).astype(np.uint8), extension=".png")
    setup.upload.value = ({"name": "well B2.png", "type": "image/png", "size": png.tell(),
                           "content": memoryview(png.getvalue()),
                           "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert project.image_names == ["well_B2"] and setup.upload.value == ()
    assert "Added 1 image(s): well_B2" in setup.status.value

    folder = tmp_path / "raw"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", nuclei_image)
    tifffile.imwrite(folder / "b.tif", nuclei_image[:256, :300])
    (folder / "notes.txt").write_text("not an image")
    assert setup.add_from_path(str(folder)) == ["a", "b"]
    assert project.image_names == ["well_B2", "a", "b"]
    assert setup.add_uploads([{"name": "notes.txt", "content": b"x"}]) == []
    assert "not an image" in setup.error

    setup.remove_image("b")
    assert project.image_names == ["well_B2", "a"]
    assert setup.open(str(sample.path)).path == sample.path and seen[-1].path == sample.path
    assert setup.open(str(tmp_path / "nowhere")) is None and "not a workbench project" in setup.error


def test_app_wires_the_steps_together(tmp_path, monkeypatch):
    from workbench_widgets.app import STEPS, WorkbenchApp, default_project_path

    monkeypatch.setenv("WORKBENCH_PROJECT", str(tmp_path / "app-project"))
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))  # no recent projects yet
    assert default_project_path() == tmp_path / "app-project"
    app = WorkbenchApp(train_seconds=3)
    assert app.project.path == tmp_path / "app-project" and app.project.image_names == [SAMPLE_NAME]
    assert "the <b>sample project</b>" in app.tabs.children[0].children[0].value
    assert [app.tabs.get_title(i) for i in range(len(STEPS))] == STEPS

    app.open_annotator(SAMPLE_NAME, 300, 200, 2.0)
    assert app.tabs.selected_index == 1
    center = app.annotator.viewport.center
    assert np.allclose(center, (300, 200), atol=1)
    app.train_longer()
    assert app.tabs.selected_index == 2
    app.add_images()
    assert app.tabs.selected_index == 0

    other = app.setup.create("Second", folder=tmp_path, mode="semantic", classes="background, cell")
    assert app.project is other and app.training.project is other and app.review.project is other
    assert app.annotator.project is other
    assert "sample project" not in app.tabs.children[0].children[0].value
    assert "You are working on <b>Second</b>" in app.tabs.children[0].children[0].value
    # A reload makes a new app: it opens the project used last, and offers the sample as a recent one.
    reloaded = WorkbenchApp(train_seconds=3)
    assert reloaded.project.path == other.path
    assert reloaded.setup.recent.options[0][1] == str((tmp_path / "app-project").resolve())
    reloaded.setup.open(reloaded.setup.recent.value)
    assert reloaded.project.path.resolve() == (tmp_path / "app-project").resolve()
    app.go_to_step(3)
    with pytest.raises(WorkbenchError, match="step"):
        app.go_to_step(9)


def test_semantic_project_with_a_random_forest_from_training_to_measurements(tmp_path, nuclei_image, nuclei_labels):
    from workbench_widgets.training import TrainingPanel

    project = Project.create(tmp_path / "semantic", mode="semantic", classes=["background", "nucleus"])
    name = project.add_image(nuclei_image, name="nuclei")
    labels = np.zeros(nuclei_image.shape, np.uint8)
    labels[:200] = np.where(nuclei_labels[:200] > 0, 2, 1)  # the top rows painted, the rest left open
    project.write_labels(name, labels)

    training = TrainingPanel(project, seconds=3)
    training.method.value = "forest"
    assert training.start()
    record = training.wait(timeout=300)
    assert training.error is None, training.error
    assert record.method == "forest" and "Random Forest" in training.status.value

    review = ReviewPanel(project)
    assert review.predict(background=False)
    assert review.error is None, review.error
    fractions = review.summary[name]["class_fractions"]
    truth = float((nuclei_labels > 0).mean())
    assert abs(fractions[1] - truth) < 0.08, "the forest finds about as much nucleus area as there is"
    assert "nucleus" in review.gallery.value and " %" in review.gallery.value

    segment = SegmentPanel(project, output_dir=tmp_path / "results")
    assert segment.run(background=False)
    assert segment.error is None, segment.error
    table = pd.read_csv(segment.outputs.measurements)
    assert set(table["class"]) == {"nucleus"}
    assert 60 < len(table) < 200, f"{len(table)} regions measured; the image holds 125 nuclei"
    assert iio.imread(segment.outputs.overlays[0]).shape == (512, 512, 3)


def test_a_whole_image_object_warns_in_review_and_in_the_export(trained_project, tmp_path):
    """A result that is one object over the whole image (the model took the background for an object)
    gets a warning with its likely cause, in Review and in the measurement export."""
    from workbench import pipeline

    project = _copy(trained_project, tmp_path)
    everything = np.zeros((3, 512, 512), np.float32)
    everything[1] = 1.0  # 'interior' everywhere: what the model answered on an image unlike the painted ones
    instances = pipeline.postprocess(everything, "instance", **pipeline.instance_options(project))
    assert int(instances.max()) == 1 and (instances == 1).all()
    project.create_prediction(SAMPLE_NAME, "probabilities", everything.shape, np.float32, model_version=1)[...] = everything
    project.create_prediction(SAMPLE_NAME, "instances", instances.shape, np.int32, model_version=1)[...] = instances
    project.mark_prediction_complete(SAMPLE_NAME)

    review = ReviewPanel(project, open_annotator=lambda *a: None, regions=2)
    review.refresh()
    assert "wb-result-warning" in review.gallery.value
    assert "One object covers 100 % of the image: the model probably took the background for an object" \
        in review.gallery.value

    # The same check on the painted sample's own result is quiet, and the export carries the warnings.
    quiet = pipeline.result_warnings(project, trained_project.prediction(SAMPLE_NAME, "instances")[...]) \
        if trained_project.prediction(SAMPLE_NAME, "instances") is not None else []
    assert not any("covers" in text for text in quiet)
    painted = pipeline.painted_object_areas(project)
    assert painted.size > 10
    tiny = np.zeros((512, 512), np.int32)
    for i in range(40):  # specks far smaller than the painted nuclei
        tiny[10 + 12 * i % 500, 10 + (i * 37) % 500] = i + 1
    assert "times smaller than the ones you painted" in " ".join(pipeline.result_warnings(project, tiny))
    assert pipeline.result_warnings(project, np.zeros((64, 64), np.int32))[0].startswith("no objects were found")


def test_review_and_segment_count_the_same_objects_and_pictures_enlarge(trained_project, tmp_path):
    """Same model, same image: Review's gallery and Segment's summary give one count (Segment used to
    predict with 512-px tiles and Review with the model's own, and found a different number)."""
    project = _copy(trained_project, tmp_path)
    review = ReviewPanel(project, regions=2)
    assert review.predict(background=False) and review.error is None, review.error
    found = int(re.search(r"(\d+) objects? found", review.gallery.value).group(1))
    assert found > 20
    # The warnings are checked on the result itself (they were read after it moved: "no objects were found").
    assert not any(text.startswith("no objects") for text in review.summary[SAMPLE_NAME]["warnings"])

    segment = SegmentPanel(project, output_dir=tmp_path / "results")
    assert segment.tile_size.value is None  # the model's own tile size, as Review predicts
    assert segment.run(background=False) and segment.error is None, segment.error
    table = pd.read_csv(segment.outputs.measurements)
    assert segment.outputs.counts == {SAMPLE_NAME: found} == {SAMPLE_NAME: int((table["image"] == SAMPLE_NAME).sum())}
    assert f"{SAMPLE_NAME}: {found}" in segment.status.value
    review.refresh()  # an earlier session's result, read back: still the same count
    assert f"{found} objects found" in review.gallery.value

    # A thumbnail opens at full size in the Review view, and closes again.
    assert review.full_view.layout.display == "none"
    (button,) = review.enlarge_buttons.children
    button.click()
    assert review.full_view.layout.display == "flex" and review.shown_full_size == SAMPLE_NAME
    assert iio.imread(bytes(review.full_image.value)).shape == (512, 512, 3)  # the thumbnail is 256 px
    review.close_full_button.click()
    assert review.full_view.layout.display == "none" and review.shown_full_size is None


def test_unsure_regions_are_hatched_black_and_white_visible_on_every_object_colour(trained_project, tmp_path):
    """The 'unsure' mark is not a colour (object colours use every hue): stripes of light and dark."""
    from matplotlib.colors import hsv_to_rgb

    from workbench.results import hatch_unsure, region_picture

    hues = (hsv_to_rgb(np.stack([np.linspace(0, 1, 64, endpoint=False), np.ones(64), np.ones(64)], -1)) * 255)
    picture = np.repeat(hues[None], 16, axis=0).astype(np.uint8)  # every hue an object may be drawn in
    marked = hatch_unsure(picture, np.ones(picture.shape[:2])).astype(float)
    luminance = marked @ [0.299, 0.587, 0.114]
    light, dark = luminance[0, :], luminance[4, :]  # rows in neighbouring stripes (period 8)
    assert np.all(np.abs(light - dark) > 100), "the stripes stand out on every hue"
    assert np.array_equal(hatch_unsure(picture, np.zeros(picture.shape[:2])), picture), "sure pixels are untouched"

    project = _copy(trained_project, tmp_path)
    from workbench import pipeline

    pipeline.predict_project(project)
    region = least_certain_regions(project, count=1)[0]
    shown = region_picture(project, region, side=224).astype(int)
    # Where the model is most unsure, neighbouring stripes differ in brightness (light over dark).
    gray = shown.mean(axis=2)
    assert (np.abs(gray[:, :-4] - gray[:, 4:]) > 60).mean() > 0.02

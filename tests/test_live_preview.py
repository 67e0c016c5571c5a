"""The annotator's live preview on the real nuclei image, driven without a browser."""

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from workbench_widgets.annotator import Annotator
from workbench_widgets.live_preview import ONE_CLASS_MESSAGE, LivePreviewController, preview_region
from workbench.datasets import simulate_partial_labels
from workbench.store import Project


def make_project(path, image, labels, mode="instance"):
    project = Project.create(path, mode=mode, classes=["background", "nucleus"])
    project.add_image(image, name="nuclei")
    if labels is not None:
        project.write_labels("nuclei", labels)
    return project


@pytest.fixture()
def painted(tmp_path, nuclei_image, nuclei_labels):
    """An instance project with a fifth of the nuclei painted and background strokes, at zoom 1."""
    labels = simulate_partial_labels(nuclei_labels, object_fraction=0.2, seed=0)
    project = make_project(tmp_path / "p", nuclei_image, labels)
    annotator = Annotator(project, width=400, height=300, save_delay=0)
    annotator.set_view((256.0, 256.0), 1.0)
    controller = LivePreviewController(annotator)
    yield annotator, controller
    controller.close()


def canvas_pixels(annotator):
    """Image row and column under every canvas row and column."""
    vp = annotator.viewport
    rows = np.floor(vp.origin_y + (np.arange(vp.height) + 0.5) / vp.zoom).astype(int)
    cols = np.floor(vp.origin_x + (np.arange(vp.width) + 0.5) / vp.zoom).astype(int)
    return rows, cols


def test_preview_outlines_the_nuclei_in_view_and_clears_when_off(painted, nuclei_labels):
    annotator, controller = painted
    assert controller.widget in annotator.toolbar.children
    controller.enabled = True
    assert controller.wait()
    assert not controller.errors and annotator.has_preview
    assert controller.message.startswith("preview: ") and "3 classes" in controller.message
    alpha = annotator.frames["prediction"][..., 3]
    rows, cols = canvas_pixels(annotator)
    gt = nuclei_labels[rows[:, None], cols[None, :]]  # ground truth as the canvas shows it
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    inside = [i for i, n in zip(ids, sizes) if n >= 40 and (gt == i).sum() == (nuclei_labels == i).sum()]
    assert len(inside) > 20
    found = [i for i in inside if alpha[gt == i].max() > 0]
    assert len(found) >= 0.8 * len(inside), f"outlined {len(found)} of {len(inside)} nuclei"
    far_from_nuclei = ndi.distance_transform_edt(gt == 0) > 10
    assert far_from_nuclei.sum() > 5000
    assert (alpha[far_from_nuclei] > 0).mean() < 0.02

    controller.enabled = False
    assert controller.wait()
    assert not annotator.has_preview and controller.preview is None
    assert annotator.frames["prediction"][..., 3].max() == 0


def test_a_stroke_retrains_and_a_pan_only_predicts(painted, nuclei_labels, monkeypatch):
    annotator, controller = painted
    controller.enabled = True
    controller.wait()
    model_before = controller.preview.model.forest
    updates = controller.update_count
    assert updates == 1

    far = ndi.distance_transform_edt(nuclei_labels == 0) > 8
    ys, xs = np.nonzero(far[150:400, 100:400])
    y, x = 150 + ys[0], 100 + xs[0]
    annotator.paint([(y, x), (y, x + 1)], class_value=1, diameter=3)  # saved at once: save_delay=0
    assert controller.wait()
    assert controller.update_count == updates + 1
    assert controller.preview.model.forest is not model_before

    annotator.set_view((300.0, 300.0), 2.0)  # inside the region already shown: nothing to redo
    assert controller.wait() and controller.update_count == updates + 1
    shown_region = controller._shown[2]
    annotator.set_view((100.0, 420.0), 0.5)  # zoomed out: the whole image, predicted again, not retrained
    assert controller.wait()
    assert controller.update_count == updates + 1
    assert controller._shown[2] != shown_region
    assert annotator.frames["prediction"][..., 3].any()


def test_requests_while_busy_are_coalesced(painted):
    annotator, controller = painted
    calls = []
    original = controller._run

    def slow_run(request, generation):
        calls.append(request.retrain)
        time.sleep(0.2)
        original(request, generation)

    controller._run = slow_run
    controller.enabled = True
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:  # the first job has started
        time.sleep(0.01)
    for zoom in (1.2, 1.4, 1.6, 1.8):
        annotator.set_view((256.0, 256.0), zoom)
    assert controller.wait()
    assert calls == [True, False]  # the first job, then one for all the views that came meanwhile


@pytest.mark.parametrize("mode, painted_value", [("instance", 1), ("semantic", 2)])
def test_one_class_gives_a_message_not_an_error(tmp_path, nuclei_image, mode, painted_value):
    labels = np.zeros(nuclei_image.shape, np.uint8)
    labels[20:30, 20:200] = painted_value  # background only, or nuclei only
    project = make_project(tmp_path / "p", nuclei_image, labels, mode=mode)
    annotator = Annotator(project, width=200, height=200, save_delay=0)
    controller = LivePreviewController(annotator)
    controller.enabled = True
    assert controller.wait()
    assert controller.message == ONE_CLASS_MESSAGE
    assert ONE_CLASS_MESSAGE in controller.status.value
    assert not controller.errors and controller.update_count == 0 and not annotator.has_preview


def test_a_view_above_one_megapixel_is_cut_to_its_centre():
    assert preview_region((slice(0, 800), slice(0, 1000))) == (slice(0, 800), slice(0, 1000))
    ys, xs = preview_region((slice(0, 2000), slice(100, 3100)))
    assert (ys.stop - ys.start) * (xs.stop - xs.start) <= 1 << 20
    assert abs((ys.start + ys.stop) / 2 - 1000) <= 1 and abs((xs.start + xs.stop) / 2 - 1600) <= 1
    assert abs((xs.stop - xs.start) / (ys.stop - ys.start) - 1.5) < 0.01


def test_time_of_a_one_megapixel_view(tmp_path, nuclei_image, nuclei_labels, capsys):
    """Measured, not asserted: a 1024 x 1024 image (the nuclei image tiled 2 x 2), a 1-MP view."""
    image = np.tile(nuclei_image, (2, 2))
    gt = np.block([[nuclei_labels, nuclei_labels + 1000], [nuclei_labels + 2000, nuclei_labels + 3000]])
    gt[np.tile(nuclei_labels, (2, 2)) == 0] = 0
    labels = simulate_partial_labels(gt, object_fraction=0.1, seed=1)
    project = make_project(tmp_path / "big", image, labels)
    annotator = Annotator(project, width=1024, height=1024, save_delay=0)
    annotator.set_view((512.0, 512.0), 1.0)
    controller = LivePreviewController(annotator)
    started = time.perf_counter()
    controller.enabled = True
    controller.wait()
    first = time.perf_counter() - started
    cold = dict(controller.last_metrics)
    far = np.nonzero(ndi.distance_transform_edt(gt == 0)[600:, 600:] > 8)
    y, x = 600 + far[0][0], 600 + far[1][0]
    started = time.perf_counter()
    annotator.paint([(y, x), (y, x + 3)], class_value=1, diameter=3)
    controller.wait()
    stroke = time.perf_counter() - started
    warm, status = dict(controller.last_metrics), controller.message
    controller.close()
    assert not controller.errors
    with capsys.disabled():
        print(f"\nlive preview, 1024x1024 image, 1-MP view: first {first:.2f} s (features included; "
              f"update {cold['update_seconds']:.2f} s, predict {cold['predict_seconds']:.2f} s), "
              f"after a stroke {stroke:.2f} s (update {warm['update_seconds']:.2f} s, predict "
              f"{warm['predict_seconds']:.2f} s, job {warm['seconds']:.2f} s); status {status!r}")


def test_the_app_puts_the_toggle_in_the_annotators_toolbar(tmp_path, nuclei_image):
    from workbench_widgets.app import WorkbenchApp

    app = WorkbenchApp(make_project(tmp_path / "p", nuclei_image, None))
    assert app.live_preview.toggle.description == "Live preview (Random Forest)"
    assert app.live_preview.widget in app.annotator.toolbar.children
    app.live_preview.enabled = True
    assert app.live_preview.wait() and app.live_preview.message == ONE_CLASS_MESSAGE  # nothing painted yet

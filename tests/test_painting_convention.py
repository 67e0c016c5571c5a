"""Instance mode teaches its convention: an object is painted whole, a scribble inside one is flagged.

Judged on the real DSB 2018 nuclei image with its ground truth: strokes through the middle of
nuclei are flagged, nuclei painted whole from the ground truth are not.
"""

import numpy as np
import pytest
from skimage.measure import regionprops

from workbench.annotate import (PART_OF_OBJECT, LabelEditor, looks_like_part_of_an_object, rasterize_stroke,
                                stroke_window)
from workbench.errors import WorkbenchError
from workbench.store import Project
from workbench_widgets.annotator import Annotator


def _interior_nuclei(labels, margin=8):
    """Ground-truth nuclei that do not touch the image border."""
    height, width = labels.shape
    return [r for r in regionprops(labels)
            if r.bbox[0] >= margin and r.bbox[1] >= margin and r.bbox[2] <= height - margin
            and r.bbox[3] <= width - margin]


def _scribble(nucleus, diameter=5):
    """A short horizontal stroke through the middle of a nucleus (half its small axis long)."""
    cy, cx = nucleus.centroid
    half = nucleus.axis_minor_length / 4
    return [(cy, cx - half), (cy, cx + half)], diameter


def _judge(image, labels, painted):
    ys, xs = np.nonzero(painted)
    window = stroke_window((slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)), labels.shape)
    pixels = image[(slice(None),) * (image.ndim - 2) + window]
    return looks_like_part_of_an_object(labels[window], pixels, painted[window])


def test_scribbles_inside_nuclei_are_flagged_and_whole_nuclei_are_not(nuclei_image, nuclei_labels):
    nuclei = _interior_nuclei(nuclei_labels)
    whole_flagged, scribbles, scribbles_flagged = 0, 0, 0
    for nucleus in nuclei:
        painted = nuclei_labels == nucleus.label
        labels = np.where(painted, 2, 0).astype(np.uint8)  # this nucleus whole, its neighbours not painted
        whole_flagged += _judge(nuclei_image, labels, painted)
        if nucleus.axis_minor_length < 18:
            continue  # a 5-pixel stroke covers most of a small nucleus: nothing to tell apart
        points, diameter = _scribble(nucleus)
        region, mask = rasterize_stroke(points, diameter, nuclei_labels.shape)
        stroke = np.zeros(nuclei_labels.shape, bool)
        stroke[region] = mask
        scribbles += 1
        scribbles_flagged += _judge(nuclei_image, np.where(stroke, 2, 0).astype(np.uint8), stroke)
    assert len(nuclei) > 90 and scribbles > 50
    assert whole_flagged <= 0.03 * len(nuclei), f"{whole_flagged} of {len(nuclei)} whole nuclei flagged"
    assert scribbles_flagged >= 0.9 * scribbles, f"only {scribbles_flagged} of {scribbles} scribbles flagged"


def test_a_patch_the_user_surrounded_with_background_is_theirs(nuclei_image, nuclei_labels):
    nucleus = max(_interior_nuclei(nuclei_labels), key=lambda r: r.area)
    points, diameter = _scribble(nucleus)
    region, mask = rasterize_stroke(points, diameter, nuclei_labels.shape)
    stroke = np.zeros(nuclei_labels.shape, bool)
    stroke[region] = mask
    labels = np.where(stroke, 2, 0).astype(np.uint8)
    assert _judge(nuclei_image, labels, stroke)
    # Background painted all around the patch: the person said the object ends there.
    from scipy import ndimage as ndi
    labels[ndi.binary_dilation(stroke, iterations=8) & ~stroke] = 1
    assert not _judge(nuclei_image, labels, stroke)
    # Background strokes and an empty stroke are never judged.
    assert not _judge(nuclei_image, np.where(stroke, 1, 0).astype(np.uint8), stroke)
    with pytest.raises(WorkbenchError, match="`image` must be"):
        looks_like_part_of_an_object(labels[:50, :50], nuclei_image[:40, :40], stroke[:50, :50])


def test_dark_nuclei_in_a_colour_image_are_judged_too(nuclei_image, nuclei_labels):
    """An RGB stain with dark nuclei on a pink background (channels differ, the polarity is reversed)."""
    value = nuclei_image.astype(np.float64) / nuclei_image.max()
    rgb = np.stack([230 - 150 * value, 180 - 160 * value, 210 - 90 * value]).astype(np.uint8)
    nucleus = max(_interior_nuclei(nuclei_labels), key=lambda r: r.area)
    painted = nuclei_labels == nucleus.label
    assert not _judge(rgb, np.where(painted, 2, 0).astype(np.uint8), painted)
    points, diameter = _scribble(nucleus)
    region, mask = rasterize_stroke(points, diameter, nuclei_labels.shape)
    stroke = np.zeros(nuclei_labels.shape, bool)
    stroke[region] = mask
    assert _judge(rgb, np.where(stroke, 2, 0).astype(np.uint8), stroke)


@pytest.fixture()
def nuclei_project(tmp_path, nuclei_image):
    project = Project.create(tmp_path / "p", mode="instance", classes=["background", "nucleus"])
    project.add_image(nuclei_image, name="nuclei")
    return project


def test_the_annotator_flags_a_partial_stroke_until_the_object_is_filled(nuclei_project, nuclei_labels):
    nucleus = max(_interior_nuclei(nuclei_labels), key=lambda r: r.area)
    annotator = Annotator(nuclei_project, width=400, height=300, save_delay=0)
    points, diameter = _scribble(nucleus)
    edit = annotator.paint(points, class_value=2, diameter=diameter)
    assert edit.warning == PART_OF_OBJECT
    assert annotator.notice == PART_OF_OBJECT
    assert "looks like part of an object" in annotator.controls.notice.value
    # Filling the nucleus along its outline (the "Fill outline" tool) makes it whole: no note.
    contour = np.argwhere(nuclei_labels == nucleus.label)
    from skimage.measure import find_contours
    outline = max(find_contours((nuclei_labels == nucleus.label).astype(float), 0.5), key=len) + 0.5
    edit = annotator.fill([tuple(p) for p in outline], class_value=2)
    assert edit.warning is None and annotator.notice is None
    assert annotator.controls.notice.value == ""
    assert len(contour) > 0 and (annotator.labels()[nuclei_labels == nucleus.label] == 2).mean() > 0.95
    # Background strokes are never judged; undo clears a note.
    annotator.paint(points, class_value=2, diameter=diameter)
    annotator.undo()
    assert annotator.notice is None
    annotator.paint([(5, 5), (5, 40)], class_value=1, diameter=4)
    assert annotator.notice is None


def test_semantic_projects_are_not_judged(tmp_path, nuclei_image, nuclei_labels):
    project = Project.create(tmp_path / "s", mode="semantic", classes=["background", "nucleus"])
    project.add_image(nuclei_image, name="nuclei")
    nucleus = max(_interior_nuclei(nuclei_labels), key=lambda r: r.area)
    points, diameter = _scribble(nucleus)
    assert LabelEditor(project, "nuclei", save_delay=0).paint(points, 2, diameter).warning is None


def test_the_guide_and_the_tools_say_what_they_do(nuclei_project):
    from workbench_widgets.app import ANNOTATE, _intro

    annotator = Annotator(nuclei_project, width=400, height=300, save_delay=0)
    labels = dict(annotator.controls.tool.options)
    assert "Fill outline (l)" in labels and "Fill (l)" not in labels
    guide = _intro(ANNOTATE, nuclei_project)
    assert "fill each nucleus you paint, completely; paint background between touching nuclei" in guide.lower()
    assert "<svg" in guide

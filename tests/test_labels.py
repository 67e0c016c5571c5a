"""Label convention, automatic boundaries and training targets, on real nuclei ground truth."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk

from workbench.errors import WorkbenchError
from workbench.store import (derive_boundaries, label_statistics, labels_from_instances, painted_objects,
                              training_targets, validate_labels)


def _disk_labels(width=2):
    labels = np.zeros((64, 64), np.uint8)
    labels[:, :5] = 1  # a background stroke
    labels[disk((32, 32), 10)] = 2
    return labels


@pytest.mark.parametrize("width", [1, 2, 4])
def test_boundary_band_has_the_requested_width(width):
    labels = _disk_labels()
    band = derive_boundaries(labels, width)
    obj = labels == 2
    assert band.any() and not band[~obj].any()
    inner = obj & ~band
    # Eroding the object by `width` (4-connected steps) gives exactly the interior.
    eroded = ndi.binary_erosion(obj, ndi.generate_binary_structure(2, 1), iterations=width)
    np.testing.assert_array_equal(inner, eroded)


def test_image_edge_is_not_a_boundary():
    labels = np.ones((40, 40), np.uint8)
    labels[:, :20] = 2  # object cut by the left, top and bottom edges
    band = derive_boundaries(labels, 2)
    assert band[:, 18:20].all() and not band[:, :18].any()


def test_targets_keep_painted_background_and_ignore_unpainted():
    labels = _disk_labels()
    t = training_targets(labels, "instance", boundary_width=2)
    outside = ndi.distance_transform_cdt(labels != 2, metric="taxicab")
    ring = (labels == 0) & (outside <= 2)
    assert ring.sum() > 0 and (t[ring] == 0).all()  # a whole painted object says where it ends
    assert (t[(labels == 0) & ~ring] == -1).all()
    assert (t[labels == 1] == 0).all()
    plain = training_targets(labels, "instance", boundary_width=2, outer_background=False)
    assert (plain[labels == 0] == -1).all()
    assert set(np.unique(t[labels == 2])) == {1, 2}
    s = training_targets(labels, "semantic")
    assert (s == labels.astype(int) - 1).all()
    with pytest.raises(WorkbenchError, match="one object"):
        training_targets(np.full((4, 4), 3, np.uint8), "instance")


def test_touching_real_nuclei_are_separated(nuclei_labels):
    labels = labels_from_instances(nuclei_labels)
    objects, count = painted_objects(labels)
    n_gt = len(np.unique(nuclei_labels)) - 1
    # Touching nuclei stay apart; a GT object joined only at a corner may count twice.
    assert n_gt <= count <= n_gt + 3
    # Every painted object lies inside exactly one GT object.
    pairs = np.unique(np.stack([objects[objects > 0], nuclei_labels[objects > 0]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]
    # Only contact lines were given up: at most a few percent of object pixels.
    lost = (nuclei_labels > 0).sum() - (labels == 2).sum()
    assert 0 < lost < 0.05 * (nuclei_labels > 0).sum()
    targets = training_targets(labels, "instance", boundary_width=2)
    # Boundaries sit on GT object outlines: within 2 px of a GT boundary.
    from skimage.segmentation import find_boundaries
    gt_edges = find_boundaries(nuclei_labels, mode="inner")
    near_edge = ndi.distance_transform_edt(~gt_edges) <= 2
    assert near_edge[targets == 2].mean() > 0.99


def test_validate_and_statistics(nuclei_labels):
    with pytest.raises(WorkbenchError, match="same shape"):
        validate_labels(np.zeros((3, 3), np.uint8), shape=(4, 4))
    with pytest.raises(WorkbenchError, match="non-integer"):
        validate_labels(np.full((3, 3), 0.5))
    with pytest.raises(WorkbenchError, match="negative"):
        validate_labels(np.full((3, 3), -1))
    labels = labels_from_instances(nuclei_labels)
    stats = label_statistics(labels, ["background", "nucleus"], "instance")
    assert stats["pixels"]["nucleus"] == (labels == 2).sum()
    assert stats["annotated_fraction"] == 1.0 and stats["objects"] >= 125


# ---------------------------------------------------------------- the boundary width follows object size

def test_auto_boundary_width_is_two_for_the_dsb_nuclei_and_one_at_half_size(nuclei_labels):
    """The DSB nuclei (median area 440 px) keep the 2-px boundary; the same nuclei at half size get 1 px."""
    from workbench.store import auto_boundary_width, painted_object_areas

    full = painted_object_areas(labels_from_instances(nuclei_labels))
    assert np.median(full) == 440 and auto_boundary_width(full) == 2
    half = labels_from_instances(nuclei_labels[::2, ::2])
    assert auto_boundary_width(painted_object_areas(half)) == 1
    assert auto_boundary_width([]) == 2 and auto_boundary_width([60 ** 2]) == 4  # nothing painted; huge cells


def test_new_projects_derive_the_width_from_painted_objects_and_old_ones_keep_theirs(
        tmp_path, nuclei_image, nuclei_labels):
    import json

    from workbench.store import Project

    project = Project.create(tmp_path / "p", mode="instance", classes=["background", "nucleus"])
    assert project.boundary_width_setting == "auto" and project.boundary_width == 2  # nothing painted yet
    small_image, small_nuclei = nuclei_image[::2, ::2], nuclei_labels[::2, ::2]
    project.add_image(small_image, name="small")
    project.import_labels("small", small_nuclei, instances=True)
    assert project.boundary_width == 1
    # The targets training learns from keep an interior in (nearly) every small nucleus.
    (_plane, targets, _tag), = project.training_samples()
    interior = [np.any(targets[small_nuclei == i] == 1) for i in np.unique(small_nuclei)[1:]]
    assert np.mean(interior) > 0.95, np.mean(interior)
    two_px = training_targets(project.read_labels("small"), "instance", 2)
    assert np.mean([np.any(two_px[small_nuclei == i] == 1) for i in np.unique(small_nuclei)[1:]]) < np.mean(interior)
    # The full-size nuclei instead: back to 2 px.
    project.remove_image("small")
    project.add_image(nuclei_image, name="full")
    project.import_labels("full", nuclei_labels, instances=True)
    assert Project.open(project.path).boundary_width == 2 and project.boundary_width == 2
    # A number set by the project (or kept by an older project) is used as it is.
    project.set_boundary_width(3)
    assert Project.open(project.path).boundary_width == 3
    manifest = json.loads((project.path / "project.json").read_text())
    assert manifest["boundary_width"] == 3
    project.set_boundary_width("auto")
    assert project.boundary_width == 2
    with pytest.raises(WorkbenchError, match="whole number of pixels"):
        project.set_boundary_width("wide")

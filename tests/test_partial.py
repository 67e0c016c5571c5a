"""Simulated partial annotations on the real nuclei ground truth."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from workbench.errors import WorkbenchError
from workbench.datasets import labelled_fraction, simulate_partial_labels

LEFT_HALF = np.s_[:, :256]


def painted_object_ids(labels: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return np.unique(gt[labels == 2])


def test_labels_follow_the_label_layer_convention(nuclei_labels):
    labels = simulate_partial_labels(nuclei_labels)
    assert labels.dtype == np.uint8 and labels.shape == nuclei_labels.shape
    assert set(np.unique(labels)) == {0, 1, 2}


def test_painted_objects_are_a_fraction_of_whole_gt_objects(nuclei_labels):
    labels = simulate_partial_labels(nuclei_labels, object_fraction=0.2)
    chosen = painted_object_ids(labels, nuclei_labels)
    assert 0 not in chosen, "object paint never spills onto GT background"
    assert chosen.size == round(0.2 * 125)
    chosen_pixels = np.isin(nuclei_labels, chosen)
    # Each chosen object is painted whole: object everywhere except a 1-px contact line of background.
    assert np.all(labels[chosen_pixels] > 0)
    contact = chosen_pixels & (labels == 1)
    assert np.count_nonzero(contact) < 0.02 * np.count_nonzero(chosen_pixels)
    # Every contact pixel touches another chosen object.
    for y, x in zip(*np.nonzero(contact)):
        window = nuclei_labels[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
        neighbours = set(np.unique(window[np.isin(window, chosen)])) - {nuclei_labels[y, x]}
        assert neighbours, f"background paint at ({y}, {x}) inside an object touches no other painted object"


def test_touching_painted_objects_stay_separate(nuclei_labels):
    labels = simulate_partial_labels(nuclei_labels, object_fraction=1.0)
    chosen = painted_object_ids(labels, nuclei_labels)
    assert chosen.size == 125
    components, count = ndi.label(labels == 2, structure=np.ones((3, 3)))
    # 8-connected components of painted object pixels never join two GT objects.
    pairs = np.unique(np.stack([components[labels == 2], nuclei_labels[labels == 2]]), axis=1)
    assert np.unique(pairs[0]).size == pairs.shape[1] == count
    assert count >= 125
    assert np.count_nonzero((labels == 1) & (nuclei_labels > 0)) > 0, "the real GT has touching nuclei"


def test_background_strokes_avoid_every_object_with_a_margin(nuclei_labels):
    margin = 2
    labels = simulate_partial_labels(nuclei_labels, margin=margin, seed=3)
    strokes = (labels == 1) & (nuclei_labels == 0)
    assert np.count_nonzero(strokes) > 1000
    near_objects = ndi.distance_transform_edt(nuclei_labels == 0) <= margin
    assert not np.any(strokes & near_objects)
    # Inside objects, background paint is only the contact lines (checked above), never strokes.
    chosen = np.isin(nuclei_labels, painted_object_ids(labels, nuclei_labels))
    assert not np.any((labels == 1) & (nuclei_labels > 0) & ~chosen)


def test_region_limits_annotations_and_object_count(nuclei_labels):
    labels = simulate_partial_labels(nuclei_labels, region=LEFT_HALF, object_fraction=0.2)
    assert not np.any(labels[:, 256:])
    inside = np.setdiff1d(np.unique(nuclei_labels[LEFT_HALF]), np.unique(nuclei_labels[:, 256:]))
    inside = inside[inside > 0]
    chosen = painted_object_ids(labels, nuclei_labels)
    assert np.all(np.isin(chosen, inside))
    assert chosen.size == round(0.2 * inside.size)
    mask = np.zeros(nuclei_labels.shape, dtype=bool)
    mask[LEFT_HALF] = True
    assert labelled_fraction(labels, mask) == pytest.approx(labelled_fraction(labels, LEFT_HALF))
    assert labelled_fraction(labels, LEFT_HALF) == pytest.approx(2 * labelled_fraction(labels))


def test_deterministic_under_seed(nuclei_labels):
    first = simulate_partial_labels(nuclei_labels, seed=7)
    np.testing.assert_array_equal(first, simulate_partial_labels(nuclei_labels, seed=7))
    assert not np.array_equal(first, simulate_partial_labels(nuclei_labels, seed=8))


def test_default_labelled_fraction_is_small(nuclei_labels):
    for seed in range(3):
        labels = simulate_partial_labels(nuclei_labels, seed=seed)
        assert 0.02 < labelled_fraction(labels) <= 0.25
        region_labels = simulate_partial_labels(nuclei_labels, seed=seed, region=LEFT_HALF)
        assert 0.02 < labelled_fraction(region_labels, LEFT_HALF) <= 0.25


def test_non_contiguous_ids_and_no_objects(nuclei_labels):
    relabelled = nuclei_labels.astype(np.int64) * 1_000_003  # huge, sparse ids
    labels = simulate_partial_labels(relabelled, seed=1)
    np.testing.assert_array_equal(labels, simulate_partial_labels(nuclei_labels, seed=1))
    empty = simulate_partial_labels(np.zeros((128, 128), dtype=np.int32), background_strokes=4)
    assert not np.any(empty == 2) and np.any(empty == 1)


def test_invalid_arguments_raise_readable_errors(nuclei_labels):
    with pytest.raises(WorkbenchError, match="2-D"):
        simulate_partial_labels(nuclei_labels > 0)
    with pytest.raises(ValueError, match="object_fraction"):
        simulate_partial_labels(nuclei_labels, object_fraction=1.5)
    with pytest.raises(WorkbenchError, match="region"):
        simulate_partial_labels(nuclei_labels, region=np.ones((4, 4), dtype=bool))
    with pytest.raises(WorkbenchError, match="stroke_width"):
        simulate_partial_labels(nuclei_labels, stroke_width=0)

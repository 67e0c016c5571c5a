"""Instance and semantic post-processing on probabilities built from the real nuclei ground truth."""

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from workbench.errors import WorkbenchError
from workbench.predict import (
    InstancesError,
    instances_from_probabilities,
    semantic_from_probabilities,
)


def matched_fraction(gt: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of ground-truth objects overlapped by one prediction at IoU > threshold."""
    gt_ids, gt_index = np.unique(gt, return_inverse=True)
    pred_ids, pred_index = np.unique(pred, return_inverse=True)
    n_pred = len(pred_ids)
    intersection = np.bincount(
        gt_index.ravel() * n_pred + pred_index.ravel(), minlength=len(gt_ids) * n_pred
    ).reshape(len(gt_ids), n_pred)
    union = intersection.sum(1, keepdims=True) + intersection.sum(0, keepdims=True) - intersection
    iou = intersection / union
    objects = iou[gt_ids > 0][:, pred_ids > 0]
    if objects.size == 0:
        return 0.0
    return float((objects.max(axis=1) > threshold).mean())


def probabilities_from_labels(labels: np.ndarray, *, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """Near-ideal (background, interior, boundary) softmax output for an instance image."""
    foreground = labels > 0
    boundary = find_boundaries(labels, mode="inner") & foreground
    channels = np.stack([~foreground, foreground & ~boundary, boundary]).astype(np.float32)
    channels = ndi.gaussian_filter(channels, sigma=(0,) + (1,) * labels.ndim)
    channels += np.random.default_rng(seed).normal(0, noise, channels.shape).astype(np.float32)
    channels = np.clip(channels, 1e-3, None)
    return channels / channels.sum(axis=0, keepdims=True)


@pytest.fixture(scope="module")
def gt(nuclei_labels):
    return nuclei_labels.astype(np.int32)


@pytest.fixture(scope="module")
def probabilities(gt):
    return probabilities_from_labels(gt, noise=0.1)


def test_watershed_recovers_the_nuclei(gt, probabilities):
    labels = instances_from_probabilities(probabilities)
    assert labels.dtype == np.int32 and labels.shape == gt.shape
    assert matched_fraction(gt, labels) >= 0.95
    # Ids are relabelled 1..N with no gaps.
    ids = np.unique(labels)
    np.testing.assert_array_equal(ids, np.arange(ids.max() + 1))
    assert 0.9 * 125 <= ids.max() <= 1.1 * 125


def test_touching_nuclei_are_separated(gt, probabilities):
    # GT objects that share an edge with another object: a plain connected
    # components labelling would merge each group into one.
    touching_ids = np.unique(
        np.concatenate([
            gt[:, 1:][(gt[:, 1:] != gt[:, :-1]) & (gt[:, 1:] > 0) & (gt[:, :-1] > 0)],
            gt[1:, :][(gt[1:, :] != gt[:-1, :]) & (gt[1:, :] > 0) & (gt[:-1, :] > 0)],
        ])
    )
    assert len(touching_ids) >= 10  # the real image has clusters worth testing
    touching = np.where(np.isin(gt, touching_ids), gt, 0)
    labels = instances_from_probabilities(probabilities)
    assert matched_fraction(touching, labels) >= 0.9
    merged, _ = ndi.label(probabilities[0] < 0.5)
    assert matched_fraction(touching, merged) < matched_fraction(touching, labels)


def _touching_ids(gt):
    return np.unique(np.concatenate([
        gt[:, 1:][(gt[:, 1:] != gt[:, :-1]) & (gt[:, 1:] > 0) & (gt[:, :-1] > 0)],
        gt[1:, :][(gt[1:, :] != gt[:-1, :]) & (gt[1:, :] > 0) & (gt[:-1, :] > 0)],
    ]))


def test_faint_contacts_are_cut_at_the_seed_neck(gt):
    """Where the model barely marks the contact of two touching nuclei, their seeds join through
    the contact and the watershed merges them; cutting seeds at their necks keeps them apart and
    leaves every isolated nucleus whole."""
    contact = find_boundaries(gt, mode="inner") & (gt > 0)
    others = np.where(gt > 0, gt, gt.max() + 1)
    touching = contact & (ndi.maximum_filter(gt, size=3) != ndi.minimum_filter(others, size=3))
    probabilities = probabilities_from_labels(gt, noise=0.0)
    probabilities[:, touching] = np.array([0.05, 0.8, 0.15], np.float32)[:, None]  # a faint contact
    touching_ids = _touching_ids(gt)
    pairs = np.where(np.isin(gt, touching_ids), gt, 0)
    alone = np.where(np.isin(gt, touching_ids), 0, gt)

    whole = instances_from_probabilities(probabilities)
    cut = instances_from_probabilities(probabilities, neck_ratio=0.5)

    assert matched_fraction(pairs, whole) < 0.6  # merged...
    assert matched_fraction(pairs, cut) >= 0.9  # ...kept apart
    assert matched_fraction(alone, cut) == 1.0
    # No isolated nucleus is cut that was whole before (one of the 99 is split either way, by
    # a diagonal neighbour's faint contact).
    assert _cut_in_two(alone, cut) == _cut_in_two(alone, whole) <= 1


def _cut_in_two(truth, labels):
    """How many objects of `truth` have more than one predicted id covering a fifth of them."""
    count = 0
    for index, where in enumerate(ndi.find_objects(truth), start=1):
        if where is None:
            continue
        inside = labels[where][truth[where] == index]
        ids, pixels = np.unique(inside[inside > 0], return_counts=True)
        count += int((pixels > 0.2 * inside.size).sum() > 1)
    return count


def test_necks_are_cut_in_three_dimensions_with_the_voxel_size():
    """Two touching balls in an anisotropic stack whose contact is not marked: one seed with a
    neck, cut into two objects; one elongated (by the spacing, round) ball stays whole."""
    z, y, x = np.ogrid[:12, :40, :64]
    first = ((z - 6) * 3) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 12 ** 2
    second = ((z - 6) * 3) ** 2 + (y - 20) ** 2 + (x - 42) ** 2 <= 12 ** 2
    truth = (first | second).astype(np.int32)
    probabilities = probabilities_from_labels(truth, noise=0.0)
    assert instances_from_probabilities(probabilities, spacing=(3, 1, 1)).max() == 1
    cut = instances_from_probabilities(probabilities, spacing=(3, 1, 1), neck_ratio=0.5)
    assert cut.max() == 2 and len(np.unique(cut[first & ~second])) == 2  # one id (and background)
    one = probabilities_from_labels(first.astype(np.int32), noise=0.0)
    assert instances_from_probabilities(one, spacing=(3, 1, 1), neck_ratio=0.5).max() == 1


def test_synthetic_touching_squares_get_two_ids():
    truth = np.zeros((40, 60), np.int32)
    truth[10:30, 10:30] = 1
    truth[10:30, 30:50] = 2
    labels = instances_from_probabilities(probabilities_from_labels(truth, noise=0.0))
    assert labels.max() == 2
    assert matched_fraction(truth, labels, threshold=0.8) == 1.0


def test_tiny_specks_are_removed(gt):
    speckled = gt.copy()
    background = np.argwhere(ndi.binary_erosion(gt == 0, iterations=6))
    chosen = background[np.random.default_rng(3).choice(len(background), 20, replace=False)]
    speck_id = gt.max() + 1
    for offset, (y, x) in enumerate(chosen):
        speckled[y : y + 2, x : x + 2] = speck_id + offset
    probabilities = probabilities_from_labels(speckled)
    labels = instances_from_probabilities(probabilities, min_size=16)
    assert not labels[speckled > gt.max()].any()
    assert matched_fraction(gt, labels) >= 0.95
    kept = instances_from_probabilities(probabilities, min_size=1, min_seed_size=1)
    assert kept.max() > labels.max()


def test_foreground_without_a_seed_is_kept_as_one_object():
    probabilities = np.zeros((3, 30, 30), np.float32)
    probabilities[0] = 1
    probabilities[:, 5:15, 5:15] = np.array([0.0, 0.3, 0.7])[:, None, None]  # never passes 0.5
    labels = instances_from_probabilities(probabilities, min_size=4)
    assert labels.max() == 1 and (labels == 1).sum() == 100


def test_empty_input_gives_an_empty_label_image():
    probabilities = np.zeros((3, 64, 48), np.float32)
    probabilities[0] = 1
    labels = instances_from_probabilities(probabilities)
    assert labels.shape == (64, 48) and labels.dtype == np.int32 and not labels.any()
    two_class = instances_from_probabilities(probabilities[:2])
    assert not two_class.any()


def test_two_class_input_splits_with_distance_seeds(gt):
    foreground = ndi.gaussian_filter((gt > 0).astype(np.float32), 1)
    labels = instances_from_probabilities(np.stack([1 - foreground, foreground]))
    assert labels.dtype == np.int32
    assert matched_fraction(gt, labels) >= 0.9
    connected, _ = ndi.label(foreground > 0.5)
    assert matched_fraction(gt, labels) > matched_fraction(gt, connected)


def test_zarr_input_gives_the_same_labels(probabilities, tmp_path):
    stored = zarr.create_array(
        store=str(tmp_path / "p.zarr"), shape=probabilities.shape, chunks=(1, 128, 128), dtype="float32"
    )
    stored[:] = probabilities
    np.testing.assert_array_equal(
        instances_from_probabilities(stored), instances_from_probabilities(probabilities)
    )
    np.testing.assert_array_equal(
        semantic_from_probabilities(stored), np.argmax(probabilities, axis=0)
    )


def test_semantic_is_the_argmax(probabilities):
    before = probabilities.copy()
    classes = semantic_from_probabilities(probabilities)
    instances_from_probabilities(probabilities)
    np.testing.assert_array_equal(probabilities, before)  # the caller's array is left alone
    assert classes.dtype == np.uint8
    np.testing.assert_array_equal(classes, np.argmax(probabilities, axis=0))
    five = np.random.default_rng(4).random((5, 33, 17)).astype(np.float32)
    np.testing.assert_array_equal(semantic_from_probabilities(five), np.argmax(five, axis=0))


@pytest.mark.parametrize(
    "array, kwargs, message",
    [
        (np.zeros((5, 8, 8), np.float32), {}, "expects 3"),
        (np.zeros((3, 8, 8), np.float32), {"seeds": "distance"}, "needs a predicted distance map"),
        (np.zeros((4, 8, 8), np.float32), {"peak_prominence": 2}, "peak_prominence"),
        (np.zeros((8, 8), np.float32), {}, r"\(K, Y, X\)"),
        (np.full((3, 8, 8), np.nan, np.float32), {}, "NaN"),
        (np.zeros((3, 8, 8), np.float32), {"interior_threshold": 1.5}, "interior_threshold"),
        (np.zeros((3, 8, 8), np.float32), {"min_size": -1}, "min_size"),
        (np.zeros((3, 8, 8), np.float32), {"neck_ratio": 1.0}, "neck_ratio"),
        (np.zeros((3, 8, 8), np.float32), {"neck_ratio": float("nan")}, "neck_ratio"),
    ],
)
def test_bad_input_is_a_clear_error(array, kwargs, message):
    with pytest.raises(InstancesError, match=message):
        instances_from_probabilities(array, **kwargs)
    assert issubclass(InstancesError, WorkbenchError)

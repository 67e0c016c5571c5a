"""Instance AP (DSB 2018) and semantic IoU / Dice on hand-made cases and the real nuclei ground truth."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from workbench.errors import WorkbenchError
from workbench.predict import (
    DSB_THRESHOLDS,
    average_precision,
    dice,
    iou,
    match_instances,
    per_class_dice,
    per_class_iou,
)


def three_squares() -> np.ndarray:
    """Ground truth: objects A (1) and B (2) touching side by side, C (3) apart; each 10 x 10 px."""
    labels = np.zeros((30, 40), dtype=np.int32)
    labels[5:15, 5:15] = 1
    labels[5:15, 15:25] = 2
    labels[18:28, 28:38] = 3
    return labels


def erode_labels(labels: np.ndarray, iterations: int) -> np.ndarray:
    """Shrink every object by `iterations` pixels, keeping ids (touching objects separate too)."""
    out = labels.copy()
    for _ in range(iterations):
        interior = (ndi.grey_erosion(out, size=3) == out) & (ndi.grey_dilation(out, size=3) == out)
        out = np.where(interior, out, 0)
    return out


def test_identical_labels_score_one(nuclei_labels):
    result = average_precision(nuclei_labels, nuclei_labels)
    assert result["map"] == 1.0 and result["ap50"] == 1.0
    np.testing.assert_array_equal(result["ap"], np.ones(10))
    np.testing.assert_allclose(result["thresholds"], DSB_THRESHOLDS)
    assert result["n_gt"] == result["n_pred"] == 125
    np.testing.assert_array_equal(result["tp"], 125)
    np.testing.assert_array_equal(result["fp"] + result["fn"], 0)


def test_iou_matrix_is_identity_for_identical_labels(nuclei_labels):
    overlap = match_instances(nuclei_labels, nuclei_labels)
    assert overlap.iou.shape == (125, 125)
    np.testing.assert_array_equal(overlap.iou, np.eye(125))
    np.testing.assert_array_equal(overlap.gt_ids, np.unique(nuclei_labels)[1:])


def test_sparse_and_dense_iou_agree(nuclei_labels):
    shifted = np.roll(nuclei_labels, 3, axis=0)
    dense = match_instances(nuclei_labels, shifted)
    sparse = match_instances(nuclei_labels, shifted, sparse_output=True)
    np.testing.assert_allclose(sparse.iou.toarray(), dense.iou)
    # Only overlapping pairs are stored.
    assert sparse.iou.nnz == np.count_nonzero(dense.iou) < dense.iou.size / 10


def test_split_object():
    gt = three_squares()
    pred = gt.copy()
    pred[5:15, 11:15] = 9  # A split 6 : 4 columns -> IoU 0.6 and 0.4 with A
    result = average_precision(gt, pred, thresholds=(0.3, 0.5, 0.6))
    np.testing.assert_array_equal(result["tp"], [3, 3, 2])
    np.testing.assert_array_equal(result["fp"], [1, 1, 2])
    np.testing.assert_array_equal(result["fn"], [0, 0, 1])
    np.testing.assert_allclose(result["ap"], [3 / 4, 3 / 4, 2 / 5])
    assert result["ap50"] == pytest.approx(3 / 4)


def test_merged_objects():
    gt = three_squares()
    pred = gt.copy()
    pred[gt == 2] = 1  # A and B merged: IoU exactly 0.5 with each, not a match at t = 0.5
    result = average_precision(gt, pred, thresholds=(0.4, 0.5))
    np.testing.assert_array_equal(result["tp"], [2, 1])
    np.testing.assert_array_equal(result["fp"], [0, 1])
    np.testing.assert_array_equal(result["fn"], [1, 2])
    np.testing.assert_allclose(result["ap"], [2 / 3, 1 / 4])


def test_missing_object():
    gt = three_squares()
    pred = np.where(gt == 3, 0, gt)
    result = average_precision(gt, pred)
    np.testing.assert_allclose(result["ap"], 2 / 3)
    np.testing.assert_array_equal(result["fn"], 1)
    assert result["map"] == pytest.approx(2 / 3)


def test_extra_object():
    gt = three_squares()
    pred = gt.copy()
    pred[20:26, 2:8] = 4
    result = average_precision(gt, pred)
    np.testing.assert_allclose(result["ap"], 3 / 4)
    np.testing.assert_array_equal(result["fp"], 1)
    assert result["n_pred"] == 4


def test_low_threshold_uses_maximum_one_to_one_matching():
    # 1-D case where greedy highest-IoU-first matching finds 1 match but 2 exist at IoU > 0.2:
    # P overlaps A (IoU 0.5) and B (IoU 4/17); Q overlaps only A (IoU 0.3).
    gt = np.zeros(20, dtype=np.int32)
    gt[:10], gt[10:] = 1, 2
    pred = np.zeros(20, dtype=np.int32)
    pred[3:14], pred[0:3] = 5, 6
    result = average_precision(gt, pred, thresholds=(0.2, 0.5))
    np.testing.assert_array_equal(result["tp"], [2, 0])
    np.testing.assert_allclose(result["ap"], [1.0, 0.0])


def test_non_contiguous_and_huge_ids_are_matched_by_overlap(nuclei_labels):
    ids = np.unique(nuclei_labels)[1:]
    rng = np.random.default_rng(0)
    lookup = np.zeros(int(nuclei_labels.max()) + 1, dtype=np.int64)
    lookup[ids] = rng.choice(2**40, size=ids.size, replace=False) + 1  # forces the sort-based path
    relabelled = lookup[nuclei_labels]
    result = average_precision(nuclei_labels, relabelled)
    assert result["map"] == 1.0
    overlap = match_instances(nuclei_labels, relabelled)
    assert np.all(overlap.iou.max(axis=1) == 1.0) and np.count_nonzero(overlap.iou) == ids.size


@pytest.mark.parametrize(
    ("has_gt", "has_pred", "expected_ap"),
    [(False, False, 1.0), (True, False, 0.0), (False, True, 0.0)],
)
def test_empty_cases(has_gt, has_pred, expected_ap):
    objects = three_squares()
    empty = np.zeros_like(objects)
    result = average_precision(objects if has_gt else empty, objects if has_pred else empty)
    np.testing.assert_array_equal(result["ap"], expected_ap)
    assert result["map"] == expected_ap
    np.testing.assert_array_equal(result["fn"], 3 if has_gt else 0)
    np.testing.assert_array_equal(result["fp"], 3 if has_pred else 0)
    assert match_instances(objects if has_gt else empty, empty).iou.shape == ((3 if has_gt else 0), 0)


def test_eroded_ground_truth_scores_high_at_loose_iou_only(nuclei_labels):
    eroded = average_precision(nuclei_labels, erode_labels(nuclei_labels, 1))
    assert eroded["ap50"] > 0.9
    assert 0.35 < eroded["map"] < 0.7
    assert np.all(np.diff(eroded["ap"]) <= 0), "AP cannot rise with a stricter threshold"
    assert eroded["ap"][-1] == 0.0  # losing a 1-px rim drops every nucleus below IoU 0.95
    more_eroded = average_precision(nuclei_labels, erode_labels(nuclei_labels, 2))
    assert more_eroded["map"] < eroded["map"]


def test_shifted_ground_truth_loses_ap_with_shift(nuclei_labels):
    scores = [average_precision(nuclei_labels, np.roll(nuclei_labels, shift, axis=1)) for shift in (1, 2, 4)]
    assert scores[1]["ap50"] > 0.85
    assert 0.4 < scores[1]["map"] < 0.7
    maps = [score["map"] for score in scores]
    assert maps[0] > maps[1] > maps[2]


def test_mask_iou_and_dice_known_values():
    gt = np.array([[1, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    pred = np.array([[0, 1, 1, 1], [0, 0, 0, 0]], dtype=bool)
    assert iou(gt, pred) == pytest.approx(2 / 4)
    assert dice(gt, pred) == pytest.approx(4 / 6)
    ignore = np.array([[0, 0, 0, 1], [0, 0, 0, 0]], dtype=bool)
    assert iou(gt, pred, ignore=ignore) == pytest.approx(2 / 3)
    assert dice(gt, pred, ignore=ignore) == pytest.approx(4 / 5)
    empty = np.zeros_like(gt)
    assert iou(empty, empty) == 1.0 and dice(empty, empty) == 1.0
    assert iou(gt, empty) == 0.0


def test_mask_metrics_on_real_foreground(nuclei_labels):
    foreground = nuclei_labels > 0
    eroded = erode_labels(nuclei_labels, 1) > 0
    value = iou(foreground, eroded)
    assert 0.6 < value < 0.95
    assert dice(foreground, eroded) == pytest.approx(2 * value / (1 + value))


def test_per_class_metrics_with_ignore_value_and_absent_class():
    gt = np.array([0, 0, 1, 1, -1, -1])
    pred = np.array([0, 1, 1, 1, 2, 0])
    # The -1 pixels are ignored, so class 2 appears in neither map where it counts.
    scores_iou = per_class_iou(gt, pred, n_classes=3)
    np.testing.assert_allclose(scores_iou, [1 / 2, 2 / 3, np.nan])
    np.testing.assert_allclose(per_class_dice(gt, pred, n_classes=3), [2 / 3, 4 / 5, np.nan])
    ignore = np.array([0, 1, 0, 0, 0, 0], dtype=bool)
    np.testing.assert_allclose(per_class_iou(gt, pred, ignore=ignore), [1.0, 1.0])


def test_per_class_iou_on_real_class_map(nuclei_labels):
    classes = (nuclei_labels > 0).astype(np.int64)
    scores = per_class_iou(classes, np.roll(classes, 2, axis=0))
    assert scores.shape == (2,)
    assert scores[0] > scores[1] > 0.5


def test_invalid_inputs_raise_readable_errors():
    labels = three_squares()
    with pytest.raises(WorkbenchError, match=r"`pred` \(shape \(3, 3\)\) must have the same shape"):
        average_precision(labels, np.zeros((3, 3), dtype=np.int32))
    with pytest.raises(ValueError, match="integer label image"):
        match_instances(labels > 0, labels)
    with pytest.raises(WorkbenchError, match="negative ids"):
        average_precision(labels, -labels)
    with pytest.raises(WorkbenchError, match="thresholds"):
        average_precision(labels, labels, thresholds=(0.5, 1.5))
    with pytest.raises(WorkbenchError, match="boolean mask"):
        iou(labels, labels)
    with pytest.raises(WorkbenchError, match="n_classes"):
        per_class_iou(np.array([0, 3]), np.array([0, 1]), n_classes=2)

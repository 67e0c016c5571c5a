"""Segmentation accuracy: instance average precision (2018 Data Science Bowl) and semantic IoU / Dice.

Instance metrics compare two label images (0 = background, any other integer =
one object; ids need not be contiguous). Overlaps are counted in one pass from
pair codes of the two images, so the cost is one sort of the overlapping pixels,
whatever the number of objects.

Semantic metrics compare boolean masks or class maps, optionally leaving out
pixels the user never annotated (an ignore mask).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from workbench.errors import WorkbenchError

__all__ = [
    "DSB_THRESHOLDS",
    "InstanceOverlap",
    "MetricsInputError",
    "average_precision",
    "dice",
    "iou",
    "match_instances",
    "per_class_dice",
    "per_class_iou",
]

#: IoU thresholds of the 2018 Data Science Bowl score: 0.5, 0.55, ..., 0.95.
DSB_THRESHOLDS = tuple(round(0.5 + 0.05 * step, 2) for step in range(10))


class MetricsInputError(WorkbenchError, ValueError):
    """Arrays given to a metric have the wrong type, shape or values."""


class InstanceOverlap(NamedTuple):
    """Intersection over union of every ground-truth object with every predicted object.

    Attributes
    ----------
    iou : numpy.ndarray or scipy.sparse.csr_array
        Shape ``(len(gt_ids), len(pred_ids))``; row ``i``, column ``j`` is the IoU
        of ground-truth object ``gt_ids[i]`` with predicted object ``pred_ids[j]``.
    gt_ids, pred_ids : numpy.ndarray
        The object ids (sorted, background 0 excluded) that label rows and columns.
    """

    iou: np.ndarray | sparse.csr_array
    gt_ids: np.ndarray
    pred_ids: np.ndarray


class _OverlapPairs(NamedTuple):
    """Every overlapping (gt, pred) object pair, as indices into the id arrays."""

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    gt_index: np.ndarray
    pred_index: np.ndarray
    iou: np.ndarray


# ----------------------------------------------------------------------------- validation


def _as_label_image(name: str, labels) -> np.ndarray:
    array = np.asarray(labels)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise MetricsInputError(
            f"`{name}` must be an integer label image (0 = background, other values = object ids), "
            f"got dtype {array.dtype}; convert a mask to instances first, e.g. with "
            f"scipy.ndimage.label({name})."
        )
    if array.size and array.min() < 0:
        raise MetricsInputError(
            f"`{name}` has negative ids (min {array.min()}); object ids must be >= 0 with 0 = background."
        )
    return array


def _check_same_shape(first_name: str, first: np.ndarray, second_name: str, second: np.ndarray) -> None:
    if first.shape != second.shape:
        raise MetricsInputError(
            f"`{second_name}` (shape {second.shape}) must have the same shape as `{first_name}` "
            f"(shape {first.shape}); crop or resample one of them so the pixels correspond."
        )


def _as_ignore_mask(ignore, reference_name: str, reference: np.ndarray) -> np.ndarray | None:
    if ignore is None:
        return None
    mask = np.asarray(ignore)
    if mask.dtype != bool:
        raise MetricsInputError(
            f"`ignore` must be a boolean mask (True = leave the pixel out), got dtype {mask.dtype}; "
            f"pass e.g. `labels == 0` for unannotated pixels."
        )
    _check_same_shape(reference_name, reference, "ignore", mask)
    return mask


def _as_thresholds(thresholds) -> np.ndarray:
    values = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if values.ndim != 1 or values.size == 0 or np.any((values < 0) | (values >= 1)):
        raise MetricsInputError(
            f"`thresholds` must be a non-empty sequence of IoU values in [0, 1), got {thresholds!r}; "
            f"the DSB 2018 score uses {DSB_THRESHOLDS}."
        )
    return values


# ----------------------------------------------------------------------------- instance overlap


def _compact_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the sorted object ids and the image re-labelled 1..n (0 stays background)."""
    flat = labels.ravel()
    max_id = int(flat.max()) if flat.size else 0
    if max_id <= 4 * flat.size + 1024:
        # Ids are small enough for a lookup table: O(N) instead of a sort.
        present = np.bincount(flat, minlength=max_id + 1) > 0
        present[0] = False
        ids = np.flatnonzero(present)
        lookup = np.zeros(max_id + 1, dtype=np.int64)
        lookup[ids] = np.arange(1, ids.size + 1)
        return ids.astype(labels.dtype, copy=False), lookup[flat]
    ids, inverse = np.unique(flat, return_inverse=True)
    if ids.size and ids[0] == 0:
        return ids[1:], inverse.ravel().astype(np.int64)
    return ids, inverse.ravel().astype(np.int64) + 1


def _overlap_pairs(gt: np.ndarray, pred: np.ndarray) -> _OverlapPairs:
    gt_ids, gt_compact = _compact_ids(gt)
    pred_ids, pred_compact = _compact_ids(pred)
    gt_areas = np.bincount(gt_compact, minlength=gt_ids.size + 1)
    pred_areas = np.bincount(pred_compact, minlength=pred_ids.size + 1)

    both = (gt_compact > 0) & (pred_compact > 0)
    # One integer code per (gt, pred) pair; counting codes is the joint histogram,
    # kept sparse so 10^4 x 10^4 objects cost no more than the overlapping pixels.
    codes = gt_compact[both] * (pred_ids.size + 1) + pred_compact[both]
    pair_codes, intersections = np.unique(codes, return_counts=True)
    gt_index, pred_index = np.divmod(pair_codes, pred_ids.size + 1)
    unions = gt_areas[gt_index] + pred_areas[pred_index] - intersections
    return _OverlapPairs(
        gt_ids=gt_ids,
        pred_ids=pred_ids,
        gt_index=gt_index - 1,
        pred_index=pred_index - 1,
        iou=intersections / unions,
    )


def match_instances(gt, pred, *, sparse_output: bool = False) -> InstanceOverlap:
    """IoU of every ground-truth object with every predicted object.

    Parameters
    ----------
    gt, pred : array_like of int
        Instance label images of the same shape; 0 is background, every other
        value one object. Ids need not be contiguous.
    sparse_output : bool, optional
        Return the IoU matrix as a ``scipy.sparse.csr_array`` (only overlapping
        pairs stored), for images with many thousands of objects.

    Returns
    -------
    InstanceOverlap
        ``(iou, gt_ids, pred_ids)``; ``iou`` has shape ``(n_gt, n_pred)``.

    Raises
    ------
    MetricsInputError
        If an input is not an integer image, has negative ids, or shapes differ.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 5]])
    >>> pred = np.array([[2, 2, 2, 0]])
    >>> match_instances(gt, pred).iou
    array([[0.66666667],
           [0.        ]])
    """
    gt = _as_label_image("gt", gt)
    pred = _as_label_image("pred", pred)
    _check_same_shape("gt", gt, "pred", pred)
    pairs = _overlap_pairs(gt, pred)
    shape = (pairs.gt_ids.size, pairs.pred_ids.size)
    if sparse_output:
        matrix = sparse.csr_array((pairs.iou, (pairs.gt_index, pairs.pred_index)), shape=shape)
    else:
        matrix = np.zeros(shape, dtype=np.float64)
        matrix[pairs.gt_index, pairs.pred_index] = pairs.iou
    return InstanceOverlap(iou=matrix, gt_ids=pairs.gt_ids, pred_ids=pairs.pred_ids)


def _true_positives(pairs: _OverlapPairs, threshold: float) -> int:
    """Number of one-to-one matches with IoU > `threshold` (maximum matching)."""
    above = pairs.iou > threshold
    if threshold >= 0.5:
        # Two objects with IoU > 0.5 to the same partner would need more than its whole area,
        # so every candidate pair is already a unique match.
        return int(np.count_nonzero(above))
    gt_rows, gt_index = np.unique(pairs.gt_index[above], return_inverse=True)
    pred_cols, pred_index = np.unique(pairs.pred_index[above], return_inverse=True)
    if gt_rows.size == 0:
        return 0
    scores = np.zeros((gt_rows.size, pred_cols.size))
    scores[gt_index, pred_index] = pairs.iou[above]
    # Maximise the number of matches first, then their IoU (the IoU term sums to < 1/2).
    costs = -(scores > 0).astype(np.float64) - scores / (2 * min(scores.shape))
    rows, cols = linear_sum_assignment(costs)
    return int(np.count_nonzero(scores[rows, cols] > 0))


def average_precision(gt, pred, thresholds=DSB_THRESHOLDS) -> dict:
    """Instance average precision as scored in the 2018 Data Science Bowl.

    At each IoU threshold ``t`` objects are matched one to one where IoU > ``t``;
    matched pairs are true positives (TP), unmatched predictions false positives
    (FP), unmatched ground-truth objects false negatives (FN), and
    ``AP(t) = TP / (TP + FP + FN)``. For ``t >= 0.5`` a match is unique; below
    0.5 the largest one-to-one matching is found with the Hungarian algorithm.

    Parameters
    ----------
    gt, pred : array_like of int
        Instance label images of the same shape (0 = background; ids need not
        be contiguous).
    thresholds : sequence of float, optional
        IoU thresholds in [0, 1) for the per-threshold arrays; default the DSB
        thresholds 0.5, 0.55, ..., 0.95.

    Returns
    -------
    dict
        ``"thresholds"``, ``"ap"``, ``"tp"``, ``"fp"``, ``"fn"``: arrays aligned
        with ``thresholds``; ``"ap50"``: AP at IoU 0.5; ``"map"``: mean AP over
        the DSB thresholds 0.5-0.95 (always, whatever ``thresholds`` is);
        ``"n_gt"``, ``"n_pred"``: object counts. With neither ground-truth nor
        predicted objects every AP is 1.0 (nothing to find, nothing invented).

    Raises
    ------
    MetricsInputError
        If an input is not an integer image, has negative ids, shapes differ, or
        a threshold is outside [0, 1).

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2]])
    >>> average_precision(gt, gt)["map"]
    1.0
    """
    gt = _as_label_image("gt", gt)
    pred = _as_label_image("pred", pred)
    _check_same_shape("gt", gt, "pred", pred)
    requested = _as_thresholds(thresholds)
    pairs = _overlap_pairs(gt, pred)
    n_gt, n_pred = pairs.gt_ids.size, pairs.pred_ids.size

    def counts_at(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        tp = np.array([_true_positives(pairs, t) for t in values], dtype=np.int64)
        fp, fn = n_pred - tp, n_gt - tp
        denominator = tp + fp + fn
        ap = np.where(denominator > 0, tp / np.maximum(denominator, 1), 1.0)
        return ap, tp, fp, fn

    ap, tp, fp, fn = counts_at(requested)
    dsb_ap = counts_at(np.asarray(DSB_THRESHOLDS))[0]
    return {
        "thresholds": requested,
        "ap": ap,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "ap50": float(dsb_ap[0]),
        "map": float(dsb_ap.mean()),
        "n_gt": int(n_gt),
        "n_pred": int(n_pred),
    }


# ----------------------------------------------------------------------------- semantic metrics


def _as_mask(name: str, mask) -> np.ndarray:
    array = np.asarray(mask)
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.integer) or (array.size and (array.min() < 0 or array.max() > 1)):
            raise MetricsInputError(
                f"`{name}` must be a boolean mask (or 0/1 integers), got dtype {array.dtype}; "
                f"threshold it first, e.g. `{name} > 0` or `labels == class_value`."
            )
        array = array.astype(bool)
    return array


def _mask_counts(gt_mask, pred_mask, ignore) -> tuple[int, int, int]:
    """Intersection and the two foreground areas, over pixels not ignored."""
    gt = _as_mask("gt_mask", gt_mask)
    pred = _as_mask("pred_mask", pred_mask)
    _check_same_shape("gt_mask", gt, "pred_mask", pred)
    ignore_mask = _as_ignore_mask(ignore, "gt_mask", gt)
    if ignore_mask is not None:
        gt, pred = gt & ~ignore_mask, pred & ~ignore_mask
    return int(np.count_nonzero(gt & pred)), int(np.count_nonzero(gt)), int(np.count_nonzero(pred))


def iou(gt_mask, pred_mask, *, ignore=None) -> float:
    """Intersection over union (Jaccard index) of two foreground masks.

    Parameters
    ----------
    gt_mask, pred_mask : array_like of bool
        Masks of the same shape (0/1 integers are accepted).
    ignore : array_like of bool, optional
        True where pixels are left out (e.g. not annotated).

    Returns
    -------
    float
        ``|gt & pred| / |gt | pred|``; 1.0 when both masks are empty.

    Raises
    ------
    MetricsInputError
        If a mask is not boolean-like or shapes differ.

    Examples
    --------
    >>> iou(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
    0.3333333333333333
    """
    intersection, gt_area, pred_area = _mask_counts(gt_mask, pred_mask, ignore)
    union = gt_area + pred_area - intersection
    return 1.0 if union == 0 else intersection / union


def dice(gt_mask, pred_mask, *, ignore=None) -> float:
    """Dice coefficient (F1 score) of two foreground masks.

    Parameters
    ----------
    gt_mask, pred_mask : array_like of bool
        Masks of the same shape (0/1 integers are accepted).
    ignore : array_like of bool, optional
        True where pixels are left out (e.g. not annotated).

    Returns
    -------
    float
        ``2 |gt & pred| / (|gt| + |pred|)``; 1.0 when both masks are empty.

    Raises
    ------
    MetricsInputError
        If a mask is not boolean-like or shapes differ.

    Examples
    --------
    >>> dice(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
    0.5
    """
    intersection, gt_area, pred_area = _mask_counts(gt_mask, pred_mask, ignore)
    total = gt_area + pred_area
    return 1.0 if total == 0 else 2 * intersection / total


def _class_confusion(gt_classes, pred_classes, n_classes, ignore) -> np.ndarray:
    """Confusion matrix ``[gt_class, pred_class]`` over pixels not ignored."""
    gt = np.asarray(gt_classes)
    pred = np.asarray(pred_classes)
    for name, array in (("gt_classes", gt), ("pred_classes", pred)):
        if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
            raise MetricsInputError(
                f"`{name}` must be an integer class map (0..K-1), got dtype {array.dtype}; "
                f"take the argmax of probabilities first, e.g. `probabilities.argmax(axis=0)`."
            )
    _check_same_shape("gt_classes", gt, "pred_classes", pred)
    ignore_mask = _as_ignore_mask(ignore, "gt_classes", gt)
    # Pixels with a negative ground-truth class follow the training-target convention (-1 = ignore).
    keep = gt >= 0 if ignore_mask is None else (gt >= 0) & ~ignore_mask
    gt_kept, pred_kept = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
    if pred_kept.size and pred_kept.min() < 0:
        raise MetricsInputError(
            f"`pred_classes` has negative classes (min {pred_kept.min()}) at annotated pixels; "
            f"predicted classes must be 0..K-1."
        )
    observed = int(max(gt_kept.max(initial=-1), pred_kept.max(initial=-1))) + 1
    if n_classes is None:
        n_classes = observed
    elif observed > n_classes:
        raise MetricsInputError(
            f"`n_classes` is {n_classes} but the class maps contain class {observed - 1}; "
            f"pass n_classes >= {observed} or leave it as None to infer it."
        )
    codes = gt_kept * n_classes + pred_kept
    return np.bincount(codes, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_iou(gt_classes, pred_classes, *, n_classes: int | None = None, ignore=None) -> np.ndarray:
    """IoU of each class in two class maps.

    Parameters
    ----------
    gt_classes, pred_classes : array_like of int
        Class maps of the same shape, values 0..K-1. Ground-truth pixels below 0
        (the training-target ignore value -1) are left out.
    n_classes : int, optional
        K; inferred from the largest class present when None.
    ignore : array_like of bool, optional
        True where pixels are left out.

    Returns
    -------
    numpy.ndarray
        Float array of length K; NaN for a class absent from both maps (use
        ``numpy.nanmean`` for the mean IoU).

    Raises
    ------
    MetricsInputError
        If a map is not integer, shapes differ, or a class is >= ``n_classes``.

    Examples
    --------
    >>> per_class_iou(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    array([0.5       , 0.66666667])
    """
    confusion = _class_confusion(gt_classes, pred_classes, n_classes, ignore)
    intersection = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, np.nan)


def per_class_dice(gt_classes, pred_classes, *, n_classes: int | None = None, ignore=None) -> np.ndarray:
    """Dice coefficient of each class in two class maps.

    Parameters
    ----------
    gt_classes, pred_classes : array_like of int
        Class maps of the same shape, values 0..K-1. Ground-truth pixels below 0
        (the training-target ignore value -1) are left out.
    n_classes : int, optional
        K; inferred from the largest class present when None.
    ignore : array_like of bool, optional
        True where pixels are left out.

    Returns
    -------
    numpy.ndarray
        Float array of length K; NaN for a class absent from both maps.

    Raises
    ------
    MetricsInputError
        If a map is not integer, shapes differ, or a class is >= ``n_classes``.

    Examples
    --------
    >>> per_class_dice(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    array([0.66666667, 0.8       ])
    """
    confusion = _class_confusion(gt_classes, pred_classes, n_classes, ignore)
    intersection = np.diag(confusion).astype(np.float64)
    total = confusion.sum(axis=0) + confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * intersection / total, np.nan)

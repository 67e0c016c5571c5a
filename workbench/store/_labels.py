"""The label convention, automatic boundaries and the targets the trainers learn from.

Label layer values, as in APEER and ilastik: 0 = not annotated, 1 = background, 2.. = classes
(value = class index + 1). In instance mode the user paints whole objects as class 2; touching
objects are kept apart by at least one painted background pixel or a gap, and the boundary class
is derived here from each object's outline, so the user never paints it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from workbench.conventions import BACKGROUND, IGNORE, INSTANCE_CLASSES, OBJECT, UNLABELLED, check_mode
from workbench.errors import WorkbenchError

_FOUR_CONNECTED = ndi.generate_binary_structure(2, 1)

__all__ = [
    "UNLABELLED", "BACKGROUND", "OBJECT", "IGNORE", "INSTANCE_CLASSES",
    "label_dtype", "validate_labels", "painted_objects", "derive_boundaries", "training_targets",
    "labels_from_instances", "label_statistics", "statistics_from_counts", "n_training_classes",
]


def label_dtype(n_classes: int) -> np.dtype:
    """Smallest unsigned type holding label values 0..n_classes."""
    return np.dtype(np.uint8) if n_classes < 255 else np.dtype(np.uint16)


def n_training_classes(mode: str, n_classes: int) -> int:
    """How many output channels a model needs for a project."""
    _check_mode(mode)
    return len(INSTANCE_CLASSES) if mode == "instance" else n_classes


_check_mode = check_mode


def validate_labels(labels, *, shape=None, n_classes: int | None = None, name: str = "labels") -> np.ndarray:
    """Check a label image and return it as a numpy array.

    Raises
    ------
    WorkbenchError
        When the labels are not integers, have the wrong shape, or hold values outside 0..n_classes.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind == "b":
        labels = labels.astype(np.uint8)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise WorkbenchError(
                f"{name} hold non-integer values (dtype {labels.dtype}); labels must be whole "
                "numbers: 0 = not annotated, 1 = background, 2.. = classes"
            )
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iu":
        raise WorkbenchError(f"{name} have type {labels.dtype}; expected an integer image (uint8 or uint16)")
    if shape is not None and tuple(labels.shape) != tuple(shape):
        raise WorkbenchError(
            f"{name} (shape {tuple(labels.shape)}) must have the same shape as the image "
            f"(shape {tuple(shape)}); export the labels at the image's full size"
        )
    if labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0:
            raise WorkbenchError(f"{name} hold negative values ({low}); use 0 for 'not annotated'")
        if n_classes is not None and high > n_classes:
            raise WorkbenchError(
                f"{name} hold value {high} but the project has {n_classes} classes (values 0..{n_classes}: "
                "0 = not annotated, 1 = background, 2.. = classes); add the class to the project or "
                "use --instances for an instance mask"
            )
    return labels


def painted_objects(labels: np.ndarray, object_value: int = OBJECT) -> tuple[np.ndarray, int]:
    """Connected painted objects (4-connected, so a diagonal gap separates them) and their count."""
    objects, count = ndi.label(np.asarray(labels) == object_value, structure=_FOUR_CONNECTED)
    return objects, int(count)


def derive_boundaries(labels: np.ndarray, width: int = 2, *, object_value: int = OBJECT) -> np.ndarray:
    """The boundary band of each painted object.

    A pixel of an object is boundary when it lies within `width` pixels of a pixel outside the
    object (background, unlabelled, or another object). The image edge is not an outline: an
    object cut by the border gets no boundary there.

    Parameters
    ----------
    labels : (Y, X) integer array
        Label layer in the project convention.
    width : int
        Boundary width in pixels (>= 1).

    Returns
    -------
    (Y, X) bool array
    """
    if int(width) < 1:
        raise WorkbenchError(f"boundary width must be at least 1 pixel, got {width}")
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise WorkbenchError(f"derive_boundaries expects a 2-D label image, got shape {labels.shape}")
    inside = labels == object_value
    if not inside.any():
        return np.zeros(labels.shape, bool)
    # Replicate the edge so the border counts as "more object", not as an outline. Taxicab depth
    # makes a pixel touching the outside only diagonally an outline pixel too, as 4-connected
    # objects that meet at a corner must be told apart there.
    padded = np.pad(inside, 1, mode="edge")
    depth = ndi.distance_transform_cdt(padded, metric="taxicab")[1:-1, 1:-1]
    return inside & (depth <= int(width))


def training_targets(labels, mode: str, boundary_width: int = 2, *, outer_background: bool = True) -> np.ndarray:
    """Targets for a loss that ignores unlabelled pixels.

    Semantic: label - 1 (unlabelled -> -1). Instance: -1 unlabelled, 0 background,
    1 object interior, 2 derived boundary.

    With `outer_background` (instance mode), unlabelled pixels within `boundary_width` outside
    a painted object count as background: an object painted whole says where it ends, and
    without this the model never sees background right beside an object unless the user
    painted it there, so it learns objects too large.
    """
    _check_mode(mode)
    labels = np.asarray(labels)
    if mode == "semantic":
        return labels.astype(np.int64) - 1
    if labels.size and labels.max() > OBJECT:
        raise WorkbenchError(
            f"instance-mode labels hold value {int(labels.max())}; instance projects have one object "
            "class (value 2). Use a semantic project for several classes"
        )
    targets = np.full(labels.shape, IGNORE, np.int64)
    targets[labels == BACKGROUND] = 0
    targets[labels == OBJECT] = 1
    targets[derive_boundaries(labels, boundary_width)] = 2
    if outer_background and (labels == OBJECT).any():
        outside = ndi.distance_transform_cdt(labels != OBJECT, metric="taxicab")
        targets[(labels == UNLABELLED) & (outside <= int(boundary_width))] = 0
    return targets


def labels_from_instances(instances, *, dtype=np.uint8) -> np.ndarray:
    """Turn an instance mask (0 = background, ids = objects) into a painted label layer.

    Every pixel gets a label: objects become class 2, the rest background (1). Where two objects
    touch, the pixel on the higher-id side becomes background, a 1-pixel line that keeps them
    apart as the painting convention asks.
    """
    instances = np.asarray(instances)
    if instances.dtype.kind not in "iu":
        raise WorkbenchError(f"an instance mask must be integers, got {instances.dtype}")
    if instances.ndim != 2:
        raise WorkbenchError(f"an instance mask must be 2-D, got shape {instances.shape}")
    labels = np.where(instances > 0, OBJECT, BACKGROUND).astype(dtype)
    for axis in (0, 1):
        a = instances.swapaxes(0, 1) if axis else instances
        contact = (a[:-1] != a[1:]) & (a[:-1] > 0) & (a[1:] > 0)
        later = np.zeros(a.shape, bool)
        later[1:] = contact
        labels[later.swapaxes(0, 1) if axis else later] = BACKGROUND
    return labels


def label_statistics(labels, class_names, mode: str = "semantic") -> dict:
    """Pixels per class, objects painted (instance mode) and the annotated fraction.

    Examples
    --------
    >>> labels = np.zeros((4, 4), np.uint8); labels[0] = 1; labels[2:, 2:] = 2
    >>> stats = label_statistics(labels, ["background", "cell"], "instance")
    >>> stats["pixels"], stats["annotated_fraction"], stats["objects"]
    ({'background': 4, 'cell': 4}, 0.5, 1)
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(class_names) + 1)
    objects = None
    if mode == "instance":
        planes = labels if labels.ndim == 3 else labels[None]
        objects = int(sum(painted_objects(p)[1] for p in planes))
    return statistics_from_counts(counts, class_names, labels.size, mode, objects=objects)


def statistics_from_counts(counts, class_names, total: int, mode: str = "semantic", *,
                           objects: int | None = None) -> dict:
    """The label statistics of `label_statistics` from pixel counts per label value (0 = unlabelled).

    For callers that keep running counts (the annotator's editor) instead of re-reading labels.
    ``objects`` is reported in instance mode only (None: not counted).
    """
    counts = np.asarray(counts)
    stats = {
        "pixels": {name: int(counts[i + 1]) for i, name in enumerate(class_names)},
        "annotated_pixels": int(total - counts[UNLABELLED]),
        "pixels_total": int(total),
        "annotated_fraction": float(1.0 - counts[UNLABELLED] / max(total, 1)),
    }
    if mode == "instance":
        stats["objects"] = objects
    return stats

"""The label convention, automatic boundaries and the targets the trainers learn from.

Label layer values, as in APEER and ilastik: 0 = not annotated, 1 = background, 2.. = classes
(value = class index + 1). In instance mode the user paints whole objects as class 2; touching
objects are kept apart by at least one painted background pixel or a gap, and the boundary class
is derived here from each object's outline, so the user never paints it.

Label layers are 2-D (Y, X) or, for z-stacks, 3-D (Z, Y, X). A z-stack's boundaries are derived
either in 3-D (the default: an object's top and bottom faces are outlines too, so nuclei stacked
along z separate) or plane by plane (``boundaries="per-plane"``, for stacks whose planes are
separate sections). In 3-D, only a painted voxel (background or another object) outlines an
object along z: a user paints a nucleus on a few planes with the z-slider, and the planes left
unpainted above and below say nothing about where it ends.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from workbench.conventions import BACKGROUND, IGNORE, INSTANCE_CLASSES, OBJECT, UNLABELLED, check_mode
from workbench.errors import WorkbenchError

_FOUR_CONNECTED = ndi.generate_binary_structure(2, 1)
#: How a z-stack's boundaries are derived: through the stack, or each plane on its own.
BOUNDARY_MODES = ("3d", "per-plane")

__all__ = [
    "UNLABELLED", "BACKGROUND", "OBJECT", "IGNORE", "INSTANCE_CLASSES", "BOUNDARY_MODES",
    "label_dtype", "validate_labels", "painted_objects", "derive_boundaries", "training_targets",
    "plane_training_targets", "boundary_reach", "labels_from_instances", "label_statistics",
    "statistics_from_counts", "n_training_classes", "AUTO_BOUNDARY_WIDTH", "painted_object_areas",
    "auto_boundary_width",
]

#: The boundary-width setting that derives the width from the painted objects (`auto_boundary_width`).
AUTO_BOUNDARY_WIDTH = "auto"
#: The derived boundary is this fraction of the painted objects' typical diameter ...
_DIAMETERS_PER_BOUNDARY_PIXEL = 12
#: ... and this many pixels at least and at most.
_AUTO_WIDTH_RANGE = (1, 4)
#: The width while no object is painted yet (and the width of projects made before "auto").
DEFAULT_BOUNDARY_WIDTH = 2


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
    """Connected painted objects and their count, in 2-D or 3-D.

    Face-connected (4-connected in a plane, 6-connected in a volume), so a diagonal gap
    separates two objects.
    """
    labels = np.asarray(labels)
    structure = ndi.generate_binary_structure(labels.ndim, 1) if labels.ndim else None
    objects, count = ndi.label(labels == object_value, structure=structure)
    return objects, int(count)


def painted_object_areas(labels, object_value: int = OBJECT) -> np.ndarray:
    """Pixel areas of the painted objects of a (Y, X) label layer, or of each plane of a (Z, Y, X) one.

    Objects are taken plane by plane (4-connected), as the boundary width is a width in the plane.

    Examples
    --------
    >>> labels = np.ones((8, 8), np.uint8)
    >>> labels[1:4, 1:4] = 2
    >>> labels[5:7, 5:8] = 2
    >>> painted_object_areas(labels).tolist()
    [9, 6]
    """
    labels = np.asarray(labels)
    planes = labels[None] if labels.ndim == 2 else labels
    areas = []
    for plane in planes:
        objects, count = ndi.label(plane == object_value, structure=_FOUR_CONNECTED)
        if count:
            areas.append(np.bincount(objects.ravel(), minlength=count + 1)[1:])
    return np.concatenate(areas).astype(np.int64) if areas else np.zeros(0, np.int64)


def auto_boundary_width(areas) -> int:
    """The boundary width that suits objects of these areas: their typical size sets it.

    round(equivalent diameter of the median object / 12), at least 1 and at most 4 pixels: nuclei
    of about 24 px (the DSB 2018 nuclei, median area 440 px) get 2 px, nuclei of about 10 px get
    1 px and keep an interior. With no object painted yet, the width is 2.

    Parameters
    ----------
    areas : sequence of int
        Pixel areas of the painted objects (see `painted_object_areas`).

    Examples
    --------
    >>> auto_boundary_width([440]), auto_boundary_width([80, 78, 120]), auto_boundary_width([])
    (2, 1, 2)
    """
    areas = np.asarray(areas, dtype=np.float64).ravel()
    if not areas.size:
        return DEFAULT_BOUNDARY_WIDTH
    diameter = 2.0 * np.sqrt(float(np.median(areas)) / np.pi)
    low, high = _AUTO_WIDTH_RANGE
    return int(min(max(np.floor(diameter / _DIAMETERS_PER_BOUNDARY_PIXEL + 0.5), low), high))


def _check_boundary_mode(boundaries: str) -> str:
    if boundaries not in BOUNDARY_MODES:
        raise WorkbenchError(
            f"boundaries must be one of {', '.join(BOUNDARY_MODES)}, got {boundaries!r}: '3d' derives a "
            "z-stack's boundaries through the stack, 'per-plane' in each plane on its own"
        )
    return boundaries


def _as_spacing(spacing, ndim: int) -> tuple[float, ...]:
    """Voxel size per axis (any unit), 1 per axis when unknown."""
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(v) for v in spacing)
    if len(values) == 2 and ndim == 3:
        values = (1.0,) + values
    if len(values) != ndim or not all(np.isfinite(v) and v > 0 for v in values):
        raise WorkbenchError(
            f"spacing must be {ndim} positive numbers (the voxel size along {'ZYX'[-ndim:]}), got {spacing!r}"
        )
    return values


def boundary_reach(width: int, spacing=None) -> tuple[int, ...]:
    """How many voxels the boundary band reaches along each axis of a (Z, Y, X) volume.

    The width is in image pixels (of the finest in-plane axis); along a coarser axis the band
    reaches proportionally fewer voxels, but at least one, so objects touching along any axis
    still get an outline between them.

    Examples
    --------
    >>> boundary_reach(2, (2.0, 0.5, 0.5))
    (1, 2, 2)
    >>> boundary_reach(4, (1.0, 0.5, 0.5))
    (2, 4, 4)
    """
    spacing = _as_spacing(spacing, 3)
    finest = min(spacing[1:])
    return tuple(max(1, int(np.floor(int(width) * finest / s + 1e-9))) for s in spacing)


def _taxicab_ball(reach: tuple[int, ...]) -> np.ndarray:
    """Offsets d with sum(|d_i| / reach_i) <= 1: the (anisotropic) taxicab ball."""
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
    return sum(np.abs(g) / r for g, r in zip(grids, reach)) <= 1 + 1e-9


def _boundaries_3d(labels: np.ndarray, width: int, object_value: int, spacing) -> np.ndarray:
    """3-D boundary band: in-plane outlines as in 2-D, plus outlines against painted voxels in 3-D."""
    inside = labels == object_value
    band = np.zeros(labels.shape, bool)
    for z in range(labels.shape[0]):
        band[z] = _boundaries_2d(labels[z], width, object_value)
    # Along z only painted voxels outline an object (see the module notes). The volume's faces are
    # not outlines (border_value=1), as the image edge is not in 2-D.
    outside = (labels != object_value) & (labels != UNLABELLED)
    if outside.any():
        core = ndi.binary_erosion(~outside, structure=_taxicab_ball(boundary_reach(width, spacing)),
                                  border_value=1)
        band |= inside & ~core
    return band


def _boundaries_2d(labels: np.ndarray, width: int, object_value: int) -> np.ndarray:
    inside = labels == object_value
    if not inside.any():
        return np.zeros(labels.shape, bool)
    # Replicate the edge so the border counts as "more object", not as an outline. Taxicab depth
    # makes a pixel touching the outside only diagonally an outline pixel too, as 4-connected
    # objects that meet at a corner must be told apart there.
    padded = np.pad(inside, 1, mode="edge")
    depth = ndi.distance_transform_cdt(padded, metric="taxicab")[1:-1, 1:-1]
    return inside & (depth <= int(width))


def derive_boundaries(labels: np.ndarray, width: int = 2, *, object_value: int = OBJECT,
                      boundaries: str = "3d", spacing=None) -> np.ndarray:
    """The boundary band of each painted object, in a plane or through a z-stack.

    In a plane, a pixel of an object is boundary when it lies within `width` pixels (taxicab
    distance) of a pixel outside the object (background, unlabelled, or another object). In a
    volume with ``boundaries="3d"``, a voxel is also boundary when a painted voxel that is not
    the object (background or a neighbouring object) lies within the band along any axis; the
    band is `width` pixels in-plane and proportionally fewer voxels (at least one) along a
    coarser z (see `boundary_reach`). The image edge is not an outline: an object cut by the
    border gets no boundary there.

    Parameters
    ----------
    labels : (Y, X) or (Z, Y, X) integer array
        Label layer in the project convention.
    width : int
        Boundary width in pixels (>= 1).
    object_value : int
        The label value of objects.
    boundaries : {"3d", "per-plane"}
        For a (Z, Y, X) layer: derive through the stack, or in each plane on its own.
    spacing : sequence of float, optional
        Voxel size (z, y, x) in any unit (or (y, x): z taken as equal); isotropic by default.

    Returns
    -------
    bool array of the labels' shape

    Examples
    --------
    >>> labels = np.ones((5, 5, 5), np.uint8)
    >>> labels[1:4, 1:4, 1:4] = 2
    >>> int(derive_boundaries(labels, 1).sum()), int(derive_boundaries(labels, 1, boundaries="per-plane").sum())
    (26, 24)
    """
    if int(width) < 1:
        raise WorkbenchError(f"boundary width must be at least 1 pixel, got {width}")
    _check_boundary_mode(boundaries)
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return _boundaries_2d(labels, int(width), object_value)
    if labels.ndim != 3:
        raise WorkbenchError(
            f"derive_boundaries expects a (Y, X) or (Z, Y, X) label image, got shape {labels.shape}"
        )
    if boundaries == "per-plane":
        return np.stack([_boundaries_2d(plane, int(width), object_value) for plane in labels])
    return _boundaries_3d(labels, int(width), object_value, spacing)


def training_targets(labels, mode: str, boundary_width: int = 2, *, outer_background: bool = True,
                     boundaries: str = "3d", spacing=None) -> np.ndarray:
    """Targets for a loss that ignores unlabelled pixels, for a plane or a z-stack.

    Semantic: label - 1 (unlabelled -> -1). Instance: -1 unlabelled, 0 background,
    1 object interior, 2 derived boundary (see `derive_boundaries` for `boundaries` and
    `spacing`, which matter for (Z, Y, X) labels only).

    With `outer_background` (instance mode), unlabelled pixels within `boundary_width` outside
    a painted object count as background: an object painted whole says where it ends, and
    without this the model never sees background right beside an object unless the user
    painted it there, so it learns objects too large. In a z-stack this ring is taken in each
    plane only: an unpainted plane above an object may well hold more of it.
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
    targets[derive_boundaries(labels, boundary_width, boundaries=boundaries, spacing=spacing)] = 2
    if outer_background and (labels == OBJECT).any():
        planes = labels if labels.ndim == 3 else labels[None]
        ring = np.stack([
            ndi.distance_transform_cdt(plane != OBJECT, metric="taxicab") <= int(boundary_width)
            if (plane == OBJECT).any() else np.zeros(plane.shape, bool)
            for plane in planes
        ]).reshape(labels.shape)
        targets[(labels == UNLABELLED) & ring] = 0
    return targets


def plane_training_targets(labels, z: int, mode: str, boundary_width: int = 2, *, boundaries: str = "3d",
                           spacing=None, outer_background: bool = True) -> np.ndarray:
    """Training targets of plane `z` of a (Z, Y, X) label layer, from the planes it needs only.

    With 3-D boundaries a plane's boundary depends on the planes within the band's z-reach, so
    those are read (from a Zarr array: only them) and the 3-D targets of that slab computed;
    a large volume is never held whole.

    Parameters
    ----------
    labels : (Z, Y, X) array-like (numpy or Zarr)
    z : int
        The plane.
    mode, boundary_width, boundaries, spacing, outer_background
        As in `training_targets`.

    Returns
    -------
    (Y, X) int64 array
    """
    _check_boundary_mode(boundaries)
    n_planes = int(labels.shape[0])
    z = int(z)
    if mode != "instance" or boundaries == "per-plane" or n_planes == 1:
        return training_targets(np.asarray(labels[z]), mode, boundary_width, outer_background=outer_background)
    reach = boundary_reach(boundary_width, spacing)[0]
    start, stop = max(z - reach, 0), min(z + reach + 1, n_planes)
    slab = np.asarray(labels[start:stop])
    targets = training_targets(slab, mode, boundary_width, outer_background=outer_background,
                               boundaries=boundaries, spacing=spacing)
    return targets[z - start]


def labels_from_instances(instances, *, dtype=np.uint8) -> np.ndarray:
    """Turn an instance mask (0 = background, ids = objects) into a painted label layer.

    Every pixel (voxel) gets a label: objects become class 2, the rest background (1). Where two
    objects touch along any axis, the pixel on the later side becomes background, a 1-pixel
    line (in a volume a 1-voxel sheet) that keeps them apart as the painting convention asks.

    Parameters
    ----------
    instances : (Y, X) or (Z, Y, X) integer array

    Returns
    -------
    Label layer of the same shape.
    """
    instances = np.asarray(instances)
    if instances.dtype.kind not in "iu":
        raise WorkbenchError(f"an instance mask must be integers, got {instances.dtype}")
    if instances.ndim not in (2, 3):
        raise WorkbenchError(
            f"an instance mask must be 2-D (Y, X) or 3-D (Z, Y, X), got shape {instances.shape}"
        )
    labels = np.where(instances > 0, OBJECT, BACKGROUND).astype(dtype)
    for axis in range(instances.ndim):
        a = np.moveaxis(instances, axis, 0)
        contact = (a[:-1] != a[1:]) & (a[:-1] > 0) & (a[1:] > 0)
        later = np.zeros(a.shape, bool)
        later[1:] = contact
        labels[np.moveaxis(later, 0, axis)] = BACKGROUND
    return labels


def label_statistics(labels, class_names, mode: str = "semantic", *, volume: bool = True) -> dict:
    """Pixels per class, objects painted (instance mode) and the annotated fraction.

    A (Z, Y, X) layer's objects are counted in 3-D (a nucleus painted on five planes is one
    object), or plane by plane with ``volume=False``.

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
        if labels.ndim == 3 and volume:
            objects = int(painted_objects(labels)[1])
        else:
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

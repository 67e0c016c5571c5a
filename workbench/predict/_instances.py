"""From predicted probabilities to label images: instances by seeded watershed, classes by argmax.

Instance mode predicts three classes per pixel (0 background, 1 object
interior, 2 boundary). Seeds are the connected interiors; a watershed on the
boundary probability grows them until they meet on a boundary or leave the
foreground. A U-Net also predicts a fourth map, each object pixel's distance to
its object's edge as a share of the object's largest (`DISTANCE_OUTPUT`): then
seeds are the distance's peaks (those ``peak_prominence`` above the pass to any
higher peak) and the watershed descends the distance, which parts touching
objects whose shared boundary is faint. Two-class (background/foreground) predictions are split with
distance-transform seeds instead.

Images and volumes alike: probabilities ``(K, Y, X)`` give a ``(Y, X)`` label
image, ``(K, Z, Y, X)`` a ``(Z, Y, X)`` one in which each object keeps one id
through the stack (seeds and watershed are face-connected in 3-D). ``spacing``
gives the voxel size, so distances (the two-class split, its minimum distance
between centres) are measured in physical units on anisotropic stacks.

The whole image is processed in memory (no blockwise stitching): zarr inputs
are read one channel at a time, and the peak is about 30 bytes per pixel
(float32 elevation, boolean masks, int32 markers and labels, and the
watershed's own queue), i.e. about 1 GB for a 6000 x 6000 image or a
64 x 1024 x 512 volume. Cutting seeds at their necks adds the distance transform: about 40 bytes
per pixel and 3.5x the time (forest probabilities of 2048 x 2048 tiled nuclei, idle 2-core
machine: 0.42 s and 111 MiB with seeds whole, 1.49 s and 156 MiB cut; benchmarks/RESULTS.md).
Distance seeds reconstruct each clump of touching objects on its own box: the same memory and
about 2.6x the time of a fixed-level seed (a U-Net's four outputs over 2048 x 2048 tiled nuclei,
idle 2-core machine: 1.41 s against 0.54 s, 105 MiB both).

Example
-------
>>> import numpy as np
>>> probabilities = np.zeros((3, 20, 20), np.float32)
>>> probabilities[0] = 1
>>> probabilities[:, 5:12, 5:12] = np.array([0, 1, 0], np.float32)[:, None, None]
>>> labels = instances_from_probabilities(probabilities, min_size=4)
>>> int(labels.max()), int((labels == 1).sum())
(1, 49)
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima, local_maxima, reconstruction
from skimage.segmentation import relabel_sequential, watershed

from workbench.conventions import INSTANCE_CLASSES, MIN_OBJECT_PIXELS
from workbench.errors import WorkbenchError
from workbench.validate import whole_number

__all__ = ["InstancesError", "instances_from_probabilities", "semantic_from_probabilities", "SEEDS", "NECK_RATIO",
           "PEAK_PROMINENCE"]

#: How three-class probabilities are seeded: connected interiors away from boundaries, the
#: object's shape (peaks of the distance to the background, as for two classes), or the peaks
#: of a predicted distance map (four outputs: the three classes and `DISTANCE_OUTPUT`).
SEEDS = ("boundaries", "shape", "distance")

#: A seed of ``seeds="distance"`` is a peak of the predicted distance (a share of its object's
#: largest, 0-1) that stands at least this much above the lowest pass to any higher peak (an
#: h-maximum). The dip between two peaks is what tells two touching objects from one, whatever level
#: the model predicts either at; a fixed level ("the inner half", distance > 0.5) split objects whose
#: saddle fell below it and merged contacts that stayed above it. Measured on the nuclei half split
#: (15 runs each, benchmarks/RESULTS.md, issue 9): 0.2 beat the fixed level 0.5 in all five settings
#: (scratch at 540 and 1080 steps, starter at 180, 540 and 1080), mean AP@0.5 +0.003 to +0.015,
#: mAP +0.001 to +0.019, spread equal or lower (rows: benchmarks/deep_distance_peaks_2026-12-07.jsonl);
#: 0.1 splits nuclei (scratch 0.924 at 1080 steps), 0.3 merges (0.934).
PEAK_PROMINENCE = 0.2

#: A seed is cut where it narrows to less than this fraction of the thinner part's width
#: (`_split_at_necks`), when asked for (``neck_ratio``). Chosen on generated images (hard
#: synthetic nuclei and the six corpus styles, where 0.6-0.8 began to cut brightfield and
#: membrane cells), not on the real nuclei (benchmarks/RESULTS.md, issue 9).
NECK_RATIO = 0.5
#: Distances (pixels) below this count as this in the logarithm: seed edges after smoothing.
_NECK_FLOOR = 0.5


class InstancesError(WorkbenchError, ValueError):
    """Probabilities or thresholds that post-processing cannot use."""


def _probability_shape(probabilities: Any, allowed_classes: tuple[int, ...] | None) -> tuple[int, ...]:
    shape = getattr(probabilities, "shape", None)
    if shape is None:
        probabilities = np.asarray(probabilities)
        shape = probabilities.shape
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise InstancesError(
            f"`probabilities` must be (K, Y, X) for an image or (K, Z, Y, X) for a volume, with no "
            f"empty axis, got shape {shape}."
        )
    if allowed_classes is not None and shape[0] not in allowed_classes:
        raise InstancesError(
            f"`probabilities` has {shape[0]} classes (shape {shape}); instance post-processing expects "
            "3 (background, interior, boundary), 4 (those and the distance to the edge) or 2 (background, "
            "foreground)."
        )
    return shape


def _channel(probabilities: Any, index: int) -> np.ndarray:
    # One channel at a time, so a zarr input is never held whole.
    plane = np.asarray(probabilities[index], dtype=np.float32)
    if not np.isfinite(plane).all():
        raise InstancesError(
            f"`probabilities` channel {index} contains NaN or inf; check the predictor's output."
        )
    return plane


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise InstancesError(f"`{name}` must be a probability in [0, 1], got {value!r}.")
    return float(value)


def _count(value: Any, name: str) -> int:
    return whole_number(value, name, minimum=0, error=InstancesError)


def _spacing(spacing: Any, ndim: int) -> tuple[float, ...]:
    """Voxel size per spatial axis; (y, x) for a volume means z as fine as the finer of them."""
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, numbers.Real) and not isinstance(spacing, bool):
        spacing = (spacing,) * ndim
    try:
        values = tuple(float(v) for v in spacing)
    except TypeError:
        values = ()
    if len(values) == 2 and ndim == 3:
        values = (min(values),) + values
    if len(values) != ndim or not all(np.isfinite(v) and v > 0 for v in values):
        raise InstancesError(
            f"`spacing` must be {ndim} positive numbers (voxel size along {'ZYX'[-ndim:]}), got {spacing!r}."
        )
    return values


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Zero the labelled regions with fewer than ``min_size`` pixels (in place)."""
    if min_size > 1 and labels.max() > 0:
        too_small = np.bincount(labels.ravel()) < min_size
        too_small[0] = False
        labels[too_small[labels]] = 0
    return labels


def _add_unseeded_components(markers: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Give every foreground component that holds no seed a seed of its own (in place).

    Without this a small object whose interior never passes the threshold
    would vanish although the model saw it as foreground.
    """
    components, n_components = ndi.label(foreground)
    if n_components == 0:
        return markers
    seeded = np.zeros(n_components + 1, dtype=bool)
    seeded[components[markers > 0]] = True
    seeded[0] = True
    orphans = ~seeded[components]
    markers[orphans] = components[orphans] + markers.max()
    return markers


def _finish(labels: np.ndarray, min_size: int) -> np.ndarray:
    labels = _drop_small(labels, min_size)
    relabelled, _, _ = relabel_sequential(labels)
    return relabelled.astype(np.int32, copy=False)


def _from_three_classes(probabilities: Any, interior_threshold: float, boundary_threshold: float,
                        foreground_threshold: float, min_size: int, min_seed_size: int, neck_ratio: float,
                        spacing: tuple[float, ...]) -> np.ndarray:
    foreground = (1 - _channel(probabilities, 0)) > foreground_threshold
    boundary = _channel(probabilities, 2)
    # Both conditions: where two interiors blur into each other across a thin
    # boundary, interior alone can pass its threshold and bridge two seeds.
    seeds = (_channel(probabilities, 1) > interior_threshold) & (boundary < boundary_threshold)
    seeds &= foreground
    # Cross connectivity keeps interiors that touch only at a corner apart.
    markers, _ = ndi.label(seeds)
    markers = _drop_small(markers, min_seed_size)
    if neck_ratio > 0:
        markers = _drop_small(_split_at_necks(markers, neck_ratio, spacing), min_seed_size)
    markers = _add_unseeded_components(markers, foreground)
    labels = watershed(boundary, markers=markers, mask=foreground)
    return _finish(labels, min_size)


def _from_distance(probabilities: Any, peak_prominence: float, foreground_threshold: float,
                   min_size: int) -> np.ndarray:
    foreground = (1 - _channel(probabilities, 0)) > foreground_threshold
    distance = _channel(probabilities, len(INSTANCE_CLASSES))
    markers = _distance_peaks(distance, foreground, peak_prominence)
    markers = _add_unseeded_components(markers, foreground)
    # A new array: for numpy input the channel is a view of the caller's probabilities.
    labels = watershed(np.negative(distance), markers=markers, mask=foreground)
    return _finish(labels, min_size)


def _distance_peaks(distance: np.ndarray, foreground: np.ndarray, prominence: float) -> np.ndarray:
    """Label the peaks of ``distance`` that stand ``prominence`` above the pass to any higher one.

    The regional maxima of the h-maximum transform (the distance reconstructed under itself from
    ``distance - prominence``): a peak with a shallower dip to a higher one is flattened into it,
    and two equal peaks joined by a ridge become one plateau, one seed. (skimage's ``h_maxima``
    marks each tip instead, so a nucleus with two equal tips got two seeds.) One foreground
    component at a time, on its bounding box: over a whole 2048 x 2048 map at once skimage's
    reconstruction took 6.2 s and 74 bytes a pixel (beside another job), per component these
    peaks 0.76 s (idle); memory then follows the largest clump of touching objects.
    """
    components, _ = ndi.label(foreground)
    peaks = np.zeros(distance.shape, dtype=bool)
    for index, box in enumerate(ndi.find_objects(components), start=1):
        if box is None:
            continue
        mine = components[box] == index
        local = np.where(mine, distance[box], 0).astype(np.float64)
        flattened = reconstruction(local - prominence, local, method="dilation")
        peaks[box] |= local_maxima(flattened) & mine
    markers, _ = ndi.label(peaks)
    return markers


def _split_at_necks(markers: np.ndarray, ratio: float, spacing: tuple[float, ...]) -> np.ndarray:
    """Seeds cut where they narrow to less than ``ratio`` of the thinner part's width (in place).

    Where the boundary between two touching nuclei is faint, their seeds join through a
    narrow bridge and the watershed makes one object of both. The distance to the seed's
    own edge (half its local width) has a maximum in each part and a saddle on the bridge;
    parts whose maximum is more than 1/``ratio`` times the saddle become seeds of their own.
    The test is relative, so a large oval nucleus whose interior dips a little is not cut
    while a small pair joined by a thin bridge is: h-maxima of the logarithm of the distance,
    with h = -log(ratio).

    Only seeds with more than one local maximum of the distance can have two parts, and most
    have one: the h-maxima (a grayscale reconstruction about ten times slower than the whole
    watershed if run over the image) runs on those seeds' boxes alone.

    A seed with a hole (a nucleolus the model marks as faint boundary) is a ring, and its two
    sides can look like two parts: measured once on the nuclei half split (one nucleus of 57
    cut at 270 steps). Filling such holes was tried and dropped: it also fills the pockets
    beside faint contacts that make the necks of touching nuclei.
    """
    relative = tuple(s / min(spacing) for s in spacing)
    distance = ndi.distance_transform_edt(markers > 0, sampling=relative).astype(np.float32)
    # Smoothing flattens the one-pixel ripples of the Euclidean distance along a ridge.
    smooth = ndi.gaussian_filter(distance, sigma=[1.0 / r for r in relative], output=distance)
    full = np.ones((3,) * markers.ndim, bool)
    peaks = (smooth == ndi.maximum_filter(smooth, footprint=full)) & (markers > 0)
    peak_regions, _ = ndi.label(peaks, structure=full)
    seed_of_peak = np.zeros(peak_regions.max() + 1, markers.dtype)
    seed_of_peak[peak_regions[peaks]] = markers[peaks]
    peaks_per_seed = np.bincount(seed_of_peak[1:], minlength=markers.max() + 1)
    next_id = int(markers.max()) + 1
    boxes = ndi.find_objects(markers)
    for seed in np.flatnonzero(peaks_per_seed[1:] > 1) + 1:
        box = boxes[seed - 1]
        inside = markers[box] == seed
        # Float64 (h-maxima on float32 misses shallow saddles) and the outside at the floor: the
        # saddle between two parts is measured inside the seed.
        height = np.log(np.maximum(np.where(inside, smooth[box], 0).astype(np.float64), _NECK_FLOOR))
        height -= np.log(_NECK_FLOOR)
        parts, count = ndi.label(h_maxima(height, -np.log(ratio)).astype(bool) & inside, structure=full)
        if count < 2:
            continue
        pieces = watershed(-height, markers=parts, mask=inside)
        markers[box][inside] = np.where(pieces[inside] == 1, seed, pieces[inside] - 2 + next_id)
        next_id += count - 1
    return markers


def _peak_footprint(min_distance: int, spacing: tuple[float, ...]) -> np.ndarray:
    """Box of ``min_distance`` pixels of the finest axis, fewer voxels along coarser axes."""
    finest = min(spacing)
    reach = [max(0, int(round(max(min_distance, 1) * finest / s))) for s in spacing]
    return np.ones([2 * r + 1 for r in reach], dtype=bool)


def _split_by_shape(foreground: np.ndarray, min_size: int, min_distance: int,
                    spacing: tuple[float, ...]) -> np.ndarray:
    """Objects of a foreground mask, one per peak of its (smoothed) distance to the background."""
    # Distances in units of the finest axis, so a coarse z counts for what it is.
    relative = tuple(s / min(spacing) for s in spacing)
    distance = ndi.distance_transform_edt(foreground, sampling=relative).astype(np.float32)
    # Smoothing merges the many flat maxima along a ridge into one peak per object.
    smooth = ndi.gaussian_filter(distance, sigma=[1.0 / r for r in relative])
    components, _ = ndi.label(foreground)
    peaks = peak_local_max(
        smooth, footprint=_peak_footprint(min_distance, spacing), labels=components, exclude_border=False
    )
    peak_mask = np.zeros(foreground.shape, dtype=bool)
    peak_mask[tuple(peaks.T)] = True
    markers, _ = ndi.label(peak_mask, structure=np.ones((3,) * foreground.ndim, bool))
    markers = _add_unseeded_components(markers, foreground)
    labels = watershed(-smooth, markers=markers, mask=foreground)
    return _finish(labels, min_size)


def instances_from_probabilities(
    probabilities: Any,
    *,
    interior_threshold: float = 0.5,
    boundary_threshold: float = 0.3,
    foreground_threshold: float = 0.5,
    min_size: int = MIN_OBJECT_PIXELS,
    min_seed_size: int = 4,
    min_distance: int = 4,
    spacing: Any = None,
    seeds: str | None = None,
    neck_ratio: float = 0.0,
    peak_prominence: float = PEAK_PROMINENCE,
) -> np.ndarray:
    """Turn per-pixel class probabilities into an instance label image or volume.

    Parameters
    ----------
    probabilities : array-like, shape (K, Y, X) or (K, Z, Y, X), K = 4, 3 or 2
        Softmax output, numpy or zarr (or anything whose ``[k]`` reads one
        class). Three classes: background, object interior, boundary; four:
        those and the predicted distance to the object's edge (0-1, a share of
        the object's largest; `workbench.conventions.DISTANCE_OUTPUT`). Two
        classes: background, foreground. A volume is segmented in 3-D: one
        id per object through the stack.
    interior_threshold : float, optional
        (3 classes) A seed pixel has interior probability above this...
    boundary_threshold : float, optional
        (3 classes) ...and boundary probability below this. Seeds are the
        connected components (4-connected) of such pixels.
    foreground_threshold : float, optional
        A pixel is foreground when ``1 - background`` probability exceeds this;
        objects never grow outside the foreground.
    min_size : int, optional
        Objects with fewer pixels are removed (set to 0).
    min_seed_size : int, optional
        (3 classes) Seeds with fewer pixels are ignored as noise.
    min_distance : int, optional
        (2 classes, or ``seeds="shape"``) Minimum distance in pixels (of the finest axis) between
        two object centres found on the distance transform.
    spacing : float or sequence of float, optional
        Pixel / voxel size per spatial axis ((y, x) or (z, y, x), any unit);
        isotropic by default. Distances of the two-class (or shape) split follow it.
    neck_ratio : float, optional
        (3 classes, boundary seeds) A seed that narrows to less than this fraction of the
        width of its thinner part is cut there in two: touching objects whose predicted
        boundary is faint stay apart. In [0, 1); 0 (the default) keeps every seed whole;
        `NECK_RATIO` is the measured choice, set in a project's ``instances`` settings
        (benchmarks/RESULTS.md, issue 9: it helps the forests, and is neutral for U-Nets).
    seeds : {"boundaries", "shape", "distance"} or None, optional
        (3 or 4 outputs) Seed objects at their interiors away from predicted boundaries, at
        the peaks of the distance to the background, as two classes are (for volumes from a
        2-D model, whose boundaries miss the top and bottom of objects), or at the peaks of the
        predicted distance (4 outputs only). None: ``"distance"`` for 4 outputs, else
        ``"boundaries"``.
    peak_prominence : float, optional
        (``seeds="distance"``) A seed is a peak of the predicted distance that stands this much
        (in shares of its object's largest distance) above the pass to any higher peak
        (`PEAK_PROMINENCE`). Lower splits more, higher merges more.

    Returns
    -------
    labels : np.ndarray of int32, shape (Y, X) or (Z, Y, X)
        0 for background, objects numbered 1..N.

    Raises
    ------
    InstancesError
        For a wrong shape, non-finite probabilities or out-of-range settings.

    Notes
    -----
    A foreground component without any seed becomes one object, so objects
    the model saw only faintly are kept (subject to ``min_size``). Runs in
    memory; see the module notes for the memory bound.
    """
    shape = _probability_shape(probabilities, allowed_classes=(2, 3, 4))
    if getattr(probabilities, "shape", None) is None:
        probabilities = np.asarray(probabilities)
    interior_threshold = _fraction(interior_threshold, "interior_threshold")
    boundary_threshold = _fraction(boundary_threshold, "boundary_threshold")
    foreground_threshold = _fraction(foreground_threshold, "foreground_threshold")
    peak_prominence = _fraction(peak_prominence, "peak_prominence")
    min_size = _count(min_size, "min_size")
    min_seed_size = _count(min_seed_size, "min_seed_size")
    min_distance = _count(min_distance, "min_distance")
    neck_ratio = _fraction(neck_ratio, "neck_ratio")
    if neck_ratio >= 1:
        raise InstancesError(f"`neck_ratio` must be below 1 (0 keeps seeds whole), got {neck_ratio!r}.")
    spacing = _spacing(spacing, len(shape) - 1)
    if seeds is None:
        seeds = "distance" if shape[0] == 4 else "boundaries"
    if seeds not in SEEDS:
        raise InstancesError(f"seeds must be one of {', '.join(SEEDS)}, got {seeds!r}")
    if seeds == "distance" and shape[0] != 4:
        raise InstancesError(
            f"seeds='distance' needs a predicted distance map (4 outputs), but `probabilities` has {shape[0]}; "
            "use seeds='boundaries' for a model without one."
        )
    if shape[0] >= 3 and seeds == "shape":
        foreground = (1 - _channel(probabilities, 0)) > foreground_threshold
        return _split_by_shape(foreground, min_size, min_distance, spacing)
    if seeds == "distance":
        return _from_distance(probabilities, peak_prominence, foreground_threshold, min_size)
    if shape[0] >= 3:
        return _from_three_classes(
            probabilities, interior_threshold, boundary_threshold, foreground_threshold, min_size,
            min_seed_size, neck_ratio, spacing,
        )
    return _split_by_shape(_channel(probabilities, 1) > foreground_threshold, min_size, min_distance, spacing)


def semantic_from_probabilities(probabilities: Any) -> np.ndarray:
    """The most probable class of every pixel.

    Parameters
    ----------
    probabilities : array-like, shape (K, Y, X)
        Class probabilities (or scores), numpy or zarr, with K <= 256.

    Returns
    -------
    classes : np.ndarray of uint8, shape (Y, X)
        Class index 0..K-1 (0 = background by convention); ties go to the
        lower index.

    Raises
    ------
    InstancesError
        For a wrong shape, more than 256 classes or non-finite values.
    """
    shape = _probability_shape(probabilities, allowed_classes=None)
    if getattr(probabilities, "shape", None) is None:
        probabilities = np.asarray(probabilities)
    if shape[0] > 256:
        raise InstancesError(f"`probabilities` has {shape[0]} classes; a uint8 class map holds at most 256.")
    # Running argmax over channels: holds two planes, not the whole (K, Y, X) stack.
    # A copy: for numpy input the channel is a view, and the maximum below writes into it.
    best = _channel(probabilities, 0).copy()
    classes = np.zeros(shape[1:], dtype=np.uint8)
    for index in range(1, shape[0]):
        plane = _channel(probabilities, index)
        better = plane > best
        classes[better] = index
        np.maximum(best, plane, out=best)
    return classes

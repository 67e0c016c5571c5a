"""Simulated partial annotations: what a user paints when asked to label a few objects and some background.

The result follows the label-layer convention (YX uint8, 0 = not annotated,
1 = background, 2 = object), so experiments and tests can train from "user"
labels derived from instance ground truth:

* a random minority of whole objects is painted as object (2);
* where two painted objects touch, a 1-px contact line is painted as
  background (1), as a careful user would, so they stay separate instances;
* a few brush strokes (smooth polylines) and dabs (discs) of background are
  painted away from every object, keeping a small margin.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import disk
from skimage.draw import line as draw_line

from workbench.errors import WorkbenchError

__all__ = ["PartialLabelError", "labelled_fraction", "simulate_partial_labels"]

NOT_ANNOTATED, BACKGROUND, OBJECT = 0, 1, 2

# One default stroke per this many region pixels: about 13 strokes on a 512 x 512 image.
_PIXELS_PER_DEFAULT_STROKE = 20_000
_DISC_SHARE = 0.3  # share of background marks that are dabs rather than strokes


class PartialLabelError(WorkbenchError, ValueError):
    """Arguments to the partial-label simulator are invalid."""


# ----------------------------------------------------------------------------- validation


def _as_instance_image(instance_gt) -> np.ndarray:
    array = np.asarray(instance_gt)
    if array.ndim not in (2, 3) or array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise PartialLabelError(
            f"`instance_gt` must be a 2-D (YX) or 3-D (ZYX) integer instance label image, got ndim {array.ndim} "
            f"and dtype {array.dtype}; label a mask with scipy.ndimage.label first."
        )
    if array.size and array.min() < 0:
        raise PartialLabelError(
            f"`instance_gt` has negative ids (min {array.min()}); ids must be >= 0 with 0 = background."
        )
    return array


def _region_mask(region, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean mask of where the user annotates, from None, slices or a mask."""
    if region is None:
        return np.ones(shape, dtype=bool)
    if isinstance(region, slice) or (isinstance(region, tuple) and all(isinstance(s, slice) for s in region)):
        mask = np.zeros(shape, dtype=bool)
        mask[region] = True
        return mask
    mask = np.asarray(region)
    if mask.dtype != bool or mask.shape != tuple(shape):
        raise PartialLabelError(
            f"`region` must be None, a slice / tuple of slices (e.g. np.s_[:, :256] for the left half) or a "
            f"boolean mask of shape {tuple(shape)}; got {type(region).__name__} with dtype "
            f"{getattr(mask, 'dtype', None)} and shape {getattr(mask, 'shape', None)}."
        )
    return mask


def _check_fraction(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise PartialLabelError(f"`{name}` must be between 0 and 1, got {value!r}; e.g. 0.2 labels a fifth.")
    return float(value)


def _check_count(name: str, value: int, minimum: int) -> int:
    if int(value) != value or value < minimum:
        raise PartialLabelError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


# ----------------------------------------------------------------------------- objects


def _objects_inside(instance_gt: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Ids of objects lying entirely inside `region` (a user paints whole objects only)."""
    max_id = int(instance_gt.max(initial=0))
    if max_id <= 4 * instance_gt.size + 1024:
        # Small ids: count pixels per id directly, no sort.
        total = np.bincount(instance_gt.ravel(), minlength=max_id + 1)
        inside = np.bincount(instance_gt[region], minlength=max_id + 1)
        ids = np.arange(max_id + 1)
    else:
        ids, compact = np.unique(instance_gt, return_inverse=True)
        compact = compact.reshape(instance_gt.shape)
        total = np.bincount(compact.ravel(), minlength=ids.size)
        inside = np.bincount(compact[region], minlength=ids.size)
    whole = (total > 0) & (inside == total) & (ids != 0)
    return ids[whole].astype(instance_gt.dtype)


def _contact_lines(chosen_map: np.ndarray) -> np.ndarray:
    """Pixels of a chosen object that touch (8-connected, 26 in 3-D) a chosen object with a smaller id.

    Taking only the larger-id side gives a 1-px line (a 1-voxel sheet), and leaves no pixel of
    either object adjacent to the other.
    """
    # A sentinel just above the largest id (scipy's grey erosion overflows near the dtype's maximum).
    sentinel = int(chosen_map.max(initial=0)) + 1
    nonzero = chosen_map > 0
    smallest_neighbour = ndi.grey_erosion(np.where(nonzero, chosen_map, sentinel), size=(3,) * chosen_map.ndim,
                                          mode="nearest")
    return nonzero & (smallest_neighbour < chosen_map)


# ----------------------------------------------------------------------------- background strokes


def _paint_background_marks(
    clearance: np.ndarray, radius: float, margin: int, count: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    """Mask of `count` background marks: smooth brush strokes and larger dabs (discs).

    `clearance` is each pixel's distance to the nearest pixel that must stay
    unpainted; marks are kept `margin` pixels further away than that.
    """
    height, width = clearance.shape
    centre = np.zeros(clearance.shape, dtype=bool)
    dabs = np.zeros(clearance.shape, dtype=bool)
    reach = radius + margin
    starts = np.flatnonzero(clearance > reach)
    if starts.size == 0 or count == 0:
        return centre
    step = max(2.0, reach)
    for start in rng.choice(starts, size=count, replace=starts.size < count):
        y, x = (int(v) for v in np.unravel_index(start, clearance.shape))
        if rng.random() < _DISC_SHARE:
            # A dab is a wider click of the brush, shrunk to fit between objects.
            dab_radius = min(rng.uniform(1.5, 4.0) * radius, clearance[y, x] - margin)
            rows, cols = disk((y, x), dab_radius, shape=clearance.shape)
            dabs[rows, cols] = True
            continue
        centre[y, x] = True
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(int(length / step)):
            # A hand stroke bends smoothly; if the next step would touch an object, try turning away.
            for turn in (0.0, 0.6, -0.6, 1.2, -1.2):
                candidate = heading + turn + rng.normal(0, 0.3)
                next_y = int(round(y + step * np.sin(candidate)))
                next_x = int(round(x + step * np.cos(candidate)))
                if 0 <= next_y < height and 0 <= next_x < width and clearance[next_y, next_x] > reach:
                    break
            else:
                break
            rows, cols = draw_line(y, x, next_y, next_x)
            centre[rows, cols] = True
            y, x, heading = next_y, next_x, candidate
    strokes = _thicken(centre, radius) if centre.any() else centre
    # Clip to the margin: segments between safe vertices can graze an object's surroundings.
    return (strokes | dabs) & (clearance > margin)


def _thicken(centre: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within `radius` of `centre`: the brush footprint swept along the strokes."""
    reach = int(np.floor(radius))
    offsets = np.arange(-reach, reach + 1)
    footprint = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2
    return ndi.binary_dilation(centre, structure=footprint)


# ----------------------------------------------------------------------------- public API


def simulate_partial_labels(
    instance_gt,
    *,
    object_fraction: float = 0.2,
    background_strokes: int | None = None,
    stroke_width: int = 5,
    stroke_length: int = 100,
    margin: int = 2,
    region=None,
    seed: int = 0,
) -> np.ndarray:
    """Paint partial labels from instance ground truth, as a user would.

    Parameters
    ----------
    instance_gt : array_like of int, shape (Y, X) or (Z, Y, X)
        Instance ground truth (0 = background; ids need not be contiguous). In a volume the
        chosen objects are painted whole through the stack, and the background marks are
        painted plane by plane, as with the annotator's z-slider.
    object_fraction : float, optional
        Share of the objects lying wholly inside ``region`` that are painted as
        object (2), chosen at random; at least one when any exists and the
        fraction is above 0.
    background_strokes : int, optional
        Number of background marks (70 % smooth strokes, 30 % dabs
        1.5-4 brush radii wide); default one
        per 20 000 region pixels, at least one (per plane of a volume).
    stroke_width : int, optional
        Brush diameter in pixels.
    stroke_length : int, optional
        Length of a stroke in pixels before it is cut short by objects or edges.
    margin : int, optional
        Pixels kept unpainted between background marks and any object.
    region : slice, tuple of slices or array_like of bool, optional
        Where the user annotates (e.g. ``np.s_[:, :256]``, the left half);
        default the whole image. Nothing outside it is painted.
    seed : int, optional
        Seed of the random choices; equal seeds give equal labels.

    Returns
    -------
    numpy.ndarray of uint8, the shape of `instance_gt`
        0 = not annotated, 1 = background, 2 = object.

    Raises
    ------
    PartialLabelError
        If ``instance_gt`` is not a 2-D integer image, ``region`` does not fit,
        or a number is out of range.

    Examples
    --------
    >>> gt = np.zeros((64, 64), dtype=np.int32)
    >>> gt[10:20, 10:20], gt[40:50, 40:50] = 1, 2
    >>> labels = simulate_partial_labels(gt, object_fraction=0.5, seed=1)
    >>> int((labels == 2).sum()), bool((labels == 1).any())
    (100, True)
    """
    gt = _as_instance_image(instance_gt)
    region_mask = _region_mask(region, gt.shape)
    object_fraction = _check_fraction("object_fraction", object_fraction)
    stroke_width = _check_count("stroke_width", stroke_width, 1)
    stroke_length = _check_count("stroke_length", stroke_length, 0)
    margin = _check_count("margin", margin, 0)
    if background_strokes is None:
        per_plane = np.count_nonzero(region_mask) / (gt.shape[0] if gt.ndim == 3 else 1)
        background_strokes = max(1, int(round(per_plane / _PIXELS_PER_DEFAULT_STROKE)))
    background_strokes = _check_count("background_strokes", background_strokes, 0)
    rng = np.random.default_rng(seed)

    labels = np.zeros(gt.shape, dtype=np.uint8)
    candidates = _objects_inside(gt, region_mask)
    n_chosen = int(round(object_fraction * candidates.size))
    if object_fraction > 0 and candidates.size:
        n_chosen = max(1, n_chosen)
    chosen = rng.choice(candidates, size=n_chosen, replace=False) if n_chosen else candidates[:0]
    chosen_map = np.where(np.isin(gt, chosen), gt.astype(np.int64), 0)
    labels[chosen_map > 0] = OBJECT
    labels[_contact_lines(chosen_map)] = BACKGROUND

    # Background marks keep `margin` pixels from every object (painted or not) and stay in the region.
    radius = stroke_width / 2
    allowed = region_mask & ~(gt > 0)
    for plane in range(gt.shape[0]) if gt.ndim == 3 else [None]:
        where = (plane,) if plane is not None else ()
        if not allowed[where].any():
            continue
        clearance = ndi.distance_transform_edt(allowed[where])
        marks = _paint_background_marks(clearance, radius, margin, background_strokes, stroke_length, rng)
        labels[where][marks & (labels[where] == NOT_ANNOTATED)] = BACKGROUND
    return labels


def labelled_fraction(labels, region=None) -> float:
    """Share of pixels in ``region`` that carry an annotation (label > 0).

    Parameters
    ----------
    labels : array_like of int, shape (Y, X)
        A label layer (0 = not annotated).
    region : slice, tuple of slices or array_like of bool, optional
        Where to count; default the whole image.

    Returns
    -------
    float
        Annotated pixels / region pixels (0.0 for an empty region).

    Raises
    ------
    PartialLabelError
        If ``region`` does not fit ``labels``.

    Examples
    --------
    >>> labelled_fraction(np.array([[0, 1], [2, 0]], dtype=np.uint8))
    0.5
    """
    array = np.asarray(labels)
    mask = _region_mask(region, array.shape)
    total = np.count_nonzero(mask)
    return 0.0 if total == 0 else float(np.count_nonzero(array[mask]) / total)

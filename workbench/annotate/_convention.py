"""The instance-mode painting convention, checked stroke by stroke: an object is painted whole.

In instance mode every connected patch of an object class is learned as one object, and its
outline becomes the boundary class. A short scribble inside a nucleus therefore teaches "a small
object here, with a boundary through the middle of the nucleus". Partial annotation means *some
objects*, not *part of an object*. `looks_like_part_of_an_object` tells, from the labels and the
image around a stroke, whether the painted patch stops where the object visibly goes on.

The rule, per painted patch of an object class that the stroke touched:

1. Look at a ring of pixels a few pixels outside the patch (distance 3 to 5 by default: a patch that
   stops a pixel or two short of the object's edge is not worth a warning).
2. Where the user painted there (background or another object), the patch ends by their choice. If
   most of the ring is painted, the patch is not judged further.
3. Otherwise the image decides. Most of a window around one object is what surrounds objects, so
   the median of the window beyond the ring stands for "outside"; the patch's median for "this
   object" (several channels are first reduced to their main direction of variation, so dark
   nuclei on a pink stain work like bright nuclei on black). When most of the unpainted ring is
   nearer the patch than the outside, the object goes on beyond the paint. A patch that looks like
   its surroundings is not judged: the image cannot tell.

On the DSB 2018 nuclei image (tests/test_annotator.py): short strokes through the middle of nuclei
are flagged (58 of the 60 nuclei at least 18 pixels across), each nucleus painted whole from the
ground truth is not (98 of 99).

Pure numpy and scipy: `LabelEditor` runs it after each object-class stroke.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from workbench.conventions import OBJECT, UNLABELLED
from workbench.errors import WorkbenchError

PART_OF_OBJECT = ("this looks like part of an object — fill it whole or it will be learned as a small object "
                  "(paint each object you paint completely, with the Fill outline tool or the brush)")
"""What the annotator shows when a stroke lies inside an object without covering it."""

RING = (3.0, 5.0)
"""Distances (pixels, exclusive start, inclusive end) from a painted patch where the image is compared."""

CONTINUES = 0.5
"""Share of the unpainted ring that must look like the patch for the object to go on beyond it."""

MIN_CONTRAST = 0.1
"""A patch must differ from its surroundings by this share of the window's intensity range to be judged."""

MAX_WINDOW = 1536
"""Strokes whose surroundings exceed this many pixels on a side are not checked (they are no scribble)."""

__all__ = ["PART_OF_OBJECT", "looks_like_part_of_an_object", "stroke_window"]


def _intensity(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """One float value per pixel: the image itself, or its channels' main direction of variation."""
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3 or pixels.shape[1:] != tuple(shape):
        raise WorkbenchError(
            f"`image` must be (Y, X) or (C, Y, X) with Y, X = {tuple(shape)} (the labels' shape), "
            f"got shape {np.shape(image)}"
        )
    if pixels.shape[0] == 1:
        return pixels[0]
    flat = pixels.reshape(pixels.shape[0], -1)
    spread = flat.std(axis=1, keepdims=True)
    flat = (flat - flat.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)
    # The first principal axis of the channels: nuclei versus everything else, in most stains.
    _, _, axes = np.linalg.svd(flat @ flat.T)
    return (axes[0] @ flat).reshape(shape)


def looks_like_part_of_an_object(labels, image, painted, *, ring: tuple[float, float] = RING,
                                 continues: float = CONTINUES) -> bool:
    """Whether a stroke painted only part of an object (instance mode), judged on the image.

    Parameters
    ----------
    labels : (Y, X) int array
        The label window around the stroke, *after* the stroke (0 not annotated, 1 background,
        2.. object classes).
    image : (Y, X) or (C, Y, X) array
        The image pixels of the same window.
    painted : (Y, X) bool array
        The pixels the stroke painted. Only object-class patches that contain one of them are
        judged; a patch that reaches the window's edge is not (the window is too small to see it
        whole: give one with a margin, see `stroke_window`).
    ring : (float, float)
        Distances from the patch (pixels) where the image is compared with the patch.
    continues : float
        Share (0..1) of the unpainted ring that must look like the patch to flag it; the same share
        of the ring must be unpainted.

    Returns
    -------
    bool
        True when a painted patch stops where the object, by the image, goes on.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((60, 60)); image[10:50, 10:50] = 100        # one big bright object
    >>> labels = np.zeros((60, 60), np.uint8); labels[25:35, 25:35] = 2
    >>> looks_like_part_of_an_object(labels, image, labels == 2)      # a dab in its middle
    True
    >>> labels[10:50, 10:50] = 2                                      # the object painted whole
    >>> looks_like_part_of_an_object(labels, image, labels == 2)
    False
    """
    labels = np.asarray(labels)
    painted = np.asarray(painted, dtype=bool)
    if labels.ndim != 2 or painted.shape != labels.shape:
        raise WorkbenchError(
            f"`labels` must be a 2-D array and `painted` a mask of its shape; got {labels.shape} and {painted.shape}"
        )
    low, high = (float(r) for r in ring)
    if not 0 <= low < high:
        raise WorkbenchError(f"`ring` must be (start, end) distances with 0 <= start < end, got {tuple(ring)}")
    if not 0 < float(continues) <= 1:
        raise WorkbenchError(f"`continues` must be a share in (0, 1], got {continues}")
    intensity = _intensity(image, labels.shape)
    values = [int(v) for v in np.unique(labels[painted]) if v >= OBJECT]
    if not values:
        return False
    spread = np.subtract(*np.percentile(intensity, [99, 1]))
    if not spread > 0:
        return False  # a flat image says nothing about where objects end
    for value in values:
        patches, _ = ndi.label(labels == value, structure=np.ones((3, 3), bool))
        for index in np.unique(patches[painted & (labels == value)]):
            patch = patches == index
            if patch[0].any() or patch[-1].any() or patch[:, 0].any() or patch[:, -1].any():
                continue
            distance = ndi.distance_transform_edt(~patch)
            around = (distance > low) & (distance <= high)
            unpainted = around & (labels == UNLABELLED)
            if not around.any() or unpainted.sum() < continues * around.sum():
                continue  # the user painted what lies around it: the patch ends where they said
            beyond = distance > high
            if not beyond.any():
                continue
            # Most of a window around one object is what surrounds objects (background): the
            # patch's object goes on where the ring looks more like the patch than like that.
            inside, outside = np.median(intensity[patch]), np.median(intensity[beyond])
            if abs(inside - outside) < MIN_CONTRAST * spread:
                continue  # the patch looks like its surroundings: the image cannot tell
            middle = (inside + outside) / 2
            like_patch = (intensity[unpainted] > middle) == (inside > middle)
            if np.mean(like_patch) >= continues:
                return True
    return False


def stroke_window(region: tuple[slice, slice], shape: tuple[int, int], *, margin: int | None = None):
    """The window around a stroke's bounding box that `looks_like_part_of_an_object` should see.

    The margin is the stroke's own size (at least 24 pixels), so a patch inside an object is seen
    with the object's edge and some of what lies beyond it. Returns None when the window would be
    larger than `MAX_WINDOW` on a side (such a stroke is not a scribble inside one object).
    """
    ys, xs = region
    height, width = int(shape[0]), int(shape[1])
    if margin is None:
        margin = max(24, ys.stop - ys.start, xs.stop - xs.start)
    window = (slice(max(ys.start - margin, 0), min(ys.stop + margin, height)),
              slice(max(xs.start - margin, 0), min(xs.stop + margin, width)))
    if max(window[0].stop - window[0].start, window[1].stop - window[1].start) > MAX_WINDOW:
        return None
    return window

"""Overlay pictures for the annotator: labels and predictions as canvas-sized RGBA arrays.

Pure numpy (no widgets), so tests can look at exactly what the canvas is sent.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from workbench.store import OBJECT, derive_boundaries
from workbench.annotate import NearestPyramid, hex_to_rgb
from workbench.annotate import Viewport

BOUNDARY_COLOR = (255, 225, 25)  # derived boundary: yellow, unlike any default class colour
OUTLINE_COLOR = (255, 255, 0)
# A perceptually ordered dark-to-bright ramp (after matplotlib's "inferno").
HEAT_ANCHORS = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], np.float32)

__all__ = ["label_overlay", "prediction_overlay", "prediction_reader", "heat_colors", "class_lut", "PREDICTION_VIEWS",
           "RegionPlane"]


def class_lut(colors: Sequence[str], opacity: float) -> np.ndarray:
    """RGBA per label value: 0 transparent, value ``i + 1`` the colour of class ``i``, then boundary."""
    alpha = int(round(255 * float(np.clip(opacity, 0.0, 1.0))))
    lut = np.zeros((len(colors) + 2, 4), np.uint8)
    for i, color in enumerate(colors):
        lut[i + 1] = (*hex_to_rgb(color), alpha)
    lut[-1] = (*BOUNDARY_COLOR, max(alpha, 160))  # boundaries stay readable at low opacity
    return lut


def heat_colors(values: np.ndarray) -> np.ndarray:
    """Values in 0..1 as RGB uint8 along `HEAT_ANCHORS`."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0) * (len(HEAT_ANCHORS) - 1)
    low = np.minimum(np.floor(v).astype(np.int64), len(HEAT_ANCHORS) - 2)
    t = (v - low)[..., None]
    return (HEAT_ANCHORS[low] * (1 - t) + HEAT_ANCHORS[low + 1] * t + 0.5).astype(np.uint8)


def _empty(viewport: Viewport) -> np.ndarray:
    return np.zeros((viewport.height, viewport.width, 4), np.uint8)


def label_overlay(labels: NearestPyramid, viewport: Viewport, factor: int, colors: Sequence[str], opacity: float,
                  *, boundary_width: int | None = None, z_window: Sequence[NearestPyramid] | None = None,
                  z_centre: int = 0, spacing: Sequence[float] | None = None) -> np.ndarray:
    """RGBA picture of the painted labels, with derived instance boundaries when `boundary_width` is set.

    Boundaries are derived (`workbench.store.derive_boundaries`) on the region read plus a margin,
    so an object cut by the canvas edge gets no false outline there; at a zoomed-out level the
    width shrinks with the level's factor (at least one level pixel). With `z_window` (the
    label planes around this one, `labels` at index `z_centre`) they are derived in 3-D with the
    voxel size `spacing` (z, y, x), so the plane shows the boundary the model learns from.
    """
    rows, cols, row_ok, col_ok, region = viewport.sample_grid(labels.shape, factor)
    if region is None:
        return _empty(viewport)
    ys, xs = region
    values = labels.read(factor, ys, xs)
    if boundary_width:
        width = max(1, int(round(boundary_width / factor)))
        level_shape = labels.shape if factor == 1 else labels.levels[factor].shape
        margin = width + 1
        big_ys = slice(max(ys.start - margin, 0), min(ys.stop + margin, level_shape[0]))
        big_xs = slice(max(xs.start - margin, 0), min(xs.stop + margin, level_shape[1]))
        if z_window:
            big = np.stack([plane.read(factor, big_ys, big_xs) for plane in z_window])
            sz, sy, sx = spacing if spacing is not None else (1.0, 1.0, 1.0)
            # A zoomed-out level's pixels are `factor` times larger in-plane; z keeps its planes.
            edge = derive_boundaries(big, width, spacing=(sz, sy * factor, sx * factor))[z_centre]
        else:
            big = labels.read(factor, big_ys, big_xs)
            edge = derive_boundaries(big, width)
        edge = edge[ys.start - big_ys.start: ys.stop - big_ys.start, xs.start - big_xs.start: xs.stop - big_xs.start]
        values = np.where(edge & (values == OBJECT), len(colors) + 1, values)
    lut = class_lut(colors, opacity)
    picture = lut[np.minimum(values, len(lut) - 1)[rows[:, None], cols[None, :]]]
    picture[~(row_ok[:, None] & col_ok[None, :])] = 0
    return picture


def prediction_overlay(kind: str, plane: NearestPyramid, viewport: Viewport, factor: int,
                       colors: Sequence[str], opacity: float) -> np.ndarray:
    """RGBA picture of a prediction layer.

    Parameters
    ----------
    kind : {"classes", "instances", "heat"}
        A class map (class 0, the background, left transparent), object ids (outlined), or values
        in 0..1 shown as a heat map whose transparency follows the value.
    """
    sampled = plane.sample(viewport, factor)
    if sampled is None:
        return _empty(viewport)
    values, inside = sampled
    alpha = float(np.clip(opacity, 0.0, 1.0))
    out = _empty(viewport)
    if kind == "classes":
        lut = np.zeros((max(len(colors), int(values.max(initial=0)) + 1), 4), np.uint8)
        for i, color in enumerate(colors):
            lut[i] = (*hex_to_rgb(color), int(255 * alpha))
        lut[len(colors):] = (*BOUNDARY_COLOR, int(255 * alpha))  # e.g. the instance "boundary" class
        lut[0, 3] = 0
        out = lut[values.astype(np.int64)]
    elif kind == "instances":
        ids = values.astype(np.int64)
        edge = np.zeros(ids.shape, bool)
        edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
        edge[:, 1:] |= ids[:, :-1] != ids[:, 1:]
        edge[:-1] |= ids[:-1] != ids[1:]
        edge[1:] |= ids[:-1] != ids[1:]
        edge &= ids > 0
        out[edge] = (*OUTLINE_COLOR, int(255 * max(alpha, 0.6)))
    elif kind == "heat":
        v = np.clip(values.astype(np.float32), 0.0, 1.0)
        out[..., :3] = heat_colors(v)
        out[..., 3] = (255 * alpha * np.sqrt(v)).astype(np.uint8)
    else:
        raise ValueError(f"prediction overlay kind must be 'classes', 'instances' or 'heat', got {kind!r}")
    out[~inside] = 0
    return out


class RegionPlane:
    """Full-resolution values of one image region, sampled for the canvas as a `NearestPyramid` is.

    For predictions that cover only part of the image (the live preview of the visible region):
    canvas pixels outside the region are reported as outside, so the overlay is transparent there.

    Parameters
    ----------
    values : array (h, w)
    region : (slice, slice)
        Image rows and columns that `values` cover (``h`` rows, ``w`` columns).
    """

    def __init__(self, values: np.ndarray, region: tuple[slice, slice]):
        values = np.asarray(values)
        ys, xs = region
        if values.ndim != 2 or values.shape != (ys.stop - ys.start, xs.stop - xs.start):
            raise ValueError(f"`values` (shape {values.shape}) must be 2-D and as large as `region` "
                             f"({ys.stop - ys.start} x {xs.stop - xs.start})")
        self.values = values
        self.region = (slice(int(ys.start), int(ys.stop)), slice(int(xs.start), int(xs.stop)))

    def sample(self, viewport: Viewport, factor: int = 1):
        """``(values, inside)`` per canvas pixel (`factor` is ignored: the region is small), or None."""
        ys, xs = self.region
        height, width = self.values.shape
        rows = np.floor(viewport.origin_y + (np.arange(viewport.height) + 0.5) / viewport.zoom).astype(np.int64)
        cols = np.floor(viewport.origin_x + (np.arange(viewport.width) + 0.5) / viewport.zoom).astype(np.int64)
        rows, cols = rows - ys.start, cols - xs.start
        row_ok, col_ok = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
        if not row_ok.any() or not col_ok.any():
            return None
        picked = self.values[np.clip(rows, 0, height - 1)[:, None], np.clip(cols, 0, width - 1)[None, :]]
        return picked, row_ok[:, None] & col_ok[None, :]


# What the prediction menu offers: view name -> (stored layer, overlay kind).
PREDICTION_VIEWS = {
    "classes": ("classes", "classes"),
    "instance outlines": ("instances", "instances"),
    "uncertainty": ("probabilities", "heat"),
}


def prediction_reader(array, view: str, z: int, is_stack: bool, n_classes: int | None = None):
    """``reader(ys, xs)`` of one z-plane of a stored prediction, as the overlay `view` needs it.

    Parameters
    ----------
    array : zarr array
        ``classes`` / ``instances`` (Y, X) or (Z, Y, X); ``probabilities`` (K, Y, X) or (Z, K, Y, X).
    view : str
        A key of `PREDICTION_VIEWS`, or ``"probability:<k>"`` for class `k`'s probability.
    n_classes : int or None
        Channels of the probabilities that are classes (the uncertainty reads those, not a
        U-Net's distance map after them); None: all.
    """
    lead = (int(z),) if is_stack else ()
    if view.startswith("probability:"):
        k = int(view.split(":", 1)[1])
        return (lambda ys, xs: np.asarray(array[lead + (k, ys, xs)], np.float32)), np.float32
    if view == "uncertainty":
        def uncertainty(ys, xs):
            probs = np.asarray(array[lead + (slice(0, n_classes), ys, xs)], np.float32)
            k = max(probs.shape[0], 2)
            # 0 where one class is certain, 1 where all classes are equally likely.
            return (1.0 - probs.max(axis=0)) * k / (k - 1)
        return uncertainty, np.float32
    dtype = np.dtype(array.dtype)
    return (lambda ys, xs: np.asarray(array[lead + (ys, xs)])), dtype

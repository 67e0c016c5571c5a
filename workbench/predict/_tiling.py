"""Smooth tiled prediction of images larger than memory, for any predictor callable.

The image is cut into overlapping square tiles that are read one at a time
(numpy, zarr or any array-like that can be sliced), sent to the predictor in
batches, and blended with a smooth window so no seams show where tiles meet.
Finished regions are written straight to ``out`` (a numpy or zarr array) and
forgotten, so the memory held does not grow with the image height.

Tiling knows nothing about torch or forests: a predictor is any callable
``predictor(batch (B, C, h, w) float32) -> (B, K, h, w) float32``. Predictors
that need context around a tile (a Random Forest's filter bank, a U-Net's
receptive field) ask for a ``halo``: extra pixels read around every tile and
cropped off after prediction, separate from the blending ``overlap``. At the
image edge the halo is reflected image (``edge="reflect"``, for networks that
want equal tile sizes) or left out (``edge="clip"``, for predictors that treat
the image edge themselves, like the Random Forest's filter bank, so that a
tiled prediction equals the whole-image one there too).

Example
-------
>>> import numpy as np
>>> image = np.random.default_rng(0).random((1, 300, 200), dtype=np.float32)
>>> def predictor(batch):
...     return np.concatenate([batch, 1 - batch], axis=1)
>>> probabilities = predict_tiled(image, predictor, 2, tile_size=128)
>>> bool(np.allclose(probabilities[0], image[0]))
True
"""

from __future__ import annotations

import itertools
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.validate import whole_number

__all__ = ["DEFAULT_WINDOW", "EDGES", "WINDOWS", "TilingError", "predict_tiled", "predict_tiled_zarr",
           "predict_symmetries"]

Predictor = Callable[[np.ndarray], Any]
Progress = Callable[[float, str], None]


class TilingError(WorkbenchError, ValueError):
    """Tiled prediction got an argument, or a predictor answer, it cannot use."""


def _profile_gaussian(tile_size: int, overlap: int) -> np.ndarray:
    # MONAI's importance map: sigma = tile / 8, centred on the tile.
    centred = np.arange(tile_size) - (tile_size - 1) / 2
    return np.exp(-0.5 * (centred / (0.125 * tile_size)) ** 2)


def _profile_hann(tile_size: int, overlap: int) -> np.ndarray:
    return np.sin(np.pi * (np.arange(tile_size) + 0.5) / tile_size) ** 2


def _profile_triangle(tile_size: int, overlap: int) -> np.ndarray:
    position = np.arange(tile_size) + 0.5
    return np.minimum(position, tile_size - position) / (tile_size / 2)


def _profile_spline(tile_size: int, overlap: int) -> np.ndarray:
    # Weight 1 in the centre; a second-order spline (flat at both ends, so no
    # kink) rises across the `overlap` pixels at each edge.
    profile = np.ones(tile_size)
    if overlap:
        t = (np.arange(overlap) + 0.5) / overlap
        rising = np.where(t < 0.5, 2 * t**2, 1 - 2 * (1 - t) ** 2)
        profile[:overlap] = rising
        profile[tile_size - overlap :] = rising[::-1]
    return profile


def _profile_constant(tile_size: int, overlap: int) -> np.ndarray:
    return np.ones(tile_size)


#: Blending windows by name. Each maps (tile_size, overlap) to a weight profile
#: along one tile axis, largest in the centre and falling towards the tile
#: edges, where the network sees padding instead of image and predicts worst.
#: A tile weighs the outer product of its two profiles.
WINDOWS: dict[str, Callable[[int, int], np.ndarray]] = {
    "gaussian": _profile_gaussian,
    "hann": _profile_hann,
    "triangle": _profile_triangle,
    "spline": _profile_spline,
    "constant": _profile_constant,
}

DEFAULT_WINDOW = "gaussian"

#: How a tile's halo is filled where it leaves the image: "reflect" (mirrored image, every tile
#: the same size) or "clip" (not at all: border tiles are smaller, the predictor sees the edge).
EDGES = ("reflect", "clip")

# No tile weight falls below this share of its peak (as in MONAI), so every
# pixel's total weight stays far from zero and the average is exact.
_MIN_WEIGHT = 1e-3


@dataclass(frozen=True)
class _Axis:
    """Where the tiles lie along one image axis, and each tile's weight profile."""

    size: int
    tile_size: int
    starts: tuple[int, ...]
    profiles: tuple[np.ndarray, ...]  # per tile, length extent(index), peak 1

    def extent(self, index: int) -> int:
        """Output pixels of tile ``index`` inside the image (only the last tile may run past it)."""
        return min(self.tile_size, self.size - self.starts[index])

    def read_span(self, index: int, halo: int, clip: bool) -> tuple[int, int, int]:
        """(first, stop, core offset) of the pixels tile ``index`` reads with its halo.

        Reflected (``clip`` False): always ``tile_size + 2 * halo`` pixels, running
        past the image where `_read_region` mirrors it. Clipped: only pixels inside.
        """
        start = self.starts[index]
        if not clip:
            return start - halo, start + self.tile_size + halo, halo
        first = max(0, start - halo)
        return first, min(self.size, start + self.extent(index) + halo), start - first

    def finished_end(self, index: int) -> int:
        """First coordinate still needed by a later tile after tile ``index``."""
        return self.starts[index + 1] if index + 1 < len(self.starts) else self.size

    def overlap_after(self, index: int) -> int:
        """Pixels tile ``index`` shares with the next tile."""
        return self.starts[index] + self.tile_size - self.starts[index + 1]


def _tile_starts(size: int, tile_size: int, overlap: int, *, regular: bool = False) -> tuple[int, ...]:
    # As few tiles as a step of `tile_size - overlap` needs (MONAI's count), then
    # spread evenly with the last tile ending at the border: the spare pixels
    # widen the overlaps instead of feeding the network reflected image. All
    # steps are equal but the last, which may be shorter, so finished blocks
    # still align with output chunks of one step. `regular` keeps the step
    # `tile_size - overlap` and lets the last tile end short of a full tile
    # (clipped tiles: every tile starts on a multiple of the step).
    if size <= tile_size:
        return (0,)
    n_steps = -(-(size - tile_size) // (tile_size - overlap))
    if regular:
        return tuple(index * (tile_size - overlap) for index in range(n_steps + 1))
    step = -(-(size - tile_size) // n_steps)
    return tuple(sorted({min(index * step, size - tile_size) for index in range(n_steps + 1)}))


def _plan_axis(size: int, tile_size: int, overlap: int, window: Callable, *, regular: bool = False) -> _Axis:
    starts = _tile_starts(size, tile_size, overlap, regular=regular)
    base = np.asarray(window(tile_size, overlap), dtype=np.float64)
    base = base / base.max()
    profiles = []
    for index, start in enumerate(starts):
        profile = base
        # Tiles at the image border keep their peak weight out to the border
        # pixel: no other tile covers that side.
        if index == 0:
            profile = np.maximum.accumulate(profile[::-1])[::-1]
        if index == len(starts) - 1:
            profile = np.maximum.accumulate(profile)
        profiles.append(profile[: min(tile_size, size - start)])
    return _Axis(size=size, tile_size=tile_size, starts=starts, profiles=tuple(profiles))


def _overlap_pixels(overlap: float | int, tile_size: int) -> int:
    if isinstance(overlap, bool) or not isinstance(overlap, numbers.Real):
        raise TilingError(
            f"`overlap` must be a fraction of the tile in [0, 1) or a number of pixels, got {overlap!r}."
        )
    if isinstance(overlap, numbers.Integral):
        pixels = int(overlap)
    elif 0 <= overlap < 1:
        pixels = int(round(float(overlap) * tile_size))
    else:
        raise TilingError(
            f"`overlap` {overlap!r} is neither a fraction in [0, 1) nor a whole number of pixels; "
            "pass e.g. 0.25 or 64."
        )
    if not 0 <= pixels < tile_size:
        raise TilingError(
            f"`overlap` of {pixels} pixels must be at least 0 and smaller than `tile_size` ({tile_size})."
        )
    return pixels


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    return whole_number(value, name, minimum=minimum, error=TilingError)


def _image_shape(image: Any) -> tuple[int, int, int]:
    shape = getattr(image, "shape", None)
    if shape is None or not hasattr(image, "__getitem__"):
        raise TilingError(
            f"`image` must be a sliceable array with a .shape (numpy, zarr), got {type(image).__name__}."
        )
    if len(shape) == 2:
        return 1, int(shape[0]), int(shape[1])
    if len(shape) != 3 or min(shape) < 1:
        raise TilingError(
            f"`image` must be CYX (or YX for one channel) with no empty axis, got shape {tuple(shape)}; "
            "move the channel axis first, e.g. np.moveaxis(image, -1, 0)."
        )
    return int(shape[0]), int(shape[1]), int(shape[2])


def _check_out(out: Any, expected: tuple[int, int, int]) -> None:
    shape = getattr(out, "shape", None)
    if shape is None or not hasattr(out, "__setitem__"):
        raise TilingError(
            f"`out` must be a writable array (numpy or zarr) of shape {expected}, got {type(out).__name__}."
        )
    if tuple(shape) != expected:
        raise TilingError(
            f"`out` has shape {tuple(shape)} but the prediction is (n_outputs, Y, X) = {expected}; "
            "create it with that shape, or pass out=None."
        )
    dtype = getattr(out, "dtype", None)
    if dtype is not None and not np.issubdtype(np.dtype(dtype), np.floating):
        raise TilingError(f"`out` must have a floating dtype (float32), got {dtype}.")


def _read_region(image: Any, two_dimensional: bool, rows: tuple[int, int], cols: tuple[int, int],
                 height: int, width: int) -> np.ndarray:
    """Read rows/cols of the image as float32 CYX, reflecting where they leave it."""
    (y0, y1), (x0, x1) = rows, cols
    inside_y = (max(y0, 0), min(y1, height))
    inside_x = (max(x0, 0), min(x1, width))
    if two_dimensional:
        region = np.asarray(image[inside_y[0] : inside_y[1], inside_x[0] : inside_x[1]])[None]
    else:
        region = np.asarray(image[:, inside_y[0] : inside_y[1], inside_x[0] : inside_x[1]])
    region = region.astype(np.float32, copy=False)
    pad = ((0, 0), (inside_y[0] - y0, y1 - inside_y[1]), (inside_x[0] - x0, x1 - inside_x[1]))
    if any(before or after for before, after in pad):
        region = np.pad(region, pad, mode="reflect")
    return region


def _checked(prediction: Any, batch_shape: tuple[int, ...], n_outputs: int) -> np.ndarray:
    try:
        prediction = np.asarray(prediction, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise TilingError(
            f"the predictor must return an array (B, K, h, w); got {type(prediction).__name__} "
            f"that numpy cannot read as float32 ({error})."
        ) from error
    expected = (batch_shape[0], n_outputs, batch_shape[2], batch_shape[3])
    if prediction.shape != expected:
        raise TilingError(
            f"the predictor answered a batch of shape {tuple(batch_shape)} with shape "
            f"{prediction.shape}; expected (B, n_outputs, h, w) = {expected}. Check `n_outputs` and that "
            "the predictor keeps the spatial size (pad inside it if the model needs sizes divisible by 32)."
        )
    finite = np.isfinite(prediction)
    if not finite.all():
        raise TilingError(
            f"the predictor returned {int(prediction.size - finite.sum())} non-finite values (NaN/inf) "
            f"in a batch of {expected[0]} tiles; check its normalisation and weights."
        )
    return prediction


def _predict_batch(predictor: Predictor, batch: np.ndarray, n_outputs: int, tta: bool) -> np.ndarray:
    if not tta:
        return _checked(predictor(batch), batch.shape, n_outputs)
    return predict_symmetries(predictor, batch, n_outputs)


def predict_symmetries(predictor: Predictor, batch: np.ndarray, n_outputs: int) -> np.ndarray:
    """Test-time augmentation: the prediction averaged over the eight symmetries of the square.

    Parameters
    ----------
    predictor : callable
        ``(B, C, Y, X) float32 -> (B, K, Y, X)`` probabilities.
    batch : np.ndarray
        ``(B, C, Y, X)`` tiles.
    n_outputs : int
        ``K``.

    Returns
    -------
    np.ndarray
        ``(B, K, Y, X)`` float32, the mean of the predictions of the rotated and flipped tiles,
        turned back.
    """
    # The eight symmetries of the square: four rotations, each with and without a flip.
    summed = np.zeros((batch.shape[0], n_outputs) + batch.shape[2:], dtype=np.float32)
    for quarter_turns in range(4):
        for flip in (False, True):
            view = np.rot90(batch, quarter_turns, axes=(2, 3))
            if flip:
                view = view[..., ::-1]
            view = np.ascontiguousarray(view)
            prediction = _checked(predictor(view), view.shape, n_outputs)
            if flip:
                prediction = prediction[..., ::-1]
            summed += np.rot90(prediction, -quarter_turns, axes=(2, 3))
    return summed / np.float32(8)


class _BlendingWriter:
    """Accumulates weighted tiles in row-major order and writes finished blocks to ``out``.

    Held at once: one tile-sized window (K + 1, tile, tile) sliding along the
    current tile row (the weighted predictions and, last, the summed weight),
    plus a carry strip (K + 1, overlap, X) of the rows the next tile row will
    still add to. A block is written, divided by its summed weight, as soon as
    no later tile touches it, exactly once.
    """

    def __init__(self, out: Any, n_outputs: int, rows: _Axis, cols: _Axis):
        self.out, self.rows, self.cols, self.n_outputs = out, rows, cols, n_outputs
        carry_height = max((rows.overlap_after(i) for i in range(len(rows.starts) - 1)), default=0)
        self.carry = np.zeros((n_outputs + 1, carry_height, cols.size), dtype=np.float32)
        self.window = np.zeros((n_outputs + 1, rows.tile_size, cols.tile_size), dtype=np.float32)
        self._weights: dict[tuple, np.ndarray] = {}

    def _tile_weights(self, row: int, col: int) -> np.ndarray:
        # Only border tiles differ, so a handful of weight maps serve the whole image.
        def kind(axis: _Axis, index: int) -> tuple[bool, bool, int]:
            return index == 0, index == len(axis.starts) - 1, axis.extent(index)

        key = kind(self.rows, row) + kind(self.cols, col)
        weights = self._weights.get(key)
        if weights is None:
            product = np.outer(self.rows.profiles[row], self.cols.profiles[col])
            weights = np.maximum(product, _MIN_WEIGHT).astype(np.float32)
            self._weights[key] = weights
        return weights

    def add(self, row: int, col: int, prediction: np.ndarray) -> None:
        """Blend the prediction (K, rows.extent(row), cols.extent(col)) of one tile."""
        rows, cols, window, n_outputs = self.rows, self.cols, self.window, self.n_outputs
        y0, x0 = rows.starts[row], cols.starts[col]
        height, width = rows.extent(row), cols.extent(col)
        if col == 0:
            window[:] = 0
            new_from = 0
        else:
            # Slide right to this tile: keep the columns shared with the last one, clear the rest.
            new_from = cols.overlap_after(col - 1)
            window[:, :, :new_from] = window[:, :, cols.tile_size - new_from :].copy()
            window[:, :, new_from:] = 0
        if row > 0:
            # Columns entering the window receive what the tile row above left for them.
            shared = rows.overlap_after(row - 1)
            window[:, :shared, new_from:width] += self.carry[:, :shared, x0 + new_from : x0 + width]
        weights = self._tile_weights(row, col)
        window[:n_outputs, :height, :width] += prediction * weights
        window[n_outputs, :height, :width] += weights

        done_rows = rows.finished_end(row) - y0
        done_cols = cols.finished_end(col) - x0
        finished = window[:, :done_rows, :done_cols]
        self.out[:, y0 : y0 + done_rows, x0 : x0 + done_cols] = finished[:n_outputs] / finished[n_outputs]
        if row < len(rows.starts) - 1:
            self.carry[:, : height - done_rows, x0 : x0 + done_cols] = window[:, done_rows:height, :done_cols]


def predict_tiled(
    image: Any,
    predictor: Predictor,
    n_outputs: int,
    *,
    tile_size: int = 256,
    overlap: float | int = 0.25,
    halo: int = 0,
    batch_size: int = 4,
    window: str = DEFAULT_WINDOW,
    out: Any = None,
    tta: bool = False,
    edge: str = "reflect",
    progress: Progress | None = None,
) -> Any:
    """Predict an image tile by tile and blend the tiles without seams.

    Parameters
    ----------
    image : array-like, shape (C, Y, X) or (Y, X)
        Raw image of any dtype: a numpy array, a zarr array or anything that
        can be sliced and has ``.shape``. It is read one tile at a time and
        cast to float32; it is never loaded whole.
    predictor : callable
        ``predictor(batch)`` with ``batch`` float32 (B, C, h, w) returns
        (B, n_outputs, h, w) finite values (numpy, or anything ``np.asarray``
        reads). Normalisation belongs inside the predictor.
    n_outputs : int
        Number of output channels K (classes for probabilities).
    tile_size : int, optional
        Edge of the square tiles the predictor sees (before the halo).
    overlap : float or int, optional
        Overlap between neighbouring tiles used for blending: a fraction of the
        tile in [0, 1) or a whole number of pixels.
    halo : int, optional
        Extra context in pixels read around each tile and cropped off the
        prediction; the predictor sees tiles of ``tile_size + 2 * halo`` (fewer
        at the image edge with ``edge="clip"``). Use it for predictors with a
        receptive field.
    batch_size : int, optional
        Tiles per predictor call.
    window : str, optional
        Blending window, one of ``WINDOWS``: "gaussian" (default; MONAI's
        importance map, sigma = tile / 8, over the whole tile), "hann",
        "triangle" (both over the whole tile), "spline" (a ramp across the
        overlap only, weight 1 in the centre), "constant". A tile's weight is
        the outer product of its row and column profiles, never below 1e-3 of
        its peak; tiles at the image border keep the peak weight out to the
        border pixel.
    out : array-like, shape (n_outputs, Y, X), optional
        Where to write the result (numpy or zarr, floating dtype; any object
        with ``.shape`` and slice assignment works). Every pixel is written
        exactly once, so ``out`` need not be zeroed. None allocates a float32
        numpy array.
    tta : bool, optional
        Test-time augmentation: predict all eight flips/quarter-turns of every
        tile, undo each transform and average (eight times the work).
    edge : {"reflect", "clip"}, optional
        Where a tile's halo leaves the image: "reflect" (default) reads
        mirrored image, so every tile has the same size and tiles are spread
        to end at the border. "clip" reads only the image: tiles touching the
        border are smaller and the predictor handles the edge as it would on
        the whole image; tiles then start on multiples of ``tile_size -
        overlap`` and the last may end short of a full tile. A predictor whose
        result is the same on any tile that holds its receptive field (the
        Random Forest: halo ``model.halo``, step a multiple of its
        ``features.alignment``) then gives the whole-image prediction
        everywhere, edges included. Tiles of one size go to the predictor
        together.
    progress : callable, optional
        ``progress(fraction, message)`` after every batch.

    Returns
    -------
    out : array-like, shape (n_outputs, Y, X)
        The blended prediction (``out`` itself when one was given).

    Raises
    ------
    TilingError
        For an unusable argument, or when the predictor returns the wrong
        shape or non-finite values.

    Notes
    -----
    Along each axis the tiles are as few as a step of ``tile_size - overlap``
    needs (the count MONAI's ``sliding_window_inference`` uses), spread with
    one equal step (at most ``tile_size - overlap``) and the last tile ending
    at the border, so neighbours overlap by at least ``overlap`` and the spare
    pixels widen the overlaps. Only an image axis smaller than a tile is
    padded (reflected input, cropped output; with ``edge="clip"`` it is read
    as it is).

    Blending: predictions near a tile edge are the least reliable (the
    network sees padding there), so each pixel is the weighted mean of the
    tiles covering it with weights that fall towards each tile's edges.

    Memory held at once is one batch of tiles (and its predictions), one
    tile-sized blending window and a carry strip of (n_outputs + 1, overlap, X)
    float32 (the weighted sums and the summed weight). It does not grow with
    the image height, and with the width only through that strip. Every
    step x step block is written once, normalised, as soon as no later tile
    touches it.
    """
    n_channels, height, width = _image_shape(image)
    n_outputs = _positive_int(n_outputs, "n_outputs")
    tile_size = _positive_int(tile_size, "tile_size")
    halo = _positive_int(halo, "halo", minimum=0)
    batch_size = _positive_int(batch_size, "batch_size")
    overlap_px = _overlap_pixels(overlap, tile_size)
    if window not in WINDOWS:
        raise TilingError(f"`window` {window!r} is unknown; choose one of {sorted(WINDOWS)}.")
    if edge not in EDGES:
        raise TilingError(f"`edge` {edge!r} is unknown; choose one of {list(EDGES)}.")
    clip = edge == "clip"
    if not callable(predictor):
        raise TilingError(f"`predictor` must be callable, got {type(predictor).__name__}.")
    if out is None:
        out = np.empty((n_outputs, height, width), dtype=np.float32)
    else:
        _check_out(out, (n_outputs, height, width))

    rows = _plan_axis(height, tile_size, overlap_px, WINDOWS[window], regular=clip)
    cols = _plan_axis(width, tile_size, overlap_px, WINDOWS[window], regular=clip)
    writer = _BlendingWriter(out, n_outputs, rows, cols)
    n_tiles = len(rows.starts) * len(cols.starts)
    # Row-major order is what the writer needs; a generator keeps no list of all tiles.
    tiles = itertools.product(range(len(rows.starts)), range(len(cols.starts)))
    two_dimensional = len(image.shape) == 2

    def span(r: int, c: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        return rows.read_span(r, halo, clip), cols.read_span(c, halo, clip)

    def read_size(r: int, c: int) -> tuple[int, int]:
        (y0, y1, _), (x0, x1, _) = span(r, c)
        return y1 - y0, x1 - x0

    done = 0
    while chunk := list(itertools.islice(tiles, batch_size)):
        # Tiles of one read size share a predictor call (all of them unless clipped at the edge).
        for size, group in itertools.groupby(chunk, key=lambda tile: read_size(*tile)):
            group = list(group)
            batch = np.empty((len(group), n_channels) + size, dtype=np.float32)
            for slot, (r, c) in enumerate(group):
                (y0, y1, _), (x0, x1, _) = span(r, c)
                batch[slot] = _read_region(image, two_dimensional, (y0, y1), (x0, x1), height, width)
            predictions = _predict_batch(predictor, batch, n_outputs, bool(tta))
            del batch
            for slot, (r, c) in enumerate(group):
                (_, _, dy), (_, _, dx) = span(r, c)
                writer.add(r, c, predictions[slot, :, dy : dy + rows.extent(r), dx : dx + cols.extent(c)])
            del predictions
        done += len(chunk)
        if progress is not None:
            progress(done / n_tiles, f"predicted {done}/{n_tiles} tiles")
    return out


def predict_tiled_zarr(
    source: str | os.PathLike | Any,
    out_path: str | os.PathLike,
    predictor: Predictor,
    n_outputs: int,
    *,
    tile_size: int = 256,
    overlap: float | int = 0.25,
    overwrite: bool = False,
    **options: Any,
) -> Any:
    """Predict a zarr image into a new zarr array on disk, tile by tile.

    Parameters
    ----------
    source : path or array-like
        A path to a zarr array (CYX or YX) or an array-like as for
        `predict_tiled`.
    out_path : path
        Where to create the float32 output zarr array (n_outputs, Y, X),
        chunked by the tile step so each finished block fills one chunk.
    predictor, n_outputs, tile_size, overlap
        As for `predict_tiled`.
    overwrite : bool, optional
        Replace an existing array at ``out_path``; otherwise it is an error.
    **options
        Further keyword arguments of `predict_tiled` (halo, batch_size,
        window, tta, edge, progress).

    Returns
    -------
    zarr.Array
        The written output array.

    Raises
    ------
    TilingError
        When ``source`` cannot be opened, ``out_path`` exists and
        ``overwrite`` is False, or for any error of `predict_tiled`.
    """
    import zarr

    if isinstance(source, (str, os.PathLike)):
        try:
            image = zarr.open_array(store=str(source), mode="r")
        except (FileNotFoundError, ValueError, TypeError, KeyError) as error:
            raise TilingError(
                f"`source` {str(source)!r} is not a readable zarr array ({error}); "
                "pass the path of an array (not a group) or an array itself."
            ) from error
    else:
        image = source
    _, height, width = _image_shape(image)
    n_outputs = _positive_int(n_outputs, "n_outputs")
    tile_size = _positive_int(tile_size, "tile_size")
    overlap_px = _overlap_pixels(overlap, tile_size)
    regular = options.get("edge") == "clip"
    row_starts = _tile_starts(height, tile_size, overlap_px, regular=regular)
    col_starts = _tile_starts(width, tile_size, overlap_px, regular=regular)
    # Chunks of one step: every finished block but the last row/column fills one chunk.
    row_step = row_starts[1] if len(row_starts) > 1 else height
    col_step = col_starts[1] if len(col_starts) > 1 else width
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise TilingError(f"`out_path` {str(out_path)!r} already exists; pass overwrite=True to replace it.")
    out = zarr.create_array(
        store=str(out_path),
        shape=(n_outputs, height, width),
        chunks=(n_outputs, row_step, col_step),
        dtype="float32",
        fill_value=0.0,
        overwrite=overwrite,
    )
    return predict_tiled(
        image, predictor, n_outputs, tile_size=tile_size, overlap=overlap, out=out, **options
    )

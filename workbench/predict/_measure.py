"""Per-object measurements of a label image, and writing them to CSV or Parquet.

One row per object: size, position, shape, intensity per channel and how
crowded its neighbourhood is (mean distance to the nearest centroids). Shape
and intensity come from `skimage.measure.regionprops_table` (vectorised);
neighbours from a k-d tree.

Example
-------
>>> import numpy as np
>>> labels = np.zeros((10, 10), np.int32)
>>> labels[1:4, 1:4], labels[6:9, 5:9] = 1, 2
>>> table = measure_objects(labels, pixel_size=(0.5, 0.5), n_neighbours=1)
>>> table[["label", "area_px", "area_um2", "neighbour_distance_px"]].round(2).to_dict("list")
{'label': [1, 2], 'area_px': [9, 12], 'area_um2': [2.25, 3.0], 'neighbour_distance_px': [6.73, 6.73]}
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from skimage.measure import regionprops_table

from workbench.errors import WorkbenchError
from workbench.store import atomic_write
from workbench.validate import whole_number

__all__ = ["MeasureError", "measure_objects", "write_table"]


class MeasureError(WorkbenchError, ValueError):
    """Labels, intensities or an output path that measuring cannot use."""


# regionprops name -> column name, in table order.
_SHAPE_COLUMNS = {
    "label": "label",
    "area": "area_px",
    "centroid-0": "centroid_y",
    "centroid-1": "centroid_x",
    "bbox-0": "bbox_y0",
    "bbox-1": "bbox_x0",
    "bbox-2": "bbox_y1",
    "bbox-3": "bbox_x1",
    "perimeter": "perimeter_px",
    "eccentricity": "eccentricity",
    "solidity": "solidity",
    "axis_major_length": "major_axis_length_px",
    "axis_minor_length": "minor_axis_length_px",
    "orientation": "orientation",
}
_SHAPE_PROPERTIES = ("label", "area", "centroid", "bbox", "perimeter", "eccentricity", "solidity",
                     "axis_major_length", "axis_minor_length", "orientation")
_INTENSITY_STATISTICS = ("mean", "min", "max", "std")
_WRITERS = {
    ".csv": lambda table, path: table.to_csv(path, index=False),
    ".parquet": lambda table, path: table.to_parquet(path, index=False),
}


def _as_labels(labels: Any) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise MeasureError(
            f"`labels` must be a YX label image or a ZYX label volume, got shape {labels.shape}."
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise MeasureError(
            f"`labels` must hold integer object ids, got dtype {labels.dtype}; "
            "label a mask first (e.g. scipy.ndimage.label)."
        )
    if labels.size and labels.min() < 0:
        raise MeasureError("`labels` contains negative ids; objects are 1..N and 0 is background.")
    return labels.astype(np.int32, copy=False)


def _as_intensity(intensity: Any, labels_shape: tuple[int, ...]) -> tuple[np.ndarray | None, bool]:
    """Channel-last float intensity for regionprops, and whether the input had a channel axis."""
    if intensity is None:
        return None, False
    intensity = np.asarray(intensity)
    if len(labels_shape) == 3:
        if intensity.shape == labels_shape:
            return intensity.astype(np.float64, copy=False), False
        if intensity.ndim == 4 and intensity.shape[0] == labels_shape[0] and intensity.shape[2:] == labels_shape[1:]:
            return np.moveaxis(intensity, 1, -1).astype(np.float64), True
        raise MeasureError(
            f"`intensity` (shape {intensity.shape}) must be ZYX or ZCYX with the same Z, Y, X as `labels` "
            f"(shape {labels_shape})."
        )
    if intensity.ndim == 2 and intensity.shape == labels_shape:
        return intensity.astype(np.float64, copy=False), False
    if intensity.ndim == 3 and intensity.shape[1:] == labels_shape:
        return np.moveaxis(intensity, 0, -1).astype(np.float64), True
    raise MeasureError(
        f"`intensity` (shape {intensity.shape}) must be YX or CYX with the same Y, X as `labels` "
        f"(shape {labels_shape})."
    )


def _as_pixel_size(pixel_size: Any, ndim: int = 2) -> tuple[float, ...] | None:
    if pixel_size is None:
        return None
    if isinstance(pixel_size, numbers.Real):
        pixel_size = (pixel_size,) * ndim
    values = tuple(pixel_size)
    if len(values) != ndim or not all(isinstance(v, numbers.Real) and np.isfinite(v) and v > 0 for v in values):
        what = "(y, x)" if ndim == 2 else "a voxel size (z, y, x)"
        raise MeasureError(
            f"`pixel_size` must be {what} in micrometres, all positive, got {pixel_size!r}."
        )
    return tuple(float(v) for v in values)


def _mean_neighbour_distance(points: np.ndarray, n_neighbours: int) -> np.ndarray:
    """Mean distance from each point to its ``n_neighbours`` nearest others (NaN if too few)."""
    n_points = len(points)
    if n_neighbours < 1 or n_points <= n_neighbours:
        return np.full(n_points, np.nan)
    distances, indices = cKDTree(points).query(points, k=n_neighbours + 1)
    # Drop each point itself by index, not by position: coinciding centroids
    # (a ring around a disc) may list the other point first.
    distances = np.where(indices == np.arange(n_points)[:, None], np.inf, distances)
    return np.sort(distances, axis=1)[:, :n_neighbours].mean(axis=1)


def measure_objects(
    labels: Any,
    intensity: Any = None,
    *,
    pixel_size: float | tuple[float, float] | None = None,
    n_neighbours: int = 8,
) -> pd.DataFrame:
    """Measure every object of a label image, or of a label volume in 3-D.

    Parameters
    ----------
    labels : array-like of int, shape (Y, X) or (Z, Y, X)
        Object ids, 0 = background. A volume's objects are measured as volumes (see
        `workbench.predict._measure3d.measure_volume` for its columns: volume, surface area,
        sphericity, extents, centroid, intensity, neighbour distance in 3-D).
    intensity : array-like, shape (Y, X) or (C, Y, X); for a volume (Z, Y, X) or (Z, C, Y, X), optional
        Image to take intensity statistics from.
    pixel_size : float or (float, float) or (float, float, float), optional
        Pixel size (y, x), or for a volume voxel size (z, y, x), in micrometres; adds
        micrometre columns.
    n_neighbours : int, optional
        How many nearest centroids the neighbour distance averages over.

    Returns
    -------
    pandas.DataFrame
        One row per object, sorted by label. Columns: ``label``, ``area_px``,
        ``centroid_y``/``centroid_x`` (px), ``bbox_y0, bbox_x0, bbox_y1,
        bbox_x1`` (px, end exclusive), ``perimeter_px``, ``eccentricity``,
        ``solidity``, ``major_axis_length_px``, ``minor_axis_length_px``,
        ``orientation`` (radians, between the row axis and the major axis),
        ``neighbour_distance_px`` (mean distance to the ``n_neighbours``
        nearest centroids, NaN when fewer other objects exist); with
        ``intensity``: ``intensity_{mean,min,max,std,integrated}`` per channel,
        suffixed ``_ch{c}`` for CYX input; with ``pixel_size``: ``area_um2``,
        ``centroid_y_um``, ``centroid_x_um``, ``neighbour_distance_um`` and,
        for square pixels, ``perimeter_um`` and the axis lengths in µm.

    Raises
    ------
    MeasureError
        For labels that are not a 2-D or 3-D integer image, an intensity image of
        another size or a non-positive pixel size.
    """
    labels = _as_labels(labels)
    intensity, has_channels = _as_intensity(intensity, labels.shape)
    pixel_size = _as_pixel_size(pixel_size, labels.ndim)
    whole_number(n_neighbours, "n_neighbours", minimum=0, error=MeasureError)
    if labels.ndim == 3:
        from workbench.predict._measure3d import measure_volume

        return measure_volume(labels, intensity, voxel_size=pixel_size, n_neighbours=int(n_neighbours),
                              has_channels=has_channels)

    properties = _SHAPE_PROPERTIES
    if intensity is not None:
        properties += tuple(f"intensity_{name}" for name in _INTENSITY_STATISTICS)
    raw = regionprops_table(labels, intensity_image=intensity, properties=properties)
    table = pd.DataFrame({column: raw[name] for name, column in _SHAPE_COLUMNS.items()})
    table["area_px"] = table["area_px"].astype(np.int64)

    if intensity is not None:
        n_channels = intensity.shape[-1] if has_channels else 1
        for channel in range(n_channels):
            suffix = f"_ch{channel}" if has_channels else ""
            for name in _INTENSITY_STATISTICS:
                key = f"intensity_{name}-{channel}" if has_channels else f"intensity_{name}"
                table[f"intensity_{name}{suffix}"] = raw[key]
            table[f"intensity_integrated{suffix}"] = table[f"intensity_mean{suffix}"] * table["area_px"]

    centroids = table[["centroid_y", "centroid_x"]].to_numpy()
    table["neighbour_distance_px"] = _mean_neighbour_distance(centroids, int(n_neighbours))
    if pixel_size is not None:
        size_y, size_x = pixel_size
        table["area_um2"] = table["area_px"] * size_y * size_x
        table["centroid_y_um"] = table["centroid_y"] * size_y
        table["centroid_x_um"] = table["centroid_x"] * size_x
        table["neighbour_distance_um"] = _mean_neighbour_distance(
            centroids * np.array([size_y, size_x]), int(n_neighbours)
        )
        if size_y == size_x:
            for column in ("perimeter", "major_axis_length", "minor_axis_length"):
                table[f"{column}_um"] = table[f"{column}_px"] * size_y
    return table


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table to ``.csv`` or ``.parquet`` (chosen by the extension), atomically.

    The table goes to a temporary file beside ``path`` first and replaces it
    in one step, so a reader never sees half a file.

    Parameters
    ----------
    table : pandas.DataFrame
        The table to write (its index is not written).
    path : path
        Destination ending in ``.csv`` or ``.parquet``; its folder must exist.

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    MeasureError
        For another extension or a missing folder.
    """
    path = Path(path)
    writer = _WRITERS.get(path.suffix.lower())
    if writer is None:
        raise MeasureError(
            f"cannot write a table to {str(path)!r}: extension {path.suffix or '(none)'!r} is unknown; "
            f"use one of {sorted(_WRITERS)}."
        )
    if not path.parent.is_dir():
        raise MeasureError(f"folder {str(path.parent)!r} for the table does not exist; create it first.")
    with atomic_write(path) as temporary:
        writer(table, temporary)
    return path

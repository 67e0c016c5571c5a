"""Writing results as OME-Zarr (NGFF 0.4) with ome-zarr-py, so napari and other NGFF readers open them.

One container per image:

* the root is the image as a multiscale pyramid (axes ``c, y, x`` or ``y, x``,
  micrometre scales when the pixel size is known);
* ``labels/<name>`` holds each label image (instances, classes) as a
  multiscale pyramid downsampled by nearest neighbour, with ``image-label``
  metadata whose colours come from the project's classes;
* ``probabilities`` is a multiscale image of the class probabilities
  (``c, y, x`` float32), one channel per output class, named in its
  ``omero`` channel list.

Every level is a dask array written chunk by chunk (dask's scheduler, or a
`dask.distributed` client when one is active), so memory stays flat whatever
the image size. The caller writes into a temporary sibling and renames it when
complete (see `workbench.batch`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from workbench.colors import hex_to_rgb

__all__ = ["LabelLayer", "pyramid_factors", "write_ome_zarr"]

# The smallest pyramid level is at most this many pixels along its longer side.
SMALLEST_LEVEL = 512


@dataclass
class LabelLayer:
    """One label image of an OME-Zarr container.

    data : array-like (dask, zarr or numpy), spatial shape of the image
    colors : label value -> ``#rrggbb`` (``image-label`` colours); value 0 is transparent
    properties : label value -> extra properties (a class name...)
    """

    data: Any
    colors: dict[int, str] = field(default_factory=dict)
    properties: dict[int, dict] = field(default_factory=dict)


def pyramid_factors(spatial_shape: Sequence[int], smallest: int = SMALLEST_LEVEL) -> list[int]:
    """Downsampling factors 2, 4, ... until the longer side fits in ``smallest`` pixels."""
    factors, factor = [], 2
    while max(spatial_shape) / (factor // 2) > smallest:
        factors.append(factor)
        factor *= 2
    return factors


def _dask(array: Any, chunks: tuple[int, ...]):
    import dask.array as da

    if isinstance(array, da.Array):
        return array.rechunk(chunks)
    return da.from_array(array, chunks=chunks)


def write_ome_zarr(
    path: str | os.PathLike,
    image: Any,
    *,
    image_axes: str,
    labels: dict[str, LabelLayer] | None = None,
    probabilities: Any = None,
    probability_names: Sequence[str] | None = None,
    pixel_size: tuple[float, float] | None = None,
    chunk: int = 1024,
    name: str | None = None,
) -> Path:
    """Write an image, its label images and probabilities as one OME-Zarr (NGFF 0.4) container.

    Parameters
    ----------
    path : path
        The container folder to create (it must not exist).
    image : array-like
        ``YX`` or ``CYX`` (see ``image_axes``), dask, zarr or numpy.
    image_axes : {"yx", "cyx"}
    labels : dict of str to LabelLayer, optional
        Label images of the image's spatial shape, by name.
    probabilities : array-like, shape (K, Y, X), optional
    probability_names : sequence of str, optional
        One name per probability channel.
    pixel_size : (float, float), optional
        Micrometres per pixel (y, x).
    chunk : int, optional
        Chunk edge in pixels of every level.
    name : str, optional
        The image name in the metadata.

    Returns
    -------
    pathlib.Path
    """
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image, write_labels

    path = Path(path)
    fmt = FormatV04()
    image_axes = image_axes.lower()
    spatial = tuple(int(s) for s in image.shape[-2:])
    factors = pyramid_factors(spatial)
    units = {"y": "micrometer", "x": "micrometer"} if pixel_size else None
    scale = {"y": float(pixel_size[0]), "x": float(pixel_size[1])} if pixel_size else None
    spatial_chunks = tuple(min(chunk, s) for s in spatial)
    root = zarr.open_group(str(path), mode="w-", zarr_format=fmt.zarr_format)

    image_chunks = ((image.shape[0],) if image_axes == "cyx" else ()) + spatial_chunks
    write_image(_dask(image, image_chunks), root, scale_factors=factors, fmt=fmt, axes=image_axes,
                storage_options={"chunks": image_chunks}, scale=scale, axes_units=units, name=name or path.stem)

    for label_name, layer in (labels or {}).items():
        colors = [{"label-value": 0, "rgba": [0, 0, 0, 0]}] + [
            {"label-value": int(value), "rgba": [*hex_to_rgb(color), 255]} for value, color in sorted(layer.colors.items())]
        properties = [{"label-value": int(value), **props} for value, props in sorted(layer.properties.items())]
        # scaler=None: ome-zarr-py's default Scaler would override `scale_factors` with its own levels.
        write_labels(_dask(layer.data, spatial_chunks), root, name=label_name, scaler=None,
                     scale_factors=factors, fmt=fmt,
                     axes="yx", storage_options={"chunks": spatial_chunks}, scale=scale, axes_units=units,
                     label_metadata={"colors": colors, "source": {"image": "../../"}, **({"properties": properties} if properties else {})})

    if probabilities is not None:
        group = root.create_group("probabilities")
        prob_chunks = (int(probabilities.shape[0]),) + spatial_chunks
        channel_names = list(probability_names or [f"class {i}" for i in range(probabilities.shape[0])])
        write_image(_dask(probabilities, prob_chunks), group, scale_factors=factors, fmt=fmt, axes="cyx",
                    method=None, storage_options={"chunks": prob_chunks}, scale=scale, axes_units=units,
                    name="probabilities")
        group.attrs["omero"] = {"channels": [{"label": n, "window": {"start": 0.0, "end": 1.0, "min": 0.0,
                                                                     "max": 1.0}, "active": True}
                                             for n in channel_names]}
    return path


def read_ome_zarr_levels(path: str | os.PathLike) -> list[np.ndarray]:
    """The image levels of an OME-Zarr container as ome-zarr-py's reader sees them (for checks)."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    location = parse_url(str(path))
    nodes = list(Reader(location)())
    return [np.asarray(level) for level in nodes[0].data]

"""Writing results as OME-Zarr (NGFF 0.4) with ome-zarr-py, so napari and other NGFF readers open them.

One container per image, a 2-D image or a z-stack:

* the root is the image as a multiscale pyramid (axes ``y, x``, ``c, y, x``,
  ``z, y, x`` or ``c, z, y, x``; micrometre scales when the pixel or voxel
  size is known);
* ``labels/<name>`` holds each label image (instances, classes) as a
  multiscale pyramid downsampled by nearest neighbour, with ``image-label``
  metadata whose colours come from the project's classes;
* ``probabilities`` is a multiscale image of the class probabilities
  (``c, y, x`` or ``c, z, y, x`` float32), one channel per output class, named
  in its ``omero`` channel list.

Levels halve y and x only: a z-stack keeps all its planes at every level.

Every level is a dask array written chunk by chunk (dask's scheduler, or a
`dask.distributed` client when one is active), so memory stays flat whatever
the image size. The caller writes into a temporary sibling and renames it when
complete (`workbench.batch`, and `workbench.store.atomic_output` for single outputs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from workbench.colors import hex_to_rgb
from workbench.conventions import image_stem

__all__ = ["LabelLayer", "pyramid_factors", "write_ome_zarr"]

# The smallest pyramid level is at most this many pixels along its longer side.
SMALLEST_LEVEL = 512

# Image axes the writer takes (NGFF order: channels before the spatial axes); the labels and
# probabilities of an image have its spatial axes.
IMAGE_AXES = ("yx", "cyx", "zyx", "czyx")


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


def _spatial_scale(spatial_axes: str, pixel_size, voxel_size) -> dict[str, float] | None:
    """Micrometres per pixel along each spatial axis, or None when the size is unknown."""
    if pixel_size is not None and voxel_size is not None:
        raise ValueError("give pixel_size (y, x) for a 2-D image or voxel_size (z, y, x) for a z-stack, not both")
    volume = "z" in spatial_axes
    given, sizes = ("voxel_size", voxel_size) if voxel_size is not None else ("pixel_size", pixel_size)
    if not sizes:
        return None
    if len(sizes) != len(spatial_axes) or (given == "voxel_size") != volume:
        expected = "voxel_size (z, y, x)" if volume else "pixel_size (y, x)"
        raise ValueError(f"a {'z-stack' if volume else '2-D image'} (axes {spatial_axes}) takes {expected} in "
                         f"micrometres, got {given}={tuple(sizes)!r}")
    return {axis: float(size) for axis, size in zip(spatial_axes, sizes)}


def _scale_factors(spatial_shape: Sequence[int]) -> list[dict[str, int]]:
    """ome-zarr-py's scale factors of each level below the first: y and x only.

    z is never downsampled: z-stacks are thin (tens of planes) and anisotropic (planes several
    pixels apart), so halving z would drop planes that hold whole objects and make the voxels
    flatter still. A fresh list per call: ome-zarr-py rewrites the one it is given.
    """
    return [{"y": factor, "x": factor} for factor in pyramid_factors(spatial_shape[-2:])]


def write_ome_zarr(
    path: str | os.PathLike,
    image: Any,
    *,
    image_axes: str,
    labels: dict[str, LabelLayer] | None = None,
    probabilities: Any = None,
    probability_names: Sequence[str] | None = None,
    pixel_size: tuple[float, float] | None = None,
    voxel_size: tuple[float, float, float] | None = None,
    chunk: int = 1024,
    name: str | None = None,
) -> Path:
    """Write an image, its label images and probabilities as one OME-Zarr (NGFF 0.4) container.

    Parameters
    ----------
    path : path
        The container folder to create (it must not exist).
    image : array-like
        ``YX``, ``CYX``, ``ZYX`` or ``CZYX`` (see ``image_axes``), dask, zarr or numpy.
    image_axes : {"yx", "cyx", "zyx", "czyx"}
        NGFF axis order: the channels, when there are any, come first.
    labels : dict of str to LabelLayer, optional
        Label images of the image's spatial shape (``YX`` or ``ZYX``), by name.
    probabilities : array-like, shape (K, Y, X) or (K, Z, Y, X), optional
    probability_names : sequence of str, optional
        One name per probability channel.
    pixel_size : (float, float), optional
        Micrometres per pixel (y, x) of a 2-D image.
    voxel_size : (float, float, float), optional
        Micrometres per voxel (z, y, x) of a z-stack.
    chunk : int, optional
        Chunk edge in pixels of every level along y and x (a z-stack's chunks are one plane deep).
    name : str, optional
        The image name in the metadata (default: the folder name without ``.ome.zarr``).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        For other axes, a pixel or voxel size that does not fit them, or label images or
        probabilities of another spatial shape than the image's.

    Examples
    --------
    A z-stack with its instances and its voxel size:

    >>> import tempfile, zarr
    >>> stack = np.zeros((4, 64, 64), np.uint16)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_ome_zarr(Path(folder) / "stack.ome.zarr", stack, image_axes="zyx",
    ...                           voxel_size=(2.0, 0.5, 0.5),
    ...                           labels={"instances": LabelLayer(np.ones((4, 64, 64), np.int32))})
    ...     zarr.open_group(str(path)).attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    [{'type': 'scale', 'scale': [2.0, 0.5, 0.5]}]
    """
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image, write_labels

    path = Path(path)
    fmt = FormatV04()
    image_axes = image_axes.lower()
    if image_axes not in IMAGE_AXES or image.ndim != len(image_axes):
        raise ValueError(f"image_axes must be one of {', '.join(IMAGE_AXES)} with one letter per axis of the "
                         f"image (shape {tuple(image.shape)}), got {image_axes!r}")
    spatial_axes = image_axes.removeprefix("c")
    spatial = tuple(int(s) for s in image.shape[-len(spatial_axes):])
    scale = _spatial_scale(spatial_axes, pixel_size, voxel_size)
    units = dict.fromkeys(spatial_axes, "micrometer") if scale else None
    for label_name, layer in (labels or {}).items():
        if tuple(layer.data.shape) != spatial:
            raise ValueError(f"label image {label_name!r} (shape {tuple(layer.data.shape)}) must have the image's "
                             f"{spatial_axes.upper()} shape {spatial}")
    if probabilities is not None and tuple(probabilities.shape[1:]) != spatial:
        raise ValueError(f"probabilities (shape {tuple(probabilities.shape)}) must be (K, "
                         f"{', '.join(map(str, spatial))}): one channel per class of the image's shape")
    # A z-stack is chunked plane by plane: viewers show it, and the workbench writes it, a plane at a time.
    spatial_chunks = (1,) * (len(spatial) - 2) + tuple(min(chunk, s) for s in spatial[-2:])
    root = zarr.open_group(str(path), mode="w-", zarr_format=fmt.zarr_format)

    image_chunks = ((image.shape[0],) if image_axes.startswith("c") else ()) + spatial_chunks
    write_image(_dask(image, image_chunks), root, scale_factors=_scale_factors(spatial), fmt=fmt, axes=image_axes,
                storage_options={"chunks": image_chunks}, scale=scale, axes_units=units, name=name or image_stem(path))

    for label_name, layer in (labels or {}).items():
        colors = [{"label-value": 0, "rgba": [0, 0, 0, 0]}] + [
            {"label-value": int(value), "rgba": [*hex_to_rgb(color), 255]} for value, color in sorted(layer.colors.items())]
        properties = [{"label-value": int(value), **props} for value, props in sorted(layer.properties.items())]
        # scaler=None: ome-zarr-py's default Scaler would override `scale_factors` with its own levels.
        write_labels(_dask(layer.data, spatial_chunks), root, name=label_name, scaler=None,
                     scale_factors=_scale_factors(spatial), fmt=fmt,
                     axes=spatial_axes, storage_options={"chunks": spatial_chunks}, scale=scale, axes_units=units,
                     label_metadata={"colors": colors, "source": {"image": "../../"}, **({"properties": properties} if properties else {})})

    if probabilities is not None:
        group = root.create_group("probabilities")
        prob_chunks = (int(probabilities.shape[0]),) + spatial_chunks
        channel_names = list(probability_names or [f"class {i}" for i in range(probabilities.shape[0])])
        write_image(_dask(probabilities, prob_chunks), group, scale_factors=_scale_factors(spatial), fmt=fmt,
                    axes="c" + spatial_axes, method=None, storage_options={"chunks": prob_chunks}, scale=scale,
                    axes_units=units, name="probabilities")
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

"""The conventions every part of the engine shares, each written down once.

Label layer values follow APEER and ilastik: 0 = not annotated, 1 = background, 2.. = classes
(value = class index + 1). In instance mode a model predicts three classes, `INSTANCE_CLASSES`,
whose names are the ones `workbench.predict` reads (interior and boundary probabilities feed the
seeded watershed); a U-Net adds one output after them, `DISTANCE_OUTPUT`, whose peaks seed the
watershed instead. Training targets use `IGNORE` where nothing was painted.

This module imports nothing from the engine, so every layer may import it.

Examples
--------
>>> from workbench.conventions import INSTANCE_CLASSES, MODES, check_mode
>>> INSTANCE_CLASSES
('background', 'interior', 'boundary')
>>> check_mode("instance")
'instance'
>>> is_image_path("cells.ome.tif"), image_stem("cells.ome.tif")
(True, 'cells')
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "MODES", "METHODS", "UNLABELLED", "BACKGROUND", "OBJECT", "IGNORE", "INSTANCE_CLASSES", "DISTANCE_OUTPUT",
    "MIN_OBJECT_FRACTION", "MIN_OBJECT_PIXELS",
    "TIFF_SUFFIXES", "PLAIN_IMAGE_SUFFIXES", "IMAGE_SUFFIXES", "OME_ZARR_SUFFIX", "OUTPUT_SUFFIXES",
    "check_mode", "check_method", "is_image_path", "is_ome_zarr_path", "image_stem", "probability_names",
]

MODES = ("semantic", "instance")
"""What a project finds: one class per pixel, or separate objects."""

METHODS = ("unet", "forest")
"""How a model is trained: a U-Net (`workbench.deep`) or a Random Forest (`workbench.classic`)."""

UNLABELLED = 0
BACKGROUND = 1
OBJECT = 2
"""The painted value of the first class; in instance mode, of every object."""

IGNORE = -1
"""Training-target value of pixels that nobody labelled (and of pixels augmentation moved in)."""

INSTANCE_CLASSES = ("background", "interior", "boundary")
"""Output classes of a model in instance mode; the boundary class is derived, never painted."""

DISTANCE_OUTPUT = "distance"
"""The output an instance-mode U-Net predicts after `INSTANCE_CLASSES` (a sigmoid, not a class):
each object pixel's distance to its object's edge as a share of that object's largest, 0 outside
objects. Derived from painted whole objects, never painted."""

MIN_OBJECT_FRACTION = 0.1
"""The automatic minimum object size: objects below this share of the median painted object's area
are specks, not objects (post-processing and the held-out objects a model is scored on alike)."""

MIN_OBJECT_PIXELS = 16
"""The automatic minimum object size is never below this many pixels (voxels in 3-D)."""

TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg", ".npy", ".zarr")
"""Files a folder of images is read for (the app's folder inputs)."""

OME_ZARR_SUFFIX = ".ome.zarr"
"""An output of this name is an OME-Zarr container: the image, its labels and probabilities."""

OUTPUT_SUFFIXES = (".tif", ".tiff", ".zarr", OME_ZARR_SUFFIX, ".png")
"""Files a label image or a probability map may be written to (an `OME_ZARR_SUFFIX` name gets a
container that holds the image with them)."""

_COMPOUND_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr")


def check_mode(mode: str) -> str:
    """`mode` if it is one of `MODES`, else a `WorkbenchError` that lists them."""
    if mode not in MODES:
        from workbench.errors import WorkbenchError

        raise WorkbenchError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def check_method(method: str) -> str:
    """`method` if it is one of `METHODS`, else a `WorkbenchError` that lists them."""
    if method not in METHODS:
        from workbench.errors import WorkbenchError

        raise WorkbenchError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return method


def probability_names(mode: str, class_names, n_channels: int) -> list[str]:
    """Names of the channels of a probability map: the output classes (`INSTANCE_CLASSES` in instance
    mode, else the project's classes), then `DISTANCE_OUTPUT` when there is one channel more.

    >>> probability_names("instance", ["background", "nucleus"], 4)
    ['background', 'interior', 'boundary', 'distance']
    """
    names = list(INSTANCE_CLASSES) if mode == "instance" else list(class_names)
    return names + [DISTANCE_OUTPUT] if n_channels == len(names) + 1 else names


def is_image_path(path) -> bool:
    """Whether a file or folder name ends in one of `IMAGE_SUFFIXES` (case-insensitive)."""
    return Path(path).name.lower().endswith(IMAGE_SUFFIXES)


def is_ome_zarr_path(path) -> bool:
    """Whether an output name asks for an OME-Zarr container (``NAME.ome.zarr``, case-insensitive).

    >>> is_ome_zarr_path("cells.ome.zarr"), is_ome_zarr_path("cells.zarr")
    (True, False)
    """
    return Path(path).name.lower().endswith(OME_ZARR_SUFFIX)


def image_stem(path) -> str:
    """The name of an image file without its (possibly compound, ``.ome.tif``) suffix."""
    name = Path(path).name
    for suffix in _COMPOUND_SUFFIXES + IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem

"""Label images as ImageJ hyperstack TIFFs: calibrated, with a label colour table.

ImageJ and Fiji open these with the pixel size in micrometres (Image > Properties), the z
spacing of a stack, and a glasbey-like lookup table so neighbouring objects differ in colour;
`0` stays black. ImageJ holds 8-bit, 16-bit and 32-bit float images only: ids up to 65 535
are stored as uint16, more as float32 (exact up to 16 777 216 objects).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.store import atomic_write

__all__ = ["write_imagej_labels", "label_lut"]

_FLOAT_EXACT = 2**24


def label_lut(seed: int = 7) -> np.ndarray:
    """A (3, 256) uint8 lookup table: black for 0, bright, well separated colours for the rest."""
    rng = np.random.default_rng(seed)
    hues = (np.arange(255) * 0.618033988749895) % 1.0
    saturation = rng.uniform(0.6, 1.0, 255)
    value = rng.uniform(0.75, 1.0, 255)
    from matplotlib.colors import hsv_to_rgb

    rgb = (hsv_to_rgb(np.stack([hues, saturation, value], axis=-1)) * 255).astype(np.uint8)
    return np.concatenate([np.zeros((1, 3), np.uint8), rgb], axis=0).T.copy()


def write_imagej_labels(path: str | os.PathLike, labels: Any, *, pixel_size: tuple[float, float] | None = None,
                        z_spacing: float | None = None) -> Path:
    """Write a 2-D (YX) or 3-D (ZYX) label image as an ImageJ TIFF (atomically).

    Parameters
    ----------
    path : path-like
        ``.tif`` file.
    labels : array-like of int
        Object ids (0 = background) or a class map.
    pixel_size : (float, float), optional
        (y, x) in micrometres.
    z_spacing : float, optional
        Distance between z-planes in micrometres.

    Returns
    -------
    Path

    Raises
    ------
    WorkbenchError
        For non-integer, negative or too many labels, or a path that is not ``.tif``.
    """
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise WorkbenchError(f"ImageJ label images are TIFF files; got {path}: name it {path.stem}.tif")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub" or labels.ndim not in (2, 3):
        raise WorkbenchError(
            f"labels must be a 2-D or 3-D integer image; got shape {labels.shape}, type {labels.dtype}"
        )
    top = int(labels.max()) if labels.size else 0
    if labels.size and int(labels.min()) < 0:
        raise WorkbenchError("labels must not be negative for ImageJ")
    if top >= _FLOAT_EXACT:
        raise WorkbenchError(f"{top} labels is more than ImageJ's float images hold exactly ({_FLOAT_EXACT - 1})")
    data = labels.astype(np.uint16 if top <= np.iinfo(np.uint16).max else np.float32)
    metadata: dict[str, Any] = {"axes": "ZYX" if data.ndim == 3 else "YX", "LUTs": [label_lut()],
                                "min": 0.0, "max": float(max(top, 1))}
    resolution = None
    if pixel_size is not None:
        size_y, size_x = (float(v) for v in pixel_size)
        if not (size_y > 0 and size_x > 0):
            raise WorkbenchError(f"pixel size must be positive micrometres; got {pixel_size}")
        resolution = (1.0 / size_x, 1.0 / size_y)
        metadata["unit"] = "um"
    if z_spacing is not None and data.ndim == 3:
        metadata["spacing"] = float(z_spacing)
    with atomic_write(path) as tmp:
        tifffile.imwrite(tmp, data, imagej=True, resolution=resolution, metadata=metadata, compression="zlib")
    return path

"""Microscope vendors' formats, read lazily: ZEISS .czi (pylibCZIrw), Nikon .nd2 (nd2), Leica .lif (liffile).

Each reader returns what `workbench.store.open_image` needs: an array-like that reads only the
requested region, its axis letters, the pixel size in micrometres and the channel names the
file records. Readers are imported only when such a file is opened.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError

__all__ = ["VENDOR_SUFFIXES", "VendorImage", "open_vendor"]

VENDOR_SUFFIXES = (".czi", ".nd2", ".lif")


@dataclass
class VendorImage:
    """A vendor file opened lazily."""

    raw: Any
    axes: str
    pixel_size: tuple[float, float] | None
    channel_names: tuple[str, ...] | None
    keep_open: list = field(default_factory=list)


class CziArray:
    """A CZI scene as a lazy ``(Z, C, Y, X)`` array: slicing reads only the planes and region asked for.

    Parameters
    ----------
    reader : pylibCZIrw.czi.CziReader
        An open reader (kept open as long as the array is used).
    """

    def __init__(self, reader):
        box = reader.total_bounding_box
        for axis in ("T", "H", "I", "R", "B", "V"):
            start, end = box.get(axis, (0, 1))
            if end - start > 1:
                what = "time points" if axis == "T" else f"'{axis}' positions"
                raise WorkbenchError(
                    f"this CZI file holds {end - start} {what}; the workbench segments single time points and "
                    "positions: export each one as its own file from ZEN"
                )
        self.reader = reader
        self.rect = reader.total_bounding_rectangle
        self.z0, z1 = box.get("Z", (0, 1))
        self.c0, c1 = box.get("C", (0, 1))
        pixel_types = set(reader.pixel_types.values())
        if any(p.startswith("Bgr") for p in pixel_types):
            raise WorkbenchError("this CZI file holds RGB (brightfield colour) pixels; save it as TIFF from ZEN first")
        types = {"Gray8": np.uint8, "Gray16": np.uint16, "Gray32Float": np.float32}
        self.pixel_type = sorted(pixel_types)[-1] if pixel_types else "Gray16"
        self.dtype = np.dtype(types.get(self.pixel_type, np.float32))
        self.shape = (z1 - self.z0, c1 - self.c0, int(self.rect.h), int(self.rect.w))
        self.ndim = 4

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (4 - len(key))
        picks = []
        for index, size in zip(key, self.shape):
            if isinstance(index, (int, np.integer)):
                picks.append(([int(index) % size], True))
            elif isinstance(index, slice):
                picks.append((list(range(*index.indices(size))), False))
            else:
                raise TypeError(f"CZI arrays take integers and slices; got {index!r}")
        (zs, z_int), (cs, c_int), (ys, y_int), (xs, x_int) = picks
        y0, x0 = (ys[0] if ys else 0), (xs[0] if xs else 0)
        height, width = len(ys), len(xs)
        out = np.zeros((len(zs), len(cs), height, width), dtype=self.dtype)
        if height and width:
            roi = (self.rect.x + x0, self.rect.y + y0, xs[-1] - x0 + 1, ys[-1] - y0 + 1)
            for i, z in enumerate(zs):
                for j, c in enumerate(cs):
                    plane = self.reader.read(roi=roi, plane={"Z": self.z0 + z, "C": self.c0 + c, "T": 0},
                                             pixel_type=self.pixel_type)
                    step_y = ys[1] - ys[0] if len(ys) > 1 else 1
                    step_x = xs[1] - xs[0] if len(xs) > 1 else 1
                    out[i, j] = plane[..., 0][::step_y, ::step_x]
        index = tuple(0 if is_int else slice(None) for _, is_int in picks)
        return out[index]

    def __array__(self, dtype=None, copy=None):
        data = self[...]
        return data.astype(dtype) if dtype is not None else data


def _czi_metadata(xml_text: str) -> tuple[tuple[float, float] | None, tuple[str, ...] | None]:
    """Pixel size (µm, from metres) and channel names from a CZI's XML metadata."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return None, None
    distances = {}
    for distance in root.iter("Distance"):
        value = distance.find("Value")
        if distance.get("Id") in ("X", "Y") and value is not None and value.text:
            distances[distance.get("Id")] = float(value.text) * 1e6
    pixel_size = (distances.get("Y", distances["X"]), distances["X"]) if "X" in distances else None
    names = []
    for channels in root.iter("Channels"):
        found = [c.get("Name") or c.get("Id") for c in channels.findall("Channel")]
        if found and all(found):
            names = found
            break
    return pixel_size, tuple(names) or None


def _open_czi(path: Path) -> VendorImage:
    from pylibCZIrw import czi as pyczi

    try:
        reader = pyczi.CziReader(str(path))
    except Exception as exc:  # libCZI raises plain RuntimeErrors for damaged files
        raise unreadable(path, "ZEISS .czi") from exc
    array = CziArray(reader)
    pixel_size, names = _czi_metadata(reader.raw_metadata)
    if names is not None and len(names) != array.shape[1]:
        names = None
    return VendorImage(array, "ZCYX", pixel_size, names, [reader])


def _open_nd2(path: Path) -> VendorImage:
    import nd2

    try:
        handle = nd2.ND2File(str(path))
    except Exception as exc:  # nd2 raises several types for damaged files
        raise unreadable(path, "Nikon .nd2") from exc
    axes = "".join(handle.sizes)
    array = handle.to_dask()
    voxel = handle.voxel_size()
    pixel_size = (float(voxel.y), float(voxel.x)) if voxel.x and voxel.y else None
    try:
        names = tuple(channel.channel.name for channel in handle.metadata.channels or [])
    except AttributeError:
        names = ()
    return VendorImage(array, axes, pixel_size, names or None, [handle])


def _open_lif(path: Path) -> VendorImage:
    import liffile

    try:
        handle = liffile.LifFile(str(path))
        image = handle.images[0]
        array = image.asarray(out="memmap")  # uncompressed in the file: mapped, not read
    except Exception as exc:  # liffile raises several types for damaged files
        raise unreadable(path, "Leica .lif") from exc
    axes = "".join(image.dims)
    pixel_size = None
    coords = image.coords
    if "X" in coords and "Y" in coords and len(coords["X"]) > 1 and len(coords["Y"]) > 1:
        # liffile gives coordinates in metres.
        pixel_size = (float(coords["Y"][1] - coords["Y"][0]) * 1e6, float(coords["X"][1] - coords["X"][0]) * 1e6)
    return VendorImage(array, axes, pixel_size, None, [handle])


_OPENERS = {".czi": _open_czi, ".nd2": _open_nd2, ".lif": _open_lif}


def open_vendor(path: str | Path) -> VendorImage:
    """Open a .czi, .nd2 or .lif file lazily.

    Raises
    ------
    WorkbenchError
        For damaged files, several time points or positions, or an unknown suffix.
    """
    path = Path(path)
    opener = _OPENERS.get(path.suffix.lower())
    if opener is None:
        raise WorkbenchError(f"{path} is not a vendor file; known: {', '.join(VENDOR_SUFFIXES)}")
    return opener(path)


def unreadable(path, kind: str) -> WorkbenchError:
    """The error for a file that does not read as an image of `kind` ("TIFF", ".czi"...), in plain words.

    The reader's own words (e.g. "not a TIFF file: header=b'this'") stay on the error's cause, for a
    log, not in the message.
    """
    return WorkbenchError(
        f"{Path(path).name} is not an image the workbench can read (it is not a complete {kind} file); check "
        "that it was copied or uploaded completely, or save the image again from the program that made it"
    )

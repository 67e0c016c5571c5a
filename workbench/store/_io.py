"""Reading microscope images lazily, in one canonical axis order, and writing results atomically.

Every image the engine handles has one of four axis orders: ``YX``, ``CYX``, ``ZYX`` or
``ZCYX``. Readers translate whatever a file says (tifffile's ``SYX``, ``TZCYX``, OME-Zarr axis
names, or nothing at all for PNG and ``.npy``) into one of those, through `ImageSource`, whose
``__getitem__`` reads only the requested region from disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from workbench.conventions import OUTPUT_SUFFIXES, PLAIN_IMAGE_SUFFIXES, TIFF_SUFFIXES
from workbench.errors import WorkbenchError
from workbench.store._vendor import VENDOR_SUFFIXES, open_vendor, unreadable

CANONICAL_AXES = ("YX", "CYX", "ZYX", "ZCYX")
# Non-spatial axes of at most this length without a name are taken as channels, longer ones as z.
MAX_GUESSED_CHANNELS = 4
# How ImageJ and OME spell micrometres; OME units other than µm are converted.
_MICRON_UNITS = ("micron", "microns", "um", "µm", "\u00B5m", "\\u00B5m")
_UNIT_TO_MICRON = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}

__all__ = [
    "CANONICAL_AXES",
    "ImageSource",
    "PlaneView",
    "open_image",
    "as_image_source",
    "write_image",
    "atomic_write",
    "write_json_atomic",
    "to_jsonable",
    "iter_blocks",
    "atomic_output",
    "swap_into_place",
]


@dataclass
class ImageSource:
    """A lazily read image in canonical axis order.

    Parameters
    ----------
    raw : array-like
        The array as stored (numpy memmap, zarr array, tifffile zarr store...).
    raw_axes : str
        One letter per axis of `raw` (``Y``, ``X``, ``C``, ``Z`` or ``1`` for a singleton to drop).
    name : str
        A short name for the image (the file stem).
    pixel_size : tuple of float or None
        Size of a pixel in micrometres, ``(y, x)``, when the file says.
    z_spacing : float or None
        Distance between z-planes in micrometres, when the file says.
    channel_names : tuple of str or None
        Channel names, when the file records them (vendor formats).
    """

    raw: Any
    raw_axes: str
    name: str = "image"
    pixel_size: tuple[float, float] | None = None
    source: str | None = None
    z_spacing: float | None = None
    channel_names: tuple[str, ...] | None = None
    _keep_open: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        kept = "".join(a for a in self.raw_axes if a != "1")
        self.axes = "".join(a for a in "ZCYX" if a in kept)
        if self.axes not in CANONICAL_AXES:
            raise WorkbenchError(
                f"image {self.name!r}: axes {self.raw_axes!r} give {self.axes!r}, but only "
                f"{', '.join(CANONICAL_AXES)} are supported; pass axes= to say what each axis is"
            )
        self._order = [kept.index(a) for a in self.axes]
        self.shape = tuple(int(self.raw.shape[self.raw_axes.index(a)]) for a in self.axes)
        self.dtype = np.dtype(self.raw.dtype)
        self.ndim = len(self.shape)

    @property
    def spatial_shape(self) -> tuple[int, int]:
        return self.shape[-2:]

    @property
    def n_channels(self) -> int:
        return self.shape[self.axes.index("C")] if "C" in self.axes else 1

    @property
    def n_slices(self) -> int:
        return self.shape[0] if "Z" in self.axes else 1

    def __getitem__(self, key) -> np.ndarray:
        """Read a region given in canonical axis order (basic slicing only)."""
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        by_axis = dict(zip(self.axes, key))
        raw_key = tuple(0 if a == "1" else by_axis[a] for a in self.raw_axes)
        try:
            block = np.asarray(self.raw[raw_key])
        except WorkbenchError:
            raise
        except MemoryError as exc:
            raise WorkbenchError(
                f"reading {_region(key)} of image {self.name!r} needs more memory than is free; "
                "work on smaller regions (tiles) of it"
            ) from exc
        except Exception as exc:  # every reader and codec fails differently on a damaged file
            raise WorkbenchError(
                f"cannot read {_region(key)} of image {self.name!r}"
                + (f" ({self.source})" if self.source else "")
                + f": {type(exc).__name__}: {exc}; the file is truncated or damaged: export it again"
            ) from exc
        # Axes indexed with an integer vanish; order the survivors canonically.
        surviving = [a for a in self.raw_axes if a != "1" and not isinstance(by_axis[a], (int, np.integer))]
        wanted = [a for a in self.axes if a in surviving]
        return np.transpose(block, [surviving.index(a) for a in wanted])

    def __array__(self, dtype=None, copy=None):
        data = self[...]
        return data.astype(dtype) if dtype is not None else data

    def plane(self, z: int = 0) -> "PlaneView":
        """One z-plane as a lazy ``CYX`` view (channels first, even for a single channel)."""
        if not 0 <= int(z) < self.n_slices:
            raise WorkbenchError(f"image {self.name!r} has {self.n_slices} z-slices; slice {z} does not exist")
        return PlaneView(self, z)


class PlaneView:
    """One z-plane of an `ImageSource` as a lazy ``CYX`` array: only sliced regions are read."""

    def __init__(self, source: "ImageSource", z: int = 0):
        self.source = source
        self.z = int(z)
        self.shape = (source.n_channels, *source.spatial_shape)
        self.dtype = source.dtype
        self.ndim = 3

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        c, y, x = key
        lead = (self.z,) if "Z" in self.source.axes else ()
        if "C" in self.source.axes:
            return self.source[lead + (c, y, x)]
        block = self.source[lead + (y, x)]
        return block[None][c] if not isinstance(c, (int, np.integer)) else block

    def __array__(self, dtype=None, copy=None):
        data = self[:, :, :]
        return data.astype(dtype) if dtype is not None else data


def _region(key: tuple) -> str:
    parts = []
    for k in key:
        if isinstance(k, slice):
            parts.append(f"{'' if k.start is None else k.start}:{'' if k.stop is None else k.stop}")
        else:
            parts.append(str(k))
    return f"region [{', '.join(parts)}]"


def _guess_axes(shape: Sequence[int]) -> str:
    """Axis letters for an array whose file does not say, by the usual conventions."""
    ndim = len(shape)
    if ndim == 2:
        return "YX"
    if ndim == 3:
        if shape[-1] <= MAX_GUESSED_CHANNELS and shape[0] > MAX_GUESSED_CHANNELS:
            return "YXC"
        return "CYX" if shape[0] <= MAX_GUESSED_CHANNELS else "ZYX"
    if ndim == 4:
        if shape[-1] <= MAX_GUESSED_CHANNELS and shape[1] > MAX_GUESSED_CHANNELS:
            return "ZYXC"
        if shape[1] <= MAX_GUESSED_CHANNELS * 2:
            return "ZCYX"
        if shape[0] <= MAX_GUESSED_CHANNELS * 2:
            return "CZYX"
    raise WorkbenchError(
        f"cannot tell the axes of a {ndim}-D array of shape {tuple(shape)}; supported are 2-D (YX), "
        "3-D (CYX, YXC or ZYX) and 4-D (ZCYX) images: pass axes= (for example axes='TCYX' "
        "with a single time point), or save one time point / position per file"
    )


def _normalise_axes(axes: str, shape: Sequence[int], name: str) -> str:
    """Map file axis letters onto Y, X, C, Z and '1' (singleton to drop)."""
    axes = axes.upper()
    if len(axes) != len(shape):
        raise WorkbenchError(
            f"image {name!r}: axes {axes!r} has {len(axes)} letters but the array has "
            f"{len(shape)} dimensions {tuple(shape)}"
        )
    letters = []
    for letter, size in zip(axes, shape):
        if letter == "S":  # tifffile: samples (RGB) are channels
            letter = "C"
        if letter in "YXCZ":
            letters.append(letter)
        elif size == 1:
            letters.append("1")
        else:
            letters.append("?")
    unknown = [i for i, a in enumerate(letters) if a == "?"]
    for i in unknown:
        size = shape[i]
        if axes[i] == "T":
            raise WorkbenchError(
                f"image {name!r} is a time series ({size} time points, axes {axes!r}); the workbench "
                "segments single time points: save each time point as its own file"
            )
        if "C" not in letters and size <= MAX_GUESSED_CHANNELS:
            letters[i] = "C"
        elif "Z" not in letters:
            letters[i] = "Z"
        elif "C" not in letters:
            letters[i] = "C"
        else:
            raise WorkbenchError(
                f"image {name!r} has axes {axes!r} of shape {tuple(shape)}: more than z, channels, "
                "y and x (5-D or more) is not supported; save one time point / position per file"
            )
    for a in "YXCZ":
        if letters.count(a) > 1:
            raise WorkbenchError(f"image {name!r}: axis {a} appears twice in {axes!r}")
    if "Y" not in letters or "X" not in letters:
        raise WorkbenchError(f"image {name!r}: axes {axes!r} need both a Y and an X axis")
    return "".join(letters)


def _check_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.kind not in "biuf":
        raise WorkbenchError(
            f"image {name!r} has pixel type {dtype}; expected integers or floats (uint8, uint16, "
            "float32...): convert the image before adding it"
        )


def _open_tiff(path: Path, stack: contextlib.ExitStack):
    import tifffile
    import zarr

    try:
        tif = stack.enter_context(tifffile.TiffFile(path))
        series = tif.series[0]
        axes = series.axes
        pixel_size = _tiff_pixel_size(tif)
        z_spacing = _tiff_z_spacing(tif)
        store = series.aszarr()
        raw = zarr.open(store, mode="r")
        if not hasattr(raw, "shape"):  # a pyramid: level 0 is the full resolution
            raw = raw["0"]
        return raw, axes, pixel_size, z_spacing, [tif, store]
    except (tifffile.TiffFileError, ValueError, KeyError, IndexError, OSError) as exc:
        raise unreadable(path, "TIFF") from exc


def _tiff_pixel_size(tif) -> tuple[float, float] | None:
    try:
        if tif.is_ome:
            import xml.etree.ElementTree as ET

            root = ET.fromstring(tif.ome_metadata)
            for el in root.iter():
                if el.tag.endswith("Pixels") and "PhysicalSizeX" in el.attrib:
                    x = float(el.attrib["PhysicalSizeX"])
                    y = float(el.attrib.get("PhysicalSizeY", x))
                    return (y, x)
        if tif.is_imagej and tif.imagej_metadata and tif.imagej_metadata.get("unit") in _MICRON_UNITS:
            page = tif.pages[0]
            x_res = page.tags.get("XResolution")
            y_res = page.tags.get("YResolution")
            if x_res and y_res:
                xn, xd = x_res.value
                yn, yd = y_res.value
                if xn and yn:
                    return (yd / yn, xd / xn)
    except Exception:  # metadata is a nicety; a malformed tag must not stop the image loading
        return None
    return None


def _tiff_z_spacing(tif) -> float | None:
    """The z-plane distance in µm from OME (PhysicalSizeZ) or ImageJ (``spacing``) metadata."""
    try:
        if tif.is_ome:
            import xml.etree.ElementTree as ET

            root = ET.fromstring(tif.ome_metadata)
            for el in root.iter():
                if el.tag.endswith("Pixels") and "PhysicalSizeZ" in el.attrib:
                    unit = el.attrib.get("PhysicalSizeZUnit", "µm")
                    return float(el.attrib["PhysicalSizeZ"]) * _UNIT_TO_MICRON.get(unit, 1.0)
        metadata = tif.imagej_metadata if tif.is_imagej else None
        if metadata and metadata.get("spacing") and metadata.get("unit") in _MICRON_UNITS:
            return float(metadata["spacing"])
    except Exception:  # metadata is a nicety; a malformed tag must not stop the image loading
        return None
    return None


def _open_zarr(path: Path):
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise unreadable(path, "Zarr") from exc
    if hasattr(node, "shape"):
        return node, None, None, None
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        arrays = [name for name, _ in node.arrays()]
        if len(arrays) == 1:
            return node[arrays[0]], None, None, None
        raise WorkbenchError(
            f"Zarr group {path} is not OME-Zarr (no 'multiscales' metadata) and holds "
            f"{len(arrays)} arrays; point to the array itself, e.g. {path}/<array>"
        )
    ms = multiscales[0]
    level0 = ms["datasets"][0]
    raw = node[level0["path"]]
    axes = None
    if "axes" in ms:
        names = [a["name"] if isinstance(a, dict) else a for a in ms["axes"]]
        axes = "".join(n[0].upper() for n in names)
    pixel_size = z_spacing = None
    for transform in level0.get("coordinateTransformations", []):
        if transform.get("type") == "scale" and len(transform.get("scale", [])) >= 2:
            scale = transform["scale"]
            pixel_size = (float(scale[-2]), float(scale[-1]))
            if axes and "Z" in axes and len(scale) == len(axes):
                z_spacing = float(scale[axes.index("Z")])
    return raw, axes, pixel_size, z_spacing


def open_image(path: str | os.PathLike, *, axes: str | None = None) -> ImageSource:
    """Open an image file lazily, in canonical axis order.

    Parameters
    ----------
    path : path-like
        TIFF / OME-TIFF, PNG / JPEG, Zarr / OME-Zarr (a folder), ``.npy``, or a vendor file
        (ZEISS ``.czi``, Nikon ``.nd2``, Leica ``.lif``; see `workbench.store._vendor`).
    axes : str, optional
        Axis letters of the stored array (for example ``"ZCYX"`` or ``"YXC"``) when the file
        does not say or says wrongly.

    Returns
    -------
    ImageSource

    Raises
    ------
    WorkbenchError
        When the file is missing, unreadable, of an unsupported type or shape.

    Examples
    --------
    >>> from workbench.datasets import sample_image_path
    >>> src = open_image(sample_image_path())
    >>> src.axes, src.shape
    ('YX', (512, 512))
    """
    path = Path(path)
    if not path.exists():
        raise WorkbenchError(f"image file {path} does not exist")
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", *TIFF_SUFFIXES, ".zarr", ".npy", *PLAIN_IMAGE_SUFFIXES,
                   *VENDOR_SUFFIXES):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    lower = path.name.lower()
    keep_open: list = []
    pixel_size = z_spacing = None
    file_axes = None
    channel_names = None
    if lower.endswith(TIFF_SUFFIXES):
        stack = contextlib.ExitStack()
        raw, file_axes, pixel_size, z_spacing, keep_open = _open_tiff(path, stack)
        keep_open.append(stack)
    elif lower.endswith(VENDOR_SUFFIXES):
        vendor = open_vendor(path)
        raw, file_axes, pixel_size, channel_names = vendor.raw, vendor.axes, vendor.pixel_size, vendor.channel_names
        keep_open = vendor.keep_open
    elif path.is_dir() or lower.endswith(".zarr"):
        raw, file_axes, pixel_size, z_spacing = _open_zarr(path)
    elif lower.endswith(".npy"):
        try:
            raw = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise unreadable(path, "NumPy .npy") from exc
    elif lower.endswith(PLAIN_IMAGE_SUFFIXES):
        import imageio.v3 as iio

        try:
            raw = np.asarray(iio.imread(path))
        except Exception as exc:
            raise unreadable(path, path.suffix.lstrip(".").upper() or "image") from exc
        if raw.ndim == 3 and raw.shape[-1] == 4:
            raw = raw[..., :3]  # alpha carries no signal
        file_axes = "YXC" if raw.ndim == 3 else "YX"
    else:
        raise WorkbenchError(
            f"unsupported image type {path.suffix!r} for {path}; use TIFF/OME-TIFF, PNG/JPEG, "
            "Zarr/OME-Zarr, .npy, or ZEISS .czi / Nikon .nd2 / Leica .lif"
        )
    return as_image_source(raw, axes=axes or file_axes, name=name, pixel_size=pixel_size, z_spacing=z_spacing,
                           source=str(path), _keep_open=keep_open, channel_names=channel_names)


def as_image_source(array, *, axes: str | None = None, name: str = "image", pixel_size=None,
                    source: str | None = None, z_spacing: float | None = None, _keep_open=None,
                    channel_names=None) -> ImageSource:
    """Wrap an in-memory or zarr array as an `ImageSource`, checking its type and axes."""
    if isinstance(array, ImageSource):
        return array
    if not hasattr(array, "shape") or not hasattr(array, "dtype"):
        array = np.asarray(array)
    dtype = np.dtype(array.dtype)
    _check_dtype(dtype, name)
    if dtype.kind == "b":
        array = np.asarray(array).astype(np.uint8)
    shape = tuple(array.shape)
    if len(shape) < 2:
        raise WorkbenchError(f"image {name!r} has shape {shape}; an image needs at least 2 dimensions (y, x)")
    if min(shape) < 1:
        raise WorkbenchError(f"image {name!r} has shape {shape}: an axis of size 0 holds no pixels; "
                             "check the export, it wrote an empty image")
    if axes is None:
        squeezed = [s for s in shape if s != 1]
        guessed = _guess_axes(squeezed if len(squeezed) >= 2 else shape[-2:])
        if len(squeezed) != len(shape):
            it = iter(guessed)
            axes = "".join("1" if s == 1 and len(squeezed) >= 2 else next(it) for s in shape)
        else:
            axes = guessed
    raw_axes = _normalise_axes(axes, shape, name)
    return ImageSource(array, raw_axes, name=name, pixel_size=pixel_size, source=source, z_spacing=z_spacing,
                       channel_names=tuple(channel_names) if channel_names else None,
                       _keep_open=list(_keep_open or []))


def iter_blocks(shape: Sequence[int], block: int = 1024) -> Iterator[tuple[slice, slice]]:
    """Yield (y, x) slices covering a 2-D extent in blocks of at most ``block`` pixels a side."""
    height, width = shape[-2:]
    for y in range(0, height, block):
        for x in range(0, width, block):
            yield slice(y, min(y + block, height)), slice(x, min(x + block, width))


def _owner() -> str:
    from workbench.store._lock import OWNER

    return OWNER


def _temporary_sibling(path: Path, kind: str = "tmp") -> Path:
    """``.<name>.workbench-<owner>.<kind>`` beside `path`: hidden, same folder (renames are atomic), and
    named so that the next start can tell it is a leftover and whose."""
    return path.with_name(f".{path.name}.workbench-{_owner()}.{kind}")


_LEFTOVER = re.compile(r"^\.(?P<target>.+)\.workbench-(?P<owner>(?P<host>[^-]+)-(?P<pid>\d+)-[0-9a-f]{8})\.(?P<kind>tmp|old)(\..*)?$")
_registry_guard = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _settle_leftover(leftover: Path, match: re.Match) -> None:
    """Undo what a dead writer left: an unfinished temporary goes, a set-aside old output comes back."""
    target = leftover.with_name(match["target"])
    if match["kind"] == "old" and not target.exists() and not target.is_symlink():
        os.rename(leftover, target)  # killed between moving the old output aside and the new one in
        return
    if leftover.is_dir() and not leftover.is_symlink():
        shutil.rmtree(leftover, ignore_errors=True)
    else:
        leftover.unlink(missing_ok=True)


def clean_leftovers_beside(path: str | os.PathLike) -> None:
    """Remove temporaries that ended processes of this host left beside `path` (or restore its old output)."""
    path = Path(path)
    try:
        candidates = list(path.parent.glob(f".{glob_escape(path.name)}.workbench-*"))
    except OSError:
        return
    host = _owner().split("-")[0]
    for leftover in candidates:
        match = _LEFTOVER.match(leftover.name)
        if match and match["target"] == path.name and match["host"] == host and match["owner"] != _owner() \
                and not _pid_alive(int(match["pid"])):
            _settle_leftover(leftover, match)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?[])", r"[\1]", name)


def recover_outside_temporaries(registry: Path, owner: str) -> None:
    """Settle the temporaries outside a project that a (now ended) owner listed in `registry`.

    Only names of the workbench's own temporary pattern with that owner are touched, so a
    hand-edited list cannot make this delete anything else.
    """
    try:
        listed = json.loads(Path(registry).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for item in listed if isinstance(listed, list) else []:
        if not isinstance(item, str):
            continue
        leftover = Path(item)
        match = _LEFTOVER.match(leftover.name)
        if match and match["owner"] == owner and (leftover.exists() or leftover.is_symlink()):
            _settle_leftover(leftover, match)


def _register_outside(registry: Path | None, *paths: Path) -> None:
    if registry is None:
        return
    with _registry_guard:
        try:
            listed = json.loads(registry.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            listed = []
        listed = [p for p in listed if isinstance(p, str)] + [str(Path(p).absolute()) for p in paths]
        write_json_atomic(registry, sorted(set(listed)))


def swap_into_place(new: Path, target: Path) -> None:
    """Move a complete `new` file or folder to `target`; an existing `target` is kept until then.

    Two renames when `target` exists (a folder cannot be renamed over a non-empty one): the
    old output is set aside, the new one moved in, the old one deleted. A kill between the two
    renames leaves the old output set aside, and `clean_leftovers_beside` puts it back.
    """
    new, target = Path(new), Path(target)
    if not target.exists() and not target.is_symlink():
        os.rename(new, target)
        return
    if new.is_file() and target.is_file():
        os.replace(new, target)
        return
    aside = _temporary_sibling(target, "old")
    os.rename(target, aside)
    os.rename(new, target)
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, registry: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a file or a folder (Zarr); it replaces `path` when
    the block ends without error.

    Until then an existing `path` stays as it was: readers see the old output or the new one,
    never part of one. Temporaries left by killed processes beside `path` are settled first.

    Parameters
    ----------
    registry : Path, optional
        A project's list of outside temporaries: the next command on that project settles
        them even when nothing writes to this folder again.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkbenchError(f"cannot create the folder {path.parent} for {path.name}: {exc.strerror}; "
                             "choose a folder you can write to") from exc
    if not os.access(path.parent, os.W_OK):
        raise WorkbenchError(f"cannot write into {path.parent} (permission denied); choose a folder you can write to")
    if path.is_dir() and not path.name.lower().endswith(".zarr"):
        raise WorkbenchError(f"{path} is a folder; give a file name for the output")
    clean_leftovers_beside(path)
    tmp_path = _temporary_sibling(path, "tmp")
    _register_outside(registry, tmp_path, _temporary_sibling(path, "old"))
    try:
        yield tmp_path
        if tmp_path.is_file():
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        swap_into_place(tmp_path, path)
    finally:
        if tmp_path.is_dir() and not tmp_path.is_symlink():
            shutil.rmtree(tmp_path, ignore_errors=True)
        else:
            tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success it replaces `path` in one step.

    The writer creates the temporary file itself (so it gets the usual permissions, unlike
    mkstemp's 0600) under a unique name in the same folder (so ``os.replace`` is atomic). A
    crash or an exception inside the block leaves the previous file untouched; a kill leaves a
    hidden ``.<name>.workbench-<owner>.tmp`` that the next write beside it removes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}.workbench-{_owner()}.tmp{path.suffix}")
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON so that readers see either the old or the new file, never half of one."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(data), indent=2) + "\n", encoding="utf-8")


def to_jsonable(value: Any) -> Any:
    """Plain JSON values for dicts, lists, numpy scalars and arrays, and paths."""
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def _imagej_dtype(data: np.ndarray) -> np.ndarray | None:
    """ImageJ stores 8/16-bit integers and 32-bit floats: labels go to uint16 when they fit."""
    if data.dtype in (np.uint8, np.uint16, np.float32):
        return data
    if data.dtype.kind in "iub" and (data.size == 0 or (data.min() >= 0 and data.max() <= 65535)):
        return data.astype(np.uint16)
    if data.dtype.kind in "iu" and data.size and data.min() >= 0 and data.max() < 2**24:
        return data.astype(np.float32)  # ids up to 16.7 M are exact in float32
    return None


def _write_tiff(tmp: Path, data: np.ndarray, axes: str | None, voxel_size) -> None:
    import tifffile

    resolution, metadata, imagej = None, ({"axes": axes} if axes else None), False
    ij_data = _imagej_dtype(data) if axes and "Z" in axes and set(axes) <= set("ZCYX") else None
    if ij_data is not None:
        # A z-stack as an ImageJ hyperstack (Fiji opens it with its slices, channels and voxel size).
        data, imagej = ij_data, True
        metadata = {"axes": axes}
    if voxel_size is not None:
        z, y, x = (float(v) for v in voxel_size)
        resolution = (1.0 / x, 1.0 / y)
        metadata = dict(metadata or {}, unit="um")
        if imagej and "Z" in (axes or ""):
            metadata["spacing"] = z
    tifffile.imwrite(tmp, data, compression=None if imagej else "zlib", photometric="minisblack",
                     metadata=metadata, imagej=imagej, resolution=resolution,
                     bigtiff=data.nbytes > 2**31 and not imagej)


def check_output_path(path: str | os.PathLike, *, dtype=None) -> Path:
    """Check an output name before any work is done: a known type that can hold `dtype`.

    Raises
    ------
    WorkbenchError
        For JPEG (lossy: it would change label values), unknown suffixes, and PNG for values
        over 16 bits (instance ids).
    """
    path = Path(path)
    lower = path.name.lower()
    if lower.endswith((".jpg", ".jpeg")):
        raise WorkbenchError(f"output {path}: JPEG is lossy and would change label values; use .tif, .png or .zarr")
    if not lower.endswith(OUTPUT_SUFFIXES):
        raise WorkbenchError(f"output {path} must end in .tif, .tiff, .zarr, .png or .ome.zarr (a container of "
                             "the image with its labels and probabilities)")
    if lower.endswith(".png") and dtype is not None and np.dtype(dtype).itemsize > 2:
        raise WorkbenchError(
            f"output {path}: PNG holds at most 16 bits per pixel but these values are {np.dtype(dtype)} "
            "(instance ids); use .tif or .zarr"
        )
    if path.exists() and path.is_dir() and not lower.endswith(".zarr"):
        raise WorkbenchError(f"output {path} is a folder; give a file name")
    return path


def write_image(path: str | os.PathLike, array, *, axes: str | None = None, block: int = 2048,
                voxel_size=None, registry: Path | None = None) -> Path:
    """Write an array (numpy or zarr) as TIFF, PNG or Zarr, chosen by the file extension.

    Every format is written into a temporary sibling and renamed into place when complete, so
    a crash or a kill leaves the previous output whole (or no output), never part of a new one.
    Zarr output is written block by block (never the whole array in memory). A z-stack
    (axes ``ZYX`` or ``ZCYX``) goes to TIFF as an ImageJ hyperstack (label ids as 16-bit when
    they fit, else 32-bit float); `voxel_size` (z, y, x) in µm is recorded as its resolution
    and z spacing (TIFF) or as the array's ``voxel_size`` attribute (Zarr).
    """
    path = check_output_path(path, dtype=array.dtype)
    lower = path.name.lower()
    if lower.endswith(".zarr"):
        import zarr

        shape = tuple(array.shape)
        chunks = tuple(min(s, 1024) if i >= len(shape) - 2 else 1 for i, s in enumerate(shape))
        with atomic_output(path, registry=registry) as tmp:
            out = zarr.open_array(str(tmp), mode="w", shape=shape, dtype=array.dtype, chunks=chunks)
            if axes:
                out.attrs["axes"] = axes
            if voxel_size is not None:
                out.attrs["voxel_size"] = [float(v) for v in voxel_size]
            lead_shape = shape[:-2]
            for lead in np.ndindex(*lead_shape) if lead_shape else [()]:
                for ys, xs in iter_blocks(shape, block):
                    out[lead + (ys, xs)] = np.asarray(array[lead + (ys, xs)])
        return path
    data = np.asarray(array)
    if lower.endswith(TIFF_SUFFIXES):
        with atomic_output(path, registry=registry) as tmp:
            _write_tiff(tmp, data, axes, voxel_size)
        return path
    import imageio.v3 as iio

    with atomic_output(path, registry=registry) as tmp:
        iio.imwrite(tmp, data, extension=path.suffix)
    return path

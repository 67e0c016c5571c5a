"""The project manifest (project.json) as typed records, and the one validator that reads it.

`parse_manifest` turns the JSON into a `Manifest` or raises a `ManifestError` whose message
names the field, what it holds, what is expected and how to fix it, for every way a
hand-edited or damaged file can be wrong. Names and paths from the manifest are checked to stay
inside the project, since a manifest can come from anyone (a shared or downloaded project).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np

from workbench.conventions import METHODS, MODES
from workbench.errors import WorkbenchError
from workbench.records import ModelRecord
from workbench.store._labels import AUTO_BOUNDARY_WIDTH

__all__ = ["SCHEMA_VERSION", "MODES", "METHODS", "ClassRecord", "ImageRecord", "Manifest", "ManifestError",
           "parse_manifest", "SAFE_NAME", "LABELS_ARRAY"]

SCHEMA_VERSION = 1
CANONICAL_AXES = ("YX", "CYX", "ZYX", "ZCYX")
# Image names become folder names in data.zarr: letters, digits, ".", "_", "-", not starting with ".".
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")
LABELS_ARRAY = re.compile(r"^labels(-[0-9a-f]{8,32})?$")
MODELS_FOLDER = "models"


class ManifestError(WorkbenchError):
    """project.json does not describe a valid project; the message says where and how to fix it."""


@dataclass
class ClassRecord:
    """A class of the project: its name and display colour (``#rrggbb``)."""

    name: str
    color: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImageRecord:
    """An image of the project, as added.

    Attributes
    ----------
    name : str
        Its folder name in ``data.zarr/images`` (checked: no path separators, no ``..``).
    labels : str
        The label array in that folder in use now; imports write a new one and switch here.
    """

    name: str
    axes: str
    shape: tuple[int, ...]
    dtype: str
    channels: int
    slices: int
    source: str | None = None
    pixel_size: tuple[float, float] | None = None
    added: str = ""
    labels: str = "labels"
    z_spacing: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        data["pixel_size"] = list(self.pixel_size) if self.pixel_size else None
        return data


@dataclass
class Manifest:
    """Everything project.json holds."""

    mode: str
    classes: list[ClassRecord]
    #: Pixels, or "auto": derived from the painted objects (new projects; see `Project.boundary_width`).
    boundary_width: int | str = 2
    name: str = ""
    created: str = ""
    images: list[ImageRecord] = field(default_factory=list)
    models: list[ModelRecord] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "created": self.created,
            "mode": self.mode,
            "classes": [c.to_dict() for c in self.classes],
            "boundary_width": self.boundary_width,
            "images": [i.to_dict() for i in self.images],
            "models": [m.to_dict() for m in self.models],
            "settings": self.settings,
        }

    def image(self, name: str) -> ImageRecord | None:
        return next((entry for entry in self.images if entry.name == name), None)


class _Reader:
    """Field access with the messages users read: where, what arrived, what is expected."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str, fix: str | None = None) -> ManifestError:
        return ManifestError(
            f"the project manifest {self.source} is damaged: {where} {problem}; "
            + (fix or "correct it by hand, or restore project.json from a backup")
        )

    def get(self, data: dict, key: str, where: str, check: Callable[[Any], Any], expected: str, *,
            default: Any = ..., fix: str | None = None) -> Any:
        if key not in data:
            if default is ...:
                raise self.fail(f"{where}{key!r}", f"is missing (expected {expected})", fix)
            return default() if callable(default) else default
        try:
            return check(data[key])
        except (TypeError, ValueError) as exc:
            raise self.fail(f"{where}{key!r}", f"is {_shown(data[key])} but must be {expected}", fix) from exc


def _shown(value: Any) -> str:
    text = repr(value)
    kind = "null" if value is None else {str: "text", bool: "true/false", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({kind})"


def _int(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError
        return value
    return check


def _boundary_width(value: Any) -> int | str:
    return value if value == AUTO_BOUNDARY_WIDTH else _int(1)(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError
        return value
    return check


def _dict(value: Any) -> dict:
    if not isinstance(value, dict):
        raise TypeError
    return value


def _list(value: Any) -> list:
    if not isinstance(value, list):
        raise TypeError
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _safe_name(value: Any) -> str:
    if not isinstance(value, str) or not SAFE_NAME.match(value) or value in (".", ".."):
        raise ValueError
    return value


def _optional_positive(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError
    return float(value)


def _labels_array(value: Any) -> str:
    if not isinstance(value, str) or not LABELS_ARRAY.match(value):
        raise ValueError
    return value


def _shape(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not 2 <= len(value) <= 4:
        raise ValueError
    return tuple(_int(1)(v) for v in value)


def _dtype(value: Any) -> str:
    if not isinstance(value, str) or np.dtype(value).kind not in "biuf":
        raise ValueError
    return value


def _pixel_size(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 for v in value):
        raise ValueError
    return (float(value[0]), float(value[1]))


def _model_path(value: Any) -> str:
    """A model folder under models/, given relative to the project: nothing that climbs out or is absolute."""
    if not isinstance(value, str) or not value or "\\" in value:
        raise ValueError
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or len(path.parts) != 2 or path.parts[0] != MODELS_FOLDER \
            or not SAFE_NAME.match(path.parts[1]):
        raise ValueError
    return value


def parse_manifest(data: Any, source: str = "project.json") -> Manifest:
    """Validate manifest JSON (after migrations) and return it typed.

    Raises
    ------
    ManifestError
        Naming the first wrong field, what it holds and what is expected.
    """
    read = _Reader(source)
    if not isinstance(data, dict):
        raise read.fail("the file", f"holds {_shown(data)} instead of an object with the project's fields")
    mode = read.get(data, "mode", "", _choice(MODES), "'semantic' or 'instance'")
    classes_raw = read.get(data, "classes", "", _list, "a list of at least two classes, background first")
    if len(classes_raw) < 2:
        raise read.fail("'classes'", f"holds {len(classes_raw)} class(es) but a project needs a background and "
                                     "at least one class")
    classes = []
    for index, entry in enumerate(classes_raw):
        where = f"classes[{index}] "
        if isinstance(entry, str):  # the short form: a name alone
            entry = {"name": entry, "color": "#808080"}
        if not isinstance(entry, dict):
            raise read.fail(f"classes[{index}]", f"is {_shown(entry)} but must be an object with a name and a colour")
        name = read.get(entry, "name", where, _text, "the class name (text)").strip()
        if not name:
            raise read.fail(f"{where}'name'", "is empty")
        color = read.get(entry, "color", where, _text, "a colour like '#e6194b'", default="#808080")
        classes.append(ClassRecord(name, color))
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise read.fail("'classes'", f"names a class twice ({names})")
    if mode == "instance" and len(classes) != 2:
        raise read.fail("'classes'", f"holds {len(classes)} classes but an instance project has exactly two "
                                     "(background and the object class)")
    images = []
    for index, entry in enumerate(read.get(data, "images", "", _list, "a list of images", default=list)):
        images.append(_image(read, entry, index))
    image_names = [i.name for i in images]
    if len(set(image_names)) != len(image_names):
        raise read.fail("'images'", "names an image twice")
    models = []
    for index, entry in enumerate(read.get(data, "models", "", _list, "a list of model records", default=list)):
        models.append(_model(read, entry, index))
    versions = [m.version for m in models]
    if len(set(versions)) != len(versions):
        raise read.fail("'models'", f"records a model version twice ({sorted(versions)})")
    return Manifest(
        schema_version=SCHEMA_VERSION,
        name=read.get(data, "name", "", _text, "text", default=""),
        created=read.get(data, "created", "", _text, "a date as text", default=""),
        mode=mode,
        classes=classes,
        boundary_width=read.get(data, "boundary_width", "", _boundary_width,
                                f'a whole number of pixels (at least 1) or "{AUTO_BOUNDARY_WIDTH}"', default=2),
        images=images,
        models=models,
        settings=read.get(data, "settings", "", _dict, "an object of settings", default=dict),
    )


def _image(read: _Reader, entry: Any, index: int) -> ImageRecord:
    where = f"images[{index}] "
    if not isinstance(entry, dict):
        raise read.fail(f"images[{index}]", f"is {_shown(entry)} but must be an object describing an image")
    axes = read.get(entry, "axes", where, _choice(CANONICAL_AXES), f"one of {', '.join(CANONICAL_AXES)}")
    shape = read.get(entry, "shape", where, _shape, "a list of 2 to 4 positive sizes")
    if len(shape) != len(axes):
        raise read.fail(f"{where}'shape'", f"{list(shape)} does not have one size per axis of {axes!r}")
    channels = shape[axes.index("C")] if "C" in axes else 1
    slices = shape[0] if "Z" in axes else 1
    return ImageRecord(
        name=read.get(entry, "name", where, _safe_name,
                      "a plain name (letters, digits, '.', '_', '-'; no '/' or '..')",
                      fix="rename it in project.json to the image's folder name under data.zarr/images"),
        axes=axes,
        shape=shape,
        dtype=read.get(entry, "dtype", where, _dtype, "an integer or float pixel type such as 'uint16'"),
        channels=read.get(entry, "channels", where, _int(1), "a whole number", default=channels),
        slices=read.get(entry, "slices", where, _int(1), "a whole number", default=slices),
        source=read.get(entry, "source", where, _optional_text, "the original file (text) or null", default=None),
        pixel_size=read.get(entry, "pixel_size", where, _pixel_size, "null or two positive numbers [y, x]",
                            default=None),
        added=read.get(entry, "added", where, _text, "a date as text", default=""),
        labels=read.get(entry, "labels", where, _labels_array, "'labels' or 'labels-<hex>'", default="labels"),
        z_spacing=read.get(entry, "z_spacing", where, _optional_positive, "null or a positive number of µm",
                           default=None),
    )


def _model(read: _Reader, entry: Any, index: int) -> ModelRecord:
    where = f"models[{index}] "
    if not isinstance(entry, dict):
        raise read.fail(f"models[{index}]", f"is {_shown(entry)} but must be an object describing a model")
    parent = read.get(entry, "parent", where, lambda v: None if v is None else _int(1)(v),
                      "null or an earlier version number", default=None)
    return ModelRecord(
        version=read.get(entry, "version", where, _int(1), "a whole number (1, 2, ...)"),
        method=read.get(entry, "method", where, _choice(METHODS), f"one of {', '.join(METHODS)}"),
        path=read.get(entry, "path", where, _model_path,
                      "the model folder inside the project, like 'models/v001-unet'",
                      fix="models are only loaded from the project's own models/ folder: correct the path or "
                          "remove the record"),
        created=read.get(entry, "created", where, _text, "a date as text", default=""),
        parent=parent,
        settings=read.get(entry, "settings", where, _dict, "an object", default=dict),
        labels=read.get(entry, "labels", where, _dict, "an object", default=dict),
        metrics=read.get(entry, "metrics", where, _dict, "an object", default=dict),
    )


def resolve_inside(root: Path, relative: str, what: str) -> Path:
    """`root / relative`, resolved, refused when it leads outside `root` (a symlink, ``..``)."""
    root = Path(root).resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise WorkbenchError(f"{what} {relative!r} leads outside the project ({target}); refusing to use it")
    return target

"""The project store: a folder with a JSON manifest and one Zarr store, on local disk.

Layout::

    my-project/
      project.json                  manifest: schema version, mode, classes, images, models
      data.zarr/images/<name>/
          image                     original dtype, axes YX / CYX / ZYX / ZCYX
          labels                    uint8/uint16, spatial shape (Y, X) or (Z, Y, X); 0 = not annotated
          predictions/probabilities float32 (K, Y, X) or (Z, K, Y, X)
          predictions/classes       uint8 class map
          predictions/instances     int32 object ids
      models/v001-unet/             one folder per model version (weights + card.json)

Nothing is lost, nothing is half written:

- every manifest change is a read-modify-write of project.json under the project's file lock
  (`workbench.store._lock`), never a rewrite of a copy cached in memory, so two writers (two
  commands, or the app and a command) both keep their changes;
- long jobs (training, predicting into the project, removing an image) hold the project's job
  slot: a second one is refused at once with who holds it and since when;
- an added image, an imported label layer and a prediction are written into this process's
  staging folder (``.workbench/tmp/``) and renamed into ``data.zarr`` when whole, switched in by
  one manifest update; a kill leaves the previous state, and the next start removes the staging
  folders of processes that ended;
- names and model paths from the manifest are checked to stay inside the project
  (`workbench.store._manifest`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import zarr

from workbench.store import _labels as _labels
from workbench.conventions import MODES
from workbench.errors import WorkbenchError
from workbench.records import ModelRecord
from workbench.validate import whole_number
from workbench.store._io import ImageSource, as_image_source, iter_blocks, open_image, write_json_atomic
from workbench.store._lock import clean_dead_tmp, job_slot, manifest_lock, owner_tmp
from workbench.store._manifest import (
    SAFE_NAME,
    SCHEMA_VERSION,
    ClassRecord,
    ImageRecord,
    Manifest,
    ManifestError,
    parse_manifest,
    resolve_inside,
)

MANIFEST = "project.json"
STORE = "data.zarr"
MODELS = "models"
CHUNK = 512  # pixels a side: a brush stroke touches few chunks, tiles read few
DEFAULT_COLORS = ["#808080", "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
                  "#f032e6", "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324"]
PREDICTION_KINDS = ("probabilities", "classes", "instances")

__all__ = ["Project", "SCHEMA_VERSION", "PREDICTION_KINDS"]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _safe_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._-")[:120]
    return safe if safe and SAFE_NAME.match(safe) else "image"


def _migrate_v0(manifest: dict) -> dict:
    """Schema 0 (before versioning) kept class names as plain strings and no boundary width."""
    manifest = dict(manifest)
    classes = manifest.get("classes", ["background", "foreground"])
    manifest["classes"] = [
        c if isinstance(c, dict) else {"name": c, "color": DEFAULT_COLORS[i % len(DEFAULT_COLORS)]}
        for i, c in enumerate(classes)
    ]
    manifest.setdefault("boundary_width", 2)
    manifest.setdefault("models", [])
    manifest.setdefault("settings", {})
    manifest["schema_version"] = 1
    return manifest


# Each entry upgrades a manifest from its key's version to the next.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {0: _migrate_v0}


def _read_manifest(path: Path) -> tuple[Manifest, bool]:
    """project.json of the project at `path`, migrated and validated; and whether it was migrated."""
    manifest_path = path / MANIFEST
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise _not_a_project(path) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"the project manifest {manifest_path} is damaged ({exc}); restore project.json from "
                            "a backup") from exc
    except OSError as exc:
        raise WorkbenchError(f"cannot read {manifest_path}: {exc.strerror}") from exc
    if not isinstance(data, dict):
        return parse_manifest(data, str(manifest_path)), False  # raises, naming what the file holds
    version = data.get("schema_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        hint = f"; set it to {int(version)}" if isinstance(version, str) and version.strip().isdigit() else ""
        raise ManifestError(
            f"the project manifest {manifest_path} is damaged: 'schema_version' is {version!r} but must be a whole "
            f"number from 0 to {SCHEMA_VERSION}{hint or '; correct it by hand, or restore project.json from a backup'}"
        )
    if version > SCHEMA_VERSION:
        raise WorkbenchError(
            f"{path} was written by a newer workbench (project schema {version}, this version reads up to "
            f"{SCHEMA_VERSION}); upgrade the workbench to open it"
        )
    migrated = version < SCHEMA_VERSION
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](data)
        version = data["schema_version"]
    return parse_manifest(data, str(manifest_path)), migrated


def _signature(path: Path) -> tuple | None:
    try:
        st = (path / MANIFEST).stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)



def _not_a_project(path) -> WorkbenchError:
    return WorkbenchError(
        f"{path} is not a workbench project (no {MANIFEST}); create one with `workbench new {path}`",
        in_app=f"{path} is not a workbench project (it has no {MANIFEST}); choose a project's folder, or create "
               "a new project")


def _remove_and_add_again(name: str, what: str) -> str:
    """The app's fix for an image whose stored parts are gone: what to click."""
    return (f"the {what} of image {name!r} are missing from the project; remove the image in step 1 "
            "(Project & images: Remove) and add it again")

class Project:
    """A segmentation project on local disk.

    Use `Project.create` for a new one and `Project.open` for an existing one. Reads see the
    manifest as it is on disk (re-read when another process changed it); every change is a
    locked read-modify-write.

    Examples
    --------
    >>> import tempfile
    >>> from workbench.datasets import sample_image_path
    >>> folder = tempfile.mkdtemp()
    >>> p = Project.create(f"{folder}/nuclei", mode="instance", classes=["background", "nucleus"])
    >>> p.add_image(sample_image_path())
    'nuclei'
    >>> Project.open(f"{folder}/nuclei").image_names
    ['nuclei']
    """

    def __init__(self, path: Path, manifest: Manifest):
        self.path = Path(path)
        self._manifest = manifest
        self._signature = _signature(self.path)
        self._lock = threading.RLock()
        self._areas_cache: dict[str, tuple[tuple, np.ndarray]] = {}
        if not (self.path / STORE).is_dir() and not manifest.images:
            zarr.open_group(str(self.path / STORE), mode="a").require_group("images")  # nothing to lose: start one
        if not (self.path / STORE).is_dir():
            raise WorkbenchError(
                f"the project {self.path} has lost its data store {STORE} (images and labels); restore the folder "
                f"from a backup, or create a new project and add the images again"
            )
        self._root = zarr.open_group(str(self.path / STORE), mode="a")

    # ------------------------------------------------------------------ creation and opening
    @classmethod
    def create(cls, path, *, mode: str = "semantic", classes: Iterable[str] = ("background", "foreground"),
               colors: Iterable[str] | None = None, boundary_width: int | str = _labels.AUTO_BOUNDARY_WIDTH,
               name: str | None = None) -> "Project":
        """Create a new, empty project folder.

        Parameters
        ----------
        path : path-like
            Folder to create (must not hold a project already, nor be a file).
        mode : {"semantic", "instance"}
            Semantic: one class per pixel. Instance: objects (class 2) separated into individual
            objects via an automatically derived boundary class.
        classes : list of str
            Class names; the first is the background. Instance mode takes exactly two.
        boundary_width : int or "auto"
            Width in pixels of the derived boundary (instance mode), or ``"auto"`` (the default):
            derived from the painted objects' size (see `Project.boundary_width`).
        """
        path = Path(path)
        if (path / MANIFEST).exists():
            raise WorkbenchError(f"{path} already holds a project; open it instead, or choose another folder")
        if path.exists() and not path.is_dir():
            raise WorkbenchError(f"{path} is a file, not a folder; choose a folder name for the project")
        if mode not in MODES:
            raise WorkbenchError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        classes = [str(c).strip() for c in classes]
        if len(classes) < 2 or any(not c for c in classes):
            raise WorkbenchError(f"a project needs a background and at least one class, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise WorkbenchError(f"class names must be different from each other, got {classes!r}")
        if mode == "instance" and len(classes) != 2:
            raise WorkbenchError(
                f"an instance project has a background and one object class, got {len(classes)} classes "
                f"{classes!r}; use semantic mode for several classes"
            )
        boundary_width = _boundary_width_setting(boundary_width)
        colors = list(colors) if colors else DEFAULT_COLORS
        manifest = Manifest(
            name=name or path.absolute().name,
            created=_now(),
            mode=mode,
            classes=[ClassRecord(c, colors[i % len(colors)]) for i, c in enumerate(classes)],
            boundary_width=boundary_width,
        )
        try:
            path.mkdir(parents=True, exist_ok=True)
            with manifest_lock(path):
                if (path / MANIFEST).exists():
                    raise WorkbenchError(f"{path} already holds a project; open it instead, or choose another folder")
                zarr.open_group(str(path / STORE), mode="a").require_group("images")
                (path / MODELS).mkdir(exist_ok=True)
                write_json_atomic(path / MANIFEST, manifest.to_dict())
        except (PermissionError, NotADirectoryError, FileExistsError) as exc:
            raise WorkbenchError(f"cannot create the project folder {path}: {exc.strerror or exc}; choose a folder "
                                 "you can write to") from exc
        except OSError as exc:
            raise WorkbenchError(f"cannot create the project folder {path}: {exc.strerror or exc}") from exc
        return cls(path, manifest)

    @classmethod
    def open(cls, path, *, clean: bool = True) -> "Project":
        """Open an existing project, migrating an older manifest.

        Also settles what killed writers left: staging folders of ended processes and label
        layers switched out but not yet deleted (with ``clean=True``, when the folder is writable).

        Raises
        ------
        WorkbenchError
            When the folder holds no project, the manifest is damaged (the message names the
            field), it was written by a newer version of the workbench, or data.zarr is gone.
        """
        path = Path(path)
        if not (path / MANIFEST).exists():
            if path.is_file():
                raise WorkbenchError(f"{path} is a file, not a project folder; give the project's folder")
            raise _not_a_project(path)
        manifest, migrated = _read_manifest(path)
        writable = os.access(path, os.W_OK)
        if migrated and writable:
            with manifest_lock(path):
                manifest, migrated = _read_manifest(path)
                if migrated:
                    write_json_atomic(path / MANIFEST, manifest.to_dict())
        project = cls(path, manifest)
        if clean and writable:
            project._clean_leftovers()
        return project

    @classmethod
    def open_or_create(cls, path, **kwargs) -> "Project":
        path = Path(path)
        return cls.open(path) if (path / MANIFEST).exists() else cls.create(path, **kwargs)

    def _clean_leftovers(self) -> None:
        from workbench.store._io import clean_leftovers_beside

        with manifest_lock(self.path):
            clean_dead_tmp(self.path)
            clean_leftovers_beside(self.path / MANIFEST)  # a manifest write cut off before its rename
            for entry in self._current().images:
                folder = self.path / STORE / "images" / entry.name
                if not (folder / entry.labels).is_dir():
                    continue
                for old in folder.glob("labels-*"):
                    if old.name != entry.labels and old.is_dir() and not old.is_symlink():
                        shutil.rmtree(old, ignore_errors=True)  # switched out by an import killed before deleting it
                if entry.labels != "labels" and (folder / "labels").is_dir():
                    shutil.rmtree(folder / "labels", ignore_errors=True)

    # ------------------------------------------------------------------ the manifest
    def _current(self) -> Manifest:
        """The manifest as on disk: re-read when project.json changed since it was last read."""
        signature = _signature(self.path)
        if signature != self._signature:
            with self._lock:
                self._manifest, _ = _read_manifest(self.path)
                self._signature = signature
        return self._manifest

    @property
    def manifest(self) -> Manifest:
        """The typed manifest (a fresh read; change it only through the methods of `Project`)."""
        return self._current()

    @contextlib.contextmanager
    def _edit(self) -> Iterator[Manifest]:
        """Read-modify-write of project.json under the project lock; the block changes the yielded manifest."""
        with self._lock, manifest_lock(self.path):
            manifest, _ = _read_manifest(self.path)
            yield manifest
            parse_manifest(manifest.to_dict(), str(self.path / MANIFEST))  # never write what would not open
            write_json_atomic(self.path / MANIFEST, manifest.to_dict())
            self._manifest, self._signature = manifest, _signature(self.path)

    def job(self, what: str):
        """Context manager: hold the project's job slot for a long job (raises `ProjectBusyError` when taken)."""
        return job_slot(self.path, what)

    # ------------------------------------------------------------------ manifest accessors
    @property
    def name(self) -> str:
        return self._current().name or self.path.name

    @property
    def mode(self) -> str:
        return self._current().mode

    @property
    def classes(self) -> list[ClassRecord]:
        return list(self._current().classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def class_colors(self) -> list[str]:
        return [c.color for c in self.classes]

    @property
    def n_classes(self) -> int:
        return len(self._current().classes)

    @property
    def n_outputs(self) -> int:
        """Output channels a model of this project predicts."""
        return _labels.n_training_classes(self.mode, self.n_classes)

    @property
    def boundary_width(self) -> int:
        """Width in pixels of the derived instance boundary, as training and the annotator use it.

        The project's number when it sets one; with ``"auto"`` (new projects), derived from the
        painted objects by `auto_boundary_width` (2 px for nuclei of about 24 px, 1 px for nuclei of
        about 10 px, 2 px while nothing is painted), so small objects keep an interior.
        """
        setting = self._current().boundary_width
        if setting != _labels.AUTO_BOUNDARY_WIDTH:
            return int(setting)
        if self.mode != "instance":
            return _labels.DEFAULT_BOUNDARY_WIDTH  # unused: semantic targets have no boundary class
        return _labels.auto_boundary_width(self.painted_object_areas())

    def painted_object_areas(self) -> np.ndarray:
        """Pixel areas of the objects painted (label value 2) in every image, plane by plane.

        Kept per image until its labels change, so asking again (every redraw) reads nothing.
        """
        areas = [self._painted_areas(name) for name in self.image_names]
        return np.concatenate(areas) if areas else np.zeros(0, np.int64)

    @property
    def boundary_width_setting(self) -> int | str:
        """The boundary width as the project sets it: a number of pixels, or ``"auto"``."""
        return self._current().boundary_width

    def _painted_areas(self, name: str) -> np.ndarray:
        """Areas of the objects painted in one image (plane by plane), kept until its labels change."""
        arr = self.labels(name)
        key = (self.image_info(name).labels, _chunk_files_signature(arr))
        cached = self._areas_cache.get(name)
        if key[1] is not None and cached is not None and cached[0] == key:
            return cached[1]
        chunks = list(_written_chunks(arr))
        if not chunks:
            areas = np.zeros(0, np.int64)
        else:  # only the chunks on disk can hold paint: read their bounding box
            keys = np.array(chunks)
            region = tuple(slice(int(lo) * c, min((int(hi) + 1) * c, s)) for lo, hi, c, s in
                           zip(keys.min(0), keys.max(0), arr.chunks, arr.shape))
            areas = _labels.painted_object_areas(arr[region])
        self._areas_cache[name] = (key, areas)
        return areas

    @property
    def boundaries(self) -> str:
        """How z-stacks are segmented: ``"3d"`` (objects as volumes, the default) or ``"per-plane"``."""
        return _labels._check_boundary_mode(self.settings.get("boundaries", "3d"))

    def voxel_size(self, name: str) -> tuple[float, float, float] | None:
        """Voxel size (z, y, x) in micrometres of a z-stack, None when unknown or for a 2-D image.

        The image's own (from its file, or given when added) comes first, then the project
        setting ``voxel_size``; an unknown z spacing is taken as equal to the pixel size.
        """
        info = self.image_info(name)
        if "Z" not in info.axes:
            return None
        setting = self.settings.get("voxel_size")
        if setting is not None and (len(setting) != 3 or not all(float(v) > 0 for v in setting)):
            raise WorkbenchError(
                f"the project setting voxel_size must be three positive numbers (z, y, x) in µm, got {setting!r}"
            )
        pixel = info.pixel_size or (setting[1:] if setting else None)
        z_spacing = info.z_spacing or (setting[0] if setting else None)
        if pixel is None and z_spacing is None:
            return None
        if pixel is None:
            raise WorkbenchError(
                f"image {name!r} has a z spacing ({z_spacing} µm) but no pixel size; set the project's "
                "voxel_size (z, y, x) or add the image with --voxel-size"
            )
        return (float(z_spacing or min(pixel)), float(pixel[0]), float(pixel[1]))

    @property
    def settings(self) -> dict:
        """The project's settings (a copy: change them with `update_settings`)."""
        return json.loads(json.dumps(self._current().settings))

    @property
    def image_names(self) -> list[str]:
        return [entry.name for entry in self._current().images]

    def save(self) -> None:
        """Kept for callers of the old API: every change is saved when made, so this only checks the file."""
        self._current()

    def update_settings(self, **settings: Any) -> None:
        with self._edit() as manifest:
            manifest.settings.update(json.loads(json.dumps(settings, default=_jsonable)))

    def set_mode(self, mode: str) -> None:
        """Switch between semantic and instance mode.

        Labels mean the same in both modes when the project has one object class
        (1 = background, 2 = the class); only the training targets differ, so earlier models
        stay recorded but a new model is needed.
        """
        if mode not in MODES:
            raise WorkbenchError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "instance" and self.n_classes != 2:
            raise WorkbenchError(
                f"instance mode needs a project with one object class, this one has {self.n_classes - 1}; "
                "create a new instance project instead"
            )
        with self._edit() as manifest:
            manifest.mode = mode

    def set_boundary_width(self, width: int | str) -> None:
        """Set the boundary width in pixels, or ``"auto"`` to derive it from the painted objects."""
        width = _boundary_width_setting(width)
        with self._edit() as manifest:
            manifest.boundary_width = width

    def __repr__(self) -> str:
        return f"Project({str(self.path)!r}, mode={self.mode!r}, images={len(self.image_names)})"

    # ------------------------------------------------------------------ images
    def image_info(self, name: str) -> ImageRecord:
        entry = self._current().image(name)
        if entry is None:
            raise WorkbenchError(
                f"no image {name!r} in project {self.path}; images are: {', '.join(self.image_names) or 'none'}"
            )
        return entry

    def _image_folder(self, name: str) -> Path:
        return resolve_inside(self.path / STORE / "images", self.image_info(name).name, "image name")

    def _group(self, name: str) -> zarr.Group:
        self._image_folder(name)
        try:
            return self._root[f"images/{name}"]
        except KeyError as exc:
            raise WorkbenchError(
                f"the data of image {name!r} is missing from {self.path / STORE}; remove it "
                f"(`workbench remove {self.path} {name}`) and add the image again",
                in_app=_remove_and_add_again(name, "data")) from exc

    def _staging(self) -> Path:
        folder = owner_tmp(self.path) / uuid.uuid4().hex
        folder.mkdir()
        return folder

    def add_image(self, source, *, name: str | None = None, axes: str | None = None,
                  pixel_size: tuple[float, float] | None = None, z_spacing: float | None = None,
                  progress: Callable[[float, str], None] | None = None, source_name: str | None = None) -> str:
        """Copy an image into the project, block by block, and return its name.

        The copy goes into a staging folder and is moved into the project, with its manifest
        entry, in one locked step: an interrupted copy leaves nothing behind, and images added
        at the same time by other processes are all kept.

        Parameters
        ----------
        source : path-like, array or ImageSource
            An image file (TIFF, PNG/JPEG, Zarr, .npy) or an array.
        name : str, optional
            Name in the project (default: the file name without extension), made unique.
        axes : str, optional
            Axis letters when the file does not say (e.g. ``"ZCYX"``).
        pixel_size : (float, float), optional
            Pixel size (y, x) in micrometres, overriding the file's metadata.
        z_spacing : float, optional
            Distance between z-planes in micrometres, overriding the file's metadata.
        progress : callable, optional
            ``progress(fraction, message)`` while the pixels are copied.
        source_name : str, optional
            Where the image came from, as the manifest records it (default: the file read). A file
            read from a temporary copy (an upload) gives e.g. ``"uploaded: cells.tif"``, so that no
            temporary folder is recorded as the image's source.

        Raises
        ------
        WorkbenchError
            For unreadable files, unsupported shapes or types, NaN or infinite values, or an
            image whose channel count differs from the project's other images.
        """
        if isinstance(source, (str, os.PathLike)):
            src = open_image(source, axes=axes)
        else:
            src = as_image_source(source, axes=axes, name=name or "image")
        wanted = _safe_name(name or src.name)
        self._check_channels(wanted, src.n_channels)
        staging = self._staging()
        try:
            group = zarr.open_group(str(staging / "image-group"), mode="w")
            chunks = tuple(1 if a == "Z" else (s if a == "C" else CHUNK) for a, s in zip(src.axes, src.shape))
            image = group.create_array("image", shape=src.shape, dtype=src.dtype, chunks=chunks)
            image.attrs["axes"] = src.axes
            lead_axes = src.axes[:-2]
            planes = [(z,) for z in range(src.n_slices)] if "Z" in lead_axes else [()]
            blocks = list(iter_blocks(src.shape, 2048))
            total, step = len(planes) * len(blocks), 0
            for plane in planes:
                lead = plane + ((slice(None),) if "C" in lead_axes else ())
                for ys, xs in blocks:
                    block = src[lead + (ys, xs)]
                    if block.dtype.kind == "f" and not np.all(np.isfinite(block)):
                        raise WorkbenchError(
                            f"image {wanted!r} holds NaN or infinite values (first in rows {ys.start}-{ys.stop}, "
                            f"columns {xs.start}-{xs.stop}); replace them (e.g. with 0) before adding the image"
                        )
                    image[lead + (ys, xs)] = block
                    step += 1
                    if progress:
                        progress(step / total, f"copying {wanted}")
            spatial = src.shape[:1] + src.spatial_shape if "Z" in src.axes else src.spatial_shape
            label_chunks = (1, CHUNK, CHUNK) if len(spatial) == 3 else (CHUNK, CHUNK)
            group.create_array("labels", shape=spatial, dtype=_labels.label_dtype(self.n_classes),
                               chunks=label_chunks, fill_value=0)
            pixel = pixel_size or src.pixel_size
            self._root.require_group("images")
            with self._edit() as manifest:
                self._check_channels(wanted, src.n_channels, manifest)  # another process may have added one
                taken = {e.name for e in manifest.images} | set(os.listdir(self.path / STORE / "images"))
                final, i = wanted, 2
                while final in taken:
                    final, i = f"{wanted}_{i}", i + 1
                os.rename(staging / "image-group", self.path / STORE / "images" / final)
                manifest.images.append(ImageRecord(
                    name=final, axes=src.axes, shape=tuple(int(v) for v in src.shape), dtype=str(src.dtype),
                    channels=src.n_channels, slices=src.n_slices,
                    source=str(source_name) if source_name is not None else src.source,
                    pixel_size=tuple(float(v) for v in pixel) if pixel else None, added=_now(),
                    z_spacing=float(z_spacing or src.z_spacing) if "Z" in src.axes and (z_spacing or src.z_spacing)
                    else None,
                ))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    def _check_channels(self, name: str, channels: int, manifest: Manifest | None = None) -> None:
        images = (manifest or self._current()).images
        if images and images[0].channels != channels:
            raise WorkbenchError(
                f"image {name!r} has {channels} channel(s) but the project's images have "
                f"{images[0].channels}; all images of a project need the same channels"
            )

    def _unique_name(self, name: str) -> str:
        existing = set(self.image_names)
        candidate, i = name, 2
        while candidate in existing:
            candidate = f"{name}_{i}"
            i += 1
        return candidate

    def remove_image(self, name: str) -> None:
        """Forget an image and delete its data (image, labels, predictions), only inside the project.

        Raises
        ------
        ProjectBusyError
            While a job (training, predicting) uses the project.
        """
        with self.job(f"removing image {name}"):
            with self._edit() as manifest:
                entry = manifest.image(name)
                if entry is None:
                    raise WorkbenchError(
                        f"no image {name!r} in project {self.path}; images are: "
                        f"{', '.join(e.name for e in manifest.images) or 'none'}"
                    )
                folder = resolve_inside(self.path / STORE / "images", entry.name, "image name")
                manifest.images = [e for e in manifest.images if e.name != name]
                garbage = owner_tmp(self.path) / f"removed-{uuid.uuid4().hex}"
                if folder.is_dir() and not folder.is_symlink():
                    os.rename(folder, garbage)  # gone from the project in the same locked step
            shutil.rmtree(garbage, ignore_errors=True)

    def image(self, name: str) -> ImageSource:
        """The stored image, read lazily, in canonical axes."""
        info = self.image_info(name)
        try:
            array = self._group(name)["image"]
        except KeyError as exc:
            raise WorkbenchError(f"the pixels of image {name!r} are missing from {self.path / STORE}; remove it "
                                 f"(`workbench remove {self.path} {name}`) and add the image again",
                                 in_app=_remove_and_add_again(name, "pixels")) from exc
        return ImageSource(array, info.axes, name=name, pixel_size=info.pixel_size, source=info.source)

    def zarr_group(self, name: str) -> zarr.Group:
        """The Zarr group of one image (for pyramids and other derived layers)."""
        return self._group(name)

    # ------------------------------------------------------------------ labels
    def labels(self, name: str) -> zarr.Array:
        """The label layer as a Zarr array (read regions with slicing)."""
        entry = self.image_info(name)
        try:
            return self._group(name)[entry.labels]
        except KeyError as exc:
            raise WorkbenchError(
                f"the labels of image {name!r} are missing from {self.path / STORE}; import them again "
                f"(`workbench labels {self.path} {name} --from FILE`) or remove the image",
                in_app=_remove_and_add_again(name, "labels")) from exc

    def read_labels(self, name: str, z: int | None = None) -> np.ndarray:
        """The label layer (or one z-plane of it) as a numpy array."""
        arr = self.labels(name)
        return arr[int(z)] if z is not None and arr.ndim == 3 else arr[...]

    def _label_target(self, name: str, z: int | None) -> tuple[tuple, tuple[int, ...]]:
        arr = self.labels(name)
        if z is None:
            return (), tuple(arr.shape)
        whole_number(z, "z", minimum=None)
        if arr.ndim != 3:
            raise WorkbenchError(f"image {name!r} is 2-D (no z-slices); leave out --z / z=")
        if not 0 <= int(z) < arr.shape[0]:
            raise WorkbenchError(f"image {name!r} has {arr.shape[0]} z-slices (0..{arr.shape[0] - 1}); slice {z} "
                                 "does not exist")
        return (int(z),), tuple(arr.shape[1:])

    def write_labels(self, name: str, labels, *, region: tuple | None = None, z: int | None = None) -> None:
        """Write labels for a whole image, one z-plane, or a region of it.

        A region (a painted stroke) is written chunk by chunk in place, each chunk replaced
        atomically. A whole image or plane goes into a new label layer that replaces the old
        one in one manifest update, so an interrupted write leaves the old labels whole.

        Parameters
        ----------
        labels : integer array
            Values 0..n_classes (0 = not annotated, 1 = background, 2.. = classes).
        region : tuple of slices, optional
            Where `labels` goes, in the label layer's (Y, X) coordinates.
        z : int, optional
            The z-plane of a z-stack.
        """
        lead, shape = self._label_target(name, z)
        if region is None:
            labels = _labels.validate_labels(labels, shape=shape, n_classes=self.n_classes,
                                             name=f"labels for {name!r}")
            self._replace_labels(name, labels, lead)
            return
        arr = self.labels(name)
        region = tuple(region)
        shape = tuple(len(range(*s.indices(n))) for s, n in zip(region, shape[-2:]))
        labels = _labels.validate_labels(labels, shape=shape, n_classes=self.n_classes,
                                         name=f"labels for {name!r}")
        arr[lead + region] = labels.astype(arr.dtype, copy=False)

    def _replace_labels(self, name: str, labels: np.ndarray, lead: tuple) -> None:
        """Write a new label layer (`labels` for the whole image, or for plane `lead`) and switch to it."""
        old = self.labels(name)
        staging = self._staging()
        new_name = f"labels-{uuid.uuid4().hex[:12]}"
        try:
            new = zarr.open_array(str(staging / new_name), mode="w", shape=old.shape, dtype=old.dtype,
                                  chunks=old.chunks, fill_value=0)
            if lead:
                for z in range(old.shape[0]):  # the other planes are copied as they are
                    if z != lead[0]:
                        plane = old[z]
                        if plane.any():
                            new[z] = plane
                new[lead] = labels.astype(old.dtype, copy=False)
            else:
                new[...] = labels.astype(old.dtype, copy=False)
            with self._edit() as manifest:
                entry = manifest.image(name)
                if entry is None:
                    raise WorkbenchError(f"image {name!r} was removed from {self.path} while its labels were written")
                folder = resolve_inside(self.path / STORE / "images", entry.name, "image name")
                previous = entry.labels
                os.rename(staging / new_name, folder / new_name)
                entry.labels = new_name
            if (folder / previous).is_dir() and not (folder / previous).is_symlink():
                os.rename(folder / previous, staging / previous)  # out of the project first: then delete
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def import_labels(self, name: str, path_or_array, *, instances: bool = False, z: int | None = None) -> None:
        """Import a label image (project convention) or, with ``instances=True``, an instance mask.

        The file's size is checked against the image before its pixels are read.
        """
        lead, shape = self._label_target(name, z)
        if instances and self.mode != "instance":
            raise WorkbenchError("--instances needs an instance-mode project; import a class map instead")
        data = path_or_array
        if isinstance(path_or_array, (str, os.PathLike)):
            source = open_image(path_or_array)
            file_shape = tuple(source.shape)
            self._check_label_import_shape(name, file_shape, z)
            if file_shape != tuple(shape):
                raise WorkbenchError(
                    f"labels {Path(path_or_array).name} (shape {file_shape}) must have the same shape as the "
                    f"image{' plane' if lead else ''} {name!r} (shape {tuple(shape)}); export the labels at the "
                    "image's full size" + (" or give --z for one z-slice" if len(shape) == 3 else "")
                )
            data = source[...]
        data = np.asarray(data)
        self._check_label_import_shape(name, data.shape, z)
        if instances:
            if data.dtype.kind not in "iu":
                raise WorkbenchError(f"an instance mask must be integers, got {data.dtype}")
            if data.size and not data.any():
                raise WorkbenchError(
                    "the instance mask holds no objects (every pixel is 0); importing it would mark the whole "
                    "image as background: check that you chose the right file"
                )
            data = _labels.labels_from_instances(data, dtype=_labels.label_dtype(self.n_classes))
        self.write_labels(name, data, z=z)

    def _check_label_import_shape(self, name: str, shape: tuple, z: int | None) -> None:
        """A whole (Z, Y, X) volume for a z-stack, one (Y, X) plane with `z`, or a (Y, X) image."""
        layer = tuple(self.labels(name).shape)
        shape = tuple(shape)
        if len(layer) == 3 and len(shape) == 2 and z is None:
            raise WorkbenchError(
                f"labels of shape {shape} are one plane but image {name!r} is a z-stack of shape {layer}; "
                f"say which plane with --z (0..{layer[0] - 1}), or import a (Z, Y, X) volume"
            )
        if len(shape) == 3 and (len(layer) == 2 or z is not None):
            where = "--z asks for one plane" if len(layer) == 3 else f"image {name!r} is 2-D {layer}"
            raise WorkbenchError(
                f"labels of shape {shape} are a volume but {where}; import the volume without --z "
                "into a z-stack, or one (Y, X) plane"
            )
        if len(shape) == 3 and shape != layer:
            raise WorkbenchError(
                f"label volume (shape {shape}, ZYX) must have the same shape as the z-stack {name!r} "
                f"(shape {layer}); export the labels with every plane at the image's full size"
            )

    def label_stats(self, name: str | None = None, *, objects: bool = True) -> dict:
        """Pixels per class, painted objects and annotated fraction, for one image or all.

        Pixel counts come from the label chunks written so far (never-painted chunks hold 0 and
        are not read), one chunk in memory at a time; ``objects=False`` skips counting
        objects, which needs whole planes.
        """
        names = [name] if name else self.image_names
        total = {"pixels": {c: 0 for c in self.class_names}, "annotated_pixels": 0, "pixels_total": 0}
        count_objects = objects and self.mode == "instance"
        if count_objects:
            total["objects"] = 0
        for n in names:
            arr = self.labels(n)
            counts = _written_chunk_counts(arr, self.n_classes)
            for i, c in enumerate(self.class_names):
                total["pixels"][c] += int(counts[i + 1])
            total["annotated_pixels"] += int(counts[1:].sum())
            total["pixels_total"] += int(np.prod(arr.shape, dtype=np.int64))
            if count_objects and counts[_labels.OBJECT] > 0:
                stats = _labels.label_statistics(arr[...], self.class_names, self.mode,
                                                 volume=self.boundaries == "3d")
                total["objects"] += stats["objects"]
        total["annotated_fraction"] = total["annotated_pixels"] / max(total["pixels_total"], 1)
        return total

    def training_samples(self) -> list[tuple[Any, np.ndarray, str]]:
        """(lazy CYX image plane, targets with -1 = ignore, "name[:z]") for every annotated plane.

        Raises
        ------
        WorkbenchError
            When nothing is annotated yet, or only one class is.
        """
        samples = []
        seen_classes: set[int] = set()
        for name in self.image_names:
            source = self.image(name)
            labels = self.labels(name)
            for z in range(source.n_slices):
                plane_labels = labels[z] if labels.ndim == 3 else labels[...]
                if not plane_labels.any():
                    continue
                targets = _labels.plane_training_targets(
                    labels, z, self.mode, self.boundary_width, boundaries=self.boundaries,
                    spacing=self.voxel_size(name)) if labels.ndim == 3 else _labels.training_targets(
                    plane_labels, self.mode, self.boundary_width)
                seen_classes.update(np.unique(targets[targets >= 0]).tolist())
                tag = f"{name}:{z}" if labels.ndim == 3 else name
                samples.append((source.plane(z), targets, tag))
        if not samples:
            raise WorkbenchError(
                "nothing is annotated yet: paint some background and some objects (or import labels with "
                "`workbench labels`) before training",
                in_app="nothing is annotated yet: paint some background and some objects in step 2 (Annotate) "
                       "before training")
        if 0 not in seen_classes or len(seen_classes) < 2:
            painted = sorted(self.class_names[c] if self.mode == "semantic" else _labels.INSTANCE_CLASSES[c]
                             for c in seen_classes)
            raise WorkbenchError(
                f"only {', '.join(painted) or 'nothing'} is annotated; paint background and at least one "
                "object class so the model can tell them apart"
            )
        return samples

    # ------------------------------------------------------------------ predictions
    def prediction(self, name: str, kind: str) -> zarr.Array | None:
        """A stored prediction layer, or None when there is none yet."""
        if kind not in PREDICTION_KINDS:
            raise WorkbenchError(f"prediction kind must be one of {', '.join(PREDICTION_KINDS)}, got {kind!r}")
        group = self._group(name)
        try:
            array = group[f"predictions/{kind}"]
        except KeyError:
            return None
        return array if array.attrs.get("complete", True) else None

    def _prediction_staging(self, name: str) -> Path:
        self.image_info(name)
        return owner_tmp(self.path) / f"predictions-{_safe_name(name)}"

    def create_prediction(self, name: str, kind: str, shape: tuple, dtype, *, model_version: int | None = None,
                          chunks: tuple | None = None) -> zarr.Array:
        """An empty prediction layer to be filled tile by tile, in a staging folder.

        It replaces the stored layers of the image when `mark_prediction_complete` is called;
        until then (and for ever, if the process is killed) the previous prediction stays.
        """
        if kind not in PREDICTION_KINDS:
            raise WorkbenchError(f"prediction kind must be one of {', '.join(PREDICTION_KINDS)}, got {kind!r}")
        staging = self._prediction_staging(name)
        group = zarr.open_group(str(staging), mode="a")
        if chunks is None:
            chunks = tuple(min(s, CHUNK) if i >= len(shape) - 2 else 1 for i, s in enumerate(shape))
        arr = group.create_array(kind, shape=tuple(shape), dtype=dtype, chunks=chunks, overwrite=True,
                                 fill_value=0)
        arr.attrs.update({"model_version": model_version, "created": _now(), "complete": False})
        return arr

    def mark_prediction_complete(self, name: str) -> None:
        """Move the staged prediction layers of an image into the project, replacing the old ones in one step."""
        staging = self._prediction_staging(name)
        if not staging.is_dir():
            return
        staged = zarr.open_group(str(staging), mode="a")
        for kind in PREDICTION_KINDS:
            if kind in staged:
                staged[kind].attrs["complete"] = True
        aside = owner_tmp(self.path) / f"replaced-{uuid.uuid4().hex}"
        with self._lock, manifest_lock(self.path):
            target = self._image_folder(name) / "predictions"
            if target.is_dir() and not target.is_symlink():
                os.rename(target, aside)
            os.rename(staging, target)
        shutil.rmtree(aside, ignore_errors=True)

    # ------------------------------------------------------------------ models
    @property
    def models(self) -> list[ModelRecord]:
        return list(self._current().models)

    def _next_version(self, manifest: Manifest, *, own: int | None = None) -> int:
        """The lowest version above every recorded model, model folder and live training's reservation
        (except `own`: the caller's reservation)."""
        from workbench.store._jobs import live_reserved_version

        taken = {m.version for m in manifest.models}
        reserved = live_reserved_version(self.path)
        if reserved is not None and reserved != own:
            taken.add(reserved)
        models = self.path / MODELS
        if models.is_dir():
            for folder in models.iterdir():
                match = re.match(r"^v(\d+)-", folder.name)
                if match:
                    taken.add(int(match.group(1)))
        return max(taken, default=0) + 1

    def _version_taken(self, manifest: Manifest, version: int) -> bool:
        """Whether `version` is recorded, or has a folder under models/ (a model saved there by hand)."""
        models = self.path / MODELS
        folder = models.is_dir() and any(models.glob(f"v{int(version):03d}-*"))
        return version < 1 or any(m.version == version for m in manifest.models) or bool(folder)

    def new_model_dir(self, method: str) -> tuple[int, Path]:
        """The likely next model version and a fresh staging folder to save the model into.

        The model is moved into ``models/`` by `register_model`, which allocates the final
        version number under the project lock: a killed training leaves nothing in ``models/``,
        and two trainings never get the same number.
        """
        if method not in ("unet", "forest"):
            raise WorkbenchError(f"method must be unet or forest, got {method!r}")
        version = self._next_version(self._current())
        directory = self._staging() / f"model-{_safe_name(method)}"
        directory.mkdir()
        return version, directory

    def register_model(self, version: int, directory: Path, *, method: str, settings: dict | None = None,
                       metrics: dict | None = None, parent: int | None = None) -> ModelRecord:
        """Move a finished model into ``models/`` and record it with its settings, label counts and metrics.

        The version is `version` when still free, else the next free one (allocated under the
        project lock); the returned record says which.
        """
        directory = Path(directory)
        labels = self.label_stats()
        record = ModelRecord(
            version=int(version), method=method, path="", created=_now(),
            parent=parent, settings=json.loads(json.dumps(settings or {}, default=_jsonable)),
            labels=json.loads(json.dumps(labels, default=_jsonable)),
            metrics=json.loads(json.dumps(metrics or {}, default=_jsonable)),
        )
        models = self.path / MODELS
        with self._edit() as manifest:
            models.mkdir(exist_ok=True)
            inside = directory.resolve().parent == models.resolve()
            if not inside:
                if self._version_taken(manifest, record.version):
                    record.version = self._next_version(manifest, own=record.version)
                final = models / f"v{record.version:03d}-{_safe_name(method)}"
                os.rename(directory, final)
            else:  # already in models/ (a caller that saved there itself)
                final = directory
            record.path = f"{MODELS}/{final.name}"
            manifest.models = [m for m in manifest.models if m.version != record.version] + [record]
        return record

    def begin_training_record(self, writer) -> int:
        """Allocate the model version a training will write and publish it in the training record, in one step.

        Under the manifest lock: the version is the next free one (recorded models, model folders,
        a live training's reservation), and `writer` (a ``TrainingJobWriter``) writes the record
        holding it before the lock is released, so no other allocation can hand it out again.
        """
        with self._lock, manifest_lock(self.path):
            manifest, _ = _read_manifest(self.path)
            version = self._next_version(manifest)
            writer.update(version=version)
        return version

    def training_job(self) -> dict | None:
        """The record of the project's current or last training (`workbench.store._jobs`), or None."""
        from workbench.store._jobs import read_training_job

        return read_training_job(self.path)

    def request_training_stop(self) -> bool:
        """Ask the project's running training (in any process) to stop; False when none runs."""
        from workbench.store._jobs import request_training_stop

        return request_training_stop(self.path)

    def model_record(self, version: int | None = None, *, method: str | None = None) -> ModelRecord:
        """A model version's record (the latest, or the latest of one method, by default)."""
        candidates = [m for m in self.models if method is None or m.method == method]
        if not candidates:
            raise WorkbenchError(
                f"project {self.path} has no {method + ' ' if method else ''}model yet; train one first "
                f"(`workbench train {self.path}`)",
                in_app=f"this project has no {method + ' ' if method else ''}model yet; train one first in step "
                       "3 (Train)")
        if version is None:
            return max(candidates, key=lambda m: m.version)
        for m in candidates:
            if m.version == int(version):
                return m
        raise WorkbenchError(
            f"no model version {version} in {self.path}; versions are "
            f"{', '.join(str(m.version) for m in candidates)}"
        )

    def model_dir(self, version: int | None = None, *, method: str | None = None) -> Path:
        """The folder of a model version, resolved and checked to lie inside the project's models/."""
        record = self.model_record(version, method=method)
        return resolve_inside(self.path / MODELS, record.path.split("/", 1)[1], f"model v{record.version} path")


def _jsonable(value: Any) -> Any:
    from workbench.store._io import to_jsonable

    converted = to_jsonable(value)
    if converted is value:
        raise TypeError(f"{type(value).__name__} is not JSON")
    return converted


def _boundary_width_setting(width: Any) -> int | str:
    """A boundary width as given (a whole number of pixels, or "auto"), checked."""
    if width == _labels.AUTO_BOUNDARY_WIDTH:
        return width
    try:
        if isinstance(width, bool) or int(width) != float(width) or int(width) < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise WorkbenchError(f'boundary width must be a whole number of pixels (at least 1) or '
                             f'"{_labels.AUTO_BOUNDARY_WIDTH}", got {width!r}') from None
    return int(width)


def _chunk_files_signature(arr: zarr.Array) -> tuple | None:
    """(path, inode, size, mtime) of every chunk file of a local label array; None when it cannot be told."""
    store_path = getattr(arr.store, "root", None)
    if store_path is None:
        return None
    folder = Path(store_path) / arr.path / "c"
    found = []
    for root, _dirs, files in os.walk(folder):
        for leaf in files:
            try:
                stat = os.stat(os.path.join(root, leaf))
            except OSError:
                continue
            found.append((os.path.join(root, leaf), stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))


def _written_chunk_counts(arr: zarr.Array, n_classes: int) -> np.ndarray:
    """Pixels per label value (0..n_classes) of a label array, reading only the chunks on disk."""
    counts = np.zeros(n_classes + 1, np.int64)
    total = int(np.prod(arr.shape, dtype=np.int64))
    seen = 0
    for key in _written_chunks(arr):
        region = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(key, arr.chunks, arr.shape))
        block = arr[region]
        counts += np.bincount(block.ravel().astype(np.int64), minlength=n_classes + 1)[: n_classes + 1]
        seen += block.size
    counts[0] += total - seen
    return counts


def _written_chunks(arr: zarr.Array) -> Iterator[tuple[int, ...]]:
    """Chunk grid positions that have a chunk stored (the others hold the fill value)."""
    grid = tuple(-(-s // c) for s, c in zip(arr.shape, arr.chunks))
    store_path = getattr(arr.store, "root", None)
    encoding = getattr(arr.metadata, "chunk_key_encoding", None)
    if store_path is None or getattr(encoding, "name", None) != "default" or getattr(encoding, "separator", None) != "/":
        yield from np.ndindex(*grid)
        return
    folder = Path(store_path) / arr.path / "c"
    if not folder.is_dir():
        return
    depth = len(grid)
    for root, _dirs, files in os.walk(folder):
        parts = Path(root).relative_to(folder).parts
        if len(parts) != depth - 1:
            continue
        for leaf in files:
            try:
                key = tuple(int(p) for p in (*parts, leaf))
            except ValueError:
                continue
            if all(0 <= k < g for k, g in zip(key, grid)):
                yield key

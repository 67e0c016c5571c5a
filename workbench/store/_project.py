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

Every write is atomic: the manifest through a temporary file and a rename, Zarr chunks likewise
(zarr's local store renames each chunk into place). The manifest is the source of truth: an image
whose copy was interrupted is not in it, and is overwritten by the next attempt.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import zarr

from workbench.store import _labels as _labels
from workbench.conventions import MODES
from workbench.errors import WorkbenchError
from workbench.store._io import ImageSource, as_image_source, iter_blocks, open_image, write_json_atomic

SCHEMA_VERSION = 1
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
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return safe or "image"


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


class Project:
    """A segmentation project on local disk.

    Use `Project.create` for a new one and `Project.open` for an existing one.

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

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self._lock = threading.RLock()
        self._root = zarr.open_group(str(self.path / STORE), mode="a")

    # ------------------------------------------------------------------ creation and opening
    @classmethod
    def create(cls, path, *, mode: str = "semantic", classes: Iterable[str] = ("background", "foreground"),
               colors: Iterable[str] | None = None, boundary_width: int = 2, name: str | None = None) -> "Project":
        """Create a new, empty project folder.

        Parameters
        ----------
        path : path-like
            Folder to create (must not hold a project already).
        mode : {"semantic", "instance"}
            Semantic: one class per pixel. Instance: objects (class 2) separated into individual
            objects via an automatically derived boundary class.
        classes : list of str
            Class names; the first is the background. Instance mode takes exactly two.
        boundary_width : int
            Width in pixels of the derived boundary (instance mode).
        """
        path = Path(path)
        if (path / MANIFEST).exists():
            raise WorkbenchError(f"{path} already holds a project; open it instead, or choose another folder")
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
        if int(boundary_width) < 1:
            raise WorkbenchError(f"boundary width must be at least 1 pixel, got {boundary_width}")
        colors = list(colors) if colors else DEFAULT_COLORS
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": name or path.name,
            "created": _now(),
            "mode": mode,
            "classes": [{"name": c, "color": colors[i % len(colors)]} for i, c in enumerate(classes)],
            "boundary_width": int(boundary_width),
            "images": [],
            "models": [],
            "settings": {},
        }
        path.mkdir(parents=True, exist_ok=True)
        zarr.open_group(str(path / STORE), mode="a")
        (path / MODELS).mkdir(exist_ok=True)
        write_json_atomic(path / MANIFEST, manifest)
        return cls(path, manifest)

    @classmethod
    def open(cls, path) -> "Project":
        """Open an existing project, migrating an older manifest.

        Raises
        ------
        WorkbenchError
            When the folder holds no project, the manifest is damaged, or it was written by a
            newer version of the workbench.
        """
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.exists():
            raise WorkbenchError(
                f"{path} is not a workbench project (no {MANIFEST}); create one with `workbench new {path}`"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorkbenchError(f"the project manifest {manifest_path} is damaged ({exc})") from exc
        version = manifest.get("schema_version", 0)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise WorkbenchError(
                f"{path} was written by a newer workbench (project schema {version}, this version reads up to "
                f"{SCHEMA_VERSION}); upgrade the workbench to open it"
            )
        migrated = version < SCHEMA_VERSION
        while version < SCHEMA_VERSION:
            manifest = MIGRATIONS[version](manifest)
            version = manifest["schema_version"]
        if migrated:
            write_json_atomic(path / MANIFEST, manifest)
        return cls(path, manifest)

    @classmethod
    def open_or_create(cls, path, **kwargs) -> "Project":
        path = Path(path)
        return cls.open(path) if (path / MANIFEST).exists() else cls.create(path, **kwargs)

    # ------------------------------------------------------------------ manifest accessors
    @property
    def mode(self) -> str:
        return self.manifest["mode"]

    @property
    def classes(self) -> list[dict]:
        return self.manifest["classes"]

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.classes]

    @property
    def class_colors(self) -> list[str]:
        return [c["color"] for c in self.classes]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_outputs(self) -> int:
        """Output channels a model of this project predicts."""
        return _labels.n_training_classes(self.mode, self.n_classes)

    @property
    def boundary_width(self) -> int:
        return int(self.manifest["boundary_width"])

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
        if "Z" not in info["axes"]:
            return None
        setting = self.settings.get("voxel_size")
        if setting is not None and (len(setting) != 3 or not all(float(v) > 0 for v in setting)):
            raise WorkbenchError(
                f"the project setting voxel_size must be three positive numbers (z, y, x) in µm, got {setting!r}"
            )
        pixel = info.get("pixel_size") or (setting[1:] if setting else None)
        z_spacing = info.get("z_spacing") or (setting[0] if setting else None)
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
        return self.manifest.setdefault("settings", {})

    @property
    def image_names(self) -> list[str]:
        return [entry["name"] for entry in self.manifest["images"]]

    def save(self) -> None:
        """Write the manifest atomically."""
        with self._lock:
            write_json_atomic(self.path / MANIFEST, self.manifest)

    def update_settings(self, **settings: Any) -> None:
        with self._lock:
            self.settings.update(settings)
            self.save()

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
        with self._lock:
            self.manifest["mode"] = mode
            self.save()

    def set_boundary_width(self, width: int) -> None:
        if int(width) < 1:
            raise WorkbenchError(f"boundary width must be at least 1 pixel, got {width}")
        with self._lock:
            self.manifest["boundary_width"] = int(width)
            self.save()

    def __repr__(self) -> str:
        return f"Project({str(self.path)!r}, mode={self.mode!r}, images={len(self.image_names)})"

    # ------------------------------------------------------------------ images
    def image_info(self, name: str) -> dict:
        for entry in self.manifest["images"]:
            if entry["name"] == name:
                return entry
        raise WorkbenchError(
            f"no image {name!r} in project {self.path}; images are: {', '.join(self.image_names) or 'none'}"
        )

    def _group(self, name: str) -> zarr.Group:
        self.image_info(name)
        return self._root[f"images/{name}"]

    def add_image(self, source, *, name: str | None = None, axes: str | None = None,
                  pixel_size: tuple[float, float] | None = None, z_spacing: float | None = None,
                  progress: Callable[[float, str], None] | None = None) -> str:
        """Copy an image into the project, block by block, and return its name.

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
        name = self._unique_name(_safe_name(name or src.name))
        if self.image_names:
            first = self.image_info(self.image_names[0])
            if int(first["channels"]) != src.n_channels:
                raise WorkbenchError(
                    f"image {name!r} has {src.n_channels} channel(s) but the project's images have "
                    f"{first['channels']}; all images of a project need the same channels"
                )
        group = self._root.require_group("images").create_group(name, overwrite=True)
        chunks = tuple(1 if a == "Z" else (s if a == "C" else CHUNK) for a, s in zip(src.axes, src.shape))
        image = group.create_array("image", shape=src.shape, dtype=src.dtype, chunks=chunks)
        image.attrs["axes"] = src.axes
        lead_axes = src.axes[:-2]
        planes = [()]
        if "Z" in lead_axes:
            planes = [(z,) for z in range(src.n_slices)]
        blocks = list(iter_blocks(src.shape, 2048))
        total = len(planes) * len(blocks)
        step = 0
        try:
            for plane in planes:
                lead = plane + ((slice(None),) if "C" in lead_axes else ())
                for ys, xs in blocks:
                    block = src[lead + (ys, xs)]
                    if block.dtype.kind == "f" and not np.all(np.isfinite(block)):
                        raise WorkbenchError(
                            f"image {name!r} holds NaN or infinite values (first in rows {ys.start}-{ys.stop}, "
                            f"columns {xs.start}-{xs.stop}); replace them (e.g. with 0) before adding the image"
                        )
                    image[lead + (ys, xs)] = block
                    step += 1
                    if progress:
                        progress(step / total, f"copying {name}")
        except BaseException:
            del self._root["images"][name]
            raise
        spatial = src.shape[:1] + src.spatial_shape if "Z" in src.axes else src.spatial_shape
        label_chunks = (1, CHUNK, CHUNK) if len(spatial) == 3 else (CHUNK, CHUNK)
        group.create_array("labels", shape=spatial, dtype=_labels.label_dtype(self.n_classes),
                           chunks=label_chunks, fill_value=0)
        entry = {
            "name": name,
            "source": src.source,
            "axes": src.axes,
            "shape": list(src.shape),
            "dtype": str(src.dtype),
            "channels": src.n_channels,
            "slices": src.n_slices,
            "pixel_size": list(pixel_size or src.pixel_size) if (pixel_size or src.pixel_size) else None,
            "z_spacing": (z_spacing or src.z_spacing) if "Z" in src.axes else None,
            "added": _now(),
        }
        with self._lock:
            self.manifest["images"].append(entry)
            self.save()
        return name

    def _unique_name(self, name: str) -> str:
        existing = set(self.image_names)
        candidate, i = name, 2
        while candidate in existing:
            candidate = f"{name}_{i}"
            i += 1
        return candidate

    def remove_image(self, name: str) -> None:
        """Forget an image and delete its data (image, labels, predictions)."""
        self.image_info(name)
        with self._lock:
            self.manifest["images"] = [e for e in self.manifest["images"] if e["name"] != name]
            self.save()
        shutil.rmtree(self.path / STORE / "images" / name, ignore_errors=True)

    def image(self, name: str) -> ImageSource:
        """The stored image, read lazily, in canonical axes."""
        info = self.image_info(name)
        pixel_size = tuple(info["pixel_size"]) if info.get("pixel_size") else None
        return ImageSource(self._group(name)["image"], info["axes"], name=name, pixel_size=pixel_size,
                           source=info.get("source"))

    def zarr_group(self, name: str) -> zarr.Group:
        """The Zarr group of one image (for pyramids and other derived layers)."""
        return self._group(name)

    # ------------------------------------------------------------------ labels
    def labels(self, name: str) -> zarr.Array:
        """The label layer as a Zarr array (read regions with slicing)."""
        return self._group(name)["labels"]

    def read_labels(self, name: str, z: int | None = None) -> np.ndarray:
        """The label layer (or one z-plane of it) as a numpy array."""
        arr = self.labels(name)
        return arr[int(z)] if z is not None and arr.ndim == 3 else arr[...]

    def write_labels(self, name: str, labels, *, region: tuple | None = None, z: int | None = None) -> None:
        """Write labels for a whole image, one z-plane, or a region of it.

        Each touched chunk is replaced atomically, so a crash leaves every chunk either as it was
        or as written.

        Parameters
        ----------
        labels : integer array
            Values 0..n_classes (0 = not annotated, 1 = background, 2.. = classes).
        region : tuple of slices, optional
            Where `labels` goes, in the label layer's (Y, X) coordinates.
        z : int, optional
            The z-plane of a z-stack.
        """
        arr = self.labels(name)
        lead: tuple = ()
        shape = arr.shape
        if arr.ndim == 3 and z is not None:
            lead, shape = (int(z),), arr.shape[1:]
        if region is not None:
            region = tuple(region)
            shape = tuple(len(range(*s.indices(n))) for s, n in zip(region, shape[-2:]))
        labels = _labels.validate_labels(labels, shape=shape, n_classes=self.n_classes,
                                         name=f"labels for {name!r}")
        arr[lead + (region or ())] = labels.astype(arr.dtype, copy=False)

    def import_labels(self, name: str, path_or_array, *, instances: bool = False, z: int | None = None) -> None:
        """Import a label image (project convention) or, with ``instances=True``, an instance mask."""
        data = path_or_array
        if isinstance(path_or_array, (str, os.PathLike)):
            data = open_image(path_or_array)[...]
        data = np.asarray(data)
        self._check_label_import_shape(name, data.shape, z)
        if instances:
            if self.mode != "instance":
                raise WorkbenchError("--instances needs an instance-mode project; import a class map instead")
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

    def label_stats(self, name: str | None = None) -> dict:
        """Pixels per class, painted objects and annotated fraction, for one image or all."""
        names = [name] if name else self.image_names
        total = {"pixels": {c: 0 for c in self.class_names}, "annotated_pixels": 0, "pixels_total": 0}
        if self.mode == "instance":
            total["objects"] = 0
        for n in names:
            labels = self.read_labels(n)
            stats = _labels.label_statistics(labels, self.class_names, self.mode, volume=self.boundaries == "3d")
            for c, v in stats["pixels"].items():
                total["pixels"][c] += v
            total["annotated_pixels"] += int(sum(stats["pixels"].values()))
            total["pixels_total"] += int(labels.size)
            if self.mode == "instance":
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
                "`workbench labels`) before training"
            )
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
        """A stored prediction layer, or None when there is none yet or its writing was interrupted."""
        if kind not in PREDICTION_KINDS:
            raise WorkbenchError(f"prediction kind must be one of {', '.join(PREDICTION_KINDS)}, got {kind!r}")
        group = self._group(name)
        try:
            array = group[f"predictions/{kind}"]
        except KeyError:
            return None
        return array if array.attrs.get("complete", True) else None

    def mark_prediction_complete(self, name: str) -> None:
        """Declare every prediction layer of an image fully written (see `create_prediction`)."""
        group = self._group(name)
        for kind in PREDICTION_KINDS:
            try:
                group[f"predictions/{kind}"].attrs["complete"] = True
            except KeyError:
                continue

    def create_prediction(self, name: str, kind: str, shape: tuple, dtype, *, model_version: int | None = None,
                          chunks: tuple | None = None) -> zarr.Array:
        """An empty prediction layer to be filled tile by tile (replaces an older one)."""
        if kind not in PREDICTION_KINDS:
            raise WorkbenchError(f"prediction kind must be one of {', '.join(PREDICTION_KINDS)}, got {kind!r}")
        group = self._group(name).require_group("predictions")
        if chunks is None:
            chunks = tuple(min(s, CHUNK) if i >= len(shape) - 2 else 1 for i, s in enumerate(shape))
        arr = group.create_array(kind, shape=tuple(shape), dtype=dtype, chunks=chunks, overwrite=True,
                                 fill_value=0)
        # Incomplete until `mark_prediction_complete`: a crash mid-prediction leaves no half layer in view.
        arr.attrs.update({"model_version": model_version, "created": _now(), "complete": False})
        return arr

    # ------------------------------------------------------------------ models
    @property
    def models(self) -> list[dict]:
        return self.manifest.setdefault("models", [])

    def new_model_dir(self, method: str) -> tuple[int, Path]:
        """The next model version number and a fresh folder for it."""
        with self._lock:
            version = max((m["version"] for m in self.models), default=0) + 1
            directory = self.path / MODELS / f"v{version:03d}-{_safe_name(method)}"
            if directory.exists():
                shutil.rmtree(directory)  # left by an interrupted training, never registered
            directory.mkdir(parents=True)
        return version, directory

    def register_model(self, version: int, directory: Path, *, method: str, settings: dict | None = None,
                       metrics: dict | None = None, parent: int | None = None) -> dict:
        """Record a finished model version with its settings, label counts and metrics."""
        record = {
            "version": int(version),
            "method": method,
            "path": str(Path(directory).relative_to(self.path)),
            "created": _now(),
            "parent": parent,
            "settings": settings or {},
            "labels": self.label_stats(),
            "metrics": metrics or {},
        }
        with self._lock:
            self.manifest["models"] = [m for m in self.models if m["version"] != version] + [record]
            self.save()
        return record

    def model_record(self, version: int | None = None, *, method: str | None = None) -> dict:
        """A model version's record (the latest, or the latest of one method, by default)."""
        candidates = [m for m in self.models if method is None or m["method"] == method]
        if not candidates:
            raise WorkbenchError(
                f"project {self.path} has no {method + ' ' if method else ''}model yet; train one first "
                f"(`workbench train {self.path}`)"
            )
        if version is None:
            return max(candidates, key=lambda m: m["version"])
        for m in candidates:
            if m["version"] == int(version):
                return m
        raise WorkbenchError(
            f"no model version {version} in {self.path}; versions are "
            f"{', '.join(str(m['version']) for m in candidates)}"
        )

    def model_dir(self, version: int | None = None, *, method: str | None = None) -> Path:
        return self.path / self.model_record(version, method=method)["path"]

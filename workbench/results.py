"""A model's results for people: where it is unsure, overlay pictures, and a results folder to hand on.

The review step and the batch notebook call these; each is one engine call over a project whose
images were predicted with `workbench.pipeline.predict_project` (or are predicted here).

- `least_certain_regions`: the squares most worth painting next (active learning).
- `stored_summary`: how sure the model is over an image predicted earlier.
- `prediction_picture`, `region_picture`: RGB pictures of a prediction and of one region, where
  the model is unsure hatched black and white (`hatch_unsure`): no object colour hides it.
- `count_objects`: the objects of a stored result, the one count Review and Segment both show.
- `segment_and_measure`: labels, overlays, measurements and a zip for project images and files.
- `list_inputs`: the images of a folder, a file or a Zarr given by a person.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from workbench import pipeline
from workbench.conventions import IMAGE_SUFFIXES, image_stem, is_image_path
from workbench.errors import WorkbenchError
from workbench.store import Project
from workbench.validate import whole_number

__all__ = [
    "UncertainRegion", "ResultFiles", "least_certain_regions", "stored_summary", "prediction_picture",
    "region_picture", "hatch_unsure", "count_objects", "segment_and_measure", "list_inputs", "MAX_READ",
]

MAX_READ = 1024       # uncertainty is computed on at most this many pixels a side
DOWNLOAD_SIDE = 4096  # overlay pictures of the results folder are at most this many pixels a side
MIN_TILE = 32


@dataclass(frozen=True)
class UncertainRegion:
    """A square of an image where the model is unsure.

    Attributes
    ----------
    name : str
        Project image.
    y, x : int
        Centre in image pixels.
    size : int
        Side of the square in image pixels.
    z : int
        Plane of a z-stack (0 otherwise).
    score : float
        Mean uncertainty in the square, lowered where it is labelled already.
    """

    name: str
    y: int
    x: int
    size: int
    z: int
    score: float


@dataclass(frozen=True)
class ResultFiles:
    """What `segment_and_measure` wrote.

    Attributes
    ----------
    folder : Path
        The results folder.
    labels, overlays : list of Path
        ``labels/<image>_labels.tif`` and ``overlays/<image>_overlay.png``, one per image, in input order.
    measurements : Path
        ``measurements.csv``: one row per object (or region) of every image.
    zip : Path
        ``results.zip`` holding all of the above.
    objects : int
        Rows of the measurements table.
    counts : dict of str to int
        Objects (or regions) per image, as in the table and as Review shows them (`count_objects`).
    warnings : dict of str to list of str
        Per image, what looks wrong with its result and the likely cause (`workbench.pipeline.sanity_warnings`);
        also in ``warnings.txt`` and the measurements' ``warning`` column.
    """

    folder: Path
    labels: list[Path]
    overlays: list[Path]
    measurements: Path
    zip: Path
    objects: int
    counts: dict[str, int] = field(default_factory=dict)
    warnings: dict = field(default_factory=dict)


def _read_stride(shape: Sequence[int], limit: int = MAX_READ) -> int:
    return max(1, math.ceil(max(shape[-2:]) / limit))


def _prediction_layer(project: Project, name: str):
    return project.prediction(name, "instances" if project.mode == "instance" else "classes")


def least_certain_regions(project: Project, names: Sequence[str] | None = None, *, count: int = 6,
                          window: int | None = None) -> list[UncertainRegion]:
    """The `count` squares where the model is least certain, over the predicted project images.

    Uncertainty comes from `workbench.pipeline.uncertainty` on the stored probabilities; a square
    already labelled counts less, since labels there teach the model little new.

    Parameters
    ----------
    project : Project
    names : sequence of str, optional
        Images to look at (default: all; those not predicted are skipped).
    count : int
        How many squares to return, most uncertain first.
    window : int, optional
        Side of a square in image pixels (default: an eighth of the image side, 32..256).
    """
    count = whole_number(count, "count")
    candidates: list[UncertainRegion] = []
    for name in names if names is not None else project.image_names:
        probabilities = project.prediction(name, "probabilities")
        if probabilities is None:
            continue
        stacked = probabilities.ndim == 4
        height, width = probabilities.shape[-2:]
        stride = _read_stride(probabilities.shape)
        side = window or int(min(max(32, min(height, width) // 8), 256))
        cells = max(1, side // stride)
        labels = project.labels(name)
        for z in range(probabilities.shape[0] if stacked else 1):
            lead = (z,) if stacked else ()
            step = (slice(None, None, stride), slice(None, None, stride))
            probs = np.asarray(probabilities[lead + (slice(None),) + step])
            unsure = pipeline.uncertainty(probs, project.n_outputs)
            labelled = np.asarray(labels[lead + step]) > 0
            rows, cols = max(1, unsure.shape[0] // cells), max(1, unsure.shape[1] // cells)
            cy, cx = min(cells, unsure.shape[0]), min(cells, unsure.shape[1])
            u = unsure[:rows * cy, :cols * cx].reshape(rows, cy, cols, cx).mean(axis=(1, 3))
            done = labelled[:rows * cy, :cols * cx].reshape(rows, cy, cols, cx).mean(axis=(1, 3))
            score = u * (1.0 - 0.8 * done)
            for r, c in zip(*np.unravel_index(np.argsort(score, axis=None)[::-1][:count], score.shape)):
                candidates.append(UncertainRegion(
                    name=name, y=int(min((r + 0.5) * cy * stride, height - 1)),
                    x=int(min((c + 0.5) * cx * stride, width - 1)), size=int(cy * stride), z=z,
                    score=float(score[r, c])))
    candidates.sort(key=lambda region: region.score, reverse=True)
    return candidates[:count]


def stored_summary(project: Project, name: str) -> dict[str, Any] | None:
    """Mean uncertainty (first plane, sampled) and model version of an image predicted earlier.

    The same keys `workbench.pipeline.predict_project` reports, for a prediction of an earlier
    session; None when the image has no prediction.
    """
    probabilities = project.prediction(name, "probabilities")
    if probabilities is None:
        return None
    stride = _read_stride(probabilities.shape)
    first_plane = (0,) * (probabilities.ndim - 3)
    sampled = np.asarray(probabilities[first_plane + (slice(None), slice(None, None, stride),
                                                      slice(None, None, stride))])
    info = {"mean_uncertainty": float(pipeline.uncertainty(sampled, project.n_outputs).mean()),
            "model_version": probabilities.attrs.get("model_version")}
    kind = "instances" if project.mode == "instance" else "classes"
    labels = project.prediction(name, kind)
    if labels is not None:
        step = _read_stride(labels.shape)
        plane = np.asarray(labels[(0,) * (labels.ndim - 2) + (slice(None, None, step), slice(None, None, step))])
        painted = pipeline.painted_object_areas(project) / step ** 2 if project.mode == "instance" else None
        if project.mode == "instance":
            info["objects"] = count_objects(project, name)
        info["warnings"] = pipeline.sanity_warnings(plane, project.mode, painted_areas=painted)
    return info


def _overlay(project: Project, image: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    from workbench.predict import overlay_classes, overlay_instances

    if project.mode == "instance":
        return overlay_instances(image, prediction)
    return overlay_classes(image, prediction, project.class_colors)


def prediction_picture(project: Project, name: str, *, max_side: int = DOWNLOAD_SIDE,
                       z: int | None = None) -> np.ndarray | None:
    """The stored prediction drawn over the image (RGB uint8), at most `max_side` pixels a side.

    `z` is the plane of a z-stack (default: the middle one); None when there is no prediction.
    """
    prediction = _prediction_layer(project, name)
    if prediction is None:
        return None
    stride = _read_stride(prediction.shape, max_side)
    step = (slice(None, None, stride), slice(None, None, stride))
    stacked = prediction.ndim == 3
    z = (prediction.shape[0] // 2 if z is None else z) if stacked else 0
    image = np.asarray(project.image(name).plane(z)[(slice(None),) + step])
    return _overlay(project, image, np.asarray(prediction[((z,) if stacked else ()) + step]))


#: Period in screen pixels of the hatching that marks where the model is unsure (`hatch_unsure`).
HATCH_PERIOD = 8
#: How strongly a completely unsure pixel (uncertainty 1) is hatched, 0..1.
HATCH_STRENGTH = 0.7


def hatch_unsure(picture: np.ndarray, unsure: np.ndarray, *, period: int = HATCH_PERIOD) -> np.ndarray:
    """Mark uncertainty on an RGB picture with black-and-white diagonal hatching.

    Object colours use every hue, so a colour tint would vanish on objects of that colour; the
    black and white stripes differ from every object colour. A pixel is hatched as strongly as
    the model is unsure there (0 = not at all, 1 = `HATCH_STRENGTH`).

    Parameters
    ----------
    picture : (Y, X, 3) array
        RGB, 0..255.
    unsure : (Y, X) array
        Uncertainty in [0, 1] (`workbench.pipeline.uncertainty`), at the picture's size.

    Returns
    -------
    (Y, X, 3) uint8 array

    Examples
    --------
    >>> marked = hatch_unsure(np.full((8, 8, 3), 200, np.uint8), np.ones((8, 8)))
    >>> sorted(np.unique(marked).tolist())
    [60, 239]
    """
    picture = np.asarray(picture, np.float32)
    unsure = np.clip(np.asarray(unsure, np.float32), 0, 1)
    if unsure.shape != picture.shape[:2]:
        raise WorkbenchError(f"`unsure` (shape {unsure.shape}) must have the picture's size {picture.shape[:2]}")
    rows, cols = np.indices(unsure.shape)
    stripes = np.where(((rows + cols) // max(1, int(period) // 2)) % 2 == 0, 255.0, 0.0)[..., None]
    weight = (HATCH_STRENGTH * unsure)[..., None]
    return ((1 - weight) * picture + weight * stripes).round().clip(0, 255).astype(np.uint8)


def region_picture(project: Project, region: UncertainRegion, *, side: int = 224) -> np.ndarray:
    """The prediction around a region, scaled to `side` pixels, hatched black and white where the
    model is unsure (`hatch_unsure`) (RGB uint8).

    The window is shifted (not cut) at the image border, so the picture stays square.
    """
    prediction = _prediction_layer(project, region.name)
    probabilities = project.prediction(region.name, "probabilities")
    if prediction is None or probabilities is None:
        raise WorkbenchError(f"image {region.name!r} has no prediction; predict it first")
    height, width = prediction.shape[-2:]
    window = 2 * max(region.size, 32)
    y0 = int(np.clip(region.y - window // 2, 0, max(height - window, 0)))
    x0 = int(np.clip(region.x - window // 2, 0, max(width - window, 0)))
    ys, xs = slice(y0, min(y0 + window, height)), slice(x0, min(x0 + window, width))
    lead = (region.z,) if prediction.ndim == 3 else ()
    image = np.asarray(project.image(region.name).plane(region.z)[(slice(None), ys, xs)])
    picture = _overlay(project, image, np.asarray(prediction[lead + (ys, xs)]))
    unsure = pipeline.uncertainty(np.asarray(probabilities[lead + (slice(None), ys, xs)]), project.n_outputs)
    # Nearest-neighbour scaling keeps pixels crisp: people should see the pixels they will paint.
    # The hatching is drawn after scaling, so its stripes are as fine on screen whatever the zoom.
    scale = side / max(picture.shape[:2])
    rows = (np.arange(round(picture.shape[0] * scale)) / scale).astype(int)
    cols = (np.arange(round(picture.shape[1] * scale)) / scale).astype(int)
    return hatch_unsure(picture[rows[:, None], cols[None, :]], unsure[rows[:, None], cols[None, :]])


def count_objects(project: Project, name: str) -> int | None:
    """How many objects the stored result of image `name` holds; None before it is predicted.

    The one count Review and Segment show: distinct object ids (through a z-stack segmented as
    volumes, else summed over its planes), read block by block, never the whole image at once.
    Semantic mode: the connected regions of the classes other than background, as measured.
    """
    from scipy import ndimage as ndi

    kind = "instances" if project.mode == "instance" else "classes"
    stored = project.prediction(name, kind)
    if stored is None:
        return None
    if project.mode != "instance":
        planes = [stored[z] for z in range(stored.shape[0])] if stored.ndim == 3 else [stored[...]]
        return int(sum(ndi.label(np.asarray(plane) == c)[1] for plane in planes for c in range(1, project.n_classes)))
    through = stored.ndim == 2 or pipeline.segments_volumes(project, name)
    groups = [()] if through else [(z,) for z in range(stored.shape[0])]
    total = 0
    for lead in groups:
        ids: set[int] = set()
        shape = stored.shape[len(lead):]
        rows = max(1, (MAX_READ * MAX_READ) // max(int(np.prod(shape[1:], dtype=np.int64)), 1))
        for start in range(0, shape[0], rows):
            block = np.asarray(stored[lead + (slice(start, min(start + rows, shape[0])),)])
            ids.update(np.unique(block[block > 0]).tolist())
        total += len(ids)
    return total


def list_inputs(path) -> list[Path]:
    """Image files in a folder (sorted), or the one image / Zarr given.

    Raises
    ------
    WorkbenchError
        When the path does not exist or the folder holds no images.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise WorkbenchError(f"{path} does not exist; type the full path of a folder, an image file or a .zarr")
    if path.is_file() or path.suffix.lower() == ".zarr":
        return [path]
    found = sorted(p for p in path.iterdir() if is_image_path(p) and not p.name.startswith("."))
    if not found:
        raise WorkbenchError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder {path}")
    return found


def segment_and_measure(project: Project, *, names: Sequence[str] = (), files: Sequence = (),
                        model_version: int | None = None, tile_size: int | None = None, output_dir=None,
                        progress: Callable[[float], Any] | None = None) -> ResultFiles:
    """Segment project images and image files with a model; write labels, overlays and measurements.

    Parameters
    ----------
    project : Project
    names : sequence of str
        Project images (predictions are stored in the project too).
    files : sequence of path-like
        Image files or Zarr stores elsewhere (read and written tile by tile, any size).
    model_version : int, optional
        The model to use (default: the latest).
    tile_size : int, optional
        Tile side in pixels, at least 32 (default: the model's).
    output_dir : path-like, optional
        Where results go (created; default ``<project>/results/model-v<version>``):
        ``labels/*_labels.tif``, ``overlays/*_overlay.png``, ``measurements.csv``, ``results.zip``.
    progress : callable, optional
        ``progress(fraction)``.

    Returns
    -------
    ResultFiles

    Raises
    ------
    WorkbenchError
        When nothing is chosen, there is no model, or an input cannot be read.
    """
    import pandas as pd

    from workbench.predict import write_table
    from workbench.store import atomic_write, open_image, write_image

    names, files = list(names), [Path(f) for f in files]
    if not names and not files:
        raise WorkbenchError("choose at least one project image or image file to segment")
    if tile_size is not None:
        whole_number(tile_size, "tile_size", minimum=MIN_TILE)
    version = pipeline.model_record(project, model_version).version
    report = progress or (lambda fraction: None)
    folder = Path(output_dir) if output_dir is not None else project.path / "results" / f"model-v{version:03d}"
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    (folder / "overlays").mkdir(parents=True, exist_ok=True)
    total = len(names) + len(files)
    labels_paths, overlay_paths, tables = [], [], []
    warnings: dict[str, list[str]] = {}
    if names:
        summary = pipeline.predict_project(project, names=names, model_version=version, tile_size=tile_size,
                                           progress=lambda f, m="": report(f * len(names) / total))
        warnings.update({name: info.get("warnings", []) for name, info in summary.items()})
        for name in names:
            labels_paths.append(pipeline.export_prediction(project, name, folder / "labels" / f"{name}_labels.tif"))
            overlay_paths.append(write_image(folder / "overlays" / f"{name}_overlay.png",
                                             prediction_picture(project, name)))
        table = pipeline.measure_project(project, names=names)
        if len(table):
            tables.append(table)
    for offset, path in enumerate(files):
        done = len(names) + offset
        stem = image_stem(path)
        out = folder / "labels" / f"{stem}_labels.tif"
        info = pipeline.predict_file(project, path, out, model_version=version, tile_size=tile_size,
                                     progress=lambda f, m="", _done=done: report((_done + f) / total))
        warnings[stem] = info.get("warnings", [])
        labels_paths.append(out)
        source = open_image(path)
        labels = open_image(out)
        stacked = len(labels.shape) == 3
        for z in range(source.n_slices):
            plane_labels = np.asarray(labels[z] if stacked else labels[...])
            intensity = np.asarray(source.plane(z)[...])
            tables.append(pipeline.measure_labels(project, plane_labels, intensity, image=stem, z=z,
                                                  pixel_size=source.pixel_size))
        middle = source.n_slices // 2
        plane_labels = np.asarray(labels[middle] if stacked else labels[...])
        picture = _overlay(project, np.asarray(source.plane(middle)[...]), plane_labels)
        overlay_paths.append(write_image(folder / "overlays" / f"{stem}_overlay.png", picture))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    # Project images: the count Review shows for them; files: the rows measured.
    counts = {image_stem(path): int((table["image"] == image_stem(path)).sum()) if len(table) else 0
              for path in files}
    counts.update({name: count_objects(project, name) or 0 for name in names})
    if len(table):
        table["warning"] = [" | ".join(warnings.get(str(image), [])) for image in table["image"]]
    measurements = write_table(table, folder / "measurements.csv")
    warnings_file = folder / "warnings.txt"
    with atomic_write(warnings_file) as tmp:
        lines = [f"{image}: {text}" for image, texts in warnings.items() for text in texts]
        tmp.write_text("\n".join(lines or ["no warnings: nothing obviously wrong with these results"]) + "\n",
                       encoding="utf-8")
    archive = folder / "results.zip"
    with atomic_write(archive) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for path in [*labels_paths, *overlay_paths, measurements, warnings_file]:
            bundle.write(path, Path(path).relative_to(folder))
    report(1.0)
    return ResultFiles(folder=folder, labels=[Path(p) for p in labels_paths],
                       overlays=[Path(p) for p in overlay_paths], measurements=Path(measurements),
                       zip=archive, objects=int(len(table)), counts=counts, warnings={k: v for k, v in warnings.items() if v})

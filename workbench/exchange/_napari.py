"""napari plugin (npe2): open a project folder or an OME-Zarr output; save painted labels back.

The manifest is ``napari.yaml`` beside this module, registered through the ``napari.manifest``
entry point. Nothing here imports napari: the reader returns layer data tuples
``(data, kwargs, layer_type)`` and the writer takes them, as npe2 specifies, so both work (and
are tested) without a display.

A project opens as, per image: the image (lazy Zarr, one layer per channel), the painted labels
in the project's convention and colours (0 = not annotated, 1 = background, 2.. = classes), the
stored predictions (probabilities, classes or instances) and the instance outlines as a shapes
layer. Labels painted or corrected in napari go back with the writer: the target is the project
folder, the image is the one the layer came from (its metadata says which).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from workbench.conventions import probability_names
from workbench.errors import WorkbenchError

__all__ = ["get_reader", "read_project", "read_ome_zarr", "write_labels", "MANIFEST"]

MANIFEST = Path(__file__).with_name("napari.yaml")
PROJECT_KEY = "workbench_project"
IMAGE_KEY = "workbench_image"
# Shapes layers slow napari down beyond this many polygons; larger images keep the instance labels.
MAX_OUTLINE_OBJECTS = 5000

LayerData = tuple[Any, dict, str]


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """npe2 reader hook: a reader for a project folder or an OME-Zarr, else None (not ours)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    folder = Path(path)
    if (folder / "project.json").is_file():
        return lambda p: read_project(p[0] if isinstance(p, list) else p)
    if _multiscales(folder) is not None or _label_groups(folder):
        return lambda p: read_ome_zarr(p[0] if isinstance(p, list) else p)
    return None


def _colors(project) -> dict[int, str]:
    """Label value -> colour: transparent for 'not annotated', then the project's class colours."""
    colors: dict[Any, str] = {0: "transparent"}
    colors.update({index + 1: color for index, color in enumerate(project.class_colors)})
    colors[None] = "transparent"
    return colors


def _scale(source, ndim: int) -> list[float]:
    spatial = list(source.pixel_size) if source.pixel_size else [1.0, 1.0]
    return [1.0] * (ndim - 2) + spatial


def read_project(path: str | os.PathLike) -> list[LayerData]:
    """Layer data tuples for every image of a project: image, labels, predictions, outlines.

    Parameters
    ----------
    path : path-like
        A project folder (holding ``project.json``).

    Returns
    -------
    list of (data, kwargs, layer_type)
    """
    from workbench.store import Project

    project = Project.open(path)
    layers: list[LayerData] = []
    for name in project.image_names:
        source = project.image(name)
        meta = {PROJECT_KEY: str(project.path), IMAGE_KEY: name}
        image = project.zarr_group(name)["image"]
        spatial_scale = _scale(source, 2)
        image_kwargs: dict[str, Any] = {"name": name, "metadata": dict(meta)}
        if "C" in source.axes and source.n_channels > 1:
            channel_axis = source.axes.index("C")
            image_kwargs.update(channel_axis=channel_axis, scale=_scale(source, image.ndim - 1),
                                name=list(source.channel_names or [f"{name} ch{c}" for c in range(source.n_channels)]))
        else:
            image_kwargs["scale"] = _scale(source, image.ndim)
        layers.append((image, image_kwargs, "image"))  # stored in canonical order: YX, CYX, ZYX, ZCYX
        labels = project.labels(name)
        layers.append((labels, {"name": f"{name} labels", "metadata": dict(meta, kind="labels"),
                                "colormap": _colors(project), "scale": _scale(source, labels.ndim),
                                "opacity": 0.6}, "labels"))
        probabilities = project.prediction(name, "probabilities")
        if probabilities is not None:
            channel_axis = probabilities.ndim - 3
            names = probability_names(project.mode, project.class_names, probabilities.shape[channel_axis])
            layers.append((probabilities, {"name": [f"{name} P({c})" for c in names],
                                           "channel_axis": channel_axis, "visible": False,
                                           "scale": _scale(source, probabilities.ndim - 1),
                                           "metadata": dict(meta, kind="probabilities")}, "image"))
        for kind in ("classes", "instances"):
            predicted = project.prediction(name, kind)
            if predicted is None:
                continue
            kwargs = {"name": f"{name} {kind}", "scale": _scale(source, predicted.ndim),
                      "metadata": dict(meta, kind=kind), "opacity": 0.5}
            if kind == "classes":
                kwargs["colormap"] = {index: color for index, color in enumerate(project.class_colors)} | {
                    0: "transparent", None: "transparent"}
            layers.append((predicted, kwargs, "labels"))
            if kind == "instances" and predicted.ndim == 2:
                outlines = _outline_layer(np.asarray(predicted[...]), name, meta, spatial_scale)
                if outlines is not None:
                    layers.append(outlines)
    return layers


def _outline_layer(instances: np.ndarray, name: str, meta: dict, scale: list[float]) -> LayerData | None:
    from workbench.exchange._outlines import outline_objects

    outlines = outline_objects(instances)
    if not outlines or len(outlines) > MAX_OUTLINE_OBJECTS:
        return None
    polygons, ids = [], []
    for outline in outlines:
        for polygon in outline.polygons:
            exterior = np.asarray(polygon[0][:-1], dtype=np.float64)
            # napari puts pixel centres on integer coordinates; our corners are at pixel edges.
            polygons.append(exterior[:, ::-1] - 0.5)
            ids.append(outline.label)
    return (polygons, {"name": f"{name} outlines", "shape_type": "polygon", "edge_color": "yellow",
                       "face_color": "transparent", "edge_width": 1, "scale": scale,
                       "properties": {"label": np.asarray(ids)}, "metadata": dict(meta, kind="outlines")},
            "shapes")


# ------------------------------------------------------------------------------------------ OME-Zarr
def _attrs(folder: Path) -> dict:
    for name in ("zarr.json", ".zattrs"):
        file = folder / name
        if file.is_file():
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                return {}
            data = data.get("attributes", data) if name == "zarr.json" else data
            return data.get("ome", data)
    return {}


def _multiscales(folder: Path) -> list | None:
    if not folder.is_dir():
        return None
    return _attrs(folder).get("multiscales")


def _label_groups(folder: Path) -> list[str]:
    labels = folder / "labels"
    return list(_attrs(labels).get("labels", [])) if labels.is_dir() else []


def _levels(folder: Path, multiscales: list):
    import zarr

    group = zarr.open_group(str(folder), mode="r")
    ms = multiscales[0]
    arrays = [group[d["path"]] for d in ms["datasets"]]
    axes = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])]
    scale = None
    for transform in ms["datasets"][0].get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = [float(v) for v in transform["scale"]]
    return arrays, axes, scale


def read_ome_zarr(path: str | os.PathLike) -> list[LayerData]:
    """Layer data tuples for an OME-Zarr image (all resolution levels) and its label images.

    Parameters
    ----------
    path : path-like
        An OME-Zarr group with ``multiscales`` metadata, or one with a ``labels`` subgroup.
    """
    folder = Path(path)
    layers: list[LayerData] = []
    multiscales = _multiscales(folder)
    if multiscales is not None:
        arrays, axes, scale = _levels(folder, multiscales)
        kind = "labels" if "image-label" in _attrs(folder) else "image"
        data = arrays if len(arrays) > 1 else arrays[0]
        kwargs: dict[str, Any] = {"name": folder.name.removesuffix(".zarr").removesuffix(".ome"),
                                  "multiscale": len(arrays) > 1}
        if scale:
            kwargs["scale"] = scale
        if kind == "image" and "c" in axes:
            kwargs["channel_axis"] = axes.index("c")
            if scale:
                kwargs["scale"] = [s for i, s in enumerate(scale) if i != axes.index("c")]
        layers.append((data, kwargs, kind))
    for label_name in _label_groups(folder):
        sub = folder / "labels" / label_name
        label_ms = _multiscales(sub)
        if label_ms is None:
            continue
        arrays, _, scale = _levels(sub, label_ms)
        kwargs = {"name": label_name, "multiscale": len(arrays) > 1}
        if scale:
            kwargs["scale"] = scale
        layers.append((arrays if len(arrays) > 1 else arrays[0], kwargs, "labels"))
    if not layers:
        raise WorkbenchError(f"{folder} holds no OME-Zarr image or labels")
    return layers


# ------------------------------------------------------------------------------------------ writer
def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer hook: save a labels layer into a project as the labels of its image.

    Parameters
    ----------
    path : str
        The project folder.
    data : array-like of int
        Labels in the project's convention (0 = not annotated, 1 = background, 2.. = classes),
        the shape of the image's label layer.
    meta : dict
        The layer's attributes; ``meta["metadata"]["workbench_image"]`` (set by the reader)
        names the image, else the layer name does (``"<image> labels"`` or ``"<image>"``).

    Returns
    -------
    list of str
        The project's label store written.
    """
    from workbench.store import Project

    project = Project.open(path)
    metadata = meta.get("metadata") or {}
    image = metadata.get(IMAGE_KEY)
    if image is None:
        layer_name = str(meta.get("name", ""))
        image = layer_name.removesuffix(" labels")
    if image not in project.image_names:
        raise WorkbenchError(
            f"labels layer {meta.get('name')!r} belongs to no image of project {project.path} "
            f"(images: {', '.join(project.image_names)}); name the layer '<image> labels'"
        )
    project.write_labels(image, np.asarray(data))
    return [str(project.path / "data.zarr" / "images" / image / "labels")]

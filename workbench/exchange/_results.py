"""One engine call per results export: a project image's instances for QuPath or ImageJ, tables per tool."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError

__all__ = ["export_instances", "export_table"]


def export_instances(project, name: str, out: str | os.PathLike, *, z: int | None = None) -> Path:
    """Write a project image's predicted instances for another tool, chosen by the suffix of `out`.

    Parameters
    ----------
    project : workbench.store.Project
        An instance-mode project with a prediction for `name`.
    name : str
        The project image.
    out : path-like
        ``.geojson``: outlines for QuPath, classified with the project's object class and colour,
        each with its measurements; ``.tif``: an ImageJ label image with the image's pixel size.
    z : int, optional
        The z-plane of a z-stack for GeoJSON (required there: QuPath outlines are 2-D).

    Returns
    -------
    Path

    Raises
    ------
    WorkbenchError
        For a semantic project, an image without prediction, a z-stack without `z`, or another suffix.
    """
    from workbench.exchange._imagej import write_imagej_labels
    from workbench.exchange._outlines import write_geojson
    from workbench.predict import hex_to_rgb

    out = Path(out)
    if project.mode != "instance":
        raise WorkbenchError("outlines and instance label images need an instance-mode project")
    stored = project.prediction(name, "instances")
    if stored is None:
        raise WorkbenchError(f"image {name!r} has no prediction yet; run `workbench predict {project.path} {name}`",
                             in_app=f"image {name!r} has no prediction yet; open step 4 (Review): it predicts every "
                                    "image with the latest model")
    pixel_size = project.image_info(name).pixel_size
    suffix = out.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return write_imagej_labels(out, stored[...], pixel_size=tuple(pixel_size) if pixel_size else None)
    if suffix not in (".geojson", ".json"):
        raise WorkbenchError(f"cannot tell the format of {out.name!r}: use .geojson (QuPath) or .tif (ImageJ)")
    if stored.ndim == 3 and z is None:
        raise WorkbenchError(f"image {name!r} is a z-stack of {stored.shape[0]} planes; pick one with z=")
    labels = np.asarray(stored[int(z)] if stored.ndim == 3 else stored[...])
    from workbench.pipeline import measure_labels

    source = project.image(name)
    table = measure_labels(project, labels, source.plane(int(z or 0))[...], image=name, z=int(z or 0),
                           pixel_size=pixel_size)
    object_class = project.class_names[1] if len(project.class_names) > 1 else "object"
    color = hex_to_rgb(project.class_colors[1]) if len(project.class_colors) > 1 else (255, 0, 0)
    return write_geojson(out, labels, class_name=object_class, color=color, measurements=table)


def export_table(project, out: str | os.PathLike, tool: str, *, names=None) -> Path:
    """The project's measurement table in `tool`'s column names, as CSV (see `table_for_tool`)."""
    from workbench.exchange._tables import table_for_tool
    from workbench.pipeline import measure_project
    from workbench.predict import write_table

    table = table_for_tool(measure_project(project, names=names), tool)
    return write_table(table, out)

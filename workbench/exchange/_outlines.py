"""Instance outlines as GeoJSON polygons that QuPath imports, and back to label images.

Outlines follow pixel edges (vertices on pixel corners, in pixel units with the origin at the
top-left corner of the image, QuPath's convention), so a polygon's area is exactly the
object's pixel count and rasterising it at pixel centres gives the object back. Pixels that
touch only at a corner belong to separate polygons (4-connectivity); an object in several
pieces becomes a MultiPolygon, and holes become interior rings. Exterior rings run
counter-clockwise in x/y, as RFC 7946 asks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from workbench.errors import WorkbenchError
from workbench.store import atomic_write

__all__ = ["ObjectOutline", "outline_objects", "outlines_to_geojson", "write_geojson", "read_geojson",
           "geojson_to_labels"]

# Walking directions (dx, dy) in image coordinates (y down), and the right turn of each.
_E, _S, _W, _N = (1, 0), (0, 1), (-1, 0), (0, -1)
_RIGHT = {_E: _S, _S: _W, _W: _N, _N: _E}
_LEFT = {v: k for k, v in _RIGHT.items()}

Ring = list[tuple[int, int]]


@dataclass(frozen=True)
class ObjectOutline:
    """The outline of one object.

    Attributes
    ----------
    label : int
        The object's id in the label image.
    polygons : list of list of rings
        One entry per 4-connected piece: ``[exterior, hole, hole, ...]``, each ring a closed
        list of ``(x, y)`` pixel-corner coordinates (first point repeated last).
    area : int
        Pixels in the object (equal to the polygons' area).
    """

    label: int
    polygons: list[list[Ring]]
    area: int


def _boundary_edges(mask: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Directed pixel edges with the object on their right, keyed by start corner."""
    padded = np.pad(mask, 1)
    inside = padded[1:-1, 1:-1]
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    sides = (  # (outside neighbour, start corner offset (dx, dy), direction)
        (~padded[:-2, 1:-1], (0, 0), _E),   # top side, walked east
        (~padded[1:-1, 2:], (1, 0), _S),    # right side, walked south
        (~padded[2:, 1:-1], (1, 1), _W),    # bottom side, walked west
        (~padded[1:-1, :-2], (0, 1), _N),   # left side, walked north
    )
    for outside, (ox, oy), direction in sides:
        rows, cols = np.nonzero(inside & outside)
        for r, c in zip(rows.tolist(), cols.tolist()):
            edges.setdefault((c + ox, r + oy), []).append(direction)
    return edges


def _next_direction(direction, outgoing):
    """At a corner where two pieces touch diagonally, turn right: pieces stay apart (4-connectivity)."""
    return next(d for d in (_RIGHT[direction], direction, _LEFT[direction]) if d in outgoing)


def _trace_rings(mask: np.ndarray) -> list[Ring]:
    """Closed rings of pixel corners around the True pixels of `mask` (collinear points dropped)."""
    edges = _boundary_edges(mask)
    rings = []
    while edges:
        start = next(iter(edges))
        first = edges[start].pop(0)
        if not edges[start]:
            del edges[start]
        ring: Ring = [start]
        direction, point = first, (start[0] + first[0], start[1] + first[1])
        # The ring closes where the walk would take its first edge again.
        while not (point == start and _next_direction(direction, edges.get(start, []) + [first]) == first):
            outgoing = edges[point]
            chosen = outgoing[0] if len(outgoing) == 1 else _next_direction(direction, outgoing)
            outgoing.remove(chosen)
            if not outgoing:
                del edges[point]
            ring.append(point)
            direction, point = chosen, (point[0] + chosen[0], point[1] + chosen[1])
        ring.append(start)
        rings.append(_drop_collinear(ring))
    return rings


def _collinear(a, b, c) -> bool:
    return (b[0] - a[0]) * (c[1] - b[1]) == (b[1] - a[1]) * (c[0] - b[0])


def _drop_collinear(ring: Ring) -> Ring:
    points = ring[:-1]
    kept = [p for i, p in enumerate(points) if not _collinear(points[i - 1], p, points[(i + 1) % len(points)])]
    return kept + [kept[0]]


def _signed_area(ring: Ring) -> float:
    xy = np.asarray(ring, dtype=np.float64)
    return 0.5 * float(np.sum(xy[:-1, 0] * xy[1:, 1] - xy[1:, 0] * xy[:-1, 1]))


def _polygons_from_rings(rings: list[Ring]) -> list[list[Ring]]:
    """Group rings into exteriors (positive area in x/y) with the holes (negative) they contain."""
    from matplotlib.path import Path as MplPath

    exteriors = [r for r in rings if _signed_area(r) > 0]
    holes = [r for r in rings if _signed_area(r) < 0]
    polygons = [[ring] for ring in exteriors]
    for hole in holes:
        # A hole's corners lie on its exterior's pixels; test the centre of the pixel right of its first edge.
        (x0, y0), (x1, y1) = hole[0], hole[1]
        dx, dy = np.sign(x1 - x0), np.sign(y1 - y0)
        probe = (x0 + 0.5 * dx - 0.5 * dy, y0 + 0.5 * dy + 0.5 * dx)
        for polygon in sorted(polygons, key=lambda p: abs(_signed_area(p[0]))):
            if MplPath(np.asarray(polygon[0], float)).contains_point(probe):
                polygon.append(hole)
                break
    return polygons


def outline_objects(labels: Any) -> list[ObjectOutline]:
    """Pixel-edge outlines of every object of a 2-D label image.

    Parameters
    ----------
    labels : array-like of int, shape (Y, X)
        Object ids, 0 = background.

    Returns
    -------
    list of ObjectOutline
        Sorted by label.

    Raises
    ------
    WorkbenchError
        For anything but a 2-D integer image.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iub":
        raise WorkbenchError(
            f"outlines need a 2-D integer label image; got shape {labels.shape}, type {labels.dtype}. "
            "Export z-stacks one plane at a time."
        )
    outlines = []
    for index, box in enumerate(ndimage.find_objects(labels.astype(np.int64, copy=False))):
        if box is None:
            continue
        label = index + 1
        mask = labels[box] == label
        rings = [[(x + box[1].start, y + box[0].start) for x, y in ring] for ring in _trace_rings(mask)]
        outlines.append(ObjectOutline(label, _polygons_from_rings(rings), int(mask.sum())))
    return outlines


def outlines_to_geojson(labels: Any, *, class_name: str = "object", color: Sequence[int] = (255, 0, 0),
                        object_type: str = "detection", measurements: Any = None) -> dict:
    """A GeoJSON FeatureCollection of the objects, with QuPath's properties.

    Parameters
    ----------
    labels : array-like of int, shape (Y, X)
    class_name : str
        QuPath classification name of every object.
    color : (r, g, b)
        The classification's colour.
    object_type : {"detection", "annotation"}
        QuPath object type (detections are light-weight; annotations can be edited).
    measurements : pandas.DataFrame, optional
        A table with a ``label`` column (from `workbench.predict.measure_objects`); its numeric
        columns go into each feature's ``measurements``.
    """
    if object_type not in ("detection", "annotation"):
        raise WorkbenchError(f"`object_type` must be 'detection' or 'annotation'; got {object_type!r}")
    rows = {}
    if measurements is not None:
        numeric = measurements.select_dtypes("number")
        rows = {int(r["label"]): {k: float(v) for k, v in r.items() if k != "label" and np.isfinite(v)}
                for r in numeric.to_dict("records")}
    features = []
    for outline in outline_objects(labels):
        coordinates = [[[list(map(int, p)) for p in ring] for ring in polygon] for polygon in outline.polygons]
        geometry = ({"type": "Polygon", "coordinates": coordinates[0]} if len(coordinates) == 1
                    else {"type": "MultiPolygon", "coordinates": coordinates})
        properties = {
            "objectType": object_type,
            "name": f"{class_name} {outline.label}",
            "classification": {"name": class_name, "color": [int(c) for c in color]},
            "isLocked": False,
            "measurements": {"label": outline.label, "area_px": outline.area, **rows.get(outline.label, {})},
        }
        features.append({"type": "Feature", "id": f"workbench-{outline.label}", "geometry": geometry,
                         "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike, labels: Any, **options) -> Path:
    """Write `outlines_to_geojson` output to a ``.geojson`` file (atomically); see there for options."""
    path = Path(path)
    collection = outlines_to_geojson(labels, **options)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(collection), encoding="utf-8")
    return path


def read_geojson(path: str | os.PathLike) -> list[dict]:
    """The features of a GeoJSON file (FeatureCollection, Feature list or single Feature)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise WorkbenchError(f"cannot read GeoJSON {path}: {exc}") from exc
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        return list(data.get("features", []))
    if isinstance(data, dict) and data.get("type") == "Feature":
        return [data]
    if isinstance(data, list):
        return data
    raise WorkbenchError(f"{path} is not GeoJSON features (expected a FeatureCollection)")


def geojson_to_labels(features: Sequence[dict], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise polygon features into a label image (feature k -> id k + 1; pixel centres inside).

    Parameters
    ----------
    features : sequence of dict
        GeoJSON features with Polygon or MultiPolygon geometry in pixel coordinates.
    shape : (int, int)
        Height and width of the label image.

    Returns
    -------
    numpy.ndarray of int32
    """
    from skimage.draw import polygon as fill_polygon

    labels = np.zeros(tuple(shape), dtype=np.int32)
    for index, feature in enumerate(features):
        geometry = feature.get("geometry") or {}
        kind = geometry.get("type")
        if kind == "Polygon":
            polygons = [geometry["coordinates"]]
        elif kind == "MultiPolygon":
            polygons = geometry["coordinates"]
        else:
            raise WorkbenchError(f"feature {index} has geometry {kind!r}; only Polygon and MultiPolygon rasterise")
        mask = np.zeros(tuple(shape), dtype=bool)
        for rings in polygons:
            piece = np.zeros(tuple(shape), dtype=bool)
            for ring_index, ring in enumerate(rings):
                xy = np.asarray(ring, dtype=np.float64)
                # skimage fills pixels whose integer centre is inside; our corners sit half a pixel off.
                rr, cc = fill_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape=shape)
                piece[rr, cc] = ring_index == 0  # the exterior fills, its holes clear
            mask |= piece
        labels[mask] = index + 1
    return labels

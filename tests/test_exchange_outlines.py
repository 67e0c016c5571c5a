"""GeoJSON outlines for QuPath: polygons on pixel edges that round-trip object count, areas and masks."""

import json

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.exchange import geojson_to_labels, outline_objects, read_geojson, write_geojson
from workbench.exchange._outlines import _signed_area
from workbench.predict import measure_objects


def _relabel(back: np.ndarray, features) -> np.ndarray:
    ids = [f["properties"]["measurements"]["label"] for f in features]
    out = np.zeros_like(back)
    for index, label in enumerate(ids):
        out[back == index + 1] = label
    return out


def test_geojson_round_trips_count_areas_and_masks_of_real_nuclei(nuclei_labels, tmp_path):
    table = measure_objects(nuclei_labels)
    path = write_geojson(tmp_path / "nuclei.geojson", nuclei_labels, class_name="Nucleus", color=(0, 200, 0),
                         measurements=table)
    features = read_geojson(path)
    assert len(features) == len(np.unique(nuclei_labels)) - 1 == 125
    back = _relabel(geojson_to_labels(features, nuclei_labels.shape), features)
    np.testing.assert_array_equal(back, nuclei_labels)
    by_label = dict(zip(table["label"], table["area_px"]))
    for feature in features:
        measured = feature["properties"]["measurements"]
        assert measured["area_px"] == by_label[measured["label"]]
        rings = feature["geometry"]["coordinates"]
        polygons = [rings] if feature["geometry"]["type"] == "Polygon" else rings
        area = sum(_signed_area(r[0]) + sum(_signed_area(h) for h in r[1:]) for r in polygons)
        assert area == measured["area_px"]  # pixel-edge polygons: QuPath's area is the pixel count


def test_geojson_has_qupath_properties(nuclei_labels, tmp_path):
    path = write_geojson(tmp_path / "n.geojson", nuclei_labels[:100, :100], class_name="Nucleus", color=(1, 2, 3))
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection"
    feature = data["features"][0]
    assert feature["properties"]["objectType"] == "detection"
    assert feature["properties"]["classification"] == {"name": "Nucleus", "color": [1, 2, 3]}
    ring = feature["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and _signed_area(ring) > 0  # closed, counter-clockwise in x/y (RFC 7946)


def test_holes_islands_and_diagonal_pieces():
    labels = np.zeros((12, 12), np.int32)
    labels[1:9, 1:9] = 1
    labels[3:7, 3:7] = 0      # a hole ...
    labels[4, 4] = 1          # ... with an island of the same object
    labels[9, 9] = 1          # touching only at a corner: its own piece
    labels[10:12, 0:3] = 2
    outlines = {o.label: o for o in outline_objects(labels)}
    assert outlines[1].area == 64 - 16 + 1 + 1
    assert len(outlines[1].polygons) == 3  # ring with a hole, island, corner piece
    assert sorted(len(p) for p in outlines[1].polygons) == [1, 1, 2]
    assert len(outlines[2].polygons) == 1 and len(outlines[2].polygons[0][0]) == 5  # a rectangle: 4 corners
    from workbench.exchange import outlines_to_geojson

    features = outlines_to_geojson(labels)["features"]
    np.testing.assert_array_equal(_relabel(geojson_to_labels(features, labels.shape), features), labels)


def test_outlines_reject_non_label_images():
    with pytest.raises(WorkbenchError, match="2-D integer"):
        outline_objects(np.zeros((4, 4, 4), np.int32))
    with pytest.raises(WorkbenchError, match="2-D integer"):
        outline_objects(np.zeros((4, 4), np.float32))

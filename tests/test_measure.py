"""Per-object measurements on the real nuclei ground truth, and table writing."""

import numpy as np
import pandas as pd
import pytest

from workbench.errors import WorkbenchError
from workbench.predict import MeasureError, measure_objects, write_table


@pytest.fixture(scope="module")
def table(nuclei_labels, nuclei_image):
    return measure_objects(nuclei_labels, nuclei_image)


def test_one_row_per_nucleus_with_areas_from_bincount(table, nuclei_labels):
    ids = np.unique(nuclei_labels)[1:]
    assert len(table) == 125
    np.testing.assert_array_equal(table["label"], ids)
    np.testing.assert_array_equal(table["area_px"], np.bincount(nuclei_labels.ravel())[ids])


def test_centroids_and_boxes_match_numpy(table, nuclei_labels):
    for row in table.sample(5, random_state=0).itertuples():
        ys, xs = np.nonzero(nuclei_labels == row.label)
        assert row.centroid_y == pytest.approx(ys.mean()) and row.centroid_x == pytest.approx(xs.mean())
        assert (row.bbox_y0, row.bbox_x0, row.bbox_y1, row.bbox_x1) == (
            ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
        )
    for column in ("perimeter_px", "major_axis_length_px", "minor_axis_length_px"):
        assert (table[column] > 0).all()
    assert table["eccentricity"].between(0, 1).all() and table["solidity"].between(0, 1).all()
    assert (table["major_axis_length_px"] >= table["minor_axis_length_px"]).all()


def test_neighbour_distance_matches_brute_force(table):
    centroids = table[["centroid_y", "centroid_x"]].to_numpy()
    distances = np.sqrt(((centroids[:, None] - centroids[None]) ** 2).sum(-1))
    np.fill_diagonal(distances, np.inf)
    expected = np.sort(distances, axis=1)[:, :8].mean(axis=1)
    np.testing.assert_allclose(table["neighbour_distance_px"], expected, rtol=1e-12)


def test_too_few_objects_give_nan_neighbour_distance():
    labels = np.zeros((20, 20), np.int32)
    labels[2:5, 2:5], labels[10:13, 2:5], labels[2:5, 12:16] = 1, 2, 3
    assert measure_objects(labels, n_neighbours=8)["neighbour_distance_px"].isna().all()
    two = measure_objects(labels, n_neighbours=2)["neighbour_distance_px"]
    assert two.notna().all()


def test_intensity_statistics_match_numpy(table, nuclei_labels, nuclei_image):
    for row in table.sample(6, random_state=1).itertuples():
        pixels = nuclei_image[nuclei_labels == row.label].astype(np.float64)
        assert row.intensity_mean == pytest.approx(pixels.mean())
        assert row.intensity_min == pixels.min() and row.intensity_max == pixels.max()
        assert row.intensity_std == pytest.approx(pixels.std())
        assert row.intensity_integrated == pytest.approx(pixels.sum())


def test_each_channel_is_measured(nuclei_labels, nuclei_image):
    channels = np.stack([nuclei_image, nuclei_image.astype(np.float32) * 2 + 1])
    measured = measure_objects(nuclei_labels, channels)
    np.testing.assert_allclose(measured["intensity_mean_ch1"], measured["intensity_mean_ch0"] * 2 + 1)
    np.testing.assert_allclose(measured["intensity_max_ch1"], measured["intensity_max_ch0"] * 2 + 1)
    np.testing.assert_allclose(measured["intensity_std_ch1"], measured["intensity_std_ch0"] * 2)
    assert "intensity_mean" not in measured


def test_pixel_size_scales_areas_and_distances(table, nuclei_labels):
    square = measure_objects(nuclei_labels, pixel_size=(0.5, 0.5))
    np.testing.assert_allclose(square["area_um2"], table["area_px"] * 0.25)
    np.testing.assert_allclose(square["neighbour_distance_um"], table["neighbour_distance_px"] * 0.5)
    np.testing.assert_allclose(square["perimeter_um"], table["perimeter_px"] * 0.5)
    oblong = measure_objects(nuclei_labels, pixel_size=(0.4, 0.1))
    np.testing.assert_allclose(oblong["area_um2"], table["area_px"] * 0.04)
    np.testing.assert_allclose(oblong["centroid_y_um"], table["centroid_y"] * 0.4)
    assert "perimeter_um" not in oblong  # not a plain scaling when pixels are not square
    assert "area_um2" not in table


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_round_trip(table, tmp_path, suffix):
    path = write_table(table, tmp_path / f"objects{suffix}")
    assert path.exists()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    read = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    pd.testing.assert_frame_equal(read, table, check_exact=False, rtol=1e-12)


def test_unknown_extension_is_a_clear_error(table, tmp_path):
    with pytest.raises(MeasureError, match=r"\.xlsx.*\.csv"):
        write_table(table, tmp_path / "objects.xlsx")
    with pytest.raises(MeasureError, match="does not exist"):
        write_table(table, tmp_path / "missing" / "objects.csv")
    assert not list(tmp_path.iterdir())


def test_empty_labels_give_an_empty_table():
    empty = measure_objects(np.zeros((16, 16), np.uint16), np.ones((16, 16)))
    assert empty.empty and {"label", "area_px", "intensity_mean", "neighbour_distance_px"} <= set(empty)


@pytest.mark.parametrize(
    "labels, intensity, message",
    [
        (np.zeros((8, 8), np.float32), None, "integer"),
        (np.zeros((2, 2, 8, 8), np.int32), None, "YX label image or a ZYX label volume"),
        (np.zeros((8, 8), np.int32), np.zeros((8, 9)), "same Y, X"),
    ],
)
def test_bad_input_is_a_clear_error(labels, intensity, message):
    with pytest.raises(MeasureError, match=message):
        measure_objects(labels, intensity)
    with pytest.raises(WorkbenchError, match="pixel_size"):
        measure_objects(np.zeros((8, 8), np.int32), pixel_size=(0, 1))

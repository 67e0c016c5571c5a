"""Measurement tables in the column names and conventions of ImageJ, CellProfiler and QuPath."""

import numpy as np
import pytest
from skimage.draw import ellipse

from workbench.errors import WorkbenchError
from workbench.exchange import table_for_tool
from workbench.predict import measure_objects


@pytest.fixture(scope="module")
def tilted():
    """One ellipse whose major axis rises to the right on screen at 30 degrees from the x axis."""
    labels = np.zeros((120, 120), np.int32)
    # skimage's rotation is clockwise on screen from the column axis: -30 rises to the right.
    rr, cc = ellipse(60, 60, 12, 40, rotation=np.deg2rad(30))
    labels[rr, cc] = 1
    intensity = np.where(labels > 0, 100.0, 5.0)
    return measure_objects(np.stack([labels]).squeeze(), intensity, pixel_size=(0.5, 0.5)), labels


def test_imagej_results_names_and_angle(tilted):
    table, labels = tilted
    ys, xs = np.nonzero(labels)
    rising_right = np.corrcoef(xs, ys)[0, 1] < 0  # y grows downwards on screen
    out = table_for_tool(table, "imagej")
    assert {"Area", "X", "Y", "Perim.", "Major", "Minor", "Angle", "Mean", "StdDev", "RawIntDen",
            "Solidity"} <= set(out.columns)
    assert out["Area"].iloc[0] == pytest.approx(table["area_um2"].iloc[0])
    expected = 30.0 if rising_right else 150.0
    assert out["Angle"].iloc[0] == pytest.approx(expected, abs=1.0)


def test_cellprofiler_names_and_orientation(tilted):
    table, labels = tilted
    out = table_for_tool(table, "cellprofiler", channel_names=["DNA"])
    assert {"ObjectNumber", "AreaShape_Area", "Location_Center_X", "AreaShape_Orientation",
            "AreaShape_MajorAxisLength", "Intensity_MeanIntensity_DNA",
            "Intensity_IntegratedIntensity_DNA"} <= set(out.columns)
    assert out["AreaShape_Area"].iloc[0] == table["area_px"].iloc[0]  # CellProfiler measures in pixels
    assert -90 <= out["AreaShape_Orientation"].iloc[0] <= 90
    assert abs(out["AreaShape_Orientation"].iloc[0]) == pytest.approx(30.0, abs=1.0)


def test_qupath_names_with_channels(nuclei_image, nuclei_labels):
    image = np.stack([nuclei_image, nuclei_image[::-1]])
    table = measure_objects(nuclei_labels, image, pixel_size=(0.3, 0.3))
    out = table_for_tool(table, "qupath", channel_names=["DAPI", "GFP"])
    assert {"Object ID", "Centroid X µm", "Area µm^2", "DAPI: Mean", "GFP: Mean", "GFP: Max"} <= set(out.columns)
    assert len(out) == 125
    np.testing.assert_allclose(out["DAPI: Mean"], table["intensity_mean_ch0"])


def test_unknown_tool_lists_the_known_ones(nuclei_labels):
    with pytest.raises(WorkbenchError, match="cellprofiler, imagej, qupath"):
        table_for_tool(measure_objects(nuclei_labels), "excel")

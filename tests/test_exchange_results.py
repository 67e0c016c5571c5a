"""Project-level results exports: a predicted image's instances as GeoJSON / ImageJ TIFF, tool-named tables."""

import numpy as np
import pandas as pd
import pytest
import tifffile

from workbench.errors import WorkbenchError
from workbench.exchange import export_instances, export_table, geojson_to_labels, read_geojson
from workbench.store import Project


@pytest.fixture(scope="module")
def project(tmp_path_factory, nuclei_image, nuclei_labels):
    project = Project.create(tmp_path_factory.mktemp("results") / "p", mode="instance",
                             classes=["background", "nucleus"])
    project.add_image(nuclei_image, name="nuclei", pixel_size=(0.4, 0.4))
    stored = project.create_prediction("nuclei", "instances", nuclei_labels.shape, np.int32, model_version=1)
    stored[...] = nuclei_labels
    project.mark_prediction_complete("nuclei")
    return project


def test_instances_as_qupath_geojson_keep_objects_class_and_measurements(project, nuclei_labels, tmp_path):
    path = export_instances(project, "nuclei", tmp_path / "nuclei.geojson")
    features = read_geojson(path)
    assert len(features) == 125
    assert {f["properties"]["classification"]["name"] for f in features} == {"nucleus"}
    assert all("area_um2" in f["properties"]["measurements"] for f in features)
    back = geojson_to_labels(features, nuclei_labels.shape)
    areas_back = np.bincount(back.ravel())[1:]
    areas_truth = np.bincount(nuclei_labels.ravel())[1:]
    assert sorted(areas_back) == sorted(areas_truth[areas_truth > 0])


def test_instances_as_imagej_tiff_with_pixel_size(project, nuclei_labels, tmp_path):
    path = export_instances(project, "nuclei", tmp_path / "nuclei.tif")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "um"
        np.testing.assert_array_equal(tif.asarray(), nuclei_labels)


def test_table_in_cellprofiler_names(project, tmp_path):
    path = export_table(project, tmp_path / "objects.csv", "cellprofiler")
    table = pd.read_csv(path)
    assert len(table) == 125 and {"ObjectNumber", "AreaShape_Area", "Location_Center_X"} <= set(table.columns)


def test_results_export_mistakes(project, tmp_path):
    with pytest.raises(WorkbenchError, match=".geojson"):
        export_instances(project, "nuclei", tmp_path / "nuclei.xml")
    with pytest.raises(WorkbenchError, match="no image"):
        export_instances(project, "other", tmp_path / "x.geojson")

"""Label TIFFs with ImageJ metadata: calibration, stacks, a label LUT, and ids beyond 16 bits."""

import numpy as np
import pytest
import tifffile

from workbench.errors import WorkbenchError
from workbench.exchange import write_imagej_labels
from workbench.store import open_image


def test_imagej_label_tiff_keeps_ids_and_calibration(nuclei_labels, tmp_path):
    path = write_imagej_labels(tmp_path / "labels.tif", nuclei_labels, pixel_size=(0.25, 0.25))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        metadata = tif.imagej_metadata
        assert metadata["unit"] == "um"
        lut = np.asarray(metadata["LUTs"]).reshape(-1, 3, 256)[0]  # one LUT reads back bare
        assert (lut[:, 0] == 0).all() and (lut[:, 1:].max(axis=0) > 100).all()  # 0 black, objects bright
        data = tif.asarray()
    assert data.dtype == np.uint16
    np.testing.assert_array_equal(data, nuclei_labels)
    source = open_image(path)
    assert source.pixel_size == pytest.approx((0.25, 0.25))


def test_imagej_label_stack_has_z_spacing(tmp_path, shared_dir):
    volume = tifffile.imread(shared_dir / "data" / "stardist_nuclei_3d" / "labels.tif")
    path = write_imagej_labels(tmp_path / "stack.tif", volume, pixel_size=(0.5, 0.5), z_spacing=2.0)
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["spacing"] == 2.0
        assert tif.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tif.asarray(), volume)


def test_more_than_65535_objects_are_stored_exactly_as_float(tmp_path):
    labels = np.arange(70_000, dtype=np.int32).reshape(280, 250)
    path = write_imagej_labels(tmp_path / "many.tif", labels)
    data = tifffile.imread(path)
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data.astype(np.int64), labels)


def test_imagej_writer_rejects_bad_input(tmp_path):
    with pytest.raises(WorkbenchError, match="TIFF"):
        write_imagej_labels(tmp_path / "x.png", np.zeros((4, 4), np.int32))
    with pytest.raises(WorkbenchError, match="integer"):
        write_imagej_labels(tmp_path / "x.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(WorkbenchError, match="negative"):
        write_imagej_labels(tmp_path / "x.tif", -np.ones((4, 4), np.int32))

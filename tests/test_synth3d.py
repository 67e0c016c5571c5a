"""The synthetic nuclei volume generator: seeded, every id present, nuclei shaped by the voxel size."""

import numpy as np
import pytest

from workbench.datasets import nuclei_volume
from workbench.errors import WorkbenchError
from workbench.predict import measure_objects


def test_volume_is_seeded_and_labels_are_dense_ids():
    image, labels = nuclei_volume((16, 96, 96), seed=4)
    again, labels_again = nuclei_volume((16, 96, 96), seed=4)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert image.dtype == np.uint16 and labels.dtype == np.int32 and image.shape == labels.shape
    ids = np.unique(labels)
    np.testing.assert_array_equal(ids, np.arange(ids.size))  # 0 and every nucleus 1..N
    assert image[labels > 0].mean() > image[labels == 0].mean() + 20  # nuclei are brighter


def test_nuclei_are_ellipsoids_in_micrometres():
    _, coarse = nuclei_volume((24, 96, 96), seed=1, spacing=(2.0, 0.5, 0.5))
    table = measure_objects(coarse, pixel_size=(2.0, 0.5, 0.5))
    whole = table[(table["bbox_z0"] > 0) & (table["bbox_z1"] < 24) & (table["volume_voxels"] > 200)]
    assert len(whole) > 3
    # Sizes agree in µm along z and in-plane although z has 4 times fewer voxels per µm.
    ratio = (whole["extent_z_um"] / whole[["extent_y_um", "extent_x_um"]].max(axis=1)).median()
    assert 0.4 < ratio < 1.3


def test_bad_arguments_name_the_fix():
    with pytest.raises(WorkbenchError, match="three integers"):
        nuclei_volume((64, 64))
    with pytest.raises(WorkbenchError, match="voxel sizes"):
        nuclei_volume((8, 32, 32), spacing=(0.0, 1.0, 1.0))

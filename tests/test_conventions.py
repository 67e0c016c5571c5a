"""One source per convention: the engine's parts agree because they read the same names."""

from __future__ import annotations

import pytest

from workbench import classic, conventions, deep, store
from workbench.errors import WorkbenchError


def test_every_part_uses_the_one_set_of_instance_class_names_and_modes():
    assert store.INSTANCE_CLASSES == deep.INSTANCE_CLASSES == classic.INSTANCE_CLASSES == (
        "background", "interior", "boundary")
    assert store.IGNORE == conventions.IGNORE == -1
    assert (store.UNLABELLED, store.BACKGROUND, store.OBJECT) == (0, 1, 2)
    from workbench.store._project import MODES as project_modes
    from workbench.classic._forest import MODES as forest_modes

    assert project_modes == forest_modes == conventions.MODES


def test_mode_and_method_checks_list_the_choices():
    assert conventions.check_mode("semantic") == "semantic"
    with pytest.raises(WorkbenchError, match="semantic, instance"):
        conventions.check_mode("panoptic")
    with pytest.raises(WorkbenchError, match="unet, forest"):
        conventions.check_method("svm")


def test_image_names():
    assert conventions.is_image_path("/data/plate A1.OME.TIF") and not conventions.is_image_path("notes.txt")
    assert conventions.image_stem("plate-A1.ome.zarr") == "plate-A1"
    assert conventions.image_stem("well.tiff") == "well"

"""What a person reads when something goes wrong: plain words, and in the app what to click."""

import json

import numpy as np
import pytest

from workbench.errors import WorkbenchError, app_message
from workbench.store import Project


@pytest.fixture()
def project(tmp_path):
    return Project.create(tmp_path / "p", mode="instance", classes=["background", "nucleus"])


@pytest.mark.parametrize("file_name, content, kind", [
    ("cells.tif", b"this is no image", "TIFF"),
    ("cells.png", b"this is no image", "PNG"),
    ("cells.npy", b"", "NumPy .npy"),
    ("cells.czi", b"\0" * 64, "ZEISS .czi"),
])
def test_a_file_that_is_no_image_is_named_plainly(project, tmp_path, file_name, content, kind):
    path = tmp_path / file_name
    path.write_bytes(content)
    with pytest.raises(WorkbenchError) as caught:
        project.add_image(path)
    message = str(caught.value)
    assert message.startswith(f"{file_name} is not an image the workbench can read (it is not a complete {kind}")
    for leaked in ("header=", "b'", "backend", "pip install", str(tmp_path)):
        assert leaked not in message
    assert caught.value.__cause__ is not None  # the reader's own words stay on the cause, for a log


def test_the_app_says_what_to_click_where_the_command_line_names_a_command(project, tmp_path, nuclei_image):
    project.add_image(nuclei_image[:64, :64], name="nuclei")
    with pytest.raises(WorkbenchError) as caught:
        project.training_samples()
    assert "`workbench labels`" in str(caught.value)
    assert app_message(caught.value) == ("nothing is annotated yet: paint some background and some objects in "
                                         "step 2 (Annotate) before training")
    with pytest.raises(WorkbenchError) as caught:
        project.model_record()
    assert "`workbench train" in str(caught.value) and "step 3 (Train)" in app_message(caught.value)
    with pytest.raises(WorkbenchError) as caught:
        Project.open(tmp_path / "elsewhere")
    assert "`workbench new" in str(caught.value) and "`workbench" not in app_message(caught.value)
    # Errors without an app text read the same everywhere.
    assert app_message(WorkbenchError("plain")) == "plain" and app_message(ValueError("x")) == "x"


def test_an_upload_is_recorded_as_an_upload_not_as_its_temporary_copy(project, tmp_path, nuclei_image):
    import io

    import tifffile
    from workbench_widgets.project_setup import add_uploaded_files

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, nuclei_image[:64, :64])
    assert add_uploaded_files(project, [{"name": "cells.tif", "content": buffer.getvalue()}]) == ["cells"]
    manifest = json.loads((project.path / "project.json").read_text())
    sources = [image["source"] for image in manifest["images"]]
    assert sources == ["uploaded: cells.tif"]
    # A file added from where it lies keeps its path.
    tifffile.imwrite(tmp_path / "kept.tif", nuclei_image[:64, :64])
    project.add_image(tmp_path / "kept.tif")
    assert Project.open(project.path).image_info("kept").source == str(tmp_path / "kept.tif")


def test_undo_and_redo_look_inactive_with_nothing_to_take_back(project, nuclei_image):
    from workbench_widgets.annotator import Annotator

    project.add_image(nuclei_image, name="nuclei")
    annotator = Annotator(project, width=200, height=200, save_delay=0)
    assert annotator.controls.undo.disabled and annotator.controls.redo.disabled
    annotator.paint([(10, 10), (10, 30)], class_value=1, diameter=4)
    assert not annotator.controls.undo.disabled and annotator.controls.redo.disabled
    annotator.undo()
    assert annotator.controls.undo.disabled and not annotator.controls.redo.disabled
    annotator.redo()
    assert annotator.controls.redo.disabled

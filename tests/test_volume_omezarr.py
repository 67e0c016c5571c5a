"""Predictions of z-stacks (and 2-D images) as OME-Zarr containers with the voxel size (issue 12).

On the real 3-D nuclei volume (../shared/data/stardist_nuclei_3d): its ground truth stored as the
project's instance prediction, exported to ``NAME.ome.zarr`` and opened with ome-zarr-py's own
reader and with the workbench's napari reader; a two-channel stack; the pyramid of a larger
stack; a 2-D export; the command line; and wrong output names.
"""

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from workbench import pipeline
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.exchange._napari import read_ome_zarr
from workbench.store import Project, write_image
from workbench.store._omezarr import LabelLayer, write_ome_zarr

VOXEL_SIZE = (2.0, 0.5, 0.5)


@pytest.fixture(scope="module")
def volume(shared_dir):
    folder = shared_dir / "data" / "stardist_nuclei_3d"
    return tifffile.imread(folder / "image.tif"), tifffile.imread(folder / "labels.tif").astype(np.int32)


def _store_prediction(project: Project, name: str, instances: np.ndarray, probabilities=None) -> None:
    """Store `instances` (and probabilities, ZCYX or CYX) as the image's prediction, as predicting does."""
    project.create_prediction(name, "instances", instances.shape, np.int32)[...] = instances
    if probabilities is not None:
        project.create_prediction(name, "probabilities", probabilities.shape, np.float32)[...] = probabilities
    project.mark_prediction_complete(name)


@pytest.fixture()
def volume_project(tmp_path, volume):
    """An instance project holding the stack with a voxel size, its ground truth as the prediction."""
    image, gt = volume
    project = Project.create(tmp_path / "project", mode="instance", classes=["background", "nucleus"])
    project.update_settings(voxel_size=list(VOXEL_SIZE))
    name = project.add_image(image, name="nuclei3d", axes="ZYX")
    # One-hot background / interior / boundary (none), ZCYX as the project stores them.
    probabilities = np.stack([gt == 0, gt > 0, np.zeros_like(gt, bool)], axis=1).astype(np.float32)
    _store_prediction(project, name, gt, probabilities)
    return project, name


def _nodes_by_name(container) -> dict:
    return {node.metadata.get("name"): node for node in Reader(parse_url(str(container)))()}


def _axes(node) -> list[str]:
    return [axis["name"] for axis in node.metadata["axes"]]


def _level_scales(node) -> list[list[float]]:
    return [next(t["scale"] for t in level if t["type"] == "scale")
            for level in node.metadata["coordinateTransformations"]]


def test_z_stack_prediction_exports_as_ome_zarr_with_the_voxel_size(tmp_path, volume, volume_project):
    image, gt = volume
    project, name = volume_project
    assert project.voxel_size(name) == VOXEL_SIZE
    container = pipeline.export_prediction(project, name, tmp_path / "nuclei3d.ome.zarr", probabilities=True)

    # ome-zarr-py's own reader: the image, then each label image, all ZYX at the voxel size in µm.
    nodes = _nodes_by_name(container)
    assert {"nuclei3d", "instances", "classes"} <= set(nodes)
    for node in (nodes["nuclei3d"], nodes["instances"], nodes["classes"]):
        assert _axes(node) == ["z", "y", "x"]
        assert {axis["unit"] for axis in node.metadata["axes"]} == {"micrometer"}
        assert _level_scales(node)[0] == list(VOXEL_SIZE)
    np.testing.assert_array_equal(np.asarray(nodes["nuclei3d"].data[0]), image)
    np.testing.assert_array_equal(np.asarray(nodes["instances"].data[0]), gt)
    np.testing.assert_array_equal(np.asarray(nodes["classes"].data[0]), (gt > 0).astype(np.uint8))
    assert nodes["classes"].metadata["properties"][1] == {"class": "nucleus"}
    # The probabilities, channels first (NGFF order), named by class.
    probabilities = next(iter(Reader(parse_url(str(container / "probabilities")))()))
    assert _axes(probabilities) == ["c", "z", "y", "x"] and _level_scales(probabilities)[0] == [1.0, *VOXEL_SIZE]
    np.testing.assert_array_equal(np.asarray(probabilities.data[0]),
                                  np.transpose(project.prediction(name, "probabilities")[...], (1, 0, 2, 3)))
    names = [c["label"] for c in zarr.open_group(str(container / "probabilities"), mode="r").attrs["omero"]["channels"]]
    assert names == ["background", "interior", "boundary"]

    # The workbench's napari reader: the image and both label layers, scaled by the voxel size.
    layers = read_ome_zarr(container)
    assert [(kind, kwargs["name"]) for _, kwargs, kind in layers] == [
        ("image", "nuclei3d"), ("labels", "instances"), ("labels", "classes")]
    for data, kwargs, _ in layers:
        assert kwargs["scale"] == list(VOXEL_SIZE) and data.shape == gt.shape
    np.testing.assert_array_equal(np.asarray(layers[0][0]), image)
    np.testing.assert_array_equal(np.asarray(layers[1][0]), gt)

    # Written into a temporary sibling and renamed: nothing else is left beside it, and writing
    # again replaces the container whole.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nuclei3d.ome.zarr", "project"]
    pipeline.export_prediction(project, name, container)
    assert "probabilities" not in zarr.open_group(str(container), mode="r")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nuclei3d.ome.zarr", "project"]


def test_a_two_channel_semantic_stack_goes_channels_first(tmp_path, volume):
    """The project stores ZCYX; NGFF wants the channels before the spatial axes (CZYX)."""
    image, gt = volume
    two_channels = np.stack([image, image[:, ::-1]], axis=1)
    project = Project.create(tmp_path / "project", mode="semantic", classes=["background", "nucleus"])
    project.update_settings(voxel_size=list(VOXEL_SIZE))
    name = project.add_image(two_channels, name="two", axes="ZCYX")
    classes = (gt > 0).astype(np.uint8)
    project.create_prediction(name, "classes", classes.shape, np.uint8)[...] = classes
    project.mark_prediction_complete(name)
    nodes = _nodes_by_name(pipeline.export_prediction(project, name, tmp_path / "two.ome.zarr"))
    assert _axes(nodes["two"]) == ["c", "z", "y", "x"] and _level_scales(nodes["two"])[0] == [1.0, *VOXEL_SIZE]
    np.testing.assert_array_equal(np.asarray(nodes["two"].data[0]), np.transpose(two_channels, (1, 0, 2, 3)))
    assert _axes(nodes["classes"]) == ["z", "y", "x"]
    np.testing.assert_array_equal(np.asarray(nodes["classes"].data[0]), classes)


def test_pyramid_of_a_stack_halves_y_and_x_and_keeps_every_plane(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 255, (3, 1100, 520), dtype=np.uint8)
    ids = np.repeat(np.repeat(rng.integers(0, 9, (3, 55, 26), dtype=np.int32), 20, axis=1), 20, axis=2)
    container = write_ome_zarr(tmp_path / "stack.ome.zarr", stack, image_axes="zyx", voxel_size=VOXEL_SIZE,
                               labels={"instances": LabelLayer(ids)}, chunk=256)
    nodes = _nodes_by_name(container)
    for node in (nodes["stack"], nodes["instances"]):
        assert [tuple(level.shape) for level in node.data] == [(3, 1100, 520), (3, 550, 260), (3, 275, 130)]
        assert _level_scales(node) == [[2.0, 0.5, 0.5], [2.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    # Labels by nearest neighbour: every value of a smaller level is an id of the stack.
    for level in nodes["instances"].data[1:]:
        assert set(np.unique(np.asarray(level))) <= set(np.unique(ids))
    assert zarr.open_array(str(container / "s0"), mode="r").chunks == (1, 256, 256)  # plane by plane


@pytest.mark.parametrize("sizes, message", [
    ({"pixel_size": (0.5, 0.5)}, "voxel_size (z, y, x)"),
    ({"voxel_size": (0.5, 0.5)}, "voxel_size (z, y, x)"),
])
def test_writer_wants_a_voxel_size_for_a_stack(tmp_path, sizes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        write_ome_zarr(tmp_path / "x.ome.zarr", np.zeros((2, 8, 8), np.uint8), image_axes="zyx", **sizes)
    with pytest.raises(ValueError, match="label image 'instances'"):
        write_ome_zarr(tmp_path / "y.ome.zarr", np.zeros((2, 8, 8), np.uint8), image_axes="zyx",
                       labels={"instances": LabelLayer(np.zeros((8, 8), np.int32))})


def test_a_2d_prediction_still_exports_as_ome_zarr_and_tif(tmp_path, nuclei_image, nuclei_labels):
    image, gt = nuclei_image[:128, :128], nuclei_labels[:128, :128].astype(np.int32)
    project = Project.create(tmp_path / "project", mode="instance", classes=["background", "nucleus"])
    name = project.add_image(image, name="crop", pixel_size=(0.25, 0.25))
    _store_prediction(project, name, gt)
    container = pipeline.export_prediction(project, name, tmp_path / "crop.ome.zarr")
    nodes = _nodes_by_name(container)
    assert _axes(nodes["crop"]) == _axes(nodes["instances"]) == ["y", "x"]
    assert _level_scales(nodes["instances"])[0] == [0.25, 0.25]
    np.testing.assert_array_equal(np.asarray(nodes["crop"].data[0]), image)
    np.testing.assert_array_equal(np.asarray(nodes["instances"].data[0]), gt)
    assert "probabilities" not in zarr.open_group(str(container), mode="r")
    with pytest.raises(WorkbenchError, match="no probabilities"):  # only the instances are stored
        pipeline.export_prediction(project, name, container, probabilities=True)
    pipeline.export_prediction(project, name, tmp_path / "crop.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "crop.tif"), gt)


@pytest.mark.parametrize("out, probabilities, message", [
    ("x.jpg2", None, "must end in .tif"),
    ("x.tif", True, "name it NAME.ome.zarr"),
    ("x.ome.zarr", "p.ome.zarr", "is a container of the image"),
])
def test_wrong_output_names_are_refused_before_any_work(tmp_path, volume_project, out, probabilities, message):
    project, name = volume_project
    probabilities = tmp_path / probabilities if isinstance(probabilities, str) else probabilities
    with pytest.raises(WorkbenchError, match=message):
        pipeline.export_prediction(project, name, tmp_path / out, probabilities=probabilities)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


@pytest.mark.parametrize("extra, message", [
    (["--out", "{tmp}/x.jpg2"], "must end in .tif"),
    (["--out", "{tmp}/x.tif", "--probabilities"], "name it NAME.ome.zarr"),
])
def test_command_line_mistakes_give_one_line_and_exit_2(tmp_path, volume_project, extra, message, capsys):
    project, name = volume_project
    code = main(["predict", str(project.path), name] + [a.format(tmp=tmp_path) for a in extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1


def test_command_line_segments_a_stack_file_into_ome_zarr(tmp_path, volume):
    """`workbench predict P stack.tif --out stack.ome.zarr --probabilities`, with a tiny forest."""
    image, gt = volume
    project = Project.create(tmp_path / "project", mode="instance", classes=["background", "nucleus"])
    name = project.add_image(image, name="nuclei3d", axes="ZYX")
    project.import_labels(name, gt, instances=True)
    project.update_settings(forest={"n_estimators": 2, "max_depth": 5, "max_pixels_per_class": 400, "n_jobs": 1})
    pipeline.train_model(project, method="forest")
    write_image(tmp_path / "stack.tif", image, axes="ZYX", voxel_size=VOXEL_SIZE)  # the file's own voxel size
    container = tmp_path / "stack.ome.zarr"
    assert main(["predict", str(project.path), str(tmp_path / "stack.tif"), "--out", str(container),
                 "--probabilities"]) == 0
    nodes = _nodes_by_name(container)
    np.testing.assert_array_equal(np.asarray(nodes["stack"].data[0]), image)
    instances = np.asarray(nodes["instances"].data[0])
    assert instances.shape == gt.shape and instances.max() > 10
    assert _axes(nodes["instances"]) == ["z", "y", "x"] and _level_scales(nodes["instances"])[0] == list(VOXEL_SIZE)
    probabilities = np.asarray(next(iter(Reader(parse_url(str(container / "probabilities")))())).data[0])
    assert probabilities.shape == (3, *gt.shape)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-4)

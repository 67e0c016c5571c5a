"""The napari plugin through npe2's API, without napari or a display: reader layers and the labels writer."""

import sys
from pathlib import Path

import numpy as np
import pytest

from _exchange_project import make_unet_project
from workbench import pipeline
from workbench.exchange._napari import MANIFEST

PLUGIN = "microscopy-workbench"


@pytest.fixture(scope="module")
def plugin_manager():
    from npe2 import PluginManager, PluginManifest

    manager = PluginManager.instance()
    manifest = PluginManifest.from_file(MANIFEST)
    if manifest.name not in manager._manifests:  # an installed checkout registers it by its entry point
        manager.register(manifest)
    return manager


@pytest.fixture(scope="module")
def predicted_project(tmp_path_factory):
    project, image, truth = make_unet_project(tmp_path_factory.mktemp("napari") / "project", size=128)
    pipeline.predict_project(project, tile_size=128)
    return project


def test_manifest_is_valid_and_declared_as_entry_point():
    import tomllib

    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == PLUGIN
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    entry = pyproject["project"]["entry-points"]["napari.manifest"][PLUGIN]
    module, resource = entry.split(":")
    assert (Path(__file__).resolve().parents[1] / module.replace(".", "/") / resource) == MANIFEST
    assert resource in pyproject["tool"]["setuptools"]["package-data"][module]


def test_reader_returns_project_layers_in_project_colours(plugin_manager, predicted_project):
    import npe2

    layers = npe2.read([str(predicted_project.path)], stack=False, plugin_name=PLUGIN)
    by_name = {(k["name"] if isinstance(k["name"], str) else "probabilities"): (d, k, t) for d, k, t in layers}
    assert {"nuclei", "nuclei labels", "probabilities", "nuclei instances"} <= set(by_name)
    image, image_kwargs, kind = by_name["nuclei"]
    assert kind == "image" and image.shape == (128, 128) and image_kwargs["scale"] == [0.5, 0.5]
    labels, label_kwargs, kind = by_name["nuclei labels"]
    assert kind == "labels"
    np.testing.assert_array_equal(np.asarray(labels[...]), predicted_project.read_labels("nuclei"))
    colours = label_kwargs["colormap"]
    assert colours[0] == "transparent"
    assert [colours[k + 1] for k in range(predicted_project.n_classes)] == predicted_project.class_colors
    probs, prob_kwargs, kind = by_name["probabilities"]
    assert kind == "image" and prob_kwargs["channel_axis"] == 0 and len(prob_kwargs["name"]) == probs.shape[0] == 4
    assert prob_kwargs["name"][-1] == "nuclei P(distance)"
    instances, _, kind = by_name["nuclei instances"]
    assert kind == "labels"
    outlines = [layer for layer in layers if layer[2] == "shapes"]
    n_objects = len(np.unique(np.asarray(instances[...]))) - 1
    if n_objects:
        [(polygons, shape_kwargs, _)] = outlines
        assert len(set(shape_kwargs["properties"]["label"].tolist())) == n_objects
        assert all(p.ndim == 2 and p.shape[1] == 2 for p in polygons)
    assert "napari" not in sys.modules  # layer data tuples need no napari


def test_writer_brings_painted_labels_back(plugin_manager, predicted_project):
    import npe2

    layers = npe2.read([str(predicted_project.path)], stack=False, plugin_name=PLUGIN)
    data, kwargs, _ = next(layer for layer in layers if layer[1]["name"] == "nuclei labels")
    painted = np.asarray(data[...]).copy()
    painted[:8, :8] = 1          # background painted in napari
    painted[100:110, 100:110] = 2
    written = npe2.write(str(predicted_project.path), [(painted, kwargs, "labels")], plugin_name=PLUGIN)
    assert written
    np.testing.assert_array_equal(predicted_project.read_labels("nuclei"), painted)


def test_writer_needs_an_image_of_the_project(plugin_manager, predicted_project):
    import npe2

    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="belongs to no image"):
        npe2.write(str(predicted_project.path), [(np.zeros((128, 128), np.uint8), {"name": "other"}, "labels")],
                   plugin_name=PLUGIN)


def test_reader_opens_ome_zarr_images_and_labels(plugin_manager, tmp_path, nuclei_image, nuclei_labels):
    import npe2
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image, write_labels

    path = tmp_path / "nuclei.ome.zarr"
    store = parse_url(str(path), mode="w").store
    root = zarr.group(store=store)
    write_image(nuclei_image, root, axes="yx")
    write_labels(nuclei_labels.astype(np.int32), root, name="instances", axes="yx")
    layers = npe2.read([str(path)], stack=False, plugin_name=PLUGIN)
    kinds = [t for _, _, t in layers]
    assert kinds == ["image", "labels"]
    image_levels, image_kwargs, _ = layers[0]
    assert image_kwargs["multiscale"] and np.array_equal(np.asarray(image_levels[0]), nuclei_image)
    label_levels, label_kwargs, _ = layers[1]
    assert label_kwargs["name"] == "instances"
    assert np.array_equal(np.asarray(label_levels[0]), nuclei_labels)


def test_reader_declines_other_paths(plugin_manager, tmp_path):
    from workbench.exchange._napari import get_reader

    assert get_reader(str(tmp_path)) is None
    (tmp_path / "image.tif").write_bytes(b"")
    assert get_reader(str(tmp_path / "image.tif")) is None

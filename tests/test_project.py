"""Project store: creation, images of every supported kind, labels, migration, atomic writes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from workbench.errors import WorkbenchError
from workbench.store import open_image, write_image
from workbench.store import SCHEMA_VERSION, Project

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def project(tmp_path, nuclei_image, nuclei_labels):
    p = Project.create(tmp_path / "proj", mode="instance", classes=["background", "nucleus"])
    tifffile.imwrite(tmp_path / "nuclei.tif", nuclei_image)
    p.add_image(tmp_path / "nuclei.tif")
    return p


def test_create_and_reopen_keeps_manifest(project):
    again = Project.open(project.path)
    assert again.mode == "instance"
    assert again.class_names == ["background", "nucleus"]
    assert again.image_names == ["nuclei"]
    assert again.image_info("nuclei").dtype == "uint16"
    assert json.loads((project.path / "project.json").read_text())["schema_version"] == SCHEMA_VERSION


def test_image_round_trip_is_lossless(project, nuclei_image):
    stored = project.image("nuclei")
    assert stored.axes == "YX" and stored.dtype == np.uint16
    np.testing.assert_array_equal(stored[...], nuclei_image)
    np.testing.assert_array_equal(stored.plane(0)[0, 100:200, 50:60], nuclei_image[100:200, 50:60])


def test_formats_and_axes(tmp_path, nuclei_image):
    p = Project.create(tmp_path / "p", classes=["background", "cell", "debris"])
    rgb = np.stack([nuclei_image.astype(np.uint8)] * 3, axis=-1)
    iio.imwrite(tmp_path / "rgb.png", rgb)
    name = p.add_image(tmp_path / "rgb.png")
    assert p.image(name).axes == "CYX" and p.image(name).shape == (3, 512, 512)
    np.testing.assert_array_equal(p.image(name)[1], rgb[..., 1])

    q = Project.create(tmp_path / "q")
    stack = np.stack([nuclei_image, nuclei_image // 2, nuclei_image // 3])
    tifffile.imwrite(tmp_path / "z.tif", np.stack([stack] * 2), metadata={"axes": "ZCYX"}, imagej=True)
    name = q.add_image(tmp_path / "z.tif")
    src = q.image(name)
    assert src.axes == "ZCYX" and src.shape == (2, 3, 512, 512)
    assert q.labels(name).shape == (2, 512, 512)
    np.testing.assert_array_equal(src.plane(1)[2], nuclei_image // 3)

    # OME-Zarr written the way other tools write it (level 0 of a multiscale group).
    root = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w")
    root.create_array("0", data=nuclei_image[None], chunks=(1, 256, 256))
    root.attrs["multiscales"] = [{"axes": [{"name": "c"}, {"name": "y"}, {"name": "x"}],
                                 "datasets": [{"path": "0", "coordinateTransformations": [
                                     {"type": "scale", "scale": [1, 0.5, 0.25]}]}]}]
    src = open_image(tmp_path / "img.ome.zarr")
    assert src.axes == "CYX" and src.pixel_size == (0.5, 0.25)
    r = Project.create(tmp_path / "r")
    name = r.add_image(src)
    np.testing.assert_array_equal(r.image(name)[0], nuclei_image)
    assert r.image_info(name).pixel_size == (0.5, 0.25)


def test_bad_images_give_clear_errors(tmp_path, nuclei_image):
    p = Project.create(tmp_path / "p")
    bad = nuclei_image.astype(np.float32)
    bad[300, 20] = np.nan
    with pytest.raises(WorkbenchError, match="NaN"):
        p.add_image(bad, name="nan")
    assert p.image_names == []  # nothing half-added
    with pytest.raises(WorkbenchError, match="5-D|time series|axes"):
        p.add_image(np.zeros((2, 3, 4, 64, 64), np.uint8), name="five")
    with pytest.raises(WorkbenchError, match="pixel type"):
        p.add_image(np.zeros((64, 64), np.complex64), name="complex")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(WorkbenchError, match=r"broken.tif is not an image the workbench can read \(it is not a "
                                             r"complete TIFF file\)") as caught:
        p.add_image(tmp_path / "broken.tif")
    assert "header" not in str(caught.value) and str(tmp_path) not in str(caught.value)
    with pytest.raises(WorkbenchError, match="does not exist"):
        p.add_image(tmp_path / "missing.tif")
    p.add_image(nuclei_image, name="gray")
    with pytest.raises(WorkbenchError, match="channel"):
        p.add_image(np.stack([nuclei_image] * 2), name="two")


def test_labels_validation(project, nuclei_labels):
    with pytest.raises(WorkbenchError, match="same shape"):
        project.write_labels("nuclei", np.zeros((10, 10), np.uint8))
    with pytest.raises(WorkbenchError, match="value 7"):
        project.write_labels("nuclei", np.full((512, 512), 7, np.uint8))
    with pytest.raises(WorkbenchError, match="nothing is annotated"):
        project.training_samples()
    only_bg = np.zeros((512, 512), np.uint8)
    only_bg[:10] = 1
    project.write_labels("nuclei", only_bg)
    with pytest.raises(WorkbenchError, match="only background"):
        project.training_samples()
    project.import_labels("nuclei", nuclei_labels, instances=True)
    (image, targets, tag), = project.training_samples()
    assert tag == "nuclei" and image.shape == (1, 512, 512)
    assert set(np.unique(targets)) == {0, 1, 2}


def test_region_write_touches_only_region(project):
    patch = np.full((20, 30), 2, np.uint8)
    project.write_labels("nuclei", patch, region=(slice(490, 510), slice(10, 40)))
    labels = project.read_labels("nuclei")
    assert labels[490:510, 10:40].min() == 2 and labels.sum() == 2 * 20 * 30


def test_migrates_schema_0_and_refuses_newer(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "project.json").write_text(json.dumps(
        {"mode": "semantic", "classes": ["background", "cell"], "images": []}))
    p = Project.open(old)
    assert p.class_names == ["background", "cell"] and p.boundary_width == 2
    assert json.loads((old / "project.json").read_text())["schema_version"] == SCHEMA_VERSION
    (old / "project.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(WorkbenchError, match="newer workbench"):
        Project.open(old)
    (old / "project.json").write_text("{ broken")
    with pytest.raises(WorkbenchError, match="damaged"):
        Project.open(old)


def test_killed_writer_leaves_last_good_state(project, nuclei_labels):
    """A process killed while saving labels and the manifest over and over leaves a readable project."""
    project.import_labels("nuclei", nuclei_labels, instances=True)
    good = project.read_labels("nuclei")
    script = textwrap.dedent(f"""
        import numpy as np
        from workbench.store import Project
        p = Project.open({str(project.path)!r})
        rng = np.random.default_rng(0)
        print("ready", flush=True)
        while True:
            p.write_labels("nuclei", rng.integers(0, 3, (512, 512)).astype(np.uint8))
            p.update_settings(noise=rng.random(2000).tolist())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": REPO_ROOT})
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = Project.open(project.path)  # the manifest is whole JSON
    labels = again.read_labels("nuclei")  # every chunk decodes
    assert labels.shape == good.shape and labels.max() <= 2
    assert not list(project.path.glob("*.tmp")) and not list(project.path.glob(".*.workbench-*"))  # settled on open


def test_set_mode_checks_classes(project, tmp_path):
    project.set_mode("semantic")
    assert Project.open(project.path).mode == "semantic"
    three = Project.create(tmp_path / "three", classes=["background", "a", "b"])
    with pytest.raises(WorkbenchError, match="one object class"):
        three.set_mode("instance")
    with pytest.raises(WorkbenchError, match="mode must be"):
        project.set_mode("panoptic")


def test_interrupted_prediction_is_not_shown(project):
    probs = project.create_prediction("nuclei", "probabilities", (3, 512, 512), np.float32, model_version=1)
    probs[:, :100] = 0.5  # a prediction killed part way
    assert project.prediction("nuclei", "probabilities") is None
    project.mark_prediction_complete("nuclei")
    assert project.prediction("nuclei", "probabilities").attrs["model_version"] == 1

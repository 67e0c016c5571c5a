"""A corpus of bad inputs, generated here: each gives one `error:` line, exit code 2, no
traceback, and leaves the project as it was (workbench.cli, the manifest validator of
workbench.store._manifest, the lazy checks of workbench.store._io)."""

import json
import shutil
import tracemalloc

import numpy as np
import pytest
import tifffile
import zarr

from project_copies import copy_project, tree_digest
from workbench.cli import main
from workbench.store import Project


@pytest.fixture
def project(trained_small_project, tmp_path):
    return copy_project(trained_small_project, tmp_path / "project")


def _assert_one_error(capsys, argv, *, contains: str = "") -> str:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, (rc, captured.err)
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and "unexpected" not in lines[0]
    assert contains.lower() in lines[0].lower(), lines[0]
    return lines[0]


# ---------------------------------------------------------------- damaged and hostile files
def _truncated_tiff(folder, image):
    path = folder / "truncated.tif"
    tifffile.imwrite(path, image)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    return path


def _oversized_tiff_header(folder, image):
    path = folder / "huge.tif"
    tifffile.imwrite(path, shape=(100_000, 100_000), dtype=np.uint8)  # sparse: header only on disk
    with open(path, "r+b") as handle:
        handle.truncate(8192)
    return path


def _corrupt_zarr_chunk(folder, image):
    path = folder / "corrupt.zarr"
    array = zarr.open_array(str(path), mode="w", shape=(256, 256), chunks=(128, 128), dtype=np.uint16)
    array[...] = image[:256, :256]
    (path / "c" / "1" / "0").write_bytes(b"\x00garbage, not a compressed chunk")
    return path


def _empty_npy(folder, image):
    path = folder / "empty.npy"
    path.write_bytes(b"")
    return path


def _zero_rows_npy(folder, image):
    path = folder / "zero_rows.npy"
    np.save(path, np.zeros((0, 512), np.uint16))
    return path


def _nan_image(folder, image):
    path = folder / "nan.tif"
    data = image[:128, :128].astype(np.float32)
    data[5, 7] = np.nan
    tifffile.imwrite(path, data)
    return path


@pytest.mark.parametrize("make, contains", [
    (_truncated_tiff, "truncated or damaged"),
    (_oversized_tiff_header, "truncated or damaged"),
    (_corrupt_zarr_chunk, "truncated or damaged"),
    (_empty_npy, "not an image the workbench can read"),
    (_zero_rows_npy, "size 0"),
    (_nan_image, "NaN"),
])
def test_adding_a_damaged_file_names_it(project, tmp_path, nuclei_image, make, contains, capsys):
    path = make(tmp_path, nuclei_image)
    before = tree_digest(project)
    _assert_one_error(capsys, ["add", project, path], contains=contains)
    assert tree_digest(project) == before


@pytest.mark.parametrize("make, contains", [
    (_truncated_tiff, "truncated or damaged"),
    (_corrupt_zarr_chunk, "truncated or damaged"),
    (_nan_image, "holds NaN or infinite values"),
    (_oversized_tiff_header, "GiB of memory"),  # refused from its header, before a pixel is read
])
def test_predicting_a_damaged_file_blames_the_file(project, tmp_path, nuclei_image, make, contains, capsys):
    path = make(tmp_path, nuclei_image)
    before = tree_digest(project)
    _assert_one_error(capsys, ["predict", project, path, "--out", tmp_path / "out.tif"], contains=contains)
    assert tree_digest(project) == before and not (tmp_path / "out.tif").exists()


# ---------------------------------------------------------------- hand-edited manifests
def _edit(field_path, value):
    def apply(manifest):
        target = manifest
        for key in field_path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[field_path[-1]]
        else:
            target[field_path[-1]] = value
        return manifest
    return apply


_DELETE = object()
MANIFEST_EDITS = {
    "a list": (lambda m: [m], "holds [{"),
    "null": (lambda m: None, "holds None"),
    "empty object": (lambda m: {}, "'mode' is missing"),
    "schema -1": (_edit(["schema_version"], -1), "'schema_version' is -1"),
    "schema as text": (_edit(["schema_version"], "1"), "set it to 1"),
    "classes as text": (_edit(["classes"], "x"), "'classes' is 'x'"),
    "no classes": (_edit(["classes"], []), "holds 0 class(es)"),
    "images null": (_edit(["images"], None), "'images' is None (null)"),
    "boundary width as text": (_edit(["boundary_width"], "wide"), "'boundary_width' is 'wide'"),
    "version as text": (_edit(["models", 0, "version"], "one"), "models[0] 'version' is 'one'"),
    "mode banana": (_edit(["mode"], "banana"), "'semantic' or 'instance'"),
    "shape missing": (_edit(["images", 0, "shape"], _DELETE), "images[0] 'shape' is missing"),
    "absolute model path": (_edit(["models", 0, "path"], "/etc"), "models/ folder"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_EDITS))
@pytest.mark.parametrize("command", ["info", "add", "train", "predict"])
def test_a_hand_edited_manifest_gives_one_line_for_every_command(project, tmp_path, nuclei_image, case, command,
                                                                  capsys):
    edit, contains = MANIFEST_EDITS[case]
    manifest = json.loads((project / "project.json").read_text())
    (project / "project.json").write_text(json.dumps(edit(manifest)))
    before = tree_digest(project)
    tifffile.imwrite(tmp_path / "more.tif", nuclei_image[:64, :64])
    argv = {"info": ["info", project], "add": ["add", project, tmp_path / "more.tif"],
            "train": ["train", project, "--method", "forest"], "predict": ["predict", project]}[command]
    line = _assert_one_error(capsys, argv, contains=contains)
    assert "project.json" in line
    assert tree_digest(project) == before


def test_a_model_record_without_metrics_still_opens(project, capsys):
    manifest = json.loads((project / "project.json").read_text())
    del manifest["models"][0]["metrics"]
    (project / "project.json").write_text(json.dumps(manifest))
    assert main(["info", str(project)]) == 0
    assert "model v1 forest" in capsys.readouterr().out


def test_deleted_data_store_and_labels_are_named(project, capsys):
    labels_folder = project / "data.zarr" / "images" / "crop" / Project.open(project).image_info("crop").labels
    shutil.rmtree(labels_folder)
    _assert_one_error(capsys, ["info", project], contains="labels of image 'crop' are missing")
    shutil.rmtree(project / "data.zarr")
    before = tree_digest(project)
    _assert_one_error(capsys, ["info", project], contains="lost its data store data.zarr")
    assert tree_digest(project) == before


# ---------------------------------------------------------------- wrong options and outputs
@pytest.mark.parametrize("argv, contains", [
    (["labels", "{p}", "crop", "--z", "3", "--from", "{mask}"], "is 2-D"),
    (["labels", "{p}", "crop", "--instances", "{zeros}"], "holds no objects"),
    (["labels", "{p}", "crop", "--instances", "{wrong_shape}"], "must have the same shape"),
    (["predict", "{p}", "crop", "--out", "{tmp}/x.png"], "PNG holds at most 16 bits"),
    (["predict", "{p}", "crop", "--out", "{tmp}/x.jpg"], "JPEG is lossy"),
    (["predict", "{p}", "crop", "--tile-size", "0"], "tile size must be"),
    (["predict", "{p}", "crop", "--tile-size", "7"], "tile size must be"),
    (["train", "{p}", "--method", "forest", "--minutes", "1"], "only apply to --method unet"),
    (["train", "{p}", "--minutes", "0"], "--minutes must be a positive"),
    (["remove", "{p}", "nonexistent"], "no image 'nonexistent'"),
])
def test_wrong_options_are_refused_before_any_work(project, tmp_path, nuclei_labels, argv, contains, capsys):
    tifffile.imwrite(tmp_path / "mask.tif", np.ones((128, 128), np.uint8))
    tifffile.imwrite(tmp_path / "zeros.tif", np.zeros((128, 128), np.uint16))
    tifffile.imwrite(tmp_path / "wrong_shape.tif", nuclei_labels[:100, :128])
    names = {"p": project, "tmp": tmp_path, "mask": tmp_path / "mask.tif", "zeros": tmp_path / "zeros.tif",
             "wrong_shape": tmp_path / "wrong_shape.tif"}
    before = tree_digest(project)
    _assert_one_error(capsys, [a.format(**names) for a in argv], contains=contains)
    assert tree_digest(project) == before  # the stored prediction and labels too


def test_new_and_demo_refuse_files_unwritable_paths_and_full_folders(project, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    _assert_one_error(capsys, ["new", a_file], contains="is a file")
    _assert_one_error(capsys, ["new", a_file / "sub"], contains="cannot create the project folder")
    _assert_one_error(capsys, ["demo", "--out", a_file], contains="is a file")
    demo = tmp_path / "demo"
    shutil.copytree(project, demo / "project")
    before = tree_digest(demo)
    _assert_one_error(capsys, ["demo", "--out", demo, "--minutes", "0"], contains="--minutes must be a positive")
    _assert_one_error(capsys, ["demo", "--out", demo], contains="not empty")
    assert tree_digest(demo) == before and a_file.read_text() == "not a folder"


def test_info_on_a_huge_unpainted_image_reads_no_pixels(tmp_path, capsys):
    project = Project.create(tmp_path / "p", mode="instance", classes=["background", "cell"])
    big = zarr.open_array(str(tmp_path / "big.zarr"), mode="w", shape=(8192, 8192), chunks=(2048, 2048),
                          dtype=np.uint8, fill_value=0)
    project.add_image(big, name="big")
    labels = project.labels("big")
    labels[100:200, 100:300] = 2  # one painted chunk of 256
    tracemalloc.start()
    assert main(["info", str(project.path)]) == 0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "big: YX (8192, 8192) uint8, 0.0% annotated" in capsys.readouterr().out
    assert peak < labels.nbytes / 8  # one label chunk at a time, never the 64 MiB layer
    stats = project.label_stats("big")
    assert stats["pixels"]["cell"] == 100 * 200 and stats["objects"] == 1


def test_debug_shows_the_traceback_as_well(project, capsys):
    assert main(["predict", str(project), "crop", "--tile-size", "7", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("error: tile size")

"""The batch engine: a LocalCluster of two worker processes, a killed-and-resumed batch, OME-Zarr output."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from workbench.batch import BatchSettings, parse_scheduler, predict_batch
from workbench.cli import main
from workbench.datasets._sample import build_sample_project
from workbench.errors import WorkbenchError
from workbench.pipeline import train_model
from workbench.predict import hex_to_rgb

REPO = Path(__file__).resolve().parents[1]
BLOCK = 256
# What the command line passes by default; the in-process runs use the same, so results compare.
SETTINGS = BatchSettings(block_size=BLOCK, tile_size=256)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, nuclei_image):
    """A project with a small forest trained on painted nuclei, and two inputs: a TIFF and a wider Zarr."""
    root = tmp_path_factory.mktemp("batch")
    project = build_sample_project(root / "project", seed=1)
    train_model(project, method="forest", settings={"n_estimators": 8, "max_pixels_per_class": 5000})
    tifffile.imwrite(root / "slide_a.tif", nuclei_image)
    wide = zarr.create_array(str(root / "slide_b.zarr"), shape=(512, 768), chunks=(256, 256), dtype="uint16")
    wide[...] = np.concatenate([nuclei_image, nuclei_image[:, ::-1]], axis=1)[:, :768]
    return root, project


@pytest.fixture(scope="module")
def reference(workspace):
    """The batch in this process: the result the cluster and the resumed run must equal."""
    root, project = workspace
    out = root / "reference"
    results = predict_batch(project, [root / "slide_a.tif", root / "slide_b.zarr"], out,
                            settings=SETTINGS, scheduler="sync")
    return out, results


def instances(container: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(container / "labels" / "instances" / "s0"), mode="r"))


@pytest.mark.slow
def test_batch_on_a_local_cluster_of_two_workers_equals_this_process(workspace, reference):
    root, project = workspace
    reference_out, reference_results = reference
    assert [r.status for r in reference_results] == ["done", "done"]
    assert reference_results[1].blocks == 6 and reference_results[1].objects > 150
    out = root / "cluster"
    results = predict_batch(project, [root / "slide_a.tif", root / "slide_b.zarr"], out,
                            settings=replace(SETTINGS, table_format="parquet"), scheduler="local:2")
    for ours, theirs in zip(results, reference_results):
        assert ours.status == "done" and ours.objects == theirs.objects
        assert np.array_equal(instances(Path(ours.output)), instances(Path(theirs.output)))
        pd.testing.assert_frame_equal(pd.read_parquet(ours.table), pd.read_csv(theirs.table), check_dtype=False)
    # Nothing half-made is left beside the outputs.
    assert sorted(p.name for p in out.iterdir()) == ["slide_a.ome.zarr", "slide_a.parquet", "slide_b.ome.zarr",
                                                     "slide_b.parquet"]


@pytest.mark.slow
def test_a_killed_batch_resumes_and_skips_what_was_finished(workspace, reference, capsys):
    root, project = workspace
    reference_out, _ = reference
    out = root / "killed"
    command = [sys.executable, "-m", "workbench.cli", "predict", str(project.path), str(root / "slide_a.tif"),
               str(root / "slide_b.zarr"), "--out", str(out), "--block-size", str(BLOCK), "--scheduler", "sync"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "widgets"),
                                                        os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers = out / ".slide_b.ome.zarr.partial" / "done"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        # Kill in the middle: every block through the network, some through instances.
        if markers.is_dir() and len(list(markers.glob("instances-*"))) >= 2:
            break
        time.sleep(0.1)
    assert process.poll() is None, "the batch ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    # No output that looks complete; the work done so far waits in the hidden partial folders.
    assert not list(out.glob("*.ome.zarr")) and not list(out.glob("*.csv"))
    assert (out / ".slide_b.ome.zarr.partial" / "job.json").is_file()
    done_before = len(list(markers.iterdir()))

    # Started again the way it was started: the finished blocks are skipped.
    assert main(command[3:]) == 0
    lines = capsys.readouterr().out
    assert "slide_b:" in lines and "block steps resumed" in lines
    for name in ("slide_a", "slide_b"):
        assert np.array_equal(instances(out / f"{name}.ome.zarr"), instances(reference_out / f"{name}.ome.zarr"))
        pd.testing.assert_frame_equal(pd.read_csv(out / f"{name}.csv"), pd.read_csv(reference_out / f"{name}.csv"))
    assert not list(out.glob(".*.partial"))
    assert done_before >= 2 + 6  # network for the six blocks of slide_b, and instances of two
    # And once more: finished images are skipped whole.
    results = predict_batch(project, [root / "slide_a.tif", root / "slide_b.zarr"], out, settings=SETTINGS,
                            scheduler="sync")
    assert [r.status for r in results] == ["already finished, skipped"] * 2


@pytest.mark.slow
def test_ome_zarr_output_opens_with_ome_zarr_reader(workspace, reference, nuclei_image):
    _, project = workspace
    reference_out, results = reference
    container = reference_out / "slide_a.ome.zarr"
    nodes = list(Reader(parse_url(str(container)))())
    image = nodes[0]
    assert image.specs[0].__class__.__name__ == "Multiscales"
    assert np.array_equal(np.asarray(image.data[0])[0], nuclei_image)
    assert [tuple(level.shape) for level in image.data] == [(1, 512, 512)]
    by_name = {node.metadata.get("name"): node for node in nodes}
    assert {"instances", "classes"} <= set(by_name)
    # Colours of the classes layer are the project's class colours.
    red, green, blue = (channel / 255 for channel in hex_to_rgb(project.class_colors[1]))
    assert np.allclose(by_name["classes"].metadata["color"][1], [red, green, blue, 1.0])
    labels = np.asarray(by_name["instances"].data[0])
    table = pd.read_csv(results[0].table)
    assert labels.max() == len(table) == results[0].objects
    assert np.array_equal(np.asarray(by_name["classes"].data[0]), (labels > 0).astype(np.uint8))
    probabilities = Reader(parse_url(str(container / "probabilities")))()
    levels = next(probabilities).data
    assert tuple(levels[0].shape) == (3, 512, 512)
    np.testing.assert_allclose(np.asarray(levels[0]).sum(axis=0), 1.0, atol=1e-4)
    # Objects on block faces are measured once, with whole-image neighbour distances.
    assert table["label"].is_unique and table["neighbour_distance_px"].notna().all()
    # And the workbench's napari reader (issue 13) opens it as it is: the image and both label layers.
    from workbench.exchange._napari import get_reader

    layers = get_reader(str(container))(str(container))
    assert [(kind, kwargs.get("name")) for _, kwargs, kind in layers][1:] == [("labels", "instances"),
                                                                                ("labels", "classes")]
    assert layers[0][2] == "image"


def test_scheduler_names():
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("tcp://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    assert parse_scheduler(None) == ("auto", None) and parse_scheduler("sync") == ("sync", None)
    with pytest.raises(WorkbenchError, match="local:N"):
        parse_scheduler("local:zero")
    with pytest.raises(WorkbenchError, match="unknown scheduler"):
        parse_scheduler("slurm")


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="glibc's mallopt")
def test_this_process_returns_freed_block_memory_unless_the_user_tuned_malloc():
    """The sync runner sets glibc's trim and mmap thresholds (as dask's nanny does for workers), so freed
    block arrays leave the process; a user's own MALLOC_* settings win. In a child: it is process-wide."""
    code = "from workbench.batch import _return_freed_memory; print(_return_freed_memory())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    run = [sys.executable, "-c", code]
    assert subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout.strip() == "True"
    env["MALLOC_ARENA_MAX"] = "2"
    assert subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.parametrize("extra, message", [
    (["--scheduler", "banana"], "unknown scheduler"),
    (["--out-missing"], None),
])
def test_batch_mistakes_give_one_line_and_exit_2(tmp_path, nuclei_image, extra, message, capsys):
    project = build_sample_project(tmp_path / "project")
    tifffile.imwrite(tmp_path / "a.tif", nuclei_image)
    if message is None:
        # Two inputs and a file name as --out: a folder is needed.
        argv = ["predict", project.path, tmp_path / "a.tif", tmp_path / "a.tif", "--out", tmp_path / "x.tif"]
        message = "names a file"
    else:
        argv = ["predict", project.path, tmp_path / "a.tif", "--out", tmp_path / "results", *extra]
    train_free = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert train_free == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1

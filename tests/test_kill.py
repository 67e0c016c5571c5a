"""`kill -9` at several moments of `labels`, `train` and `predict --out x.zarr`: afterwards the old
state or the new one, never a mix, never a complete-looking partial output, and no temporary
folders once the next command has run (workbench.store._project staging, _io.atomic_output)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from project_copies import copy_project
from workbench.cli import main
from workbench.store import Project, labels_from_instances
from workbench.store._lock import OWNER

REPO_ROOT = str(Path(__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO_ROOT, os.path.join(REPO_ROOT, "widgets")])}


def _kill_when(argv, trigger, delay: float, timeout: float = 120.0) -> int | None:
    """Run `workbench argv`, SIGKILL it `delay` s after `trigger()` holds; None when it ended first."""
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", *map(str, argv)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout

    def fired():
        try:
            return trigger()
        except OSError:  # a folder vanished while we looked: the writer moved on
            return False

    while proc.poll() is None and not fired() and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is not None:
        return None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return -9


def _staging(project: Path) -> list[Path]:
    """Staging folders and locks of other processes (this test process keeps its own until it exits)."""
    tmp = project / ".workbench" / "tmp"
    return sorted(p for p in tmp.iterdir() if not p.name.startswith(OWNER)) if tmp.is_dir() else []


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".workbench-" in p.name)


@pytest.fixture
def project(trained_small_project, tmp_path):
    return copy_project(trained_small_project, tmp_path / "project")


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.02, 0.05])
def test_kill_during_labels_leaves_old_or_new_labels(project, tmp_path, nuclei_image, nuclei_labels, delay, capsys):
    big = np.tile(nuclei_image, (2, 3))  # 1024 x 1536: six label chunks to write
    mask = np.tile(nuclei_labels, (2, 3)).astype(np.uint32)
    mask[512:] += mask.max()  # distinct ids per tile row so labels_from_instances keeps tiles apart
    Project.open(project).add_image(big, name="big")
    old = Project.open(project).read_labels("big")
    mask_path = tmp_path / "mask.tif"
    tifffile.imwrite(mask_path, mask)
    new = labels_from_instances(mask)

    def writing():
        return any(p.is_dir() and any(p.rglob("labels-*")) for p in _staging(project))

    _kill_when(["labels", project, "big", "--instances", mask_path], writing, delay)
    assert main(["info", str(project)]) == 0  # the next command
    shown = capsys.readouterr().out
    labels = Project.open(project).read_labels("big")
    if np.array_equal(labels, new):
        assert "big: YX (1024, 1536) uint16, 100.0% annotated" in shown
    else:
        np.testing.assert_array_equal(labels, old)  # never old and new chunks mixed
        assert "big: YX (1024, 1536) uint16, 0.0% annotated" in shown
    assert _staging(project) == []
    assert sorted(p.name for p in (project / "data.zarr" / "images" / "big").iterdir() if "labels" in p.name) \
        == [Project.open(project).image_info("big").labels]


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["start", "features", "saving"])
def test_kill_during_train_leaves_no_half_model(project, moment):
    triggers = {
        "start": lambda: False,
        "features": lambda: any(_staging(project)),
        "saving": lambda: any(p.name.endswith(".tmp") or p.name == "forest.npz"
                              for d in _staging(project) for p in d.rglob("*")),
    }
    delay = 1.5 if moment == "start" else 0.0
    _kill_when(["train", project, "--method", "forest"], triggers[moment], delay)
    reopened = Project.open(project)  # the next command settles the staging folders
    versions = [m.version for m in reopened.models]
    assert versions in ([1], [1, 2])
    assert sorted(p.name for p in (project / "models").iterdir()) == [f"v{v:03d}-forest" for v in versions]
    from workbench import pipeline

    pipeline.load_segmenter(reopened)  # the latest recorded model is whole
    assert _staging(project) == []


@pytest.mark.slow
def test_kill_during_predict_out_zarr_keeps_the_previous_output(project, tmp_path):
    out, probs = tmp_path / "x.zarr", tmp_path / "p.zarr"
    argv = ["predict", project, "crop", "--out", out, "--probabilities", probs]
    assert main([str(a) for a in argv]) == 0
    good = zarr.open_array(str(out), mode="r")[...]
    good_probs = zarr.open_array(str(probs), mode="r")[...]
    shutil_rm = __import__("shutil").rmtree

    def writing_out():
        return bool(_leftovers(tmp_path))

    for trigger, delay in [(lambda: False, 2.0), (writing_out, 0.0), (writing_out, 0.01), (lambda: False, 4.0)]:
        _kill_when(argv, trigger, delay)
        assert main(["info", str(project)]) == 0  # the next command on the project settles the temporaries
        assert _leftovers(tmp_path) == []
        for path, expected in ((out, good), (probs, good_probs)):
            assert path.is_dir(), "the old output must stay until the new one is whole"
            np.testing.assert_array_equal(zarr.open_array(str(path), mode="r")[...], expected)
    # The first output, killed before it was whole, leaves nothing that looks complete.
    shutil_rm(out)
    shutil_rm(probs)
    _kill_when(argv, writing_out, 0.0)
    for path in (out, probs):
        if path.exists():
            assert zarr.open_array(str(path), mode="r").shape[-2:] == (128, 128)
    assert main(["info", str(project)]) == 0
    assert _leftovers(tmp_path) == []


def test_sigterm_removes_temporaries_at_once(project, tmp_path):
    out = tmp_path / "x.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "predict", str(project), "crop", "--out", str(out)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not _staging(project):
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130)
    assert _staging(project) == [] and _leftovers(tmp_path) == []
    assert (project / ".workbench" / "tmp").is_dir()

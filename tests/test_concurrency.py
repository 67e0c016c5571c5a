"""Two writers on one project lose nothing (workbench.store._lock and the Project read-modify-write).

Each test starts real `workbench` processes at the same moment, as a user with two terminals
(or the app and a terminal) would.
"""

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

from project_copies import copy_project
from workbench.store import Project, ProjectBusyError

REPO_ROOT = str(Path(__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO_ROOT, os.path.join(REPO_ROOT, "widgets")])}


def _start(*argv):
    return subprocess.Popen([sys.executable, "-m", "workbench.cli", *map(str, argv)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


@pytest.fixture
def project(trained_small_project, tmp_path):
    return copy_project(trained_small_project, tmp_path / "project")


@pytest.fixture
def images(tmp_path, nuclei_image):
    paths = []
    for i, (ys, xs) in enumerate([(slice(0, 128), slice(128, 256)), (slice(128, 256), slice(0, 128))]):
        paths.append(tmp_path / f"tile{i}.tif")
        tifffile.imwrite(paths[-1], nuclei_image[ys, xs])
    return paths


def test_add_beside_add_keeps_both_images(project, images):
    procs = [_start("add", project, path) for path in images]
    results = [_finish(p) for p in procs]
    assert all(rc == 0 for rc, _, _ in results), results
    assert sorted(Project.open(project).image_names) == ["crop", "tile0", "tile1"]


def test_add_of_same_name_beside_add_gets_two_names(project, images, tmp_path):
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / images[0].name).write_bytes(images[1].read_bytes())
    procs = [_start("add", project, images[0]), _start("add", project, twin / images[0].name)]
    assert all(_finish(p)[0] == 0 for p in procs)
    reopened = Project.open(project)
    assert sorted(reopened.image_names) == ["crop", "tile0", "tile0_2"]
    firsts = {int(reopened.image(n)[0, 0]) for n in ("tile0", "tile0_2")}
    assert firsts == {int(tifffile.imread(images[0])[0, 0]), int(tifffile.imread(images[1])[0, 0])}  # each whole, none mixed


def test_train_beside_add_keeps_the_image_and_the_model(project, images):
    procs = [_start("train", project, "--method", "forest"), _start("add", project, images[0])]
    (train_rc, train_out, train_err), (add_rc, _, add_err) = [_finish(p) for p in procs]
    assert add_rc == 0, add_err
    assert train_rc == 0, train_err
    reopened = Project.open(project)
    assert "tile0" in reopened.image_names
    assert [m.version for m in reopened.models] == [1, 2]
    assert "model version 2" in train_out


def test_train_beside_train_loses_no_model(project):
    procs = [_start("train", project, "--method", "forest") for _ in range(2)]
    results = [_finish(p) for p in procs]
    saved = [int(re.search(r"model version (\d+)", out).group(1)) for rc, out, _ in results if rc == 0]
    refused = [err for rc, _, err in results if rc != 0]
    assert saved, results
    for err in refused:  # the second one may be refused, clearly, while the first trains
        assert err.strip().startswith("error: project") and "is busy (training since" in err and err.count("\n") == 1
    recorded = [m.version for m in Project.open(project).models]
    assert sorted(set(saved)) == sorted(saved) and set(saved) <= set(recorded)
    assert len(recorded) == 1 + len(saved)  # every "saved" model is in the manifest


def test_a_busy_project_says_who_and_since_when(project):
    first = Project.open(project)
    with first.job("training"):
        with pytest.raises(ProjectBusyError, match=rf"busy \(training since \d\d:\d\d in process {os.getpid()}\)"):
            with Project.open(project).job("predicting"):
                pass
    with Project.open(project).job("predicting"):  # free again once the job ended
        pass


def test_threads_of_one_app_changing_settings_keep_every_change(project):
    projects = [Project.open(project) for _ in range(4)]

    def write(index):
        for step in range(10):
            projects[index].update_settings(**{f"thread{index}_{step}": step})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    settings = Project.open(project).settings
    assert all(settings[f"thread{i}_{s}"] == s for i in range(4) for s in range(10))
    assert projects[0].settings == settings  # a Project sees what the others wrote


def test_labels_imported_while_another_process_adds_are_kept(project, images, nuclei_labels):
    from workbench.store import labels_from_instances

    mask = nuclei_labels[:128, :128][::-1].copy()
    mask_path = images[0].with_name("crop_mask.tif")
    tifffile.imwrite(mask_path, mask)
    procs = [_start("labels", project, "crop", "--instances", mask_path), _start("add", project, images[1])]
    assert all(_finish(p)[0] == 0 for p in procs)
    reopened = Project.open(project)
    assert "tile1" in reopened.image_names
    np.testing.assert_array_equal(reopened.read_labels("crop"), labels_from_instances(mask))

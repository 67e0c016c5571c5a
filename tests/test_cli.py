"""The `workbench` command end to end on the real nuclei image: user-facing behaviour and errors."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from workbench.cli import main
from workbench.datasets import simulate_partial_labels
from workbench.store import Project


@pytest.fixture()
def files(tmp_path, nuclei_image, nuclei_labels):
    tifffile.imwrite(tmp_path / "nuclei.tif", nuclei_image)
    tifffile.imwrite(tmp_path / "mask.tif", nuclei_labels.astype(np.uint16))
    partial = simulate_partial_labels(nuclei_labels, object_fraction=0.25, seed=1)
    tifffile.imwrite(tmp_path / "partial.tif", partial)
    return tmp_path


def run(*argv):
    return main([str(a) for a in argv])


def test_full_command_line_workflow(files, capsys):
    proj = files / "proj"
    assert run("new", proj, "--mode", "instance", "--classes", "background,nucleus") == 0
    assert run("add", proj, files / "nuclei.tif") == 0
    assert run("labels", proj, "nuclei", "--from", files / "partial.tif") == 0
    out = capsys.readouterr().out
    assert "annotated" in out and "objects" in out
    assert run("train", proj, "--minutes", "0.15", "--seed", "1") == 0
    out = capsys.readouterr().out
    assert "model version 1 (unet)" in out
    # The summary scores objects the model did not train on and says what to do next.
    assert "held-out painted objects:" in out
    assert ("still improving — training longer should help" in out
            or "no longer improving — paint where the model is wrong" in out)
    first = Project.open(proj).model_record()
    assert first.metrics["steps"] >= 1 and first.metrics["summary"] in out
    assert run("train", proj, "--method", "forest") == 0
    assert "model version 2 (forest)" in capsys.readouterr().out
    # Predict into the project with the latest (forest) model, then a file with the U-Net.
    capsys.readouterr()
    assert run("predict", proj) == 0
    out = capsys.readouterr().out
    assert out.startswith("nuclei: {") and "'warnings'" not in out  # warnings get lines of their own
    assert all(line.startswith("warning: nuclei: ") for line in out.splitlines()[1:])
    assert run("predict", proj, files / "nuclei.tif", "--out", files / "labels.zarr", "--model", "1",
               "--probabilities", files / "probs.tif") == 0
    labels = zarr.open_array(str(files / "labels.zarr"), mode="r")
    assert labels.shape == (512, 512)
    # The U-Net's three class probabilities, then its distance map.
    probabilities = tifffile.imread(files / "probs.tif")
    assert probabilities.shape == (4, 512, 512)
    np.testing.assert_allclose(probabilities[:3].sum(axis=0), 1.0, atol=1e-4)
    assert run("predict", proj, "nuclei", "--out", files / "nuclei_labels.tif") == 0
    exported = tifffile.imread(files / "nuclei_labels.tif")
    assert exported.max() > 10  # the forest finds many nuclei
    assert run("measure", proj, "--out", files / "table.csv") == 0
    table = pd.read_csv(files / "table.csv")
    assert len(table) == len(np.unique(exported)) - 1
    assert {"area_px", "neighbour_distance_px", "intensity_mean"} <= set(table.columns)
    assert run("info", proj) == 0
    info = capsys.readouterr().out
    assert "model v1 unet" in info and "model v2 forest" in info
    # Iterative development: more labels, then continue from the last U-Net.
    assert run("labels", proj, "nuclei", "--instances", files / "mask.tif") == 0
    assert run("train", proj, "--minutes", "0.1", "--resume") == 0
    record = Project.open(proj).model_record()
    assert record.version == 3 and record.parent == 1
    assert record.metrics["total_steps"] == first.metrics["steps"] + record.metrics["steps"]
    assert record.labels["annotated_fraction"] == 1.0


@pytest.mark.parametrize("argv, message", [
    (["info", "{tmp}/nowhere"], "not a workbench project"),
    (["add", "{tmp}/proj", "{tmp}/missing.tif"], "does not exist"),
    (["labels", "{tmp}/proj", "nuclei", "--from", "{tmp}/wrong.tif"], "same shape"),
    (["labels", "{tmp}/proj", "other", "--from", "{tmp}/wrong.tif"], "no image 'other'"),
    (["train", "{tmp}/proj"], "nothing is annotated"),
    (["predict", "{tmp}/proj"], "no model yet"),
    (["new", "{tmp}/proj"], "already holds a project"),
    (["predict", "{tmp}/proj", "{tmp}/wrong.tif", "--out", "{tmp}/x.jpg2"], "must end in .tif"),  # before any work
])
def test_user_mistakes_give_one_line_and_exit_2(tmp_path, nuclei_image, argv, message, capsys):
    Project.create(tmp_path / "proj").add_image(nuclei_image, name="nuclei")
    tifffile.imwrite(tmp_path / "wrong.tif", np.zeros((10, 10), np.uint8))
    code = run(*[a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_help_and_entry_point():
    result = subprocess.run([sys.executable, "-m", "workbench.cli", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--minutes" in result.stdout and "--resume" in result.stdout
    result = subprocess.run([sys.executable, "-m", "workbench.cli", "new"], capture_output=True, text=True)
    assert result.returncode == 2 and "required" in result.stderr


@pytest.mark.slow
def test_demo_never_deletes_and_force_replaces_only_its_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run("demo", "--out", str(out), "--minutes", "0.05") == 0
    (out / "notes.txt").write_text("mine")
    first = Project.open(out / "project").model_record().created
    assert run("demo", "--out", str(out), "--minutes", "0.05") == 2
    assert "not empty" in capsys.readouterr().err
    assert run("demo", "--out", str(out), "--minutes", "0.05", "--force") == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert Project.open(out / "project").model_record().created >= first
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_encoder_option_takes_a_preset_name(tmp_path, nuclei_image, monkeypatch, capsys):
    """`--encoder small` names a preset (its own error lists presets as choices): it chooses the preset."""
    from workbench import pipeline
    from workbench.records import ModelRecord

    Project.create(tmp_path / "proj").add_image(nuclei_image, name="nuclei")
    seen = {}

    def fake_train(project, *, method, resume, settings, progress):
        seen.update(settings)
        return ModelRecord(version=1, method=method, path="models/v001-unet", created="now")

    monkeypatch.setattr(pipeline, "train_model", fake_train)
    assert run("train", str(tmp_path / "proj"), "--encoder", "small", "--epochs", "1") == 0
    assert seen["preset"] == "small" and "encoder" not in seen
    seen.clear()
    assert run("train", str(tmp_path / "proj"), "--encoder", "densenet121", "--epochs", "1") == 0
    assert seen["encoder"] == "densenet121" and "preset" not in seen  # an encoder name replaces only the encoder

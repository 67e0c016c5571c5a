"""bioimage.io packages: the exported zip passes bioimageio.core's test_model and describes the model."""

import zipfile

import numpy as np
import pytest
import yaml

from _exchange_project import make_unet_project
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.exchange import export_bioimageio, export_model


@pytest.fixture(scope="module")
def unet_project(tmp_path_factory):
    project, _, _ = make_unet_project(tmp_path_factory.mktemp("bioimageio") / "project", size=160)
    return project


@pytest.fixture(scope="module")
def package(unet_project, tmp_path_factory):
    # Exporting traces the model three times and validates the package: about a minute on 2 cores.
    result = export_bioimageio(unet_project, tmp_path_factory.mktemp("out") / "nuclei.zip", test_size=96,
                               authors=["Ada Lovelace"])
    return unet_project, result


@pytest.mark.slow
def test_package_passes_bioimageio_test_model(package):
    from bioimageio.core import test_model

    _, result = package
    summary = test_model(result.path, devices=["cpu"])
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    tested = {d.name.split("(")[-1].rstrip(")") for d in summary.details if d.name.startswith("Reproduce test outputs")}
    assert tested == {"pytorch_state_dict", "torchscript", "onnx"}


@pytest.mark.slow
def test_package_describes_weights_normalisation_axes_and_training(package):
    project, result = package
    with zipfile.ZipFile(result.path) as archive:
        names = set(archive.namelist())
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        readme = archive.read("README.md").decode()
        test_input = np.load(archive.open("test_input.npy"))
        test_output = np.load(archive.open("test_output.npy"))
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5")
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == "WorkbenchUnet"
    assert {"bioimageio_unet.py", "environment.yaml", "cover.png", "weights.onnx"} <= names
    assert rdf["license"] == "CC-BY-4.0" and rdf["authors"][0]["name"] == "Ada Lovelace"
    [tensor_in] = rdf["inputs"]
    assert [a.get("id", a["type"]) for a in tensor_in["axes"]] == ["batch", "channel", "y", "x"]
    assert tensor_in["axes"][2]["unit"] == "micrometer" and tensor_in["axes"][2]["scale"] == 0.5
    record = project.model_record()
    from workbench.deep import load_model

    _, model_card = load_model(project.model_dir(), device="cpu")
    normalizer = model_card.normalizer()
    [step] = [s for s in tensor_in["preprocessing"] if s["id"] == "scale_linear"]
    np.testing.assert_allclose(step["kwargs"]["gain"], 1 / normalizer.scales[0], rtol=1e-6)
    np.testing.assert_allclose(step["kwargs"]["offset"], -normalizer.offsets[0] / normalizer.scales[0], rtol=1e-6)
    [tensor_out] = rdf["outputs"]
    assert tensor_out["axes"][1]["channel_names"] == model_card.classes + ["distance"]
    assert test_input.shape == (1, 1, 96, 96) and test_output.shape == (1, 4, 96, 96)
    np.testing.assert_allclose(test_output[:, :3].sum(axis=1), 1.0, atol=1e-5)
    assert 0 < test_output[:, 3].min() and test_output[:, 3].max() < 1  # the distance map, through a sigmoid
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["distance"] is True
    assert "## Training data" in readme and "nuclei" in readme and "## Validation" in readme
    assert rdf["config"]["workbench"]["model_version"] == record.version


def test_forest_models_are_refused(tmp_path, nuclei_image):
    from workbench import pipeline
    from workbench.store import Project

    project = Project.create(tmp_path / "p", mode="semantic", classes=["background", "nucleus"])
    project.add_image(nuclei_image[:96, :96], name="img")
    labels = np.zeros((96, 96), np.uint8)
    labels[:10] = 1
    labels[40:50, 40:50] = 2
    project.write_labels("img", labels)
    pipeline.train_model(project, method="forest")
    with pytest.raises(WorkbenchError, match="forest model"):
        export_model(project, tmp_path / "m.zip")


def test_cli_export_model_mistakes_are_one_error_line(unet_project, tmp_path, capsys):
    project = unet_project
    assert main(["export-model", str(project.path), "--out", str(tmp_path / "model.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and ".zip" in err[0]
    assert main(["export-model", str(project.path), "--out", str(tmp_path / "m.onnx"), "--version", "7"]) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert main(["export-model", str(project.path), "--out", str(tmp_path / "m.zip"), "--format", "onnx"]) == 2
    assert "onnx export is a .onnx file" in capsys.readouterr().err


def test_cli_export_model_writes_onnx(unet_project, tmp_path, capsys):
    project = unet_project
    assert main(["export-model", str(project.path), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "model version 1 as onnx" in capsys.readouterr().out
    assert (tmp_path / "m.onnx").stat().st_size > 0


@pytest.mark.slow
def test_package_imports_back_into_a_project_and_predicts_the_same(package, tmp_path):
    from workbench import pipeline
    from workbench.deep import load_model
    from workbench.exchange import import_bioimageio
    from workbench.store import Project

    source_project, result = package
    project = Project.create(tmp_path / "elsewhere", mode="instance", classes=["background", "nucleus"])
    project.add_image(source_project.image("nuclei")[...], name="nuclei")
    record = import_bioimageio(project, result.path)
    assert record.method == "unet" and record.settings["imported_from"] == str(result.path)
    original, _ = load_model(source_project.model_dir(), device="cpu")
    imported, _ = load_model(project.model_dir(), device="cpu")
    for key, value in original.state_dict().items():
        np.testing.assert_array_equal(imported.state_dict()[key].numpy(), value.numpy())
    pipeline.predict_project(project, tile_size=128)
    pipeline.predict_project(source_project, tile_size=128)
    np.testing.assert_allclose(project.prediction("nuclei", "probabilities")[...],
                               source_project.prediction("nuclei", "probabilities")[...], atol=1e-6)


@pytest.mark.slow
def test_import_refuses_packages_that_do_not_fit(package, tmp_path):
    from workbench.exchange import import_bioimageio
    from workbench.store import Project

    _, result = package
    semantic = Project.create(tmp_path / "semantic", mode="semantic", classes=["background", "nucleus"])
    with pytest.raises(WorkbenchError, match="instance model"):
        import_bioimageio(semantic, result.path)
    not_a_zip = tmp_path / "model.zip"
    not_a_zip.write_bytes(b"not a zip")
    with pytest.raises(WorkbenchError, match="cannot read bioimage.io package"):
        import_bioimageio(semantic, not_a_zip)

"""Nothing from a project folder runs code, and nothing outside the project is read as a model or deleted.

Covers workbench.classic._forest_format, the confinement checks of workbench.store._manifest and
the U-Net load path of workbench.deep._models, through the command line a hostile user would use.
"""

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from project_copies import copy_project, tree_digest
from workbench.classic import ForestModel
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.store import Project


class _Payload:
    """Unpickling this runs `touch <marker>`: what a crafted model file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture
def project(trained_small_project, tmp_path):
    return copy_project(trained_small_project, tmp_path / "project")


def test_a_pickled_forest_is_refused_without_running_it(project, tmp_path, capsys):
    marker = tmp_path / "pwned"
    model_dir = project / "models" / "v001-forest"
    (model_dir / "forest.npz").unlink()
    (model_dir / "forest.joblib").write_bytes(pickle.dumps(_Payload(marker)))
    before = tree_digest(project)
    assert main(["predict", str(project), "crop"]) == 2
    assert "pickle" in _one_error(capsys)
    assert not marker.exists()
    assert tree_digest(project) == before


def test_a_forest_npz_holding_pickled_objects_is_refused(project, tmp_path, capsys):
    marker = tmp_path / "pwned"
    model_dir = project / "models" / "v001-forest"
    with open(model_dir / "forest.npz", "wb") as handle:
        np.savez(handle, classes=np.array([_Payload(marker)], dtype=object))
    assert main(["predict", str(project), "crop"]) == 2
    assert "damaged" in _one_error(capsys)
    assert not marker.exists()


def test_forest_arrays_with_out_of_range_children_are_refused(project, tmp_path):
    model_dir = project / "models" / "v001-forest"
    with np.load(model_dir / "forest.npz") as data:
        arrays = {key: data[key] for key in data.files}
    arrays["tree0/left_child"] = arrays["tree0/left_child"].copy()
    arrays["tree0/left_child"][0] = 10**9  # would make scikit-learn's tree walker read outside memory
    with open(model_dir / "forest.npz", "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(WorkbenchError, match="child or feature indices out of range"):
        ForestModel.load(model_dir)


def test_saved_forest_predicts_exactly_as_trained(trained_small_project, nuclei_image):
    model = ForestModel.load(trained_small_project / "models" / "v001-forest")
    image = nuclei_image[:128, :128]
    rows = np.random.default_rng(0).random((500, model.n_features)).astype(np.float32)
    probabilities = model.predict_proba(image)
    assert probabilities.shape == (3, 128, 128)
    # The tree walker of ours and scikit-learn's own predict_proba agree on the rebuilt forest.
    ours = model.predict_features(rows.T.reshape(model.n_features, 20, 25)).reshape(3, -1).T
    np.testing.assert_allclose(ours, model.forest.predict_proba(rows), atol=1e-6)
    again = ForestModel.load(trained_small_project / "models" / "v001-forest")
    np.testing.assert_array_equal(again.predict_proba(image), probabilities)


@pytest.mark.parametrize("path", ["/tmp/elsewhere/v001-forest", "../outside/v001-forest", "models/../../x",
                                  "models/v001-forest/../../../etc"])
def test_a_model_path_outside_the_project_is_refused(project, tmp_path, path, capsys):
    outside = tmp_path / "outside" / "v001-forest"
    shutil.copytree(project / "models" / "v001-forest", outside)
    manifest = json.loads((project / "project.json").read_text())
    manifest["models"][0]["path"] = path
    (project / "project.json").write_text(json.dumps(manifest))
    before = tree_digest(project)
    assert main(["predict", str(project), "crop"]) == 2
    assert "models/ folder" in _one_error(capsys)
    assert tree_digest(project) == before


def test_a_model_folder_symlinked_out_of_the_project_is_refused(project, tmp_path, capsys):
    model_dir = project / "models" / "v001-forest"
    outside = tmp_path / "outside-model"
    shutil.move(model_dir, outside)
    model_dir.symlink_to(outside, target_is_directory=True)
    assert main(["predict", str(project), "crop"]) == 2
    assert "leads outside the project" in _one_error(capsys)


def test_dotdot_in_an_image_name_cannot_delete_outside(project, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    manifest = json.loads((project / "project.json").read_text())
    manifest["images"][0]["name"] = "../../../victim"
    (project / "project.json").write_text(json.dumps(manifest))
    assert main(["remove", str(project), "../../../victim"]) == 2
    assert "no '/' or '..'" in _one_error(capsys)
    assert (victim / "precious.txt").read_text() == "keep me"
    with pytest.raises(WorkbenchError, match="images\\[0\\] 'name'"):
        Project.open(project)


def test_an_image_folder_symlinked_outside_is_not_deleted(project, tmp_path):
    victim = tmp_path / "victim"
    folder = project / "data.zarr" / "images" / "crop"
    shutil.move(folder, victim)
    folder.symlink_to(victim, target_is_directory=True)
    with pytest.raises(WorkbenchError, match="leads outside the project"):
        Project.open(project).remove_image("crop")
    assert (victim / "image").is_dir()


def test_remove_deletes_only_the_image(project, capsys):
    assert main(["remove", str(project), "crop"]) == 0
    assert "removed crop" in capsys.readouterr().out
    reopened = Project.open(project)
    assert reopened.image_names == [] and not (project / "data.zarr" / "images" / "crop").exists()
    assert [m.version for m in reopened.models] == [1]  # the model stays


def test_unet_weights_that_would_run_code_are_refused(tmp_path, nuclei_image):
    from workbench.deep import ModelCard, build_unet, load_model, save_model
    from workbench.normalize import PercentileNormalizer

    marker = tmp_path / "pwned"
    normalizer = PercentileNormalizer().fit([nuclei_image[None]])
    card = ModelCard(in_channels=1, n_classes=3, classes=["background", "nucleus", "edge"], mode="instance",
                     normalisation=normalizer.to_dict(), settings={"preset": "fast"})
    save_model(tmp_path / "m", build_unet(1, 3), card)
    torch.save({"weight": _Payload(marker)}, tmp_path / "m" / "weights.pt")
    with pytest.raises(WorkbenchError, match="only plain tensors are loaded"):
        load_model(tmp_path / "m")
    assert not marker.exists()
    (tmp_path / "m" / "weights.pt").write_bytes(b"not a torch file")
    with pytest.raises(WorkbenchError, match="cannot be read as model weights"):
        load_model(tmp_path / "m")

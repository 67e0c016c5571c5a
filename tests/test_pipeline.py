"""Project-level steps the app and the command line share: model records, training plans, resume rules."""

from __future__ import annotations

import pytest

from workbench import pipeline
from workbench.datasets import build_sample_project
from workbench.errors import WorkbenchError
from workbench.records import ModelRecord, TrainingChoices


@pytest.fixture(scope="module")
def forest_project(tmp_path_factory):
    """The sample project (instance mode) with one Random Forest trained on its partial labels."""
    project = build_sample_project(tmp_path_factory.mktemp("pipeline") / "sample")
    pipeline.train_model(project, method="forest", settings={"n_estimators": 4})
    return project


def test_training_returns_the_typed_record_the_manifest_holds(forest_project):
    record = pipeline.model_record(forest_project)
    assert isinstance(record, ModelRecord) and record.version == 1 and record.method == "forest"
    assert record == forest_project.model_record() and record.to_dict() == forest_project.model_record().to_dict()
    assert [r.version for r in pipeline.model_records(forest_project)] == [1]
    card = pipeline.model_card(forest_project, record)
    assert card.mode == "instance" and card.classes == ("background", "interior", "boundary")
    assert card.in_channels == 1
    assert pipeline.load_segmenter(forest_project).record == record


def test_choices_become_settings_in_the_engine(forest_project, shared_dir):
    plan = pipeline.plan_training(forest_project, TrainingChoices(method="forest", size="mobilenet_v2"))
    assert plan.as_tuple() == ("forest", {"n_estimators": 64}, False)
    plan = pipeline.plan_training(forest_project, TrainingChoices(size="small", seconds=90, augment=0.25))
    assert plan.as_tuple() == ("unet", {"minutes": 1.5, "preset": "small", "augment": 0.25}, False)
    plan = pipeline.plan_training(forest_project, TrainingChoices(size="mobilenet_v2", start="pretrained"))
    # The offline copy of the ImageNet weights beside the checkout is preferred to a download.
    assert plan.settings["weights"] == str(shared_dir / "weights" / "mobilenet_v2-b0353104.pth")


def test_weights_folder_from_the_environment_comes_first(tmp_path, monkeypatch):
    (tmp_path / "mobilenet_v2-0123.pth").write_bytes(b"")
    monkeypatch.setenv("WORKBENCH_WEIGHTS_DIR", str(tmp_path))
    assert pipeline.find_local_weights("mobilenet_v2") == tmp_path / "mobilenet_v2-0123.pth"
    assert pipeline.find_local_weights("no_such_encoder") is None


def test_resume_rules_live_in_train_model(forest_project, tmp_path):
    project = build_sample_project(tmp_path / "fresh")
    with pytest.raises(WorkbenchError, match="no U-Net model in this project yet"):
        pipeline.train_model(project, method="unet", resume=True)
    with pytest.raises(WorkbenchError, match="no Random Forest model in this project yet"):
        pipeline.plan_training(project, TrainingChoices(method="forest", start="last"))
    assert project.models == []

    switched = build_sample_project(tmp_path / "switched")
    pipeline.train_model(switched, method="forest", settings={"n_estimators": 2})
    switched.set_mode("semantic")
    with pytest.raises(WorkbenchError, match="the last model finds instance results"):
        pipeline.train_model(switched, method="forest", resume=True)
    assert pipeline.check_resume(forest_project, "forest").version == 1


def test_predictions_use_the_thresholds_the_model_chose_under_the_projects_own(trained_sample_project, tmp_path):
    """A U-Net's calibrated thresholds reach post-processing; a threshold the project sets wins."""
    import shutil

    from workbench.deep import load_model
    from workbench.store import Project

    project = Project.open(shutil.copytree(trained_sample_project.path, tmp_path / "copy"))
    segmenter = pipeline.load_segmenter(project)
    _, card = load_model(project.model_dir(segmenter.record.version))
    assert segmenter.instance_options == card.instance_options
    assert card.instance_options  # the sample project holds out painted objects, so the model chose
    options = pipeline.instance_options(project, segmenter=segmenter)
    assert {key: options[key] for key in card.instance_options} == card.instance_options
    assert options["min_size"] == pipeline.auto_min_size(project)

    project.update_settings(instances={"boundary_threshold": 0.42, "neck_ratio": 0.5})
    options = pipeline.instance_options(project, segmenter=segmenter)
    assert options["boundary_threshold"] == 0.42 and options["neck_ratio"] == 0.5
    assert options["foreground_threshold"] == card.instance_options["foreground_threshold"]


def test_unet_predictions_average_the_symmetries_unless_told_not_to(trained_sample_project, tmp_path):
    """Test-time augmentation is the default for a U-Net (measured: it raises AP@0.5 and mAP), and
    can be turned off; the averaged prediction is the mean over the eight symmetries."""
    import shutil

    import numpy as np

    from workbench.store import Project

    project = Project.open(shutil.copytree(trained_sample_project.path, tmp_path / "copy"))
    name = project.image_names[0]

    def probabilities(**options):
        pipeline.predict_project(project, names=[name], **options)
        return np.asarray(project.prediction(name, "probabilities")[...])

    default, averaged, plain = probabilities(), probabilities(tta=True), probabilities(tta=False)
    np.testing.assert_array_equal(default, averaged)
    assert np.abs(default - plain).max() > 1e-3
    # Class probabilities, then the U-Net's distance map (0-1, not a class).
    assert default.shape[0] == 4
    np.testing.assert_allclose(default[:3].sum(axis=0), 1.0, atol=1e-4)
    assert 0 <= default[3].min() and default[3].max() <= 1

"""The shipped starter model: it loads, adapts to any channel count, is the default start of instance
projects, and segments a project with no labels at all (zero-shot) on the real nuclei image."""

import json

import numpy as np
import pytest
import torch

from workbench import pipeline
from workbench.cli import main
from workbench.datasets import simulate_partial_labels
from workbench.deep import (TrainSettings, build_unet, load_model, sha256_file, starter_dir, starter_info,
                            starter_input, train)
from workbench.errors import WorkbenchError
from workbench.predict import average_precision, dice
from workbench.records import TrainingChoices
from workbench.store import Project, training_targets


@pytest.fixture(scope="module")
def starter():
    folder = starter_dir()
    assert folder is not None, "the package ships a starter model in workbench/deep/starter/"
    return folder


def test_the_shipped_starter_has_its_card(starter):
    info = starter_info()
    assert info["weights_sha256"] == sha256_file(starter / "weights.pt")
    assert info["command"].startswith("workbench pretrain ")
    assert info["training"]["steps"] >= 1 and "device" in info["training"] and "seed" in info["training"]
    assert "never used for pretraining" in info["trained_on"]["real_images"]
    assert "scores" in info
    assert (starter / "weights.pt").stat().st_size < 8 * 2**20, "a few MB at most"
    _, card = load_model(starter)
    assert card.mode == "instance" and card.in_channels == 1


def test_starter_initialises_the_whole_unet(starter):
    shipped, _ = load_model(starter)
    model = build_unet(1, 3, weights="starter")
    assert model.workbench_recipe["init_kwargs"]["encoder_weights"] is None
    state = model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in shipped.state_dict().items())


def test_channels_are_adapted_so_a_colour_model_sees_the_channel_average(starter):
    gray_model = build_unet(1, 3, weights="starter").eval()
    rgb_model = build_unet(3, 3, weights="starter").eval()
    stem = "encoder.model.conv_stem.weight"
    one, three = gray_model.state_dict()[stem], rgb_model.state_dict()[stem]
    assert three.shape[1] == 3 and torch.allclose(three, one.repeat(1, 3, 1, 1) / 3)
    rgb = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(rgb_model(rgb), gray_model(rgb.mean(dim=1, keepdim=True)), atol=1e-4)
    # Two channels, and a head of another class count (a semantic project): encoder and decoder kept.
    model = build_unet(2, 4, weights="starter")
    assert model.state_dict()[stem].shape[1] == 2
    assert torch.equal(model.state_dict()["decoder.blocks.0.conv1.0.weight"],
                       gray_model.state_dict()["decoder.blocks.0.conv1.0.weight"])
    assert model.state_dict()["segmentation_head.0.weight"].shape[0] == 4


def test_starter_refuses_another_architecture(starter):
    with pytest.raises(WorkbenchError, match="cannot initialise this network.*encoder"):
        build_unet(1, 3, preset="small", weights="starter")
    with pytest.raises(WorkbenchError, match="decoder_channels"):
        build_unet(1, 3, width=0.5, weights="starter")


def test_starter_input_normalises_each_channel_then_averages():
    bright = np.full((2, 32, 32), 10, np.uint16)
    bright[0, :16] = 1000
    bright[1, :, :16] = 50
    gray = starter_input(bright)
    assert gray.shape == (1, 32, 32)
    assert np.isclose(gray[0, 0, 0], 1.0) and np.isclose(gray[0, 31, 31], 0.0) and np.isclose(gray[0, 0, 31], 0.5)


def test_trainer_starts_from_the_starter(nuclei_image, nuclei_labels):
    labels = simulate_partial_labels(nuclei_labels[:128, :128], object_fraction=0.5, seed=0)
    targets = training_targets(labels, "instance")
    settings = TrainSettings(weights="starter", mode="instance", minutes=None, epochs=1, steps_per_epoch=2,
                             patch_size=64, batch_size=2, device="cpu")
    rgb = np.stack([nuclei_image[:128, :128]] * 3)
    result = train([(rgb, targets)], settings)
    assert result.card.in_channels == 3 and result.card.settings["weights"] == "starter"


# ---------------------------------------------------------------- the project's default start


def _instance_project(path, image, labels=None) -> Project:
    project = Project.create(path, mode="instance", classes=["background", "nucleus"])
    project.add_image(image, name="nuclei")
    if labels is not None:
        project.import_labels("nuclei", labels)
    return project


def test_instance_projects_default_to_the_starter_and_semantic_ones_do_not(tmp_path, nuclei_image):
    instance = _instance_project(tmp_path / "instance", nuclei_image[:64, :64])
    semantic = Project.create(tmp_path / "semantic", mode="semantic", classes=["background", "cell", "debris"])
    assert pipeline.default_weights(instance) == "starter" and pipeline.default_start(instance) == "starter"
    assert pipeline.default_weights(semantic) is None and pipeline.default_start(semantic) == "scratch"
    assert pipeline.default_weights(instance, {"preset": "small"}) is None  # another architecture: no starter
    assert pipeline.default_weights(instance, {"weights": "none"}) == "none"
    assert pipeline.default_start(instance, "forest") == "scratch"
    plan = pipeline.plan_training(instance, TrainingChoices(start="starter"))
    assert plan.settings["weights"] == "starter"
    plan = pipeline.plan_training(instance, TrainingChoices(start="scratch"))
    assert plan.settings["weights"] == "none", "scratch means random weights, also where the starter is the default"
    with pytest.raises(WorkbenchError, match="starter model cannot start this training"):
        pipeline.plan_training(semantic, TrainingChoices(start="starter"))
    with pytest.raises(WorkbenchError, match="no pretrained weights"):
        TrainingChoices(method="forest", start="starter")


@pytest.mark.parametrize("channels", [1, 3])
def test_train_command_starts_from_the_starter(tmp_path, nuclei_image, nuclei_labels, channels, capsys):
    crop = nuclei_image[:128, :128]
    image = crop if channels == 1 else np.stack([crop, crop // 2, crop], axis=-1)  # YXC: an RGB-like file
    project = _instance_project(tmp_path / "p", image,
                                simulate_partial_labels(nuclei_labels[:128, :128], object_fraction=0.5, seed=1))
    assert main(["train", str(project.path), "--epochs", "1", "--device", "cpu"]) == 0
    record = pipeline.model_record(project)
    assert record.settings["weights"] == "starter"
    assert pipeline.model_card(project, record).in_channels == channels
    assert main(["train", str(project.path), "--epochs", "1", "--weights", "none", "--device", "cpu"]) == 0
    assert pipeline.model_record(project).settings["weights"] is None
    capsys.readouterr()


# ---------------------------------------------------------------- zero-shot


def test_zero_shot_finds_nuclei_without_any_label(tmp_path, nuclei_image, nuclei_labels):
    """The placeholder starter is weak (a minute of pretraining): this asks for real nuclei found, not a score."""
    project = _instance_project(tmp_path / "p", nuclei_image)
    summary = pipeline.try_starter(project, device="cpu")
    version = summary["nuclei"]["model_version"]
    record = pipeline.model_record(project, version)
    assert record.settings["zero_shot"] is True and record.metrics["steps"] == 0
    instances = project.prediction("nuclei", "instances")[...]
    assert summary["nuclei"]["objects"] == len(np.unique(instances)) - 1 >= 20
    scores = average_precision(nuclei_labels, instances, thresholds=[0.5])
    assert scores["tp"][0] >= 20, "a good share of the 125 nuclei are found whole (IoU >= 0.5)"
    assert dice(nuclei_labels > 0, instances > 0) > 0.5
    # Asking again reuses the version; the starter card's sha256 is recorded.
    assert pipeline.starter_model(project).version == version and len(project.models) == 1
    assert record.settings["starter_sha256"] == starter_info()["weights_sha256"]
    # Painting then continues from it.
    project.import_labels("nuclei", simulate_partial_labels(nuclei_labels, object_fraction=0.2, seed=0))
    trained = pipeline.train_model(project, resume=True, settings={"epochs": 1, "device": "cpu"})
    assert trained.parent == version


def test_zero_shot_on_the_command_line(tmp_path, nuclei_image, capsys):
    project = _instance_project(tmp_path / "p", nuclei_image[:192, :192])
    assert main(["predict", str(project.path), "--model", "starter", "--device", "cpu"]) == 0
    assert "'objects'" in capsys.readouterr().out
    assert main(["predict", str(project.path), "nuclei", "--model", "starter", "--out", str(tmp_path / "x.tif")]) == 0
    assert len(project.models) == 1


@pytest.mark.parametrize("argv, message", [
    (["predict", "{semantic}", "--model", "starter"], "semantic"),
    (["predict", "{empty}", "--model", "starter"], "has no images yet"),
    (["predict", "{instance}", "--model", "latest"], "--model takes a model version number"),
    (["train", "{instance_labelled}", "--weights", "starter", "--encoder", "small"], "cannot initialise"),
])
def test_starter_mistakes_give_one_error_line(tmp_path, nuclei_image, nuclei_labels, argv, message, capsys):
    semantic = Project.create(tmp_path / "semantic")
    semantic.add_image(nuclei_image[:64, :64], name="nuclei")
    Project.create(tmp_path / "empty", mode="instance", classes=["background", "nucleus"])
    _instance_project(tmp_path / "instance", nuclei_image[:64, :64])
    _instance_project(tmp_path / "instance_labelled", nuclei_image[:128, :128],
                      simulate_partial_labels(nuclei_labels[:128, :128], object_fraction=0.5, seed=1))
    names = {name: str(tmp_path / name) for name in ("semantic", "empty", "instance", "instance_labelled")}
    code = main([a.format(**names) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and message in err and len(err.splitlines()) == 1
    assert not Project.open(tmp_path / "instance").models


def test_the_first_page_offers_the_starter_for_instance_projects(tmp_path, nuclei_image):
    from workbench_widgets.project_setup import ProjectSetupPanel

    project = _instance_project(tmp_path / "p", nuclei_image[:128, :128])
    panel = ProjectSetupPanel(project)
    assert panel.starter_row.layout.display != "none"
    summary = panel.try_starter()
    assert summary["nuclei"]["objects"] >= 1 and panel.error is None and "found" in panel.status.value
    assert project.prediction("nuclei", "instances") is not None
    semantic = Project.create(tmp_path / "s")
    semantic.add_image(nuclei_image[:64, :64], name="nuclei")
    panel = ProjectSetupPanel(semantic)
    assert panel.starter_row.layout.display == "none"
    assert panel.try_starter() is None and "semantic" in panel.error
    json.dumps(summary)  # plain values, ready for a page

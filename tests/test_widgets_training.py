"""The training panel, driven as its buttons drive it, on the real sample project (a few seconds of training)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from workbench_widgets.training import TrainingPanel, _loss_plot_png, format_seconds, train_seconds_from_env
from workbench.errors import WorkbenchError
from workbench.store import Project
from workbench.datasets import build_sample_project

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def sample_project(tmp_path) -> Project:
    return build_sample_project(tmp_path / "sample")


def test_start_trains_in_background_plots_losses_and_records_the_model(sample_project):
    panel = TrainingPanel(sample_project, seconds=3)
    first_plot = panel.plot.value
    assert panel.start() is True
    assert panel.running, "training must run in a thread: start() returns at once"
    assert panel.start_button.disabled and not panel.stop_button.disabled
    record = panel.wait(timeout=180)

    assert panel.error is None, panel.error
    assert record is not None and record.version == 1 and record.method == "unet"
    assert [m.version for m in Project.open(sample_project.path).models] == [1]
    assert len(panel.history) >= 1
    assert all(np.isfinite(entry["loss"]) for entry in panel.history)
    assert panel.plot_updates >= 2 and panel.plot.value != first_plot
    assert bytes(panel.plot.value).startswith(PNG_SIGNATURE)
    assert panel.progress.value == 1.0 and panel.progress.bar_style == "success"
    assert "Model version 1 is ready" in panel.status.value
    # The message reads the typed record: the kept weights' validation loss, as the manifest stores it.
    stored = Project.open(sample_project.path).model_record().metrics["val_loss"]
    assert record.metrics.val_loss == stored
    assert f"best validation loss {stored:.3f}" in panel.status.value
    assert not panel.running and not panel.start_button.disabled and panel.stop_button.disabled
    assert panel.start_from.value == "last", "after a model exists, training longer is the next step"


def test_stop_ends_training_early_and_keeps_the_best_model(sample_project):
    panel = TrainingPanel(sample_project, seconds=600)
    assert panel.start()
    deadline = time.monotonic() + 120
    while panel.progress.value == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert panel.progress.value > 0, "no training step finished within two minutes"
    panel.stop()
    record = panel.wait(timeout=120)
    assert not panel.running, "stop() must end a 10-minute training promptly"
    assert panel.error is None, panel.error
    assert record is not None, "stopping keeps the best model so far"
    assert "Stopped early" in panel.status.value
    assert len(panel.history) == 1, "the epoch under way when Stop was pressed is finished and validated"
    assert sample_project.model_record().version == record.version


def test_continuing_without_a_model_is_a_readable_message_not_a_traceback(sample_project):
    panel = TrainingPanel(sample_project, seconds=3)
    panel.start_from.value = "last"
    assert panel.start() is False
    assert not panel.running
    assert "no U-Net model in this project yet" in panel.error
    assert 'role="alert"' in panel.status.value and "Traceback" not in panel.status.value
    assert sample_project.models == []


def test_an_engine_error_in_the_thread_is_shown_in_the_panel(tmp_path, nuclei_image):
    project = Project.create(tmp_path / "empty", mode="instance", classes=["background", "nucleus"])
    project.add_image(nuclei_image, name="nuclei")  # nothing painted: training must refuse, politely
    panel = TrainingPanel(project, seconds=3)
    assert panel.start() is True
    assert panel.wait(timeout=60) is None
    assert "nothing is annotated yet" in panel.error
    assert "step 2 (Annotate)" in panel.error and "`workbench" not in panel.error  # what to click, not a command
    assert "Traceback" not in panel.status.value and "wb-error" in panel.status.value
    assert panel.progress.bar_style == "danger" and not panel.start_button.disabled
    assert project.models == []


def test_choices_become_engine_settings(sample_project):
    panel = TrainingPanel(sample_project, seconds=45)
    assert panel.duration.value == 45.0  # asked for: offered whatever it buys
    assert dict((v, k) for k, v in panel.duration.options)[45.0].startswith("45 s — about ")
    panel.model_size.value = "mobilenet_v2"
    panel.augmentation.value = 0.8
    panel.start_from.value = "pretrained"
    method, settings, resume = panel.settings()
    assert method == "unet" and resume is False
    assert settings["minutes"] == pytest.approx(0.75)
    assert settings["preset"] == "mobilenet_v2" and settings["augment"] == 0.8
    # The offline copy of the ImageNet weights beside the checkout is preferred to a download.
    assert settings["weights"].endswith(".pth") and "mobilenet_v2" in settings["weights"]

    panel.method.value = "forest"
    assert panel.duration.disabled and panel.augmentation.disabled
    assert "pretrained" not in [value for _, value in panel.start_from.options]
    method, settings, resume = panel.settings()
    assert method == "forest" and settings == {"n_estimators": 64} and resume is False


def test_switching_between_regions_and_objects_updates_the_project(sample_project):
    panel = TrainingPanel(sample_project, seconds=3)
    assert panel.mode.value == "instance" and not panel.mode.disabled
    panel.mode.value = "semantic"
    assert Project.open(sample_project.path).mode == "semantic"
    assert sample_project.n_outputs == 2


def test_mode_is_fixed_for_several_classes(tmp_path):
    project = Project.create(tmp_path / "tissue", mode="semantic", classes=["background", "tumour", "stroma"])
    panel = TrainingPanel(project, seconds=3)
    assert panel.mode.disabled


def test_invalid_arguments_name_the_problem(sample_project, monkeypatch):
    with pytest.raises(TypeError, match="workbench Project"):
        TrainingPanel("not a project")
    with pytest.raises(WorkbenchError, match="seconds"):
        TrainingPanel(sample_project, seconds=-1)
    monkeypatch.setenv("WORKBENCH_TRAIN_SECONDS", "soon")
    with pytest.raises(WorkbenchError, match="WORKBENCH_TRAIN_SECONDS"):
        train_seconds_from_env()
    monkeypatch.setenv("WORKBENCH_TRAIN_SECONDS", "7")
    assert TrainingPanel(sample_project).duration.value == 7.0


def test_loss_plot_and_durations_read_well():
    empty = _loss_plot_png([], [], [])
    curves = _loss_plot_png([1, 2, 3], [0.9, 0.6, 0.5], [0.8, None, 0.55])
    assert empty.startswith(PNG_SIGNATURE) and curves.startswith(PNG_SIGNATURE) and empty != curves
    assert format_seconds(4.4) == "4 s" and format_seconds(185) == "3 min 05 s"
    assert format_seconds(3720) == "1 h 02 min"


def test_a_new_panel_reattaches_to_the_projects_running_training_and_stops_it(sample_project):
    """A reloaded page makes a new panel: it finds the training the old page started, shows it
    live, and its Stop ends it; the model is the project's, whichever page is left."""
    first = TrainingPanel(sample_project, seconds=600)
    assert first.start()
    deadline = time.monotonic() + 120
    while first.progress.value == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    first.close()  # the old page is gone: nothing follows the job from there any more

    second = TrainingPanel(Project.open(sample_project.path), seconds=30)
    assert second.running, "the new panel must re-attach to the running training"
    assert second.start_button.disabled and not second.stop_button.disabled
    assert "is running (model version 1)" in second.status.value
    plots = second.plot_updates
    deadline = time.monotonic() + 60
    while second.plot_updates == plots and time.monotonic() < deadline:
        time.sleep(0.2)
    assert second.plot_updates > plots, "the re-attached plot moves while the first epoch runs"
    assert second.progress.value > 0
    assert second.start() is False and "already running" in second.status.value
    second.stop()
    record = second.wait(timeout=120)
    assert record is not None and record.version == 1 and second.error is None
    assert "Stopped early" in second.status.value and "Model version 1 is ready" in second.status.value
    assert [m.version for m in Project.open(sample_project.path).models] == [1]
    assert TrainingPanel(sample_project, seconds=30).running is False


def test_training_times_say_what_they_buy_on_this_computer(sample_project):
    """Measured here: 9 steps a second. 30 s (270 steps) is too short for a model from scratch and is
    not offered; from pretrained weights it is. Stop looks inactive while nothing runs."""
    from workbench import speed

    assert speed.record_run("fast", 1080, 120.0) is not None  # what a 2-minute training measured here
    panel = TrainingPanel(sample_project, seconds=120)
    panel.measure_speed(wait=True)
    assert panel.speed.source == "run" and panel.speed.steps_per_second == pytest.approx(9.0)
    assert panel.start_from.value == "starter"  # an instance project starts from the shipped starter
    assert 30.0 in [v for _, v in panel.duration.options]
    panel.start_from.value = "scratch"
    labels = dict((v, k) for k, v in panel.duration.options)
    assert 30.0 not in labels
    assert labels[120.0] == "2 minutes — about 1,080 training steps on this computer"
    assert "about 540 training steps a minute" in panel.speed_note.value
    assert "needs about 300 steps" in panel.speed_note.value
    panel.start_from.value = "pretrained"
    assert 30.0 in [v for _, v in panel.duration.options]
    panel.start_from.value = "scratch"
    assert panel.duration.value == 120.0
    assert panel.stop_button.disabled and panel.stop_button.button_style == ""

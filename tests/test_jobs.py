"""Training belongs to the project: its record, its stop request through the project, and the version
allocated when it starts, on the real sample project."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from workbench import jobs, pipeline
from workbench.records import TrainingChoices
from workbench.store import Project, ProjectBusyError
from workbench.datasets import build_sample_project


@pytest.fixture()
def sample_project(tmp_path) -> Project:
    return build_sample_project(tmp_path / "sample")


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_training_keeps_the_projects_record_and_stops_through_the_project(sample_project):
    results = {}
    thread = threading.Thread(target=lambda: results.update(record=pipeline.train_model(
        sample_project, settings={"minutes": 10, "seed": 0})))
    thread.start()
    # Another reader of the project (a reloaded page, a command) sees the job, its version and its steps.
    reader = Project.open(sample_project.path)
    record = _wait(lambda: (r := reader.training_job()) and r["state"] == "running" and r["step"] > 0 and r,
                   120, "the training record to report steps")
    assert record["version"] == 1 and record["method"] == "unet" and record["budget_seconds"] == 600
    assert record["pid"] > 0 and record["started"] and "model version 1" in record["log"][0]
    assert jobs.running_training(reader).job_id == record["id"]
    assert reader.request_training_stop() is True
    thread.join(120)
    assert not thread.is_alive(), "a stop requested through the project must end a 10-minute training"
    final = reader.training_job()
    assert final["state"] == "stopped" and final["version"] == results["record"].version == 1
    assert final["progress"] == 1.0 and len(final["epochs"]) == 1 and final["epochs"][0]["loss"] > 0
    assert any("stop requested" in line for line in final["log"])
    assert not (sample_project.path / ".workbench" / "training.stop").exists()
    assert jobs.running_training(reader) is None and reader.request_training_stop() is False


def test_an_older_run_never_takes_or_overwrites_a_newer_version(sample_project, tmp_path):
    """The version is allocated when the run starts: a model recorded while it runs gets the next one,
    and the old run, ending later, writes only its own version."""
    stop = threading.Event()
    thread = threading.Thread(target=pipeline.train_model, args=(sample_project,),
                              kwargs={"settings": {"minutes": 10, "seed": 0}, "stop_event": stop})
    thread.start()
    record = _wait(lambda: (r := sample_project.training_job()) and r["step"] > 0 and r, 120, "a training step")
    assert record["version"] == 1
    # Meanwhile a newer model arrives by another way (an imported model package, another writer).
    other = Project.open(sample_project.path)
    version, staging = other.new_model_dir("forest")
    assert version == 2, "the running job's version is reserved"
    (staging / "card.json").write_text(json.dumps({"method": "forest", "note": "the newer model"}))
    newer = other.register_model(version, staging, method="forest")
    assert newer.version == 2
    newer_card = (sample_project.path / newer.path / "card.json").read_text()
    stop.set()
    thread.join(120)
    models = {m.version: m for m in Project.open(sample_project.path).models}
    assert sorted(models) == [1, 2] and models[1].method == "unet" and models[2].method == "forest"
    assert (sample_project.path / models[2].path / "card.json").read_text() == newer_card
    assert sample_project.training_job()["version"] == 1


def test_a_record_of_a_killed_process_reads_as_interrupted_and_reserves_nothing(sample_project):
    pipeline.train_model(sample_project, method="forest", settings={"n_estimators": 2, "max_depth": 4})
    path = sample_project.path / ".workbench" / "training.json"
    record = json.loads(path.read_text())
    assert record["state"] == "done" and record["version"] == 1 and record["method"] == "forest"
    record.update(state="running", version=2, pid=2**22 + 12345)  # a pid that does not run
    path.write_text(json.dumps(record))
    assert sample_project.training_job()["state"] == "interrupted"
    assert "ended without finishing" in sample_project.training_job()["error"]
    assert jobs.running_training(sample_project) is None
    assert sample_project.new_model_dir("forest")[0] == 2


def test_a_training_does_not_start_while_the_project_is_busy(sample_project):
    plan = pipeline.plan_training(sample_project, TrainingChoices(method="unet", seconds=5))
    with sample_project.job("predicting"):
        with pytest.raises(ProjectBusyError, match=r"busy \(predicting since"):
            jobs.start_training(sample_project, plan)
    assert sample_project.training_job() is None


def test_a_job_started_in_its_own_process_reports_failure_in_plain_words(tmp_path, nuclei_image):
    project = Project.create(tmp_path / "empty", mode="instance", classes=["background", "nucleus"])
    project.add_image(nuclei_image, name="nuclei")  # nothing painted
    job = jobs.start_training(project, pipeline.plan_training(project, TrainingChoices(seconds=5)))
    record = _wait(lambda: (r := job.poll())["state"] in jobs.ENDED_STATES and r, 120, "the job to end")
    assert record["state"] == "failed" and "nothing is annotated yet" in record["error"]
    assert "Traceback" not in record["error"] and project.models == []
    shutil.rmtree(tmp_path / "empty", ignore_errors=True)

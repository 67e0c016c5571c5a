"""Training times that mean something: the measured speed of this computer, and what a time buys."""

import json

import pytest

from workbench import config, speed
from workbench.errors import WorkbenchError

DURATIONS = [("30 seconds", 30), ("1 minute", 60), ("2 minutes", 120), ("5 minutes", 300)]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_before_anything_is_measured_the_assumption_says_so(home):
    found = speed.training_speed("fast")
    assert found.source == "assumed" and not found.measured_here
    assert found.steps_per_second == speed.ASSUMED_STEPS_PER_SECOND["fast"]
    labels = [label for label, _ in speed.duration_choices(DURATIONS, found)]
    # The 2-core laptop the assumption stands for makes 270 steps in 30 s: too few from scratch.
    assert labels[0] == "1 minute — about 540 training steps on a typical laptop"
    assert "Not measured on this computer yet" in speed.speed_note(found)
    with pytest.raises(WorkbenchError, match="`preset` must be one of"):
        speed.training_speed("huge")
    with pytest.raises(WorkbenchError, match="`start` must be one of"):
        speed.duration_choices(DURATIONS, found, start="anywhere")


def test_a_finished_training_keeps_its_speed_for_the_next_choice(home):
    assert speed.record_run("fast", 5, 1.0) is None  # too short to tell
    kept = speed.record_run("fast", 2400, 120.0)
    assert kept.source == "run" and kept.steps_per_second == pytest.approx(20.0)
    stored = json.loads((home / speed.SPEED_FILE).read_text())["speeds"]
    assert list(stored) == [f"fast on {kept.device}"]
    found = speed.training_speed("fast")
    assert found.measured_here and found.steps_per_second == pytest.approx(20.0)
    # Faster here: 30 s now give 600 steps, enough from scratch; each time says what it buys.
    choices = speed.duration_choices(DURATIONS, found, start="scratch")
    assert choices[0] == ("30 seconds — about 600 training steps on this computer", 30.0)
    assert "A usable model from scratch needs about 300 steps (about 15 s here)" in speed.speed_note(found)
    # Other model sizes are measured on their own.
    assert speed.training_speed("small").source == "assumed"


def test_no_time_too_short_for_a_usable_model_unless_it_starts_from_one(home):
    slow = speed.Speed(2.0, "run", "mobilenet_v2", "cpu (2 cores)")
    assert [s for _, s in speed.duration_choices(DURATIONS, slow, start="scratch")] == [300.0]
    assert [s for _, s in speed.duration_choices(DURATIONS, slow, start="pretrained")] == [60.0, 120.0, 300.0]
    assert [s for _, s in speed.duration_choices(DURATIONS, slow, start="last")] == [30.0, 60.0, 120.0, 300.0]
    # A time asked for explicitly is kept; when none is long enough the longest is still offered.
    assert 30.0 in [s for _, s in speed.duration_choices(DURATIONS, slow, keep=30.0)]
    assert [s for _, s in speed.duration_choices(DURATIONS[:2], slow)] == [60.0]


@pytest.mark.slow  # builds and trains a real U-Net for a few steps: ~25 s on a busy 2-core machine
def test_the_first_time_a_few_steps_are_timed_and_kept(home):
    measured = speed.training_speed("fast", measure=True)
    assert measured.source == "probe" and measured.steps_per_second > 0
    again = speed.training_speed("fast", measure=True)  # read back, not measured twice
    assert again == measured


def test_an_unwritable_user_folder_means_no_memory_not_an_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("WORKBENCH_HOME", str(blocker / "home"))
    assert speed.record_run("fast", 600, 60.0).steps_per_second == pytest.approx(10.0)
    assert speed.training_speed("fast").source == "assumed"
    assert config.user_dir() == blocker / "home"

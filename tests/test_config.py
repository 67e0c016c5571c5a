"""Every WORKBENCH_* setting is read in workbench.config, when asked for, with readable errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench import config
from workbench.deep import configure_cpu_threads
from workbench.errors import WorkbenchError


def test_unset_variables_give_the_defaults(monkeypatch):
    for name in config.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert config.threads() is None and config.train_seconds(30.0) == 30.0
    assert config.project_dir() is None and not config.unattended()
    assert config.projects_dir() == Path.home() / "workbench-projects"
    assert config.user_dir() == Path.home() / ".workbench"
    assert config.weights_dirs()[-1].parts[-2:] == ("shared", "weights")


def test_set_variables_are_read_when_asked_for(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_THREADS", "1")
    monkeypatch.setenv("WORKBENCH_TRAIN_SECONDS", "4.5")
    monkeypatch.setenv("WORKBENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("WORKBENCH_PROJECT", str(tmp_path / "p"))
    monkeypatch.setenv("WORKBENCH_UNATTENDED", "1")
    monkeypatch.setenv("WORKBENCH_PROJECTS_DIR", str(tmp_path / "projects"))
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    assert config.projects_dir() == tmp_path / "projects" and config.user_dir() == tmp_path / "home"
    assert config.threads() == 1 and config.train_seconds() == 4.5
    assert config.weights_dirs()[0] == tmp_path and config.project_dir() == (tmp_path / "p").resolve()
    assert config.unattended()
    monkeypatch.setenv("WORKBENCH_UNATTENDED", "false")
    assert not config.unattended()
    assert isinstance(config.project_dir(), Path)


@pytest.mark.parametrize("name, value", [("WORKBENCH_THREADS", "many"), ("WORKBENCH_THREADS", "0"),
                                         ("WORKBENCH_TRAIN_SECONDS", "soon"), ("WORKBENCH_TRAIN_SECONDS", "-3")])
def test_malformed_values_name_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(WorkbenchError, match=name):
        config.threads() if name == "WORKBENCH_THREADS" else config.train_seconds()


def test_torch_threads_follow_the_variable(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("WORKBENCH_THREADS", "1")
    try:
        assert configure_cpu_threads() == 1
    finally:
        torch.set_num_threads(before)

"""The bundled sample project: a real nuclei image with partial labels, ready to train."""

from __future__ import annotations

import os
import shutil
from importlib.resources import files
from pathlib import Path

import numpy as np
import tifffile

from workbench.datasets._partial import simulate_partial_labels
from workbench.store import Project

__all__ = ["sample_image_path", "sample_ground_truth", "build_sample_project", "default_project_path",
           "open_default_project", "is_sample_project", "SAMPLE_PROJECT_NAME"]

SAMPLE_NAME = "nuclei"
SAMPLE_PROJECT_NAME = "Nuclei sample"


def is_sample_project(project: Project) -> bool:
    """Whether `project` is the bundled sample project (built by `build_sample_project`)."""
    return project.name == SAMPLE_PROJECT_NAME and SAMPLE_NAME in project.image_names


def sample_image_path() -> Path:
    """Path of the bundled 512 x 512 nuclei image (DSB 2018, CC0)."""
    return Path(str(files("workbench.datasets") / "data" / "nuclei.tif"))


def sample_ground_truth() -> np.ndarray:
    """Hand-made instance ground truth of the sample image (125 nuclei)."""
    return tifffile.imread(Path(str(files("workbench.datasets") / "data" / "nuclei_labels.tif")))


def build_sample_project(path, *, object_fraction: float = 0.2, seed: int = 0, overwrite: bool = False) -> Project:
    """Create an instance project on the sample image with partial labels, as a user would paint.

    A minority of the nuclei (`object_fraction`) are painted whole and a few background strokes
    added; everything else stays unlabelled.

    Parameters
    ----------
    path : path-like
        Folder for the project. An existing sample project there is reused unless `overwrite`.
    """
    path = Path(path)
    if (path / "project.json").exists():
        if not overwrite:
            return Project.open(path)
        shutil.rmtree(path)
    project = Project.create(path, mode="instance", classes=["background", "nucleus"], name=SAMPLE_PROJECT_NAME)
    name = project.add_image(sample_image_path(), name=SAMPLE_NAME)
    labels = simulate_partial_labels(sample_ground_truth(), object_fraction=object_fraction, seed=seed)
    project.write_labels(name, labels)
    return project


def default_project_path() -> Path:
    """Where the app and the batch notebook keep their project: ``$WORKBENCH_PROJECT``, else
    ``sample-project`` in the checkout (outside a checkout: in the current directory)."""
    from workbench import config

    configured = config.project_dir()
    if configured is not None:
        return configured
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").exists() and os.access(checkout, os.W_OK):
        return checkout / "sample-project"
    return Path.cwd() / "sample-project"


def open_default_project(path=None) -> Project:
    """Open the project at `path` (default `default_project_path`); build the sample project there if empty."""
    path = Path(path) if path is not None else default_project_path()
    if (path / "project.json").exists():
        return Project.open(path)
    return build_sample_project(path)

"""Shared fixtures: the real nuclei image and its instance ground truth from ../shared/, and one
trained sample project for the tests that only need a model."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
NUCLEI_DIR = SHARED_DIR / "data" / "dsb2018_nuclei"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data folder beside the checkout (read-only in CI)."""
    assert SHARED_DIR.is_dir(), f"expected shared data at {SHARED_DIR}"
    return SHARED_DIR


@pytest.fixture(scope="session")
def nuclei_image() -> np.ndarray:
    """512 x 512 uint16 fluorescence image of nuclei (DSB 2018, CC0)."""
    return tifffile.imread(NUCLEI_DIR / "image.tif")


@pytest.fixture(scope="session")
def nuclei_labels() -> np.ndarray:
    """512 x 512 instance ground truth for `nuclei_image` (0 = background)."""
    return tifffile.imread(NUCLEI_DIR / "labels.tif")


@pytest.fixture(scope="session")
def trained_sample_project(tmp_path_factory):
    """The sample project with a U-Net trained for three seconds, trained once per test session.

    For tests that only need a model. It is shared: a test that changes the project works on
    a copy (``shutil.copytree(project.path, ...)``).
    """
    from workbench import pipeline
    from workbench.datasets import build_sample_project

    project = build_sample_project(tmp_path_factory.mktemp("trained") / "sample")
    pipeline.train_model(project, settings={"minutes": 0.05, "seed": 0})
    return project


@pytest.fixture(scope="session")
def trained_small_project(tmp_path_factory, nuclei_image, nuclei_labels):
    """A 128 x 128 instance project (a crop of the real nuclei image, fully labelled) with a tiny
    trained forest: copy it (`copy_project`) before changing it."""
    from workbench import pipeline
    from workbench.store import Project

    folder = tmp_path_factory.mktemp("small") / "project"
    project = Project.create(folder, mode="instance", classes=["background", "nucleus"])
    project.add_image(nuclei_image[:128, :128], name="crop")
    project.import_labels("crop", nuclei_labels[:128, :128], instances=True)
    project.update_settings(forest={"n_estimators": 2, "max_depth": 5, "max_pixels_per_class": 400, "n_jobs": 1})
    pipeline.train_model(project, method="forest")
    return folder


@pytest.fixture(scope="session", autouse=True)
def _user_folders(tmp_path_factory):
    """Tests never read or write the user's own workbench folders (recent projects, new projects)."""
    import os

    saved = {name: os.environ.get(name) for name in ("WORKBENCH_HOME", "WORKBENCH_PROJECTS_DIR")}
    os.environ["WORKBENCH_HOME"] = str(tmp_path_factory.mktemp("user-home"))
    os.environ["WORKBENCH_PROJECTS_DIR"] = str(tmp_path_factory.mktemp("user-projects"))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

"""Data made in code: hard synthetic nuclei, simulated partial annotations, the bundled sample project."""

from workbench.datasets._synth import (
    SynthError,
    hard_nuclei,
)
from workbench.datasets._synth3d import nuclei_volume
from workbench.datasets._partial import (
    PartialLabelError,
    labelled_fraction,
    simulate_partial_labels,
)
from workbench.datasets._sample import (
    sample_image_path,
    sample_ground_truth,
    build_sample_project,
    default_project_path,
    open_default_project,
    is_sample_project,
)

__all__ = [
    "SynthError",
    "hard_nuclei",
    "nuclei_volume",
    "PartialLabelError",
    "labelled_fraction",
    "simulate_partial_labels",
    "sample_image_path",
    "sample_ground_truth",
    "build_sample_project",
    "default_project_path",
    "open_default_project",
    "is_sample_project",
]

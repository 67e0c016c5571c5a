"""Data made in code: hard synthetic nuclei, a varied pretraining corpus, simulated partial annotations, the bundled sample project."""

from workbench.datasets._synth import (
    SynthError,
    hard_nuclei,
)
from workbench.datasets._synth3d import nuclei_volume
from workbench.datasets._corpus import (
    CORPUS_STYLES,
    CorpusSample,
    corpus_image,
    corpus_samples,
)
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
    "CORPUS_STYLES",
    "CorpusSample",
    "corpus_image",
    "corpus_samples",
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

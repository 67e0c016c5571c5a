"""A small instance project on the real nuclei image with a registered U-Net, for the exchange tests.

The U-Net is the default preset with seeded random weights and the percentile normalisation
fitted on the image: exports, runtimes and readers must agree whatever the weights are, and
building it takes a second where training would take a minute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

NUCLEI_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018_nuclei"


def make_unet_project(path: Path, *, size: int = 192, seed: int = 0):
    """Project at `path`: a size x size crop of the nuclei image, its nuclei as labels, one U-Net."""
    import torch

    from workbench.deep import ModelCard, build_unet, save_model
    from workbench.normalize import fit_normalizer
    from workbench.store import INSTANCE_CLASSES, Project

    image = tifffile.imread(NUCLEI_DIR / "image.tif")[:size, :size]
    truth = tifffile.imread(NUCLEI_DIR / "labels.tif")[:size, :size]
    project = Project.create(path, mode="instance", classes=["background", "nucleus"])
    name = project.add_image(image, name="nuclei", pixel_size=(0.5, 0.5))
    project.import_labels(name, truth, instances=True)
    torch.manual_seed(seed)
    # With the distance output, as an instance project's U-Net is trained.
    model = build_unet(1, len(INSTANCE_CLASSES), distance=True)
    card = ModelCard(in_channels=1, n_classes=len(INSTANCE_CLASSES), classes=list(INSTANCE_CLASSES),
                     mode="instance", normalisation=fit_normalizer([image[None]]).to_dict(),
                     settings={"preset": "fast"}, distance=True)
    version, directory = project.new_model_dir("unet")
    save_model(directory, model, card)
    project.register_model(version, directory, method="unet", settings={"preset": "fast"},
                           metrics={"val_loss": float("nan")})
    return project, image.astype(np.float32), truth

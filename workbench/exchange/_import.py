"""Bring a workbench bioimage.io package back into a project, as a model version to predict with or train on.

Only packages whose ``config.workbench.card`` describes a U-Net the workbench can rebuild are
accepted: the architecture is rebuilt from that card (the package's architecture source is
never run) and the state dict is loaded with ``weights_only=True``; nothing is extracted to disk
but the weights, into the new model folder.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from workbench.errors import WorkbenchError

__all__ = ["import_bioimageio"]


def import_bioimageio(project, package: str | os.PathLike) -> dict:
    """Add the U-Net of a workbench bioimage.io package to a project as a new model version.

    Parameters
    ----------
    project : workbench.store.Project
        Its images must have the package's channel count and its mode and classes the
        package's outputs.
    package : path-like
        A ``.zip`` written by `workbench.exchange.export_bioimageio` (here or on another machine).

    Returns
    -------
    dict
        The model record; ``workbench train --resume`` continues from it.

    Raises
    ------
    WorkbenchError
        When the file is no such package or the model does not fit the project.
    """
    import torch
    import yaml

    from workbench.deep import MODEL_CLASSES, ModelCard, check_model_fits, save_model
    from workbench.deep._models import _construct

    package = Path(package)
    try:
        with zipfile.ZipFile(package) as archive:
            rdf = yaml.safe_load(archive.read("rdf.yaml"))
            config = (rdf.get("config") or {}).get("workbench") or {}
            weights_name = ((rdf.get("weights") or {}).get("pytorch_state_dict") or {}).get("source")
            if not config.get("card") or not weights_name:
                raise WorkbenchError(
                    f"{package} is a bioimage.io package without a workbench U-Net (no config.workbench.card "
                    "or pytorch_state_dict weights); only packages exported by the workbench can be imported"
                )
            weights = archive.read(weights_name)
    except (zipfile.BadZipFile, KeyError, OSError, yaml.YAMLError) as exc:
        raise WorkbenchError(f"cannot read bioimage.io package {package}: {exc}") from exc
    card = ModelCard.from_dict(config["card"])
    if card.architecture not in MODEL_CLASSES:
        raise WorkbenchError(f"{package} holds a {card.architecture!r} model; known: {sorted(MODEL_CLASSES)}")
    if card.mode != project.mode:
        raise WorkbenchError(f"{package} holds a {card.mode} model but project {project.path} is {project.mode}")
    channels = {project.image(name).n_channels for name in project.image_names}
    check_model_fits(card, in_channels=channels.pop() if len(channels) == 1 else None,
                     n_classes=project.n_outputs, source=f"the model in {package.name}")
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    state = {key.removeprefix("network."): value for key, value in state.items()}
    model = _construct(MODEL_CLASSES[card.architecture](), dict(card.init_kwargs, encoder_weights=None))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WorkbenchError(f"the weights in {package} do not match the architecture its card names: {exc}") from exc
    model.workbench_recipe = {"architecture": card.architecture, "init_kwargs": dict(card.init_kwargs),
                              "preset": card.settings.get("preset"), "distance": bool(card.distance)}
    version, directory = project.new_model_dir("unet")
    save_model(directory, model, card)
    settings = dict(card.settings, imported_from=str(package))
    return project.register_model(version, directory, method="unet", settings=settings,
                                  metrics=dict(card.metrics), parent=None)

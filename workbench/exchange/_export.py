"""One engine call per export: a project's model as a bioimage.io package, ONNX or TorchScript file."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from workbench.errors import WorkbenchError

__all__ = ["MODEL_FORMATS", "ModelExport", "export_model"]

#: Export format -> file suffix it writes.
MODEL_FORMATS = {"bioimageio": ".zip", "onnx": ".onnx", "torchscript": ".pt"}


@dataclass(frozen=True)
class ModelExport:
    """What `export_model` wrote: the file, its format and the project's model version."""

    path: Path
    format: str
    model_version: int


def export_model(project, out: str | os.PathLike, *, version: int | None = None, format: str | None = None,
                 authors: Sequence[str] = ("workbench user",), license: str | None = None,
                 name: str | None = None) -> ModelExport:
    """Export a project's U-Net for use elsewhere.

    Parameters
    ----------
    project : workbench.store.Project
    out : path-like
        The file to write: ``.zip`` (bioimage.io), ``.onnx`` or ``.pt`` (TorchScript).
    version : int, optional
        Model version (default: the latest U-Net of the project).
    format : {"bioimageio", "onnx", "torchscript"}, optional
        Default: from the suffix of `out`.
    authors, license, name
        bioimage.io package fields (see `workbench.exchange.export_bioimageio`).

    Returns
    -------
    ModelExport

    Raises
    ------
    WorkbenchError
        For an unknown format, a suffix that does not match it, or a model that is not a U-Net.
    """
    out = Path(out)
    if format is None:
        by_suffix = {suffix: name for name, suffix in MODEL_FORMATS.items()}
        format = by_suffix.get(out.suffix.lower())
        if format is None:
            raise WorkbenchError(
                f"cannot tell the export format from {out.name!r}: end it in .zip (bioimage.io), .onnx or .pt "
                "(TorchScript), or pass --format"
            )
    if format not in MODEL_FORMATS:
        raise WorkbenchError(f"unknown model format {format!r}; choose one of {', '.join(MODEL_FORMATS)}")
    if out.suffix.lower() != MODEL_FORMATS[format]:
        raise WorkbenchError(f"a {format} export is a {MODEL_FORMATS[format]} file; got {out}")
    if format == "bioimageio":
        from workbench.exchange._bioimageio import DEFAULT_LICENSE, export_bioimageio

        result = export_bioimageio(project, out, version=version, authors=authors, name=name,
                                   license=license or DEFAULT_LICENSE)
        return ModelExport(result.path, format, result.model_version)

    from workbench.deep import load_model
    from workbench.exchange._bioimageio import _unet_record

    record = _unet_record(project, version)
    model, card = load_model(project.path / record.path, device="cpu")
    if format == "onnx":
        from workbench.exchange._onnx import export_onnx

        export_onnx(model, card, out)
    else:
        import torch

        from workbench.exchange._onnx import with_probabilities
        from workbench.store import atomic_write

        wrapped = with_probabilities(model, card.n_classes)
        example = torch.zeros(1, card.in_channels, 256, 256)
        with atomic_write(out) as tmp, warnings.catch_warnings():
            # TorchScript is deprecated in torch but is what bioimage.io, DeepImageJ and Icy run.
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.trace(wrapped, example, check_trace=False).save(str(tmp))
    return ModelExport(out, format, int(record.version))

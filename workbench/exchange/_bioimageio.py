"""bioimage.io model packages of a project's U-Net (model description format 0.5).

A package holds ``rdf.yaml`` and the files it names: the weights as ``pytorch_state_dict``
(with its architecture source, `workbench.exchange.bioimageio_unet`, and a conda environment
file), ``torchscript`` and ``onnx``; a test input cut from a project image and the model's
output on it; the card's percentile normalisation as fixed ``scale_linear`` preprocessing; a
cover image (the test input beside the model's outlines on it); a README describing the
training data (images, painted pixels per class, objects) and the training; the licence.

Everything is taken from the model card as it is: channel and class counts, class names,
normalisation and the network's stride; nothing about the head is assumed.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from workbench.errors import WorkbenchError
from workbench.store import atomic_write

__all__ = ["BioimageioExport", "export_bioimageio", "DEFAULT_LICENSE"]

DEFAULT_LICENSE = "CC-BY-4.0"
ARCHITECTURE_FILE = Path(__file__).with_name("bioimageio_unet.py")
ARCHITECTURE_CALLABLE = "WorkbenchUnet"
INPUT_ID = "raw"
OUTPUT_ID = "probabilities"


@dataclass(frozen=True)
class BioimageioExport:
    """What `export_bioimageio` wrote.

    Attributes
    ----------
    path : Path
        The ``.zip`` package.
    model_version : int
        The project's model version packaged.
    weight_formats : tuple of str
        Weight formats inside the package.
    test_shape : tuple of int
        Shape of the test input tensor (batch, channel, y, x).
    """

    path: Path
    model_version: int
    weight_formats: tuple[str, ...]
    test_shape: tuple[int, ...]


def export_bioimageio(project, out, *, version: int | None = None, name: str | None = None,
                      authors: Sequence[str] = ("workbench user",), license: str = DEFAULT_LICENSE,
                      description: str | None = None, test_size: int = 256) -> BioimageioExport:
    """Package a project's U-Net as a bioimage.io model (``.zip``).

    Parameters
    ----------
    project : workbench.store.Project
    out : path-like
        The package to write (``.zip``; written to a temporary sibling and renamed).
    version : int, optional
        Model version (default: the project's latest U-Net).
    name : str, optional
        The model's name in the package (default: from the project folder and version).
    authors : sequence of str
        Author names.
    license : str
        An SPDX licence identifier (default ``CC-BY-4.0``).
    description : str, optional
        One-sentence description (default: made from the project's mode and classes).
    test_size : int
        Largest edge of the test input cut from the first annotated image.

    Returns
    -------
    BioimageioExport

    Raises
    ------
    WorkbenchError
        When the model is not a U-Net, the images are too small for a test input, or the
        description does not validate (the message lists what bioimage.io rejected).

    Examples
    --------
    A project with a trained U-Net (training is too long for a doctest; tests/test_exchange_bioimageio.py
    runs this)::

        export_bioimageio(Project.open("nuclei"), "nuclei-model.zip")
    """
    import torch

    from workbench.deep import load_model

    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise WorkbenchError(f"a bioimage.io package is a .zip file; got --out {out}: name it e.g. {out.stem}.zip")
    if not authors or not all(isinstance(a, str) and a.strip() for a in authors):
        raise WorkbenchError(f"`authors` must be one or more names; got {authors!r}")
    record = _unet_record(project, version)
    model, card = load_model(project.path / record.path, device="cpu")
    stride = int(getattr(model.encoder, "output_stride", 32))
    image_name, raw = _test_input(project, card.in_channels, stride, test_size)
    gains, offsets = _scale_linear(card, raw.shape[1])
    normalised = (raw * gains[None, :, None, None] + offsets[None, :, None, None]).astype(np.float32)

    from workbench.exchange.bioimageio_unet import WorkbenchUnet

    wrapped = WorkbenchUnet(distance=card.distance, **card.init_kwargs)
    wrapped.network.load_state_dict(model.state_dict())
    wrapped.eval()
    with torch.inference_mode():
        expected = wrapped(torch.from_numpy(normalised)).numpy().astype(np.float32)

    with tempfile.TemporaryDirectory(prefix="workbench-bioimageio-") as scratch:
        folder = Path(scratch)
        files = _write_files(folder, project, record, card, wrapped, raw, normalised, expected, image_name)
        descr = _description(project, record, card, files, stride, gains, offsets, name=name,
                             authors=authors, license=license, description=description,
                             pixel_size=project.image(image_name).pixel_size)
        from bioimageio.spec import save_bioimageio_package

        with atomic_write(out) as tmp:
            save_bioimageio_package(descr, output_path=tmp)
    return BioimageioExport(out, int(record.version), ("pytorch_state_dict", "torchscript", "onnx"),
                            tuple(raw.shape))


# ------------------------------------------------------------------------------------------ pieces
def _unet_record(project, version):
    record = project.model_record(version)
    if record.method != "unet":
        raise WorkbenchError(
            f"model version {record.version} of {project.path} is a {record.method} model; bioimage.io and "
            "ONNX packages hold deep-learning models: export a U-Net version (`workbench info` lists them)"
        )
    return record


def _test_input(project, in_channels: int, stride: int, test_size: int) -> tuple[str, np.ndarray]:
    """A centred crop (1, C, h, w) of the first annotated plane, h and w multiples of the stride."""
    names = project.image_names
    if not names:
        raise WorkbenchError(f"project {project.path} has no images to make the package's test input from")
    annotated = [n for n in names if np.asarray(project.labels(n)[...]).any()] or names
    name = annotated[0]
    source = project.image(name)
    plane = source.plane(source.n_slices // 2)
    height, width = plane.shape[1:]
    edge = min(int(test_size), height, width) // stride * stride
    if edge < 2 * stride:
        raise WorkbenchError(
            f"image {name!r} is {height} x {width} pixels; a test input needs at least {2 * stride} x {2 * stride}"
        )
    y0, x0 = (height - edge) // 2, (width - edge) // 2
    crop = np.asarray(plane[:, y0:y0 + edge, x0:x0 + edge], dtype=np.float32)
    if crop.shape[0] != in_channels:
        raise WorkbenchError(f"image {name!r} has {crop.shape[0]} channel(s); the model expects {in_channels}")
    return name, crop[None]


def _scale_linear(card, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The card's (x - offset) / scale as bioimage.io's x * gain + offset, per channel."""
    normalizer = card.normalizer()
    if normalizer is None:
        return np.ones(n_channels, np.float32), np.zeros(n_channels, np.float32)
    gains = (1.0 / normalizer.scales).astype(np.float32)
    offsets = (-normalizer.offsets / normalizer.scales).astype(np.float32)
    return gains, offsets


def _identifier(text: str, fallback: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", str(text)).strip("_")
    return cleaned if cleaned and not cleaned[0].isdigit() else f"{fallback}_{cleaned}".strip("_")


def _write_files(folder: Path, project, record, card, wrapped, raw, normalised, expected, image_name) -> dict:
    import torch

    from workbench.exchange._onnx import ONNX_OPSET, export_onnx

    files = {
        "test_input": folder / "test_input.npy",
        "test_output": folder / "test_output.npy",
        "state_dict": folder / "weights.pt",
        "torchscript": folder / "weights_torchscript.pt",
        "onnx": folder / "weights.onnx",
        "architecture": folder / ARCHITECTURE_FILE.name,
        "environment": folder / "environment.yaml",
        "readme": folder / "README.md",
        "cover": folder / "cover.png",
    }
    np.save(files["test_input"], raw)
    np.save(files["test_output"], expected)
    torch.save({k: v.detach().cpu().contiguous() for k, v in wrapped.state_dict().items()}, files["state_dict"])
    with warnings.catch_warnings():
        # TorchScript is deprecated in torch but is what bioimage.io, DeepImageJ and Icy run.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(wrapped, torch.from_numpy(normalised), check_trace=False)
        traced.save(str(files["torchscript"]))
    export_onnx(wrapped.network, card, files["onnx"], tile_size=normalised.shape[-1], opset=ONNX_OPSET)
    shutil.copyfile(ARCHITECTURE_FILE, files["architecture"])
    files["environment"].write_text(_environment(), encoding="utf-8")
    files["readme"].write_text(_readme(project, record, card, image_name, raw.shape), encoding="utf-8")
    _write_cover(files["cover"], raw[0], expected[0], project.mode)
    return files


def _environment() -> str:
    import segmentation_models_pytorch
    import timm
    import torch

    torch_version = torch.__version__.split("+")[0]
    return (
        "name: workbench-unet\n"
        "channels:\n  - conda-forge\n  - nodefaults\n"
        "dependencies:\n"
        f"  - pytorch={torch_version}\n"
        "  - pip\n"
        "  - pip:\n"
        f"      - segmentation-models-pytorch=={segmentation_models_pytorch.__version__}\n"
        f"      - timm=={timm.__version__}\n"
    )


def _write_cover(path: Path, raw: np.ndarray, probabilities: np.ndarray, mode: str) -> None:
    """Cover (2:1): the test input beside the model's objects or classes drawn over it."""
    import imageio.v3 as iio

    from workbench.pipeline import postprocess
    from workbench.predict import overlay_classes, overlay_instances, to_display

    image = raw[0] if raw.shape[0] == 1 else np.moveaxis(raw[:3], 0, -1)
    if mode == "instance":
        overlay = overlay_instances(image, postprocess(probabilities, "instance"))
    else:
        palette = ["#000000", "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6"]
        colors = [palette[i % len(palette)] for i in range(probabilities.shape[0])]
        overlay = overlay_classes(image, postprocess(probabilities, "semantic"), colors)
    shown = to_display(image)
    if shown.ndim == 2:
        shown = np.repeat(shown[..., None], 3, axis=-1)
    iio.imwrite(path, np.concatenate([shown[..., :3], np.asarray(overlay)[..., :3]], axis=1).astype(np.uint8))


def _readme(project, record, card, image_name, test_shape) -> str:
    stats = record.labels or project.label_stats()
    lines = [
        f"# {project.path.name}: workbench U-Net, model version {record.version}",
        "",
        f"A {project.mode} segmentation U-Net (segmentation-models-pytorch, encoder "
        f"`{card.init_kwargs.get('encoder_name')}`, depth {card.init_kwargs.get('encoder_depth')}) trained "
        "with the microscopy segmentation workbench on partial labels. It outputs softmax probabilities for "
        f"the classes {', '.join(card.classes or map(str, range(card.n_classes)))}"
        + (" and, after them, each object pixel's distance to the object's edge as a share of the object's "
           "largest (0-1, a sigmoid; its peaks seed the objects)." if card.distance else "."),
        "",
        "## Input and preprocessing",
        "",
        f"{card.in_channels} channel(s), float32 raw intensities, any size that is a multiple of 32 pixels. "
        "Each channel is normalised with the fixed percentiles fitted on the training images "
        f"({json.dumps(card.normalisation)}), described as `scale_linear` preprocessing.",
        "",
        "## Training data",
        "",
        f"Images of project `{project.path.name}`:",
        "",
    ]
    for name in project.image_names:
        info = project.image_info(name)
        lines.append(f"- `{name}`: axes {info.axes}, shape {tuple(info.shape)}, {info.dtype}"
                     + (f", pixel size {info.pixel_size} µm" if info.pixel_size else ""))
    pixels = ", ".join(f"{k} {v}" for k, v in stats.get("pixels", {}).items())
    lines += [
        "",
        f"Painted pixels per class: {pixels}; {100 * stats.get('annotated_fraction', 0):.1f} % of all pixels "
        "annotated" + (f"; {stats['objects']} objects painted whole." if "objects" in stats else "."),
        "",
        "## Training",
        "",
        "```json",
        json.dumps({"settings": record.settings, "metrics": record.metrics.to_dict()}, indent=2,
                   default=str),
        "```",
        "",
        "## Validation",
        "",
        "The metrics above are on the validation pixels the workbench held out from the painted labels. "
        f"The package's test input is a {test_shape[-2]} x {test_shape[-1]} crop of `{image_name}`; "
        "validate on fully annotated images of your own before trusting measurements.",
        "",
    ]
    return "\n".join(lines)


def _description(project, record, card, files, stride, gains, offsets, *, name, authors, license, description,
                 pixel_size):
    import torch
    from bioimageio.spec.model import v0_5 as spec

    from workbench.exchange._onnx import ONNX_OPSET

    n_channels = card.in_channels
    unit = {"unit": "micrometer"} if pixel_size else {}
    scale_y = {"scale": float(pixel_size[0])} if pixel_size else {}
    scale_x = {"scale": float(pixel_size[1])} if pixel_size else {}
    size = spec.ParameterizedSize(min=2 * stride, step=stride)
    input_axes = [
        spec.BatchAxis(),
        spec.ChannelAxis(channel_names=[spec.Identifier(f"channel{c}") for c in range(n_channels)]),
        spec.SpaceInputAxis(id=spec.AxisId("y"), size=size, **unit, **scale_y),
        spec.SpaceInputAxis(id=spec.AxisId("x"), size=size, **unit, **scale_x),
    ]
    if n_channels == 1:
        kwargs = spec.ScaleLinearKwargs(gain=float(gains[0]), offset=float(offsets[0]))
    else:
        kwargs = spec.ScaleLinearAlongAxisKwargs(axis=spec.AxisId("channel"), gain=[float(g) for g in gains],
                                                 offset=[float(o) for o in offsets])
    classes = card.classes or [f"class{k}" for k in range(card.n_classes)]
    outputs = classes + card.output_names[card.n_classes:]  # the distance map after the classes, if any
    output_axes = [
        spec.BatchAxis(),
        spec.ChannelAxis(channel_names=[spec.Identifier(_identifier(c, "class")) for c in outputs]),
        spec.SpaceOutputAxis(id=spec.AxisId("y"), size=spec.SizeReference(
            tensor_id=spec.TensorId(INPUT_ID), axis_id=spec.AxisId("y")), **unit, **scale_y),
        spec.SpaceOutputAxis(id=spec.AxisId("x"), size=spec.SizeReference(
            tensor_id=spec.TensorId(INPUT_ID), axis_id=spec.AxisId("x")), **unit, **scale_x),
    ]
    torch_version = spec.Version(torch.__version__.split("+")[0])
    arch = spec.ArchitectureFromFileDescr(source=files["architecture"], callable=spec.Identifier(ARCHITECTURE_CALLABLE),
                                          kwargs=dict(card.init_kwargs, distance=bool(card.distance)))
    mode_text = "instance (background, interior, boundary)" if project.mode == "instance" else "semantic"
    try:
        return spec.ModelDescr(
            name=name or f"{project.path.name} workbench U-Net v{record.version}",
            description=description or (f"{mode_text} segmentation U-Net for {', '.join(project.class_names[1:])} "
                                        "trained on partial labels with the microscopy segmentation workbench"),
            authors=[spec.Author(name=a.strip()) for a in authors],
            license=spec.LicenseId(license),
            documentation=spec.FileDescr(source=files["readme"]),
            covers=[spec.FileDescr(source=files["cover"])],
            tags=["unet", "segmentation", f"{project.mode}-segmentation", "2d", "pytorch", "onnx", "microscopy",
                  "microscopy-segmentation-workbench"],
            version=spec.Version(f"0.{int(record.version)}.0"),
            inputs=[spec.InputTensorDescr(
                id=spec.TensorId(INPUT_ID), axes=input_axes, test_tensor=spec.FileDescr(source=files["test_input"]),
                data=spec.IntervalOrRatioDataDescr(type="float32"),
                preprocessing=[spec.ScaleLinearDescr(kwargs=kwargs)],
                description=f"{n_channels}-channel raw intensities (y, x a multiple of {stride} pixels)",
            )],
            outputs=[spec.OutputTensorDescr(
                id=spec.TensorId(OUTPUT_ID), axes=output_axes,
                test_tensor=spec.FileDescr(source=files["test_output"]),
                data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
                description="softmax probability per class" + (
                    ", then the distance to the object's edge (0-1)" if card.distance else ""),
            )],
            weights=spec.WeightsDescr(
                pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
                    source=files["state_dict"], architecture=arch, pytorch_version=torch_version,
                    dependencies=spec.FileDescr(source=files["environment"])),
                torchscript=spec.TorchscriptWeightsDescr(source=files["torchscript"], pytorch_version=torch_version,
                                                         parent="pytorch_state_dict"),
                onnx=spec.OnnxWeightsDescr(source=files["onnx"], opset_version=ONNX_OPSET, parent="pytorch_state_dict"),
            ),
            config={"workbench": {"model_version": int(record.version), "mode": project.mode,
                                  "classes": list(classes), "card": card.to_dict(),
                                  "labels": record.labels}},
        )
    except Exception as exc:  # pydantic's ValidationError lists every rejected field
        raise WorkbenchError(f"the bioimage.io description does not validate: {' '.join(str(exc).split())}") from exc

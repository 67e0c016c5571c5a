"""U-Net models: a preset registry behind one factory, pretrained encoders, the model card, prediction.

The default preset ("fast") is a scaled-down U-Net that trains at more than a
megapixel per second on a 2-core CPU: a timm MobileNetV3-small (x0.5) encoder
through smp's ``tu-`` bridge, four encoder stages instead of five and a narrow
decoder. Other presets trade speed for capacity; any smp encoder name or
``"tu-<timm model>"`` can replace a preset's encoder.

A model carries its own recipe (``model.workbench_recipe``: class name and
init kwargs), so `save_model` writes weights plus ``card.json`` and
`load_model` rebuilds the exact architecture without the code that built it.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from workbench.deep._device import pick_device
from workbench.errors import WorkbenchError
from workbench.validate import whole_number
from workbench.store import atomic_write, to_jsonable
from workbench.conventions import DISTANCE_OUTPUT
from workbench.normalize import PercentileNormalizer

__all__ = [
    "PRESETS",
    "DEFAULT_PRESET",
    "MODEL_CLASSES",
    "ModelCard",
    "build_unet",
    "unet_architecture",
    "save_model",
    "load_model",
    "check_model_fits",
    "make_predictor",
    "output_probabilities",
    "TorchPredictor",
    "WEIGHTS_FILENAME",
    "CARD_FILENAME",
]

WEIGHTS_FILENAME = "weights.pt"
CARD_FILENAME = "card.json"
CARD_FORMAT_VERSION = 1


def _unet_class():
    import segmentation_models_pytorch as smp

    return smp.Unet


# Architectures a card may name; a new architecture is one entry.
MODEL_CLASSES: dict[str, Callable[[], type]] = {"Unet": _unet_class}

# Presets: encoder, encoder depth and the decoder channels for 5 stages (deepest first; a depth-d
# model uses the last d). "fast" was chosen by measured CPU training throughput at 256x256.
PRESETS: dict[str, dict[str, Any]] = {
    # The "minimal" MobileNetV3 has no squeeze-excitation: SE pools over the whole input, so a
    # tile's prediction would depend on what else is in the tile and tiled prediction could not
    # match whole-image prediction. Measured 1.46 MP/s training at 256x256 on 2 cores (SE x0.5: 1.56).
    "fast": {
        "encoder": "tu-tf_mobilenetv3_small_minimal_100",
        "depth": 4,
        "decoder_channels": (96, 48, 32, 16, 8),
        "description": "default: MobileNetV3-small minimal (no squeeze-excitation), 4 stages, narrow decoder; "
                       "> 1 MP/s on 2 CPU cores",
    },
    "fast-se": {
        "encoder": "tu-mobilenetv3_small_050",
        "depth": 4,
        "decoder_channels": (96, 48, 32, 16, 8),
        "description": "MobileNetV3-small x0.5 with squeeze-excitation; slightly faster, but tile-dependent",
    },
    "small": {
        "encoder": "tu-mobilenetv3_small_100",
        "depth": 5,
        "decoder_channels": (96, 64, 32, 24, 16),
        "description": "MobileNetV3-small x1.0, 5 stages; more capacity, about half the speed of 'fast'",
    },
    "mobilenet_v2": {
        "encoder": "mobilenet_v2",
        "depth": 5,
        "decoder_channels": (128, 64, 32, 16, 16),
        "description": "MobileNetV2 (ImageNet weights available), slimmed decoder; GPU or patient CPU",
    },
    "resnet18": {
        "encoder": "resnet18",
        "depth": 5,
        "decoder_channels": (256, 128, 64, 32, 16),
        "description": "ResNet-18 with the standard U-Net decoder; for a GPU",
    },
    "resnet34": {
        "encoder": "resnet34",
        "depth": 5,
        "decoder_channels": (256, 128, 64, 32, 16),
        "description": "ResNet-34 with the standard U-Net decoder; for a GPU",
    },
    "efficientnet-b0": {
        "encoder": "efficientnet-b0",
        "depth": 5,
        "decoder_channels": (256, 128, 64, 32, 16),
        "description": "EfficientNet-B0 with the standard U-Net decoder; for a GPU",
    },
}
DEFAULT_PRESET = "fast"


@dataclass
class ModelCard:
    """Everything needed to rebuild, check and use a saved model (stored as ``card.json``).

    Attributes
    ----------
    in_channels, n_classes : int
        Input channels and output classes of the network.
    classes : list of str
        Class names, index k = output channel k.
    mode : str
        ``"semantic"`` or ``"instance"`` (3 classes: background, interior, boundary).
    normalisation : dict or None
        `PercentileNormalizer.to_dict` output applied to raw tiles before the network.
    settings : dict
        The training settings that produced the model.
    metrics : dict
        Best validation metrics, labelled pixel counts, training time.
    instance_options : dict
        Post-processing thresholds this model chose on its held-out objects (instance mode;
        see `workbench.deep.calibrate_instances`); empty keeps the defaults.
    distance : bool
        The network has one output more than classes, `DISTANCE_OUTPUT` (instance mode), turned
        into 0-1 by a sigmoid rather than the classes' softmax. Cards without it (older models,
        forests, the starter) have none.
    architecture : str
        A key of `MODEL_CLASSES`; filled in by `save_model` from the model's recipe.
    init_kwargs : dict
        Keyword arguments rebuilding the architecture; filled in by `save_model`.
    """

    in_channels: int
    n_classes: int
    classes: list[str] = field(default_factory=list)
    mode: str = "semantic"
    normalisation: dict | None = None
    settings: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    instance_options: dict = field(default_factory=dict)
    distance: bool = False
    architecture: str = "Unet"
    init_kwargs: dict = field(default_factory=dict)
    format_version: int = CARD_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        """Rebuild from `to_dict` output, ignoring unknown keys from newer versions."""
        known = {name for name in cls.__dataclass_fields__}
        missing = {"in_channels", "n_classes"} - set(data)
        if missing:
            raise WorkbenchError(f"model card is missing {sorted(missing)}; the file is not a workbench model card.")
        return cls(**{key: value for key, value in data.items() if key in known})

    def normalizer(self) -> PercentileNormalizer | None:
        """The stored normalisation, or None if the card has none."""
        return None if self.normalisation is None else PercentileNormalizer.from_dict(self.normalisation)

    @property
    def n_outputs(self) -> int:
        """Output channels of the network: the classes, and the distance map if it has one."""
        return self.n_classes + int(bool(self.distance))

    @property
    def output_names(self) -> list[str]:
        """A name for every output channel (the class names, then `DISTANCE_OUTPUT`)."""
        names = list(self.classes) or [f"class {k}" for k in range(self.n_classes)]
        return names + ([DISTANCE_OUTPUT] if self.distance else [])


def output_probabilities(logits: torch.Tensor, n_classes: int, dim: int = 1) -> torch.Tensor:
    """The network's outputs as the engine uses them: softmax over the first `n_classes` channels
    (class probabilities) and a sigmoid of any channel after them (the distance map, 0-1)."""
    if logits.shape[dim] == n_classes:
        return torch.softmax(logits, dim=dim)
    classes, extra = torch.tensor_split(logits, [n_classes], dim=dim)
    return torch.cat([torch.softmax(classes, dim=dim), torch.sigmoid(extra)], dim=dim)


def build_unet(
    in_channels: int,
    n_classes: int,
    *,
    preset: str = DEFAULT_PRESET,
    encoder: str | None = None,
    width: float = 1.0,
    depth: int | None = None,
    weights: str | os.PathLike | None = None,
    distance: bool = False,
) -> torch.nn.Module:
    """Build a U-Net (segmentation-models-pytorch) from a preset.

    Parameters
    ----------
    in_channels : int
        Image channels (1, 2, 3 or more).
    n_classes : int
        Output classes (>= 2; outputs are logits, softmax gives probabilities).
    preset : str
        A key of `PRESETS` (default ``"fast"``).
    encoder : str or None
        Replace the preset's encoder: an smp encoder name (``"resnet18"``,
        ``"mobilenet_v2"`` …) or ``"tu-<timm model>"``.
    width : float
        Multiplier for the decoder channels (0.5 = half as wide, faster).
    depth : int or None
        Encoder stages (3 to 5); None uses the preset's.
    weights : None, "imagenet", "starter" or path
        Initialisation: random (None); ImageNet encoder weights downloaded
        through smp's hub (cached after the first time); a local state-dict
        file for this encoder (torchvision/timm/smp key names; classifier
        keys are dropped); ``"starter"``, the whole U-Net (encoder and
        decoder) from the starter model shipped in the package
        (``workbench.deep.starter_dir``); or a saved model folder
        (``card.json`` + ``weights.pt``, e.g. a ``workbench pretrain``
        output) for the whole U-Net. Pretrained first convolutions are
        adapted to ``in_channels`` (repeated and averaged, smp's
        ``patch_first_conv`` rule); a starter head with another class count
        is trained afresh.
    distance : bool
        One output more after the classes: `DISTANCE_OUTPUT` (instance mode). A starter
        head without it keeps its class outputs; the distance output starts afresh.

    Returns
    -------
    torch.nn.Module
        An ``smp.Unet`` with a ``workbench_recipe`` attribute used by `save_model`.

    Raises
    ------
    WorkbenchError
        For an unknown preset or encoder (the message lists the choices), bad
        sizes, or weights that cannot be found or do not fit the encoder.

    Examples
    --------
    >>> model = build_unet(1, 3)
    >>> model(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 3, 64, 64])
    """
    in_channels = whole_number(in_channels, "in_channels")
    n_classes = whole_number(n_classes, "n_classes")
    if n_classes < 2:
        raise WorkbenchError(f"`n_classes` must be at least 2 (background and one class); got {n_classes}.")
    init_kwargs = {
        **unet_architecture(preset=preset, encoder=encoder, width=width, depth=depth),
        "encoder_weights": None,
        "in_channels": in_channels,
        "classes": n_classes + int(bool(distance)),
    }
    encoder_name = init_kwargs["encoder_name"]
    model_class = MODEL_CLASSES["Unet"]()
    if weights is None:
        model = _construct(model_class, init_kwargs)
    elif isinstance(weights, str) and weights == "imagenet":
        hub_kwargs = dict(init_kwargs, encoder_weights=True if encoder_name.startswith("tu-") else "imagenet")
        try:
            model = _construct(model_class, hub_kwargs)
        except WorkbenchError:
            raise
        except Exception as exc:  # network, cache and hub errors all end here with their own message
            raise WorkbenchError(
                f"could not get ImageNet weights for encoder {encoder_name!r} ({type(exc).__name__}: {exc}). "
                "Without internet, download the encoder's weights file once and pass weights=<path to the file>, "
                "or use weights=None."
            ) from exc
    elif (isinstance(weights, str) and weights == "starter") or (
            isinstance(weights, (str, os.PathLike)) and Path(weights).is_dir()):
        from workbench.deep._starter import init_from_model, starter_dir

        folder = starter_dir() if weights == "starter" else Path(weights)
        if folder is None:
            raise WorkbenchError(
                "weights='starter' but this installation has no starter model (workbench/deep/starter/ is "
                "missing); make one with `workbench pretrain OUT` and pass its folder, or use weights=None."
            )
        model = _construct(model_class, init_kwargs)
        model.workbench_recipe = {"architecture": "Unet", "init_kwargs": init_kwargs, "preset": preset,
                                  "distance": bool(distance)}
        init_from_model(model, folder, source="the starter model" if weights == "starter" else "the model folder")
    elif isinstance(weights, (str, os.PathLike)):
        model = _construct(model_class, dict(init_kwargs, in_channels=3))
        _load_encoder_file(model.encoder, Path(weights), encoder_name)
        if in_channels != 3:
            _adapt_first_conv(model.encoder, in_channels)
    else:
        raise WorkbenchError(
            f"`weights` must be None, 'imagenet', 'starter', a weights file or a saved model folder; got "
            f"{type(weights).__name__} {weights!r}."
        )
    model.workbench_recipe = {"architecture": "Unet", "init_kwargs": init_kwargs, "preset": preset,
                              "distance": bool(distance)}
    return model


def unet_architecture(*, preset: str = DEFAULT_PRESET, encoder: str | None = None, width: float = 1.0,
                      depth: int | None = None) -> dict[str, Any]:
    """The encoder, depth and decoder widths that `build_unet` makes of a preset and its overrides.

    Raises
    ------
    WorkbenchError
        For an unknown preset or encoder, or a depth or width out of range.

    Examples
    --------
    >>> unet_architecture(width=0.5)["decoder_channels"]
    [24, 16, 8, 4]
    """
    if preset not in PRESETS:
        raise WorkbenchError(f"unknown `preset` {preset!r}; choose one of {sorted(PRESETS)}.")
    recipe = PRESETS[preset]
    encoder_name = _check_encoder_name(encoder if encoder is not None else recipe["encoder"])
    depth = recipe["depth"] if depth is None else depth
    if not isinstance(depth, int) or not 3 <= depth <= 5:
        raise WorkbenchError(f"`depth` must be an integer from 3 to 5; got {depth!r}.")
    if not isinstance(width, (int, float)) or not 0.05 <= float(width) <= 8:
        raise WorkbenchError(f"`width` must be a number between 0.05 and 8 (1 = preset width); got {width!r}.")
    decoder_channels = [max(4, int(round(c * float(width)))) for c in recipe["decoder_channels"][-depth:]]
    return {"encoder_name": encoder_name, "encoder_depth": depth, "decoder_channels": decoder_channels}


def check_model_fits(card: ModelCard, *, in_channels: int | None = None, n_classes: int | None = None,
                     source: str = "the model") -> None:
    """Raise a clear error when a model does not fit the data's channels or classes.

    Raises
    ------
    WorkbenchError
        Naming both counts and the fix.
    """
    if in_channels is not None and int(in_channels) != card.in_channels:
        raise WorkbenchError(
            f"{source} expects images with {card.in_channels} channel(s) but the data has {in_channels}. "
            f"Use images with {card.in_channels} channel(s), or train a new model for these images "
            "(without init_from)."
        )
    if n_classes is not None and int(n_classes) != card.n_classes:
        raise WorkbenchError(
            f"{source} predicts {card.n_classes} classes but the labels need {n_classes}. "
            "Train a new model for the new set of classes (without init_from), or relabel with the model's classes "
            f"{card.classes or list(range(card.n_classes))}."
        )


def save_model(directory: str | os.PathLike, model: torch.nn.Module, card: ModelCard) -> Path:
    """Write ``weights.pt`` (state dict) and ``card.json`` into ``directory``, atomically.

    Each file is written to a temporary name and moved into place with
    ``os.replace``; the card goes last, so a directory with a card always has
    matching weights.

    Parameters
    ----------
    directory : path
        Created if missing; existing model files are replaced.
    model : torch.nn.Module
        A model from `build_unet` or `load_model`.
    card : ModelCard
        Its ``architecture`` and ``init_kwargs`` are filled from the model's recipe.

    Returns
    -------
    Path
        The directory.

    Raises
    ------
    WorkbenchError
        If the model has no recipe or the card's sizes disagree with it.
    """
    recipe = getattr(model, "workbench_recipe", None)
    if not recipe:
        raise WorkbenchError(
            "`model` has no workbench recipe; build it with workbench.deep.build_unet or load_model."
        )
    if not isinstance(card, ModelCard):
        raise WorkbenchError(f"`card` must be a workbench.deep.ModelCard; got {type(card).__name__}.")
    init_kwargs = recipe["init_kwargs"]
    if card.in_channels != init_kwargs["in_channels"] or card.n_outputs != init_kwargs["classes"]:
        raise WorkbenchError(
            f"`card` says {card.in_channels} channel(s) / {card.n_outputs} outputs but the model has "
            f"{init_kwargs['in_channels']} / {init_kwargs['classes']}; make the card from the model that is saved."
        )
    card = copy.deepcopy(card)
    card.architecture = recipe["architecture"]
    card.init_kwargs = copy.deepcopy(init_kwargs)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    # Through a file object, torch names the archive's records "archive/..." instead of after the
    # (temporary, per-process) file name: equal weights give byte-equal files, hence equal sha256.
    with atomic_write(directory / WEIGHTS_FILENAME) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)
    text = json.dumps(card.to_dict(), indent=2, sort_keys=True)
    with atomic_write(directory / CARD_FILENAME) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return directory


def load_model(directory: str | os.PathLike, *, device: str | torch.device | None = "cpu",
               in_channels: int | None = None, n_classes: int | None = None) -> tuple[torch.nn.Module, ModelCard]:
    """Rebuild a model saved by `save_model` (weights loaded with ``weights_only=True``).

    Parameters
    ----------
    directory : path
        Folder holding ``card.json`` and ``weights.pt``.
    device : str, torch.device or None
        Where to put the model (None/"auto" picks the best device).
    in_channels, n_classes : int or None
        When given, checked against the card (see `check_model_fits`).

    Returns
    -------
    model : torch.nn.Module
        In eval mode.
    card : ModelCard

    Raises
    ------
    WorkbenchError
        If files are missing or unreadable, or the model does not fit the data.
    """
    directory = Path(directory)
    card_path, weights_path = directory / CARD_FILENAME, directory / WEIGHTS_FILENAME
    if not card_path.is_file() or not weights_path.is_file():
        raise WorkbenchError(
            f"{directory} is not a saved model: expected {CARD_FILENAME} and {WEIGHTS_FILENAME} in it. "
            "Pass the folder that save_model (or training) wrote."
        )
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise WorkbenchError(f"{card_path} holds {type(data).__name__}, not a model card; the model folder is damaged.")
        card = ModelCard.from_dict(data)
        if not isinstance(card.format_version, int) or not isinstance(card.architecture, str) \
                or not isinstance(card.init_kwargs, dict):
            raise WorkbenchError(f"{card_path} has fields of the wrong type; the model folder is damaged.")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorkbenchError(f"{card_path} is not valid JSON ({exc}); the model folder is damaged.") from exc
    except TypeError as exc:
        raise WorkbenchError(f"{card_path} is not a workbench model card ({exc}); the model folder is damaged.") from exc
    if card.format_version > CARD_FORMAT_VERSION:
        raise WorkbenchError(
            f"{card_path} has format version {card.format_version}, newer than this workbench understands "
            f"({CARD_FORMAT_VERSION}); update the workbench."
        )
    check_model_fits(card, in_channels=in_channels, n_classes=n_classes, source=f"the model in {directory}")
    if card.init_kwargs.get("classes", card.n_outputs) != card.n_outputs:
        raise WorkbenchError(f"{card_path} says {card.n_outputs} outputs but its network has "
                             f"{card.init_kwargs.get('classes')}; the model folder is damaged: train the model again.")
    if card.architecture not in MODEL_CLASSES:
        raise WorkbenchError(f"{card_path} names architecture {card.architecture!r}; known: {sorted(MODEL_CLASSES)}.")
    init_kwargs = dict(card.init_kwargs, encoder_weights=None)
    try:
        model = _construct(MODEL_CLASSES[card.architecture](), init_kwargs)
    except WorkbenchError:
        raise
    except Exception as exc:  # the recipe came from a file: any constructor error means a damaged card
        raise WorkbenchError(f"{card_path} describes a network that cannot be built ({exc}); the model folder is "
                             "damaged: train the model again.") from exc
    try:
        # weights_only: tensors and plain containers only; a pickle asking for anything else is refused.
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors differ by damage; none may run code or escape
        raise WorkbenchError(
            f"{weights_path} cannot be read as model weights ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
            "only plain tensors are loaded, never code: the file is damaged or not a workbench model, train the "
            "model again."
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WorkbenchError(f"{weights_path} does not hold a state dict (name -> tensor); train the model again.")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WorkbenchError(f"{weights_path} does not match the architecture in {card_path}: {exc}") from exc
    model.workbench_recipe = {
        "architecture": card.architecture,
        "init_kwargs": init_kwargs,
        "preset": card.settings.get("preset"),
        "distance": bool(card.distance),
    }
    model.eval()
    return model.to(pick_device(device)), card


class TorchPredictor:
    """Callable ``(B, C, h, w)`` raw intensities -> ``(B, K, h, w)`` float32 softmax probabilities
    (K = the card's `ModelCard.n_outputs`: the classes, and the distance map after them if any).

    Made by `make_predictor`. Applies the card's normalisation, pads each batch
    to a multiple of the network's output stride (reflecting the image) and
    crops back, runs under ``torch.inference_mode`` (and autocast on CUDA).

    Attributes
    ----------
    in_channels, n_classes, n_outputs : int
    batch_size : int
        Largest number of tiles sent to the network at once.
    device : torch.device
    """

    def __init__(self, model: torch.nn.Module, card: ModelCard, device=None, batch_size: int = 8):
        if not isinstance(card, ModelCard):
            raise WorkbenchError(f"`card` must be a ModelCard; got {type(card).__name__}.")
        self.batch_size = whole_number(batch_size, "batch_size")
        self.device = pick_device(device)
        self.in_channels = card.in_channels
        self.n_classes = card.n_classes
        self.n_outputs = card.n_outputs
        self.normalizer = card.normalizer()
        self.model = model.to(self.device).eval()
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.stride = int(getattr(getattr(model, "encoder", None), "output_stride", 32))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        array = np.asarray(batch)
        if array.ndim != 4 or array.shape[1] != self.in_channels:
            raise WorkbenchError(
                f"predictor input must be (B, {self.in_channels}, h, w); got shape {array.shape}. "
                f"The model was trained on {self.in_channels}-channel images."
            )
        if self.normalizer is not None:
            array = self.normalizer(array)
        else:
            array = array.astype(np.float32, copy=False)
        outputs = [self._predict_chunk(array[start:start + self.batch_size])
                   for start in range(0, array.shape[0], self.batch_size)]
        if not outputs:
            return np.zeros((0, self.n_outputs) + array.shape[2:], dtype=np.float32)
        return np.concatenate(outputs, axis=0)

    def _predict_chunk(self, chunk: np.ndarray) -> np.ndarray:
        height, width = chunk.shape[2:]
        tensor = torch.from_numpy(np.ascontiguousarray(chunk)).to(self.device)
        tensor = pad_to_multiple(tensor, self.stride)
        if self.device.type == "cuda":
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(
            device_type=self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"
        ):
            logits = self.model(tensor)
        probabilities = output_probabilities(logits.float()[:, :, :height, :width], self.n_classes)
        return probabilities.cpu().numpy().astype(np.float32, copy=False)


def make_predictor(model: torch.nn.Module, card: ModelCard, device=None, batch_size: int = 8) -> TorchPredictor:
    """Wrap a model into the engine's predictor callable (see `TorchPredictor`).

    Parameters
    ----------
    model : torch.nn.Module
    card : ModelCard
        Supplies the normalisation and channel/class counts.
    device : str, torch.device or None
        None picks CUDA, then MPS, else CPU.
    batch_size : int
        Tiles per forward pass.

    Examples
    --------
    >>> import numpy as np
    >>> model = build_unet(1, 3)
    >>> card = ModelCard(in_channels=1, n_classes=3, mode="instance")
    >>> tiles = np.zeros((2, 1, 64, 64), np.float32)
    >>> make_predictor(model, card, device="cpu")(tiles).shape
    (2, 3, 64, 64)
    """
    return TorchPredictor(model, card, device=device, batch_size=batch_size)


def pad_to_multiple(tensor: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the last two axes at the bottom/right up to a multiple, reflecting (or repeating tiny) images."""
    height, width = tensor.shape[-2:]
    pad_y, pad_x = (-height) % multiple, (-width) % multiple
    if pad_y == 0 and pad_x == 0:
        return tensor
    mode = "reflect" if pad_y < height and pad_x < width else "replicate"
    return F.pad(tensor, (0, pad_x, 0, pad_y), mode=mode)


def encoder_names() -> list[str]:
    """smp's own encoder names (``"tu-<timm model>"`` names are accepted too)."""
    from segmentation_models_pytorch.encoders import get_encoder_names

    return sorted(get_encoder_names())


# --------------------------------------------------------------------------- helpers


def _construct(model_class, init_kwargs: dict[str, Any]) -> torch.nn.Module:
    kwargs = dict(init_kwargs)
    kwargs["decoder_channels"] = tuple(kwargs["decoder_channels"])
    return model_class(**kwargs)


def _check_encoder_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise WorkbenchError(f"`encoder` must be an encoder name string; got {name!r}.")
    if name.startswith("tu-"):
        import timm

        if not timm.is_model(name[3:]):
            raise WorkbenchError(
                f"unknown timm encoder {name!r}: timm has no model {name[3:]!r}. "
                f"Use a preset ({sorted(PRESETS)}) or a name from timm.list_models()."
            )
        return name
    names = encoder_names()
    if name not in names:
        raise WorkbenchError(
            f"unknown `encoder` {name!r}; choose a preset ({sorted(PRESETS)}), 'tu-<timm model>' or one of "
            f"smp's encoders: {names}."
        )
    return name


def _load_encoder_file(encoder: torch.nn.Module, path: Path, encoder_name: str) -> None:
    """Load a local state dict into ``encoder``, matching torchvision/timm/smp key layouts."""
    if not path.is_file():
        raise WorkbenchError(
            f"`weights` file {str(path)!r} does not exist; pass the path of a downloaded weights file, "
            "'imagenet' to download, or None."
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch format errors differ by file
        raise WorkbenchError(f"could not read `weights` file {path} as a torch state dict: {exc}") from exc
    for wrapper_key in ("state_dict", "model_state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper_key), dict):
            loaded = loaded[wrapper_key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WorkbenchError(f"`weights` file {path} does not hold a state dict (name -> tensor).")
    expected = encoder.state_dict()
    candidates = [
        loaded,
        {f"model.{key}": value for key, value in loaded.items()},
        {key.removeprefix("encoder."): value for key, value in loaded.items()},
    ]
    best = max(candidates, key=lambda candidate: len(expected.keys() & candidate.keys()))
    matched = {key: value for key, value in best.items() if key in expected}
    missing = [key for key in expected if key not in matched and not key.endswith("num_batches_tracked")]
    if not matched or missing:
        raise WorkbenchError(
            f"`weights` file {path} does not fit encoder {encoder_name!r}: {len(missing)} of its tensors are "
            f"missing from the file (e.g. {missing[:3]}). Use a weights file made for this encoder."
        )
    wrong_shapes = [(key, tuple(value.shape), tuple(expected[key].shape)) for key, value in matched.items()
                    if value.shape != expected[key].shape]
    if wrong_shapes:
        key, got, want = wrong_shapes[0]
        raise WorkbenchError(
            f"`weights` file {path} does not fit encoder {encoder_name!r}: {key} has shape {got}, expected {want}."
        )
    torch.nn.Module.load_state_dict(encoder, matched, strict=False)


def _adapt_first_conv(encoder: torch.nn.Module, in_channels: int) -> None:
    """Make a pretrained 3-channel stem accept ``in_channels`` with smp's weight-reusing patch."""
    if hasattr(encoder, "set_in_channels"):
        encoder.set_in_channels(in_channels, pretrained=True)
        return
    from segmentation_models_pytorch.encoders._utils import patch_first_conv

    patch_first_conv(model=encoder, new_in_channels=in_channels, pretrained=True)
    # timm encoders report their channel list from the timm model, which ignores the patch.
    if hasattr(encoder, "_in_channels"):
        encoder._in_channels = in_channels



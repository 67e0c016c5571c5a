"""The starter model: a whole U-Net pretrained on generated images, shipped inside the package.

``workbench pretrain`` (`workbench.pretrain`) trains it; the folder ``workbench/deep/starter/``
holds its ``weights.pt`` and ``card.json`` (a normal saved model, see `save_model`) and
``starter.json`` (what it was trained on, for how long, the exact command, the sha256 of the
weights, measured scores).

Why one input channel. The starter reads one channel: each channel of an image normalised to
its 1st-99.8th percentiles, then the channels averaged (`starter_input`). Channels mean
something different in every project (a nuclear stain first or second, RGB, a membrane
marker), so a model pretrained on a fixed channel layout would be wrong for most projects.
One averaged channel is defined for any image, and it adapts to C channels exactly: the
first convolution's weights repeated over the C channels and divided by C (`init_from_model`,
the rule smp's ``patch_first_conv`` uses for the ImageNet path) make a C-channel network
compute precisely what the starter computes on the channel average. Zero-shot prediction is
therefore well defined for 1, 2 or 3 channels, and fine-tuning starts from that and learns
from the project's labels what each channel adds.

Examples
--------
>>> import numpy as np
>>> rgb = np.stack([np.arange(64, dtype=np.uint8).reshape(8, 8)] * 3)
>>> starter_input(rgb).shape, starter_input(rgb).dtype
((1, 8, 8), dtype('float32'))
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError

__all__ = [
    "STARTER_DIR",
    "STARTER_INFO_FILENAME",
    "starter_dir",
    "starter_info",
    "starter_input",
    "starter_fits",
    "init_from_model",
    "sha256_file",
]

#: The shipped starter model (package data).
STARTER_DIR = Path(__file__).resolve().parent / "starter"
#: The starter card beside ``card.json``: provenance, command, sha256 and measured scores.
STARTER_INFO_FILENAME = "starter.json"
# Architecture fields that must agree between a pretrained folder and the model it initialises.
_ARCHITECTURE_KEYS = ("encoder_name", "encoder_depth", "decoder_channels")


def starter_dir() -> Path | None:
    """The shipped starter model folder, or None when this installation has none."""
    from workbench.deep._models import CARD_FILENAME, WEIGHTS_FILENAME

    folder = STARTER_DIR
    return folder if (folder / CARD_FILENAME).is_file() and (folder / WEIGHTS_FILENAME).is_file() else None


def starter_info(folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """The starter card (``starter.json``) of `folder` (default: the shipped starter).

    Raises
    ------
    WorkbenchError
        When there is no starter, or its card is not readable JSON.
    """
    folder = Path(folder) if folder is not None else starter_dir()
    if folder is None:
        raise WorkbenchError(
            "this installation has no starter model (workbench/deep/starter/ is missing); make one with "
            "`workbench pretrain OUT` or train from scratch (--weights none)."
        )
    path = folder / STARTER_INFO_FILENAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkbenchError(f"cannot read the starter card {path} ({exc.strerror}).") from None
    except ValueError:
        raise WorkbenchError(f"the starter card {path} is not valid JSON; the starter folder is damaged.") from None
    if not isinstance(data, dict):
        raise WorkbenchError(f"the starter card {path} holds {type(data).__name__}, not a JSON object.")
    return data


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def starter_input(image: Any) -> np.ndarray:
    """The starter's input convention: channels normalised to their 1-99.8 percentiles, then averaged.

    Parameters
    ----------
    image : array-like
        ``CYX`` (or ``YX``) of any numeric type.

    Returns
    -------
    numpy.ndarray of float32, shape (1, Y, X)
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise WorkbenchError(f"`image` must be CYX or YX; got shape {array.shape}.")
    planes = []
    for channel in array.astype(np.float32, copy=False):
        low, high = np.percentile(channel[:: max(1, channel.shape[0] // 512), :], [1.0, 99.8])
        scale = float(high - low) if high > low else float(channel.max() - channel.min()) or 1.0
        planes.append((channel - np.float32(low)) / np.float32(scale))
    return np.mean(planes, axis=0, dtype=np.float32)[None]


def starter_fits(init_kwargs: dict[str, Any], folder: str | os.PathLike | None = None) -> str | None:
    """Why the starter in `folder` cannot initialise a network built with `init_kwargs` (None: it can).

    Channels and classes never stop it (the first convolution is adapted, a head of another
    class count is trained afresh); encoder, depth and decoder widths must match.
    """
    from workbench.deep._models import CARD_FILENAME

    folder = Path(folder) if folder is not None else starter_dir()
    if folder is None:
        return "this installation has no starter model"
    try:
        card = json.loads((folder / CARD_FILENAME).read_text(encoding="utf-8"))
        theirs = card["init_kwargs"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{folder / CARD_FILENAME} is not a readable model card"
    different = [key for key in _ARCHITECTURE_KEYS if list(np.atleast_1d(theirs.get(key))) !=
                 list(np.atleast_1d(init_kwargs.get(key)))]
    if different:
        return ("it is a U-Net with encoder {encoder_name!r}, depth {encoder_depth} and decoder channels "
                "{decoder_channels}".format(**{k: theirs.get(k) for k in _ARCHITECTURE_KEYS})
                + f", and this model differs in {', '.join(different)}")
    return None


def init_from_model(model: torch.nn.Module, folder: str | os.PathLike, *, source: str = "the starter model") -> dict:
    """Initialise a whole U-Net (encoder, decoder and, when it fits, head) from a saved model folder.

    The first convolution is adapted to the model's channels: a pretrained stem with c input
    channels gives channel i of a C-channel stem the weights of its channel ``i % c`` times c / C
    (repeated and averaged, as smp does for ImageNet weights). A segmentation head of another
    class count keeps its random initialisation. Of a head with the same classes whose distance
    output (`build_unet(distance=)`) only one of the two has, the class outputs are kept: the
    distance starts afresh, or the folder's is left out.

    Parameters
    ----------
    model : torch.nn.Module
        A network from `build_unet` (its ``workbench_recipe`` gives the architecture).
    folder : path
        A folder saved by `save_model` (``card.json`` + ``weights.pt``), e.g. the starter's.
    source : str
        How messages name the folder.

    Returns
    -------
    dict
        Parameter names: ``"adapted"`` (the first convolution, to other channels),
        ``"classes_kept"`` (head tensors whose class outputs were kept, the distance output
        new or left out) and ``"reinitialised"`` (head tensors left as built).

    Raises
    ------
    WorkbenchError
        When the folder is no model, or its architecture differs from the model's.
    """
    from workbench.deep._models import load_model

    folder = Path(folder)
    recipe = getattr(model, "workbench_recipe", None) or {}
    reason = starter_fits(recipe.get("init_kwargs", {}), folder)
    if reason is not None:
        raise WorkbenchError(
            f"{source} ({folder}) cannot initialise this network: {reason}. Use the architecture it was trained "
            "with (the default preset 'fast'), or start from other weights (none or imagenet)."
        )
    pretrained, card = load_model(folder, device="cpu")
    state = pretrained.state_dict()
    # The classes come first and the distance output last, so with the same classes the class
    # rows are shared whichever of the two heads has a distance output.
    ours_classes = recipe.get("init_kwargs", {}).get("classes", 0) - int(bool(recipe.get("distance")))
    same_classes = ours_classes == card.n_classes
    target = model.state_dict()
    adapted, classes_kept, reinitialised, loaded = [], [], [], {}
    for key, value in target.items():
        theirs = state.get(key)
        if theirs is None:
            raise WorkbenchError(f"{source} ({folder}) has no tensor {key!r}; the folder is not a U-Net of this kind.")
        if theirs.shape == value.shape:
            loaded[key] = theirs
        elif theirs.ndim == 4 and theirs.shape[0] == value.shape[0] and theirs.shape[2:] == value.shape[2:] \
                and not key.startswith("segmentation_head"):
            have, want = theirs.shape[1], value.shape[1]
            index = torch.arange(want) % have
            loaded[key] = theirs[:, index] * (have / want)
            adapted.append(key)
        elif key.startswith("segmentation_head") and same_classes and theirs.shape[1:] == value.shape[1:]:
            loaded[key] = torch.cat([theirs[:card.n_classes], value[card.n_classes:]])
            classes_kept.append(key)
        elif key.startswith("segmentation_head"):
            reinitialised.append(key)
        else:
            raise WorkbenchError(
                f"{source} ({folder}) does not fit: {key} has shape {tuple(theirs.shape)}, the network needs "
                f"{tuple(value.shape)}."
            )
    model.load_state_dict(loaded, strict=False)
    return {"adapted": adapted, "classes_kept": classes_kept, "reinitialised": reinitialised}

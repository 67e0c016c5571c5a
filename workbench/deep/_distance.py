"""The distance target of instance-mode U-Nets, and its loss.

Besides background / interior / boundary, an instance U-Net learns `DISTANCE_OUTPUT`: each object
pixel's distance to its object's edge as a share of that object's largest (StarDist's and
micro-sam's decoders predict such maps for the same reason). Seeds taken at its peaks part
touching nuclei whose shared boundary is faint, where the boundary class alone bridges them
(benchmarks/RESULTS.md, issue 9).

The target is derived from the patch's class targets, so it needs no new label convention:
interior pixels get the Euclidean distance to the nearest non-interior pixel divided by their
interior region's largest, boundary and background pixels get 0. A painted object is whole,
but a patch crops it; an object cut by the patch edge has no known distance and is left out of
the loss, as are pixels nobody painted.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from workbench.conventions import INSTANCE_CLASSES

__all__ = ["DISTANCE_LOSS_WEIGHT", "distance_targets", "distance_loss"]

#: Weight of the distance term beside the class loss (cross-entropy + Dice, about 1 at the start).
#: Four times the mean squared error, the weight the nuclei half split was measured with.
DISTANCE_LOSS_WEIGHT = 4.0

_BACKGROUND, _INTERIOR, _BOUNDARY = (INSTANCE_CLASSES.index(name) for name in ("background", "interior", "boundary"))


def distance_targets(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distance target of a batch of instance class targets, and where it is known.

    Parameters
    ----------
    targets : np.ndarray
        ``(B, H, W)`` integers: -1 not painted, 0 background, 1 interior, 2 boundary.

    Returns
    -------
    target : np.ndarray of float32, shape (B, H, W)
        0-1: distance to the object's edge over the object's largest; 0 off interiors.
    known : np.ndarray of bool, shape (B, H, W)
        Painted background and whole objects (those the patch edge does not cut).

    Examples
    --------
    >>> t = np.zeros((1, 9, 9), np.int64); t[0, 1:8, 1:8] = 2; t[0, 2:7, 2:7] = 1
    >>> target, known = distance_targets(t)
    >>> float(target[0, 4, 4]), float(target[0, 2, 2]), bool(known.all())
    (1.0, 0.3333333432674408, True)
    """
    targets = np.asarray(targets)
    target = np.zeros(targets.shape, np.float32)
    known = targets == _BACKGROUND
    for index, patch in enumerate(targets):
        interior = patch == _INTERIOR
        regions, count = ndi.label(interior)
        if count:
            distance = ndi.distance_transform_edt(interior).astype(np.float32)
            # Each region's largest distance (at least 1); np.maximum.at, not ndimage.maximum with an
            # index, which took 2 ms a patch, 20 % of a CPU training step.
            largest = np.ones(count + 1, np.float32)
            np.maximum.at(largest, regions.ravel(), distance.ravel())
            target[index] = np.where(interior, distance / largest[regions], 0.0)
        objects, n_objects = ndi.label(interior | (patch == _BOUNDARY))
        if n_objects:
            cut = np.zeros(n_objects + 1, bool)
            cut[np.concatenate([objects[0], objects[-1], objects[:, 0], objects[:, -1]])] = True
            cut[0] = True
            known[index] |= ~cut[objects]
    return target, known


def distance_loss(output: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the sigmoid of `output` (``(B, H, W)`` raw scores) where `known`.

    Zero (with a gradient) when nothing is known.
    """
    if not bool(known.any()):
        return output.sum() * 0.0
    return F.mse_loss(torch.sigmoid(output.float())[known], target[known])

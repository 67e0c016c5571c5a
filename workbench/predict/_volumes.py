"""3-D instances of z-stacks from a 2-D model: split by the painted objects' shape, threshold chosen on them.

A 2-D model sees one plane at a time, so it cannot mark the top and bottom of a nucleus as
boundary: the interiors of nuclei stacked along z join, and boundary-seeded watershed merges
them (3-D AP@0.5 0.27 on the real nuclei volume). Their shape still tells them apart: two round
bodies meet at a neck, and peaks of the distance to the background (measured with the objects'
own z-scale, so a flat nucleus counts as round) seed one object each (0.74 from the same
probabilities). What a "round" object is comes from the objects the user painted whole through
the stack, and the foreground threshold is the one whose instances fit those objects best.

Example
-------
>>> labels = np.ones((12, 40, 40), np.uint8)
>>> labels[2:8, 5:20, 5:20] = 2
>>> labels[3:9, 22:36, 8:22] = 2
>>> labels[1:7, 20:34, 24:38] = 2
>>> shape = painted_shape([labels])
>>> shape.objects, shape.z_scale, shape.options()["min_distance"]
(3, 2.333, 4)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["PaintedShape", "VolumeCalibration", "painted_shape", "choose_middle_of_best", "calibrate_volume_instances",
           "FOREGROUND_CANDIDATES", "CALIBRATION_TOLERANCE", "painted_region"]

#: Foreground thresholds a volume's instances may use; the painted objects choose.
FOREGROUND_CANDIDATES = (0.4, 0.5, 0.6, 0.7)
#: Candidates scoring within this of the best count as equally good (the middle one wins).
CALIBRATION_TOLERANCE = 0.002
#: Fewer whole painted objects than this say too little about the shape: boundary seeds stay.
MIN_SHAPE_OBJECTS = 3
#: Seeds closer than this share of the typical diameter belong to one object.
SEED_SPACING_FRACTION = 0.25
_Z_SCALE_RANGE = (0.25, 8.0)
_OBJECT = 2  # the project convention's object value (store._labels.OBJECT; not imported: predict sits below store)


@dataclass(frozen=True)
class PaintedShape:
    """The typical object painted whole through a stack, in voxels.

    Attributes
    ----------
    z_scale : float
        In-plane pixels one z-step spans for the objects' shape: their median width over their
        median depth (2.5 for nuclei 15 pixels wide and 6 planes deep).
    diameter : float
        Median in-plane width in pixels.
    objects : int
        How many painted objects this rests on.
    """

    z_scale: float
    diameter: float
    objects: int

    def options(self) -> dict:
        """Settings of `instances_from_probabilities` that split volumes by this shape."""
        return {"seeds": "shape", "spacing": (self.z_scale, 1.0, 1.0),
                "min_distance": max(2, int(round(SEED_SPACING_FRACTION * self.diameter)))}


@dataclass(frozen=True)
class VolumeCalibration:
    """The foreground threshold chosen on painted objects, with the scores behind the choice.

    ``scores`` maps each candidate threshold to the painted objects' mean best-match IoU.
    """

    foreground_threshold: float
    score: float
    objects: int
    scores: dict = field(default_factory=dict)


def painted_shape(label_volumes: Iterable[np.ndarray], object_value: int = _OBJECT) -> PaintedShape | None:
    """The median shape of the objects painted in these (Z, Y, X) label volumes; None with too few.

    Depth is taken from objects that do not touch the stack's top or bottom, width from the y
    and x extents of objects that do not touch the sides across that axis (each falling back to
    all objects), so objects cut by the volume's faces do not make the typical one look
    flatter or thinner than it is.
    """
    depths, widths, depths_all, widths_all = [], [], [], []
    for labels in label_volumes:
        labels = np.asarray(labels)
        if labels.ndim != 3:
            continue
        objects, count = ndi.label(labels == object_value, structure=ndi.generate_binary_structure(3, 1))
        for box in ndi.find_objects(objects):
            if box is None:
                continue
            (z0, z1), (y0, y1), (x0, x1) = ((s.start, s.stop) for s in box)
            depths_all.append(z1 - z0)
            widths_all.append(max(y1 - y0, x1 - x0))
            if z0 > 0 and z1 < labels.shape[0]:
                depths.append(z1 - z0)
            # Each in-plane extent counts where the object is whole along that axis.
            if y0 > 0 and y1 < labels.shape[1]:
                widths.append(y1 - y0)
            if x0 > 0 and x1 < labels.shape[2]:
                widths.append(x1 - x0)
    if len(depths_all) < MIN_SHAPE_OBJECTS:
        return None
    depth = float(np.median(depths if len(depths) >= MIN_SHAPE_OBJECTS else depths_all))
    width = float(np.median(widths if len(widths) >= MIN_SHAPE_OBJECTS else widths_all))
    z_scale = float(np.clip(width / max(depth, 1.0), *_Z_SCALE_RANGE))
    return PaintedShape(z_scale=round(z_scale, 3), diameter=width, objects=len(depths_all))


def painted_region(labels: np.ndarray, margin: int, object_value: int = _OBJECT) -> tuple[slice, ...] | None:
    """The box around the painted objects of a (Z, Y, X) label volume, `margin` pixels wider in the
    plane (one plane along z); None when nothing is painted as an object."""
    labels = np.asarray(labels)
    where = np.nonzero(labels == object_value)
    if not where[0].size:
        return None
    reach = (1, margin, margin)
    return tuple(slice(max(int(w.min()) - r, 0), min(int(w.max()) + r + 1, n))
                 for w, r, n in zip(where, reach, labels.shape))


def choose_middle_of_best(scores: dict, tolerance: float = CALIBRATION_TOLERANCE):
    """The middle (in sorted order) of the keys scoring within `tolerance` of the best.

    A few painted objects often score neighbouring settings the same; the middle of the tied
    range is the safer choice than its edge.

    >>> choose_middle_of_best({0.4: 0.70, 0.5: 0.75, 0.6: 0.751, 0.7: 0.74})
    0.6
    >>> choose_middle_of_best({0.4: 0.8, 0.5: 0.8, 0.6: 0.8})
    0.5
    """
    best = max(scores.values())
    tied = sorted(key for key, score in scores.items() if score >= best - tolerance)
    return tied[len(tied) // 2]


def calibrate_volume_instances(windows: Sequence[tuple[np.ndarray, np.ndarray]], options: dict,
                               candidates: Sequence[float] = FOREGROUND_CANDIDATES) -> VolumeCalibration | None:
    """Choose the foreground threshold whose 3-D instances fit the painted objects best.

    Parameters
    ----------
    windows : sequence of (probabilities (K, Z, Y, X), labels (Z, Y, X))
        The model's probabilities over a region of a stack and the label layer of that region
        (project convention), e.g. the `painted_region` of each labelled stack.
    options : dict
        The other settings of `instances_from_probabilities` (seeds, spacing, min_size...).

    Returns
    -------
    VolumeCalibration or None
        None when no window holds a painted object.
    """
    from workbench.predict._instances import instances_from_probabilities

    painted = []
    for probabilities, labels in windows:
        objects, count = ndi.label(np.asarray(labels) == _OBJECT, structure=ndi.generate_binary_structure(3, 1))
        if count:
            painted.append((probabilities, objects, count))
    if not painted:
        return None
    scores = {}
    for threshold in candidates:
        ious = []
        for probabilities, objects, count in painted:
            instances = instances_from_probabilities(probabilities, **{**options, "foreground_threshold": threshold})
            ious.extend(_best_match_ious(objects, count, instances))
        scores[float(threshold)] = float(np.mean(ious))
    chosen = choose_middle_of_best(scores)
    return VolumeCalibration(foreground_threshold=chosen, score=scores[chosen],
                             objects=sum(count for _, _, count in painted), scores=scores)


def _best_match_ious(objects: np.ndarray, count: int, instances: np.ndarray) -> list[float]:
    """For each painted object, its IoU with the predicted instance that overlaps it most (0 if none)."""
    inside = objects > 0
    pairs, overlap = np.unique(np.stack([objects[inside], instances[inside]]), axis=1, return_counts=True)
    painted_size = np.bincount(objects.ravel(), minlength=count + 1)
    predicted_size = np.bincount(instances.ravel())
    best = np.zeros(count + 1)
    for (obj, inst), n in zip(pairs.T, overlap):
        if inst == 0:
            continue
        iou = n / (painted_size[obj] + predicted_size[inst] - n)
        best[obj] = max(best[obj], iou)
    return best[1:].tolist()

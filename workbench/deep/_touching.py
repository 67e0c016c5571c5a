"""Touching pairs made from the user's own painted objects (instance mode).

Partial labels rarely show two painted objects touching: a user paints isolated nuclei whole
because they are easy to outline. The boundary class then only ever lies between an object and
background, and a model trained on it merges touching nuclei whose contact is faint, run by run
in a different way (the spread measured in benchmarks/RESULTS.md, "Where the spread comes from").

`TouchingPairs` places a copy of one painted object against another painted object in a training
patch, the way copy-paste augmentation does for instance segmentation (Ghiasi et al., 2021,
"Simple Copy-Paste"), and writes the boundary between them into the targets with the band width
the labels already use. Where the copy covers the other object the brighter (or, for dark objects,
the darker) value is kept, so the contact can be as faint as a real one; elsewhere the copy's
pixels replace what was there. Only painted objects are copied, so every pasted pixel's target is
one the user painted; the copy never adds labels outside its own outline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["TouchingPairs"]

#: At most this many painted objects are kept as copies (chosen at random): enough variety, bounded memory.
_MAX_COPIES = 512
#: Objects smaller than this many pixels (scribbles, slivers) are neither copied nor pasted against.
_MIN_PIXELS = 16
#: The copy is pushed up to this share of its radius into the other object: touching to overlapping.
_MAX_OVERLAP = 0.25


@dataclass(frozen=True)
class _Copy:
    image: np.ndarray  # (C, h, w) normalised intensities of the object's box
    targets: np.ndarray  # (h, w) 1 interior / 2 boundary inside the object, -1 outside it
    mask: np.ndarray  # (h, w) bool, the object
    brighter: np.ndarray  # (C,) bool: the object is brighter than its surroundings in that channel


class TouchingPairs:
    """Paste copies of painted objects against other painted objects in training patches.

    Parameters
    ----------
    samples : sequence of (image, targets)
        The training images (``CYX``) and their instance targets (``-1`` ignore, ``0``
        background, ``1`` interior, ``2`` boundary) with the held-out objects already removed.
    normalizer : callable
        Maps a ``CYX`` crop to the intensities the model trains on.
    probability : float
        Share of patches that get a copy (when they hold a painted object).
    max_size : int
        Objects whose box is larger than this are not copied (the patch side / 2 suits).
    rng : numpy.random.Generator
        Chooses the copies kept, and per patch the copy, its side, turn and overlap.
    """

    def __init__(self, samples, normalizer, *, probability: float, max_size: int, rng: np.random.Generator):
        self.probability = float(probability)
        self.rng = rng
        self.copies: list[_Copy] = []
        widths: list[int] = []
        for image, targets in samples:
            self._collect(image, targets, normalizer, max_size, widths)
        if len(self.copies) > _MAX_COPIES:
            keep = np.sort(rng.choice(len(self.copies), _MAX_COPIES, replace=False))
            self.copies = [self.copies[k] for k in keep]
        #: The band the labels call boundary, read off the painted objects (their deepest boundary pixel).
        self.boundary_width = int(np.median(widths)) if widths else 2

    def __bool__(self) -> bool:
        return self.probability > 0 and bool(self.copies)

    def _collect(self, image, targets: np.ndarray, normalizer, max_size: int, widths: list[int]) -> None:
        objects, count = ndimage.label(targets >= 1)
        height, width = targets.shape
        for index, box in enumerate(ndimage.find_objects(objects), start=1):
            if box is None:
                continue
            (y0, y1), (x0, x1) = (box[0].start, box[0].stop), (box[1].start, box[1].stop)
            if y0 == 0 or x0 == 0 or y1 == height or x1 == width:  # cut by the image edge: not whole
                continue
            if y1 - y0 > max_size or x1 - x0 > max_size:
                continue
            # One pixel of surroundings tells whether the object is brighter or darker than them.
            ya, yb, xa, xb = y0 - 1, y1 + 1, x0 - 1, x1 + 1
            window_targets = targets[ya:yb, xa:xb]
            mask = objects[ya:yb, xa:xb] == index
            if mask.sum() < _MIN_PIXELS or (window_targets == 1)[mask].sum() == 0:
                continue
            crop = normalizer(np.asarray(image[:, ya:yb, xa:xb]))
            around = ndimage.binary_dilation(mask) & ~mask & (window_targets == 0)
            inside = crop[:, mask].mean(axis=1)
            outside = crop[:, around].mean(axis=1) if around.any() else crop[:, ~mask].mean(axis=1)
            own_targets = np.where(mask, window_targets, -1)
            depth = ndimage.distance_transform_cdt(np.pad(mask, 1), metric="taxicab")[1:-1, 1:-1]
            if (own_targets == 2).any():
                widths.append(int(depth[own_targets == 2].max()))
            self.copies.append(_Copy(crop.astype(np.float32), own_targets.astype(np.int64), mask, inside > outside))

    def __call__(self, image: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """With the set probability, paste one copy against a painted object of this (normalised) patch.

        Parameters
        ----------
        image : (C, H, W) float32
        targets : (H, W) int64

        Returns
        -------
        image, targets
            New arrays when a copy was pasted, else the inputs.
        """
        if not self or self.rng.random() >= self.probability:
            return image, targets
        image, targets, _ = self.paste(image, targets)
        return image, targets

    def paste(self, image: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Paste one copy against a painted object of the patch; also return the copy's pixels (or None)."""
        objects, count = ndimage.label(targets >= 1)
        if count == 0 or not self.copies:
            return image, targets, None
        sizes = np.bincount(objects.ravel(), minlength=count + 1)[1:]
        candidates = np.flatnonzero(sizes >= _MIN_PIXELS) + 1
        if candidates.size == 0:
            return image, targets, None
        target_object = objects == int(self.rng.choice(candidates))
        copy = self._turned(self.copies[int(self.rng.integers(len(self.copies)))])
        placed = self._place(copy.mask, target_object)
        if placed is None:
            return image, targets, None
        return self._paste(image, targets, copy, placed)

    def _turned(self, copy: _Copy) -> _Copy:
        turns, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))

        def turn(array: np.ndarray) -> np.ndarray:
            array = np.rot90(array, turns, axes=(-2, -1))
            return np.ascontiguousarray(array[..., ::-1] if flip else array)

        return _Copy(turn(copy.image), turn(copy.targets), turn(copy.mask), copy.brighter)

    def _place(self, mask: np.ndarray, target_object: np.ndarray) -> tuple[int, int] | None:
        """Top-left corner that puts `mask` against `target_object`, from a random side, or None."""
        height, width = target_object.shape
        ys, xs = np.nonzero(target_object)
        centre = np.array([ys.mean(), xs.mean()])
        my, mx = np.nonzero(mask)
        own_centre = np.array([my.mean(), mx.mean()])
        angle = self.rng.uniform(0, 2 * np.pi)
        direction = np.array([np.sin(angle), np.cos(angle)])
        radius = np.sqrt(mask.sum() / np.pi)
        reach = int(np.ceil(np.ptp(ys) + np.ptp(xs) + mask.shape[0] + mask.shape[1])) + 2
        grown = ndimage.binary_dilation(target_object)
        corner = None
        for distance in range(reach):
            y0, x0 = np.round(centre + direction * distance - own_centre).astype(int)
            if not _overlaps(grown, mask, y0, x0):
                corner = (y0, x0)
                break
        if corner is None:
            return None
        # Step back towards the object: from just touching to overlapping by up to a quarter radius.
        back = self.rng.uniform(1.0, 1.0 + _MAX_OVERLAP * radius)
        y0, x0 = np.round(np.array(corner) - direction * back).astype(int)
        if not (-mask.shape[0] < y0 < height and -mask.shape[1] < x0 < width):
            return None
        return int(y0), int(x0)

    def _paste(self, image: np.ndarray, targets: np.ndarray, copy: _Copy, corner: tuple[int, int]):
        height, width = targets.shape
        y0, x0 = corner
        h, w = copy.mask.shape
        ya, yb, xa, xb = max(y0, 0), min(y0 + h, height), max(x0, 0), min(x0 + w, width)
        if ya >= yb or xa >= xb:
            return image, targets, None
        part = (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
        mask = np.zeros((height, width), bool)
        mask[ya:yb, xa:xb] = copy.mask[part]
        if not mask.any():
            return image, targets, None
        pasted = np.zeros_like(image)
        pasted[:, ya:yb, xa:xb] = copy.image[(slice(None),) + part]
        was_object = targets >= 1
        out_image = image.copy()
        replace = mask & ~was_object
        out_image[:, replace] = pasted[:, replace]
        over = mask & was_object
        if over.any():
            keep = np.where(copy.brighter[:, None], np.maximum(image[:, over], pasted[:, over]),
                            np.minimum(image[:, over], pasted[:, over]))
            out_image[:, over] = keep
        out_targets = targets.copy()
        own = np.full((height, width), -1, np.int64)
        own[ya:yb, xa:xb] = copy.targets[part]
        out_targets[mask] = own[mask]
        # The objects it now touches get a boundary band of the labels' width along the contact.
        near = ndimage.distance_transform_cdt(~mask, metric="taxicab") <= self.boundary_width
        out_targets[near & was_object & ~mask] = 2
        return out_image, out_targets, mask


def _overlaps(grown: np.ndarray, mask: np.ndarray, y0: int, x0: int) -> bool:
    height, width = grown.shape
    h, w = mask.shape
    ya, yb, xa, xb = max(y0, 0), min(y0 + h, height), max(x0, 0), min(x0 + w, width)
    if ya >= yb or xa >= xb:
        return False
    return bool((grown[ya:yb, xa:xb] & mask[ya - y0:yb - y0, xa - x0:xb - x0]).any())

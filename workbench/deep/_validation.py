"""Held-out validation for the trainer: what is held out, how it is scored, and the hint to the user.

In instance mode whole painted objects (with the background ring around them) are held out of
the training loss and scored the way a user sees results: the model's probabilities go through
the product's own seeded watershed, and each held-out object is matched to the predicted
instance that overlaps it most. Their mean IoU ("object IoU") tracks instance AP far better than
the validation loss on a few pixel blocks, which rewards confident pixels rather than tight,
separate objects. Other modes hold out square blocks of painted pixels and score per-class IoU.

The trend of that score over the run gives the plain hint shown after training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage as ndi

__all__ = ["HeldOut", "hold_out", "validate", "training_hint", "HINT_IMPROVING", "HINT_PLATEAU"]

HINT_IMPROVING = "still improving — training longer should help"
HINT_PLATEAU = "no longer improving — paint where the model is wrong"
#: The held-out score must have risen by this much over the last third of the run to count as improving.
IMPROVING_MARGIN = 0.005
_MAX_VAL_BLOCKS = 64
_MAX_VAL_OBJECTS = 48
#: Background pixels this close to a held-out object are held out with it (its painted surroundings).
_RING = 3
#: Context around a held-out region, so its prediction does not suffer from the crop's edges.
_MARGIN = 32
_FOUR_CONNECTED = ndi.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class HeldOut:
    """One held-out region of one sample.

    Attributes
    ----------
    index : int
        Sample index.
    box : tuple of int
        ``(y0, y1, x0, x1)`` of the region (object plus ring, or a block).
    object_mask : np.ndarray or None
        Boolean mask of the held-out painted object within `box` (instance mode), else None.
    """

    index: int
    box: tuple[int, int, int, int]
    object_mask: np.ndarray | None = None


def hold_out(samples, *, fraction: float, block: int, instance: bool, rng: np.random.Generator):
    """Split the painted pixels into training targets and held-out regions.

    Parameters
    ----------
    samples : list of (image, targets)
        Targets -1 = not painted; in instance mode 0 background, 1 interior, 2 boundary.
    fraction : float
        Share of painted objects (instance mode) or painted blocks (otherwise) to hold out.
    block : int
        Block side for block hold-out.
    instance : bool
        Hold out whole objects with their background ring.
    rng : numpy Generator

    Returns
    -------
    train_targets : list of np.ndarray
        Targets with the held-out pixels set to -1 (copies only where something was held out).
    held_out : list of HeldOut
    """
    if fraction <= 0:
        return [targets for _, targets in samples], []
    if instance:
        held = _hold_out_objects(samples, fraction, rng)
        if held:
            return _blank(samples, held), held
    held = _hold_out_blocks(samples, fraction, block, rng)
    return _blank(samples, held), held


def _blank(samples, held: Sequence[HeldOut]) -> list[np.ndarray]:
    train_targets = [targets for _, targets in samples]
    for region in held:
        if train_targets[region.index] is samples[region.index][1]:
            train_targets[region.index] = samples[region.index][1].copy()
        y0, y1, x0, x1 = region.box
        window = train_targets[region.index][y0:y1, x0:x1]
        if region.object_mask is None:
            window[...] = -1
        else:
            window[_held_pixels(samples[region.index][1][y0:y1, x0:x1], region.object_mask)] = -1
    return train_targets


def _held_pixels(targets: np.ndarray, object_mask: np.ndarray) -> np.ndarray:
    """The object and the painted background within the ring around it."""
    ring = ndi.binary_dilation(object_mask, structure=_FOUR_CONNECTED, iterations=_RING) & (targets == 0)
    return object_mask | ring


def _hold_out_objects(samples, fraction: float, rng: np.random.Generator) -> list[HeldOut]:
    candidates = []
    for index, (_, targets) in enumerate(samples):
        objects, count = ndi.label(targets >= 1, structure=_FOUR_CONNECTED)
        height, width = targets.shape
        for label, where in enumerate(ndi.find_objects(objects), start=1):
            if where is None:
                continue
            ys, xs = where
            # An object cut by the image edge was not painted whole: no fair test of its outline.
            if ys.start == 0 or xs.start == 0 or ys.stop == height or xs.stop == width:
                continue
            y0, y1 = max(ys.start - _RING, 0), min(ys.stop + _RING, height)
            x0, x1 = max(xs.start - _RING, 0), min(xs.stop + _RING, width)
            candidates.append(HeldOut(index, (y0, y1, x0, x1), objects[y0:y1, x0:x1] == label))
    # Fewer than 4 objects: holding one out would take too much from training.
    if len(candidates) < 4:
        return []
    n_val = min(max(1, int(round(fraction * len(candidates)))), _MAX_VAL_OBJECTS)
    return [candidates[i] for i in sorted(rng.permutation(len(candidates))[:n_val])]


def _hold_out_blocks(samples, fraction: float, block: int, rng: np.random.Generator) -> list[HeldOut]:
    candidates = []
    for index, (_, targets) in enumerate(samples):
        height, width = targets.shape
        for y0 in range(0, height, block):
            for x0 in range(0, width, block):
                y1, x1 = min(y0 + block, height), min(x0 + block, width)
                if (targets[y0:y1, x0:x1] >= 0).any():
                    candidates.append(HeldOut(index, (y0, y1, x0, x1)))
    n_val = int(round(fraction * len(candidates)))
    if n_val == 0 and len(candidates) >= 4:
        n_val = 1
    n_val = min(n_val, len(candidates) - 1, _MAX_VAL_BLOCKS)
    return [candidates[i] for i in sorted(rng.permutation(len(candidates))[:max(n_val, 0)])]


def held_out_pixels(samples, held: Sequence[HeldOut]) -> int:
    """How many painted pixels the held-out regions take from training."""
    total = 0
    for region in held:
        y0, y1, x0, x1 = region.box
        targets = samples[region.index][1][y0:y1, x0:x1]
        if region.object_mask is None:
            total += int((targets >= 0).sum())
        else:
            total += int(_held_pixels(targets, region.object_mask).sum())
    return total


def validate(model, samples, held: Sequence[HeldOut], normalizer, stride: int, device, loss_fn,
             n_classes: int, *, min_size: int) -> dict[str, Any]:
    """Score `model` on the held-out regions.

    Returns
    -------
    dict
        ``val_loss`` (the training loss on held-out painted pixels), ``val_accuracy``,
        ``val_mean_iou`` (per-class pixel IoU) and ``val_score``: in instance mode the mean IoU
        of the held-out objects with their best-matching predicted instance
        (``val_object_iou``, with ``val_objects_found``, the share matched at IoU >= 0.5);
        otherwise the mean per-class IoU. Empty without held-out regions.
    """
    if not held:
        return {}
    from workbench.deep._models import pad_to_multiple

    was_training = model.training
    model.eval()
    all_logits, all_targets, object_ious = [], [], []
    with torch.inference_mode():
        for region in held:
            image, targets = samples[region.index]
            height, width = targets.shape
            y0, y1, x0, x1 = region.box
            wy0, wx0 = max(y0 - _MARGIN, 0), max(x0 - _MARGIN, 0)
            wy1, wx1 = min(y1 + _MARGIN, height), min(x1 + _MARGIN, width)
            window = normalizer(np.asarray(image[:, wy0:wy1, wx0:wx1]))
            tensor = pad_to_multiple(torch.from_numpy(window)[None].to(device), stride)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                logits = model(tensor.contiguous(memory_format=torch.channels_last))
            logits = logits[0, :, :wy1 - wy0, :wx1 - wx0].float()
            inner = logits[:, y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]
            block_targets = np.ascontiguousarray(targets[y0:y1, x0:x1])
            if region.object_mask is None:
                scored = block_targets >= 0
            else:
                scored = _held_pixels(block_targets, region.object_mask)
                probabilities = torch.softmax(logits, dim=0).cpu().numpy()
                truth = np.zeros((wy1 - wy0, wx1 - wx0), bool)
                truth[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0] = region.object_mask
                object_ious.append(_best_match_iou(probabilities, truth, min_size))
            scored_t = torch.from_numpy(scored).to(device)
            all_logits.append(inner.permute(1, 2, 0)[scored_t])
            all_targets.append(torch.from_numpy(block_targets).to(device)[scored_t])
    if was_training:
        model.train()
    logits = torch.cat(all_logits)
    targets = torch.cat(all_targets)
    predicted = logits.argmax(1)
    metrics: dict[str, Any] = {
        "val_loss": float(loss_fn(logits, targets)),
        "val_accuracy": float((predicted == targets).float().mean()),
    }
    ious = []
    for k in range(n_classes):
        union = int(((predicted == k) | (targets == k)).sum())
        if union and int((targets == k).sum()):
            ious.append(int(((predicted == k) & (targets == k)).sum()) / union)
    metrics["val_mean_iou"] = float(np.mean(ious)) if ious else None
    if object_ious:
        metrics["val_object_iou"] = float(np.mean(object_ious))
        metrics["val_objects_found"] = float(np.mean(np.asarray(object_ious) >= 0.5))
        metrics["val_objects"] = len(object_ious)
        metrics["val_score"] = metrics["val_object_iou"]
    else:
        metrics["val_score"] = metrics["val_mean_iou"]
    return metrics


def _best_match_iou(probabilities: np.ndarray, truth: np.ndarray, min_size: int) -> float:
    """IoU of a painted object with the predicted instance that overlaps it most (0 when none does)."""
    from workbench.predict import instances_from_probabilities

    instances = instances_from_probabilities(probabilities, min_size=min_size)
    overlapping = instances[truth]
    overlapping = overlapping[overlapping > 0]
    if overlapping.size == 0:
        return 0.0
    best = int(np.bincount(overlapping).argmax())
    predicted = instances == best
    intersection = int((predicted & truth).sum())
    return intersection / int((predicted | truth).sum())


def min_object_size(samples) -> int:
    """A tenth of the median painted object's area, at least 16 pixels (as the product's post-processing)."""
    areas = []
    for _, targets in samples:
        objects, count = ndi.label(targets >= 1, structure=_FOUR_CONNECTED)
        if count:
            areas.append(np.bincount(objects.ravel())[1:])
    if not areas:
        return 16
    return max(16, int(0.1 * np.median(np.concatenate(areas))))


def training_hint(history: Sequence[dict[str, Any]]) -> tuple[str | None, str | None]:
    """Whether the held-out score still rises at the end of the run, as a trend word and a plain hint.

    Compares the score at the end with the best score in the first two thirds of the run. The
    trainer averages weights (EMA), so the score moves smoothly and this comparison is not at the
    mercy of one lucky evaluation.

    Returns
    -------
    trend : {"improving", "plateau"} or None
        None without held-out scores.
    hint : str or None
        `HINT_IMPROVING` or `HINT_PLATEAU`.
    """
    scored = [(log["steps"], log["val_score"]) for log in history if log.get("val_score") is not None]
    if not scored:
        return None, None
    last_steps, last_score = scored[-1]
    earlier = [score for steps, score in scored if steps <= 2 * last_steps / 3]
    if len(scored) < 3 or not earlier or last_score > max(earlier) + IMPROVING_MARGIN:
        return "improving", HINT_IMPROVING
    return "plateau", HINT_PLATEAU

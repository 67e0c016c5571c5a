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

from workbench.conventions import MIN_OBJECT_FRACTION, MIN_OBJECT_PIXELS
# Candidates whose held-out object IoU is within CALIBRATION_TOLERANCE of the best count as equally
# good: the one tolerance and tie rule of every threshold choice, 2-D and 3-D.
from workbench.predict._volumes import CALIBRATION_TOLERANCE, choose_middle_of_best

__all__ = ["HeldOut", "InstanceCalibration", "hold_out", "validate", "calibrate_instances", "training_hint",
           "HINT_IMPROVING", "HINT_PLATEAU", "THRESHOLD_CANDIDATES",
           "DISTANCE_CANDIDATES"]

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
#: Post-processing thresholds a model may choose on its held-out objects; the first is the default
#: (what `instances_from_probabilities` uses for a model that had nothing to choose on).
THRESHOLD_CANDIDATES: tuple[dict[str, float], ...] = tuple(
    {"boundary_threshold": boundary, "foreground_threshold": foreground}
    for boundary, foreground in [(0.3, 0.5)] + [(b, f) for b in (0.1, 0.15, 0.2, 0.25, 0.3) for f in (0.5, 0.6, 0.7)
                                                if (b, f) != (0.3, 0.5)]
)
#: The same for a model with a distance output, seeded at the distance's peaks: held-out objects
#: choose how far the foreground reaches; the first is the default, as above. How deep a peak must be stays
#: `PEAK_PROMINENCE`: isolated objects cannot show the merges a shallower criterion avoids, nor,
#: being so few, the splits it makes (measured with the earlier fixed-level cores: taking the highest
#: level the held-out objects scored as well chose 0.7 in 4 runs of 4 and cut nuclei of the test
#: half, AP@0.5 0.75-0.96; benchmarks/RESULTS.md).
DISTANCE_CANDIDATES: tuple[dict[str, Any], ...] = tuple(
    {"seeds": "distance", "foreground_threshold": foreground} for foreground in (0.5, 0.6, 0.7))


@dataclass(frozen=True)
class InstanceCalibration:
    """The post-processing thresholds chosen on held-out objects, with the scores behind the choice.

    Attributes
    ----------
    options : dict
        ``boundary_threshold`` and ``foreground_threshold`` for `instances_from_probabilities`.
    score, default_score : float
        Mean held-out object IoU with these options and with the defaults.
    objects : int
        How many held-out objects the choice rests on.
    """

    options: dict
    score: float
    default_score: float
    objects: int


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
             n_classes: int, *, min_size: int, instance_options: dict | None = None) -> dict[str, Any]:
    """Score `model` on the held-out regions.

    Parameters
    ----------
    instance_options : dict or None
        Post-processing thresholds for the held-out objects (`instances_from_probabilities`
        keywords); None scores with its defaults.

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
    all_logits, all_targets, object_ious = [], [], []
    for region, logits in zip(held, _region_logits(model, samples, held, normalizer, stride, device)):
        targets = samples[region.index][1]
        y0, y1, x0, x1 = region.box
        inner = logits[(slice(0, n_classes),) + _box_in_window(region, targets)]
        block_targets = np.ascontiguousarray(targets[y0:y1, x0:x1])
        if region.object_mask is None:
            scored = block_targets >= 0
        else:
            scored = _held_pixels(block_targets, region.object_mask)
            probabilities, truth = _object_window(logits, region, targets, n_classes=n_classes)
            object_ious.append(_best_match_iou(probabilities, truth, min_size, instance_options or {}))
        scored_t = torch.from_numpy(scored).to(logits.device)
        all_logits.append(inner.permute(1, 2, 0)[scored_t])
        all_targets.append(torch.from_numpy(block_targets).to(logits.device)[scored_t])
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


def calibrate_instances(model, samples, held: Sequence[HeldOut], normalizer, stride: int, device, *,
                        min_size: int, tta: bool = True) -> InstanceCalibration | None:
    """Choose the post-processing thresholds that fit `model` best on its held-out painted objects.

    How sure a model is of boundaries and edges depends on how it was trained (a U-Net trained
    with class balancing and Dice is surer, and draws foreground wider, than a forest), so one
    fixed pair of thresholds serves some models and not others. Each candidate of
    `THRESHOLD_CANDIDATES` is scored like `validate` scores the model (mean IoU of each held-out
    object with its best-matching instance, the neighbourhood included so merges and splits
    count); of the pairs within `CALIBRATION_TOLERANCE` of the best, the middle one (sorted by
    boundary, then foreground threshold) wins. With `tta` (the default, as the product predicts a U-Net) the
    held-out windows are predicted averaged over the eight symmetries of the square.

    Returns
    -------
    InstanceCalibration or None
        None without held-out objects (nothing to choose on).
    """
    regions = [region for region in held if region.object_mask is not None]
    n_classes = _n_classes(model)
    windows = [_object_window(logits, region, samples[region.index][1], softmax=not tta, n_classes=n_classes)
               for region, logits in zip(regions, _region_logits(model, samples, regions, normalizer, stride, device,
                                                                 tta=tta))]
    if not windows:
        return None
    candidates = DISTANCE_CANDIDATES if _has_distance(model) else THRESHOLD_CANDIDATES
    scores = {}
    for options in candidates:
        scores[tuple(sorted(options.items()))] = float(np.mean(
            [_best_match_iou(probabilities, truth, min_size, options) for probabilities, truth in windows]))
    default_key = tuple(sorted(candidates[0].items()))
    # Isolated held-out objects cannot tell thresholds that only matter between touching nuclei
    # apart, so several often tie: take the middle of the tied range, not its edge (measured: on
    # the nuclei half split boundary thresholds of 0.1 and 0.3 both merge nuclei that 0.15-0.2 keep
    # apart, while the held-out objects scored all four the same). Cutting seeds at their necks
    # (`instances_from_probabilities(neck_ratio=)`) is not among the choices: as a candidate it
    # left the spread and the mean of 14 runs where they were and cut a ringed nucleus at 30 s
    # (benchmarks/RESULTS.md, issue 9), and held-out objects, being isolated, cannot see its gain.
    best_key = choose_middle_of_best(scores, CALIBRATION_TOLERANCE)
    return InstanceCalibration(options=dict(best_key), score=scores[best_key], default_score=scores[default_key],
                               objects=len(windows))


def calibrate_on_objects(model, samples, normalizer, device, *, seed: int,
                         tta: bool = True) -> InstanceCalibration | None:
    """`calibrate_instances` on whole objects of images the model never trained on (every object
    away from the image edges, at most as many as a training run holds out, chosen under `seed`).

    For a model trained on generated images: a fresh draw of the generator has full ground truth,
    so the thresholds rest on many objects instead of the few a run held out of its last pool.
    """
    held = _hold_out_objects(samples, 1.0, np.random.default_rng(seed))
    stride = int(model.encoder.output_stride)
    return calibrate_instances(model, samples, held, normalizer, stride, device, min_size=min_object_size(samples),
                               tta=tta)


def _region_logits(model, samples, held: Sequence[HeldOut], normalizer, stride: int, device, *, tta: bool = False):
    """The model's logits over each held-out region with `_MARGIN` of context: (K, h, w) tensors.

    With `tta`, probabilities averaged over the eight symmetries of the square instead of logits.
    """
    from workbench.deep._models import output_probabilities, pad_to_multiple
    from workbench.predict import predict_symmetries

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            return model(batch.contiguous(memory_format=torch.channels_last)).float()

    n_classes = _n_classes(model)

    def probabilities(batch: np.ndarray) -> np.ndarray:
        # Each symmetry of a window is padded on its own, so no rotation sees padding in the middle.
        tensor = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
        height, width = batch.shape[-2:]
        logits = forward(pad_to_multiple(tensor, stride))[..., :height, :width]
        return output_probabilities(logits, n_classes or logits.shape[1]).cpu().numpy()

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for region in held:
                image, targets = samples[region.index]
                wy0, wy1, wx0, wx1 = _window(region, targets.shape)
                window = normalizer(np.asarray(image[:, wy0:wy1, wx0:wx1]))
                if tta:
                    # Its own name: rebinding `n_classes` here would make `probabilities` take the
                    # distance output for a class (a softmax over all four outputs).
                    n_outputs = probabilities(window[None, :, :1, :1]).shape[1]
                    yield torch.from_numpy(predict_symmetries(probabilities, window[None], n_outputs)[0])
                    continue
                tensor = pad_to_multiple(torch.from_numpy(window)[None].to(device), stride)
                yield forward(tensor)[0, :, :wy1 - wy0, :wx1 - wx0]
    finally:
        if was_training:
            model.train()


def _window(region: HeldOut, shape) -> tuple[int, int, int, int]:
    height, width = shape
    y0, y1, x0, x1 = region.box
    return max(y0 - _MARGIN, 0), min(y1 + _MARGIN, height), max(x0 - _MARGIN, 0), min(x1 + _MARGIN, width)


def _box_in_window(region: HeldOut, targets) -> tuple[slice, slice]:
    """The region's box inside its context window."""
    wy0, _, wx0, _ = _window(region, targets.shape)
    y0, y1, x0, x1 = region.box
    return slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0)


def _has_distance(model) -> bool:
    return bool(getattr(model, "workbench_recipe", {}).get("distance"))


def _n_classes(model) -> int | None:
    """Class outputs of a network from `build_unet` (its outputs less the distance map, if any);
    None for a network without a recipe (all its outputs are classes)."""
    outputs = getattr(model, "workbench_recipe", {}).get("init_kwargs", {}).get("classes")
    return None if outputs is None else int(outputs) - int(_has_distance(model))


def _object_window(logits: torch.Tensor, region: HeldOut, targets, *, softmax: bool = True,
                   n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities over a held-out object's context window (from logits of `n_classes` classes and
    any outputs after them, or as given without `softmax`) and the painted object's mask there."""
    from workbench.deep._models import output_probabilities

    if softmax:
        logits = output_probabilities(logits, logits.shape[0] if n_classes is None else n_classes, dim=0)
    probabilities = logits.cpu().numpy()
    truth = np.zeros(probabilities.shape[1:], bool)
    truth[_box_in_window(region, targets)] = region.object_mask
    return probabilities, truth


def _best_match_iou(probabilities: np.ndarray, truth: np.ndarray, min_size: int, options: dict) -> float:
    """IoU of a painted object with the predicted instance that overlaps it most (0 when none does)."""
    from workbench.predict import instances_from_probabilities

    instances = instances_from_probabilities(probabilities, min_size=min_size, **options)
    overlapping = instances[truth]
    overlapping = overlapping[overlapping > 0]
    if overlapping.size == 0:
        return 0.0
    best = int(np.bincount(overlapping).argmax())
    predicted = instances == best
    intersection = int((predicted & truth).sum())
    return intersection / int((predicted | truth).sum())


def min_object_size(samples) -> int:
    """`MIN_OBJECT_FRACTION` of the median painted object's area, at least `MIN_OBJECT_PIXELS` (as the
    product's post-processing, `workbench.pipeline.min_size_from_labels`, which reads label layers)."""
    areas = []
    for _, targets in samples:
        objects, count = ndi.label(targets >= 1, structure=_FOUR_CONNECTED)
        if count:
            areas.append(np.bincount(objects.ravel())[1:])
    if not areas:
        return MIN_OBJECT_PIXELS
    return max(MIN_OBJECT_PIXELS, int(MIN_OBJECT_FRACTION * np.median(np.concatenate(areas))))


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

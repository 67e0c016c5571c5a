"""Train a U-Net on partial labels: masked loss, patch sampling, time budget, stop, resume.

``train(samples, settings)`` takes (image, targets) pairs where targets are
``-1`` wherever nothing was painted. The loss (cross-entropy with optional
class balancing + soft Dice) sees only annotated pixels. A fraction of the
annotated blocks is held out of the training loss to measure a validation loss;
the held-out score is reported with a hint whether training longer should help.

The model kept is an exponential moving average (EMA) of the weights under a constant learning
rate (after a short warm-up). Nothing in the run depends on when it will end, so a run stopped
by the clock or by the user after N optimiser steps holds exactly the model a run of N steps
would hold (bit-identical on CPU under a seed), and a longer run only averages over more steps.
Training ends after ``epochs`` epochs, after ``minutes`` minutes, or when a stop is requested,
whichever comes first.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from workbench.deep._augment import Augmenter
from workbench.deep._callbacks import Callback, CallbackList
from workbench.deep._device import configure_cpu_threads, pick_device
from workbench.deep._distance import DISTANCE_LOSS_WEIGHT, distance_loss, distance_targets
from workbench.conventions import INSTANCE_CLASSES, MODES as _MODES
from workbench.errors import WorkbenchError
from workbench.validate import whole_number
from workbench.deep._models import ModelCard, build_unet, check_model_fits, load_model, save_model
from workbench.normalize import PercentileNormalizer
from workbench.deep._validation import (InstanceCalibration, calibrate_instances, held_out_pixels, hold_out,
                                        min_object_size, training_hint, validate)

__all__ = ["TrainSettings", "TrainResult", "Trainer", "train", "masked_loss", "INSTANCE_CLASSES"]

_MAX_SAMPLING_POINTS = 2_000_000
_WARMUP_STEPS = 20
#: The EMA's decay ramps up as (1 + t) / (10 + t), so early averages are not dragged by random init.
_EMA_RAMP = 10


@dataclass
class TrainSettings:
    """What to train and for how long.

    Attributes
    ----------
    preset : str
        Model preset (see ``workbench.deep.PRESETS``); ``"fast"`` suits CPUs.
    encoder : str or None
        Replace the preset's encoder (smp name or ``"tu-<timm model>"``).
    width : float
        Decoder width multiplier.
    depth : int or None
        Encoder stages (3-5); None = the preset's.
    weights : None, "imagenet", "starter" or str
        Initialisation (see ``build_unet``): random, an ImageNet encoder, the whole U-Net from the
        shipped starter model, or a weights file / model folder.
    epochs : int
        Upper bound on epochs; an epoch is ``steps_per_epoch`` optimiser steps.
    minutes : float or None
        Time budget; None trains for ``epochs`` only (needed for bit-identical reruns).
    steps_per_epoch : int
        Optimiser steps between validations.
    patch_size : int
        Side of the square training patches. 128 beats 256 for sparse labels in a
        short budget: more optimiser steps, and more of each patch is annotated.
    batch_size : int
        Patches per optimiser step.
    lr : float
        Learning rate of AdamW: a linear warm-up over the first 20 steps, then constant. It does
        not decay towards a planned end, so stopping early or late both leave a good model.
    ema_decay : float
        Decay of the exponential moving average of the weights that is kept as the model
        (0 keeps the last weights instead).
    weight_decay : float
        AdamW weight decay.
    augment : float
        Augmentation strength, 0 (none) to 1 (strong).
    class_balancing : bool
        Weight the cross-entropy by inverse square-root class frequency.
    dice_weight : float
        Weight of the soft Dice term added to the cross-entropy.
    distance : bool
        (Instance mode) Also learn `DISTANCE_OUTPUT`, each object pixel's distance to its edge
        as a share of the object's largest, whose peaks seed the objects (measured on the
        nuclei half split, 15 runs from the starter after 2 minutes: mean AP@0.5 0.926 without
        it, 0.951 with it and its peak seeds; benchmarks/RESULTS.md, issue 9).
        Ignored in semantic mode and when continuing a model (its own outputs are kept).
    val_fraction : float
        Share held out of training for validation (0 = none): in instance mode whole painted
        objects with their background ring (falling back to blocks with fewer than 4 objects),
        otherwise annotated blocks.
    val_block : int
        Side of the blocks that are held out.
    annotated_patch_fraction : float
        Share of patches centred on an annotated pixel (the rest anywhere).
    seed : int
        Seeds weights, patch sampling and augmentation.
    device : str
        ``"auto"`` (CUDA, MPS, CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
    mode : str
        ``"semantic"`` or ``"instance"`` (targets 0 bg, 1 interior, 2 boundary).
    classes : tuple of str or None
        Class names (index = target value); None derives them.
    n_classes : int or None
        Output classes; None = ``len(classes)`` or the largest target + 1.
    """

    preset: str = "fast"
    encoder: str | None = None
    width: float = 1.0
    depth: int | None = None
    weights: str | None = None
    epochs: int = 200
    minutes: float | None = 2.0
    steps_per_epoch: int = 10
    patch_size: int = 128
    batch_size: int = 8
    lr: float = 5e-3
    ema_decay: float = 0.99
    weight_decay: float = 1e-4
    augment: float = 0.5
    class_balancing: bool = True
    dice_weight: float = 1.0
    distance: bool = True
    val_fraction: float = 0.15
    val_block: int = 64
    annotated_patch_fraction: float = 0.9
    seed: int = 0
    device: str = "auto"
    mode: str = "semantic"
    classes: tuple[str, ...] | None = None
    n_classes: int | None = None

    def validate(self) -> "TrainSettings":
        """Check every field; return self.

        Raises
        ------
        WorkbenchError
            Naming the field, the value and what is expected.
        """
        _require_int("epochs", self.epochs, 1)
        _require_int("steps_per_epoch", self.steps_per_epoch, 1)
        _require_int("patch_size", self.patch_size, 32)
        _require_int("batch_size", self.batch_size, 1)
        _require_int("val_block", self.val_block, 8)
        _require_int("seed", self.seed, 0)
        if self.minutes is not None and (not isinstance(self.minutes, (int, float)) or not self.minutes > 0):
            raise WorkbenchError(f"`minutes` must be a positive number or None; got {self.minutes!r}.")
        for name, low, high in (("lr", 0.0, 1.0), ("val_fraction", 0.0, 0.9), ("augment", 0.0, 1.0),
                                ("annotated_patch_fraction", 0.0, 1.0), ("weight_decay", 0.0, 1.0),
                                ("dice_weight", 0.0, 100.0), ("ema_decay", 0.0, 0.9999)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise WorkbenchError(f"`{name}` must be a number in [{low}, {high}]; got {value!r}.")
        if not isinstance(self.distance, bool):
            raise WorkbenchError(f"`distance` must be true or false; got {self.distance!r}.")
        if self.lr == 0:
            raise WorkbenchError("`lr` must be greater than 0; 5e-3 is a good start.")
        if self.mode not in _MODES:
            raise WorkbenchError(f"`mode` must be one of {_MODES}; got {self.mode!r}.")
        if self.n_classes is not None:
            _require_int("n_classes", self.n_classes, 2)
        if self.classes is not None:
            if len(self.classes) < 2:
                raise WorkbenchError(f"`classes` needs at least 2 names (background first); got {self.classes!r}.")
            if self.n_classes is not None and self.n_classes != len(self.classes):
                raise WorkbenchError(
                    f"`n_classes` ({self.n_classes}) disagrees with the {len(self.classes)} names in `classes`."
                )
        if self.mode == "instance" and (self.n_classes or 3) != 3:
            raise WorkbenchError(f"instance mode trains 3 classes (background, interior, boundary); got n_classes={self.n_classes}.")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (stored in the model card)."""
        data = asdict(self)
        data["classes"] = None if self.classes is None else list(self.classes)
        return data


@dataclass
class TrainResult:
    """What training produced.

    Attributes
    ----------
    model : torch.nn.Module
        The kept weights (the EMA at the last step), eval mode.
    card : ModelCard
        Recipe, normalisation, settings and metrics; save both with `save`.
    history : list of dict
        One logs dict per epoch (see ``workbench.deep.Callback``).
    best_metrics : dict
        Metrics of the kept weights: held-out scores (``val_score``, ``val_object_iou``...),
        ``steps`` (optimiser steps of this run), ``total_steps`` (including the runs it continued),
        ``trend`` and the plain ``hint``, ``seconds``, ``stop_reason``.
    labelled_pixels : dict
        ``{"total", "train", "validation", "per_class": {name: count}}``.
    stop_reason : str
        ``"epochs"``, ``"time"`` or ``"stopped"``.
    seconds : float
        Wall-clock training time.
    """

    model: torch.nn.Module
    card: ModelCard
    history: list[dict[str, Any]]
    best_metrics: dict[str, Any]
    labelled_pixels: dict[str, Any]
    stop_reason: str
    seconds: float

    @property
    def stopped(self) -> bool:
        """Whether a stop request ended training."""
        return self.stop_reason == "stopped"

    def save(self, directory: str | Path) -> Path:
        """Save model and card with ``workbench.deep.save_model``."""
        return save_model(directory, self.model, self.card)


def masked_loss(logits: torch.Tensor, targets: torch.Tensor, *, class_weights: torch.Tensor | None = None,
                dice_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy plus soft Dice over annotated pixels only.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, K, H, W)`` or ``(N, K)`` raw scores.
    targets : torch.Tensor
        ``(B, H, W)`` or ``(N,)`` int64, -1 = ignore.
    class_weights : torch.Tensor or None
        ``(K,)`` cross-entropy weights.
    dice_weight : float
        Weight of the Dice term.

    Returns
    -------
    torch.Tensor
        Scalar loss; zero (with a gradient) when no pixel is annotated.
    """
    n_classes = logits.shape[1]
    if logits.ndim == 2:  # (N, K) -> (1, K, N, 1), so one dense code path serves both layouts
        logits = logits.t()[None, :, :, None]
        targets = targets[None, :, None]
    logits = logits.float()
    annotated = targets >= 0
    if not bool(annotated.any()):
        return logits.sum() * 0.0
    loss = F.cross_entropy(logits, targets, weight=class_weights, ignore_index=-1)
    if dice_weight > 0:
        # Dense masked sums avoid gathering annotated pixels, which is slow on CPU.
        mask = annotated.unsqueeze(1).to(logits.dtype)
        probabilities = torch.softmax(logits, dim=1) * mask
        one_hot = F.one_hot(targets.clamp(min=0), n_classes).permute(0, 3, 1, 2).to(logits.dtype) * mask
        dims = (0, 2, 3)
        intersection = (probabilities * one_hot).sum(dims)
        denominator = probabilities.sum(dims) + one_hot.sum(dims)
        dice = (2 * intersection + 1.0) / (denominator + 1.0)
        loss = loss + dice_weight * (1.0 - dice.mean())
    return loss


class Trainer:
    """Train a model on partial labels; `fit` runs, `stop` (from any thread) ends it cleanly.

    Parameters
    ----------
    samples : sequence of (image, targets)
        ``image``: ``CYX`` array-like (any dtype; a ``YX`` array is taken as one
        channel); ``targets``: ``YX`` integers, -1 = not annotated, 0..K-1 classes.
    settings : TrainSettings or None
        None uses the defaults.
    callbacks : iterable of Callback
        Observers (progress bars, plots, history).
    init_from : path or None
        A saved model folder to continue training from (after labels changed).
        Its architecture and normalisation are kept; settings' preset, encoder,
        width, depth and weights are then ignored.
    stop_event : threading.Event or None
        Setting it ends training after the current step.
    """

    def __init__(self, samples: Sequence[tuple[Any, Any]], settings: TrainSettings | None = None, *,
                 callbacks: Iterable[Callback] = (), init_from: str | Path | None = None,
                 stop_event: threading.Event | None = None):
        self.settings = (settings if settings is not None else TrainSettings())
        if not isinstance(self.settings, TrainSettings):
            raise WorkbenchError(f"`settings` must be a TrainSettings; got {type(self.settings).__name__}.")
        self.settings.validate()
        self.samples = _check_samples(samples)
        self.callbacks = CallbackList(callbacks)
        self.init_from = None if init_from is None else Path(init_from)
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        #: The weight average being trained (the model `fit` will return) and the normalisation it
        #: expects, for callbacks that score a run along the way; None until `fit` starts.
        self.average_model: torch.nn.Module | None = None
        self.normalizer: PercentileNormalizer | None = None
        self._calibration_data: tuple | None = None

    def calibrate(self) -> InstanceCalibration | None:
        """Post-processing thresholds for the weight average as it is now, chosen on the held-out objects.

        None outside instance mode, before `fit` starts, or without held-out objects.
        """
        if self._calibration_data is None or self.average_model is None:
            return None
        held, stride, device, min_size = self._calibration_data
        return calibrate_instances(self.average_model, self.samples, held, self.normalizer, stride, device,
                                   min_size=min_size)

    def stop(self) -> None:
        """Ask training to end after the current step (keeps the best weights)."""
        self.stop_event.set()

    def fit(self) -> TrainResult:
        """Run training and return a `TrainResult`.

        Raises
        ------
        WorkbenchError
            For unusable data, settings or ``init_from`` models.
        """
        threads_before = torch.get_num_threads()
        try:
            return self._fit()
        except BaseException as exc:
            self.callbacks.on_exception(exc)
            raise
        finally:
            if torch.get_num_threads() != threads_before:
                torch.set_num_threads(threads_before)

    # ------------------------------------------------------------------ the run

    def _fit(self) -> TrainResult:
        settings = self.settings
        device = pick_device(settings.device)
        if device.type == "cpu":
            configure_cpu_threads()
        in_channels = self.samples[0][0].shape[0]
        n_classes, class_names = _classes(settings, self.samples)

        torch.manual_seed(settings.seed)
        rng = np.random.default_rng(settings.seed)
        if self.init_from is not None:
            model, previous = load_model(self.init_from, device="cpu")
            check_model_fits(previous, in_channels=in_channels, n_classes=n_classes,
                             source=f"the model in {self.init_from} (init_from)")
            normalizer = previous.normalizer() or PercentileNormalizer().fit(image for image, _ in self.samples)
            steps_before = int((previous.metrics or {}).get("total_steps") or (previous.metrics or {}).get("steps") or 0)
            distance = bool(previous.distance)
        else:
            distance = settings.distance and settings.mode == "instance"
            model = build_unet(in_channels, n_classes, preset=settings.preset, encoder=settings.encoder,
                               width=settings.width, depth=settings.depth, weights=settings.weights,
                               distance=distance)
            normalizer = PercentileNormalizer().fit(image for image, _ in self.samples)
            steps_before = 0
        model = model.to(device).to(memory_format=torch.channels_last)
        stride = int(model.encoder.output_stride)

        instance = settings.mode == "instance"
        train_targets, held = hold_out(self.samples, fraction=settings.val_fraction, block=settings.val_block,
                                       instance=instance, rng=rng)
        counts = _class_counts(train_targets, n_classes)
        val_pixels = held_out_pixels(self.samples, held)
        labelled = {
            "total": int(counts.sum()) + val_pixels,
            "train": int(counts.sum()),
            "validation": val_pixels,
            "validation_objects": sum(region.object_mask is not None for region in held),
            "per_class": {name: int(count) for name, count in zip(class_names, counts)},
        }
        if labelled["train"] == 0:
            raise WorkbenchError("no annotated pixels left for training; paint more labels or lower `val_fraction`.")
        sampler = _PatchSampler(self.samples, train_targets, normalizer, settings, rng)
        class_weights = _class_weights(counts).to(device) if settings.class_balancing else None
        val_min_size = min_object_size(self.samples)

        def loss_fn(logits, targets):
            return masked_loss(logits, targets, class_weights=class_weights, dice_weight=settings.dice_weight)

        def step_loss(logits, targets, distance_target):
            if not distance:
                return loss_fn(logits, targets)
            target, known = distance_target
            return (loss_fn(logits[:, :n_classes], targets)
                    + DISTANCE_LOSS_WEIGHT * distance_loss(logits[:, n_classes], target, known))

        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        average = _WeightAverage(model, settings.ema_decay)
        self.average_model, self.normalizer = average.model, normalizer
        if instance:
            self._calibration_data = (held, stride, device, val_min_size)
        use_amp = device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        total_steps = settings.epochs * settings.steps_per_epoch
        budget = None if settings.minutes is None else settings.minutes * 60.0

        self.callbacks.on_train_start({
            "device": str(device), "in_channels": in_channels, "n_classes": n_classes, "classes": class_names,
            "labelled_pixels": labelled, "settings": settings.to_dict(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "resumed_from": None if self.init_from is None else str(self.init_from),
        })
        start = time.perf_counter()
        history: list[dict[str, Any]] = []
        metrics: dict[str, Any] = {}
        step, stop_reason = 0, "epochs"
        for epoch in range(1, settings.epochs + 1):
            model.train()
            epoch_loss, epoch_steps, epoch_pixels, step_seconds = 0.0, 0, 0, 0.0
            for _ in range(settings.steps_per_epoch):
                if self.stop_event.is_set():
                    stop_reason = "stopped"
                    break
                elapsed = time.perf_counter() - start
                if budget is not None and elapsed >= budget:
                    stop_reason = "time"
                    break
                lr = _learning_rate(settings.lr, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images, targets = sampler.batch()
                step_start = time.perf_counter()
                distance_target = None
                if distance:
                    distance_target = tuple(torch.from_numpy(array).to(device, non_blocking=True)
                                            for array in distance_targets(targets.numpy()))
                images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                targets = targets.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    logits = model(images)
                loss = step_loss(logits, targets, distance_target)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                average.update(model)
                step_seconds += time.perf_counter() - step_start
                epoch_loss += float(loss.detach())
                epoch_steps += 1
                epoch_pixels += images.shape[0] * images.shape[2] * images.shape[3]
                step += 1
                self.callbacks.on_progress(
                    _run_fraction(step, total_steps, time.perf_counter() - start, budget),
                    f"epoch {epoch}, step {step}",
                )
            if epoch_steps == 0:
                break
            train_loss = epoch_loss / epoch_steps
            # Validation reads no random numbers, so it never changes what training does next.
            metrics = validate(average.model, self.samples, held, normalizer, stride, device, loss_fn, n_classes,
                               min_size=val_min_size)
            logs = {
                "epoch": epoch,
                "loss": train_loss,
                "val_loss": metrics.get("val_loss"),
                "val_score": metrics.get("val_score"),
                "seconds": time.perf_counter() - start,
                "lr": optimizer.param_groups[0]["lr"],
                "pixels_per_second": epoch_pixels / step_seconds if step_seconds > 0 else 0.0,
                "steps": step,
            }
            logs.update({key: value for key, value in metrics.items() if key not in logs})
            history.append(logs)
            self.callbacks.on_epoch_end(epoch, logs)
            if stop_reason != "epochs":
                break
        if self.stop_event.is_set():
            stop_reason = "stopped"
        if step == 0:
            raise WorkbenchError(
                "training stopped before the first step finished, so there is no model to keep; "
                "give it more time (minutes) or request the stop later."
            )
        seconds = time.perf_counter() - start
        calibration = self.calibrate()
        model = average.model
        model.eval()
        trend, hint = training_hint(history)
        final = {
            "epoch": history[-1]["epoch"], "loss": history[-1]["loss"], **metrics,
            "steps": step, "total_steps": steps_before + step, "steps_per_second": step / seconds if seconds else None,
            "trend": trend, "hint": hint, "weights": "ema" if settings.ema_decay > 0 else "last",
            "seconds": seconds, "stop_reason": stop_reason,
        }
        if calibration is not None:
            final.update(instance_options=calibration.options, val_object_iou_calibrated=calibration.score)
        card = ModelCard(
            in_channels=in_channels, n_classes=n_classes, classes=list(class_names), mode=settings.mode,
            normalisation=normalizer.to_dict(), settings=settings.to_dict(),
            instance_options={} if calibration is None else dict(calibration.options), distance=distance,
            metrics={**final, "labelled_pixels": labelled,
                     "resumed_from": None if self.init_from is None else str(self.init_from)},
        )
        result = TrainResult(model=model.to(memory_format=torch.contiguous_format), card=card, history=history,
                             best_metrics=final, labelled_pixels=labelled, stop_reason=stop_reason,
                             seconds=seconds)
        self.callbacks.on_train_end(result)
        return result


def train(samples: Sequence[tuple[Any, Any]], settings: TrainSettings | None = None, *,
          callbacks: Iterable[Callback] = (), init_from: str | Path | None = None,
          stop_event: threading.Event | None = None) -> TrainResult:
    """Train a U-Net on partially annotated images (see `Trainer` for the parameters).

    Returns
    -------
    TrainResult
        Best model, card, history, metrics and labelled pixel counts.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from workbench.deep import save_model
    >>> image = np.zeros((1, 96, 96), np.float32); image[:, 30:60, 30:60] = 1
    >>> targets = np.full((96, 96), -1); targets[35:55, 35:55] = 1; targets[:10] = 0
    >>> settings = TrainSettings(minutes=None, epochs=1, steps_per_epoch=1, patch_size=64, batch_size=2)
    >>> result = train([(image, targets)], settings)
    >>> result.stop_reason, len(result.history)
    ('epochs', 1)
    >>> folder = save_model(tempfile.mkdtemp() + "/nuclei", result.model, result.card)
    """
    return Trainer(samples, settings, callbacks=callbacks, init_from=init_from, stop_event=stop_event).fit()


# ---------------------------------------------------------------------- machinery


class _ImageView:
    """A CYX view over a YX array-like, reading lazily."""

    def __init__(self, image):
        self._image = image
        self.shape = (1,) + tuple(image.shape)

    def __getitem__(self, key):
        _, ys, xs = key
        return np.asarray(self._image[ys, xs])[None]


def _check_samples(samples) -> list[tuple[Any, np.ndarray]]:
    if isinstance(samples, tuple) and len(samples) == 2 and hasattr(samples[0], "shape"):
        raise WorkbenchError("`samples` must be a list of (image, targets) pairs; wrap a single pair as [(image, targets)].")
    if not isinstance(samples, (list, tuple)) or not samples:
        raise WorkbenchError(
            f"`samples` must be a non-empty list of (image CYX, targets YX) pairs; got {type(samples).__name__}."
        )
    checked = []
    for index, pair in enumerate(samples):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise WorkbenchError(f"sample {index} must be an (image, targets) pair; got {type(pair).__name__}.")
        image, targets = pair
        shape = tuple(getattr(image, "shape", np.shape(image)))
        if len(shape) == 2:
            image = _ImageView(image if hasattr(image, "shape") else np.asarray(image))
            shape = image.shape
        if len(shape) != 3:
            raise WorkbenchError(
                f"sample {index}: image must be CYX (channels first) or YX; got shape {shape}. "
                "Split z-stacks into separate CYX planes."
            )
        targets = np.asarray(targets)
        if targets.shape != shape[1:]:
            raise WorkbenchError(
                f"sample {index}: targets shape {targets.shape} must equal the image's YX shape {shape[1:]}."
            )
        if not np.issubdtype(targets.dtype, np.integer):
            raise WorkbenchError(
                f"sample {index}: targets must be integers (-1 = ignore, 0..K-1 = class); got dtype {targets.dtype}."
            )
        if targets.size and targets.min() < -1:
            raise WorkbenchError(f"sample {index}: targets must be >= -1 (-1 = ignore); got minimum {targets.min()}.")
        if index and shape[0] != checked[0][0].shape[0]:
            raise WorkbenchError(
                f"all images must have the same channel count; sample 0 has {checked[0][0].shape[0]}, "
                f"sample {index} has {shape[0]}."
            )
        checked.append((image, targets.astype(np.int64, copy=False)))
    if not any((targets >= 0).any() for _, targets in checked):
        raise WorkbenchError("no annotated pixels in `samples` (all targets are -1): paint background and at least one class.")
    return checked


def _classes(settings: TrainSettings, samples) -> tuple[int, list[str]]:
    largest = max(int(targets.max()) for _, targets in samples)
    if settings.mode == "instance":
        n_classes, names = 3, list(INSTANCE_CLASSES)
    elif settings.classes is not None:
        n_classes, names = len(settings.classes), list(settings.classes)
    elif settings.n_classes is not None:
        n_classes = settings.n_classes
        names = ["background"] + [f"class {k}" for k in range(1, n_classes)]
    else:
        n_classes = max(2, largest + 1)
        names = ["background"] + [f"class {k}" for k in range(1, n_classes)]
    if largest >= n_classes:
        raise WorkbenchError(
            f"targets contain class {largest} but the model has {n_classes} classes ({names}); "
            "set `n_classes`/`classes` to cover every painted class."
        )
    return n_classes, names


def _class_counts(targets_list, n_classes: int) -> np.ndarray:
    counts = np.zeros(n_classes, dtype=np.int64)
    for targets in targets_list:
        annotated = targets[targets >= 0]
        counts += np.bincount(annotated, minlength=n_classes)[:n_classes]
    return counts


def _class_weights(counts: np.ndarray) -> torch.Tensor:
    """Inverse square-root frequency weights, normalised so the average annotated pixel weighs 1."""
    frequency = counts / max(counts.sum(), 1)
    weights = np.where(frequency > 0, 1.0 / np.sqrt(np.maximum(frequency, 1e-12)), 1.0)
    weights /= max((weights * frequency).sum(), 1e-12)
    return torch.tensor(np.clip(weights, 0.05, 20.0), dtype=torch.float32)


class _PatchSampler:
    """Random training patches, mostly centred on annotated pixels; normalised and augmented."""

    def __init__(self, samples, train_targets, normalizer, settings: TrainSettings, rng: np.random.Generator):
        self.samples = samples
        self.targets = train_targets
        self.normalizer = normalizer
        self.size = settings.patch_size
        self.batch_size = settings.batch_size
        self.annotated_fraction = settings.annotated_patch_fraction
        self.rng = rng
        self.augment = Augmenter(settings.augment, seed=settings.seed)
        self.points = []
        for targets in train_targets:
            flat = np.flatnonzero(targets.ravel() >= 0)
            if flat.size > _MAX_SAMPLING_POINTS:
                flat = flat[:: int(math.ceil(flat.size / _MAX_SAMPLING_POINTS))]
            self.points.append(flat)
        counts = np.array([points.size for points in self.points], dtype=np.float64)
        self.annotated_weights = counts / counts.sum()
        areas = np.array([targets.size for targets in train_targets], dtype=np.float64)
        self.area_weights = areas / areas.sum()

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = zip(*(self._patch() for _ in range(self.batch_size)))
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets))

    def _patch(self) -> tuple[np.ndarray, np.ndarray]:
        size, rng = self.size, self.rng
        if rng.random() < self.annotated_fraction:
            index = int(rng.choice(len(self.samples), p=self.annotated_weights))
            height, width = self.targets[index].shape
            point = int(self.points[index][rng.integers(self.points[index].size)])
            jitter = rng.integers(-(size // 4), size // 4 + 1, size=2)
            cy, cx = point // width + int(jitter[0]), point % width + int(jitter[1])
        else:
            index = int(rng.choice(len(self.samples), p=self.area_weights))
            height, width = self.targets[index].shape
            cy, cx = int(rng.integers(height)), int(rng.integers(width))
        y0, x0 = cy - size // 2, cx - size // 2
        image, targets = _crop(self.samples[index][0], self.targets[index], y0, x0, size)
        image = self.normalizer(image)
        return self.augment(image, targets)


def _crop(image, targets: np.ndarray, y0: int, x0: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A size x size window at (y0, x0); outside the image: reflected intensities, ignored targets."""
    height, width = targets.shape
    # Keep the window overlapping the image, then pad what sticks out.
    y0 = min(max(y0, -(size // 2)), max(height - size // 2, 0))
    x0 = min(max(x0, -(size // 2)), max(width - size // 2, 0))
    ya, yb, xa, xb = max(y0, 0), min(y0 + size, height), max(x0, 0), min(x0 + size, width)
    image_crop = np.asarray(image[:, ya:yb, xa:xb])
    target_crop = targets[ya:yb, xa:xb]
    pads = ((ya - y0, y0 + size - yb), (xa - x0, x0 + size - xb))
    if any(p for pair in pads for p in pair):
        mode = "reflect" if min(image_crop.shape[1:]) > 1 else "edge"
        image_crop = np.pad(image_crop, ((0, 0),) + pads, mode=mode)
        target_crop = np.pad(target_crop, pads, mode="constant", constant_values=-1)
    return image_crop, target_crop


def _run_fraction(step: int, total_steps: int, elapsed: float, budget: float | None) -> float:
    fraction = step / max(total_steps, 1)
    if budget is not None:
        fraction = max(fraction, elapsed / budget)
    return min(fraction, 1.0)


def _learning_rate(peak: float, step: int) -> float:
    """Linear warm-up over the first steps, then constant: the schedule never looks at the run's end."""
    return peak * min(1.0, (step + 1) / _WARMUP_STEPS)


class _WeightAverage:
    """An exponential moving average of a model's weights and batch-norm statistics.

    The average of the last ~1 / (1 - decay) steps under a constant learning rate is as good as a
    decayed schedule's end point, and it exists at every step, so the run can end at any time.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model)
        self.model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.decay = float(decay)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (_EMA_RAMP + self.updates))
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values()):
            if average.dtype.is_floating_point:
                average.lerp_(current, 1.0 - decay)
            else:
                average.copy_(current)


def _require_int(name: str, value: Any, minimum: int) -> None:
    whole_number(value, name, minimum=minimum)

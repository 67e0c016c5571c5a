"""Pretrain a starter U-Net on a stream of generated images (``workbench pretrain OUT``).

The run draws a pool of fresh images from the varied corpus (`workbench.datasets.corpus_samples`:
fluorescence, cytoplasm, membrane, brightfield, phase and H&E-like styles), trains on it for
``pool_steps`` optimiser steps, then draws the next pool and continues from the weights it has,
so the network never sees one set long enough to learn it by heart. Every pool goes through the
public trainer (`workbench.deep.train` with ``init_from`` the previous pool's model) in instance
mode, with targets made from the generator's ground truth by the store's own convention
(`labels_from_instances` + `training_targets(..., "instance")`): whatever instance target the
trainer uses, the starter follows it.

Images reach the network as the starter expects them (`workbench.deep.starter_input`: each
channel normalised to its percentiles, channels averaged into one); the reason for one channel
is in `workbench.deep._starter`.

After the last pool, the thresholds that turn the starter's probabilities into objects (what a
project without labels uses) are chosen on a pool of images drawn for that alone
(`workbench.deep.calibrate_on_objects`), not on the handful of objects the last pool held out.

The output is a normal model folder (``weights.pt`` + ``card.json``, see
`workbench.deep.save_model`) plus ``starter.json``: what it was trained on, for how long, on
which device, the exact command, the seed, the sha256 of the weights and a ``scores`` field for
measured scores (filled by ``benchmarks/bench_pretrain.py``). The real nuclei image in
``shared/data`` is never used: it is how the starter is measured.

At a fixed step count (``steps``, no ``minutes``) on the CPU the run is deterministic under its seed:
the same weights file, byte for byte, for the same number of CPU threads (``WORKBENCH_THREADS``).

Examples
--------
>>> import tempfile
>>> settings = PretrainSettings(steps=2, minutes=None, pool_size=2, pool_steps=1, image_size=64, patch_size=64,
...                             batch_size=2)
>>> result = pretrain(tempfile.mkdtemp() + "/starter", settings)
>>> result.steps, result.pools, len(result.info["weights_sha256"])
(2, 2, 64)
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from workbench.errors import WorkbenchError

__all__ = ["PretrainSettings", "PretrainResult", "pretrain", "pretrain_pool", "check_pretrain_target",
           "pretrain_command"]

#: Steps between the trainer's validations, the largest that divides a pool's steps (validation costs time).
_STEPS_PER_EPOCH = (50, 10)
_MIN_ROUND_SECONDS = 2.0  # a pool started with less time left than this would not reach a step


@dataclass
class PretrainSettings:
    """What to pretrain and for how long.

    Attributes
    ----------
    minutes : float or None
        Time budget; None runs for `steps` only (needed for a bit-identical rerun).
    steps : int or None
        Optimiser steps in all; None runs until `minutes` are over. With both, whichever ends first.
    preset : str
        U-Net preset (``workbench.deep.PRESETS``); the shipped starter is the default ``"fast"``.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    seed : int
        Seeds the corpus, the weights and the patch sampling.
    image_size : int
        Side of the generated square images.
    pool_size : int
        Images in one pool.
    pool_steps : int
        Optimiser steps on one pool before the next pool is drawn.
    styles : tuple of str or None
        Corpus styles (``workbench.datasets.CORPUS_STYLES``); None = all.
    batch_size, patch_size : int
        Training patches per step and their side.
    lr : float
        Learning rate (the trainer's warm-up and constant rate, per pool).
    augment : float
        The trainer's augmentation strength.
    val_fraction : float
        Objects of each pool held out to score the run (reported in the card).
    distance : bool
        Also learn the distance output (`workbench.conventions.DISTANCE_OUTPUT`) that fine-tuned
        U-Nets learn. Off by default: the shipped starter predates it and its card's command must
        reproduce it; fine-tuning from it adds the distance output afresh (its class outputs are
        kept). A starter with it is not measured yet.
    """

    minutes: float | None = 60.0
    steps: int | None = None
    preset: str = "fast"
    device: str = "auto"
    seed: int = 0
    image_size: int = 256
    pool_size: int = 24
    pool_steps: int = 200
    styles: tuple[str, ...] | None = None
    batch_size: int = 8
    patch_size: int = 128
    lr: float = 5e-3
    augment: float = 0.5
    val_fraction: float = 0.1
    distance: bool = False

    def validate(self) -> "PretrainSettings":
        """Check every field; return self.

        Raises
        ------
        WorkbenchError
            Naming the field, what arrived and what is expected.
        """
        from workbench.deep import PRESETS
        from workbench.datasets import CORPUS_STYLES
        from workbench.validate import whole_number

        if self.minutes is None and self.steps is None:
            raise WorkbenchError("give a time budget (minutes) or a number of steps for pretraining; both are None.")
        if self.minutes is not None and (isinstance(self.minutes, bool) or not isinstance(self.minutes, (int, float))
                                         or not 0 < self.minutes <= 7 * 24 * 60):
            raise WorkbenchError(f"`minutes` must be a positive number of minutes (at most a week); got {self.minutes!r}.")
        if self.steps is not None:
            whole_number(self.steps, "steps", minimum=1)
        whole_number(self.seed, "seed", minimum=0)
        whole_number(self.image_size, "image_size", minimum=64)
        whole_number(self.pool_size, "pool_size", minimum=1)
        whole_number(self.pool_steps, "pool_steps", minimum=1)
        whole_number(self.batch_size, "batch_size", minimum=1)
        whole_number(self.patch_size, "patch_size", minimum=32)
        if self.patch_size > self.image_size:
            raise WorkbenchError(f"`patch_size` ({self.patch_size}) must not exceed `image_size` ({self.image_size}).")
        if self.preset not in PRESETS:
            raise WorkbenchError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}.")
        if not isinstance(self.distance, bool):
            raise WorkbenchError(f"`distance` must be true or false; got {self.distance!r}.")
        if self.styles is not None:
            unknown = [s for s in self.styles if s not in CORPUS_STYLES]
            if unknown or not self.styles:
                raise WorkbenchError(f"unknown corpus style(s) {unknown or list(self.styles)}; choose from "
                                     f"{list(CORPUS_STYLES)}.")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (stored in the starter card)."""
        data = asdict(self)
        data["styles"] = None if self.styles is None else list(self.styles)
        return data


@dataclass
class PretrainResult:
    """What pretraining wrote.

    Attributes
    ----------
    directory : Path
        The model folder (``weights.pt``, ``card.json``, ``starter.json``).
    info : dict
        The starter card (``starter.json``).
    steps : int
        Optimiser steps in all.
    pools : int
        Pools of fresh images drawn.
    seconds : float
        Wall time of the run.
    stop_reason : str
        ``"steps"``, ``"time"`` or ``"stopped"``.
    """

    directory: Path
    info: dict[str, Any]
    steps: int
    pools: int
    seconds: float
    stop_reason: str
    history: list[dict[str, Any]] = field(default_factory=list)


def pretrain_command(out: str | os.PathLike, settings: PretrainSettings) -> str:
    """The ``workbench pretrain`` command line that reruns `settings` into `out`."""
    parts = ["workbench", "pretrain", str(out)]
    if settings.minutes is not None:
        parts += ["--minutes", f"{settings.minutes:g}"]
    if settings.steps is not None:
        parts += ["--steps", str(settings.steps)]
    defaults = PretrainSettings()
    for name, flag in (("preset", "--preset"), ("device", "--device"), ("seed", "--seed"),
                       ("pool_size", "--pool-size"), ("pool_steps", "--pool-steps"), ("image_size", "--image-size")):
        if getattr(settings, name) != getattr(defaults, name):
            parts += [flag, str(getattr(settings, name))]
    if settings.distance:
        parts.append("--distance")
    return shlex.join(parts)


def check_pretrain_target(out: str | os.PathLike, *, force: bool = False) -> Path:
    """Check the output folder before any work: new or empty, or (with `force`) a model folder to replace.

    Raises
    ------
    WorkbenchError
        For a file, a folder holding other things, or a place that cannot be written.
    """
    from workbench.deep import CARD_FILENAME

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise WorkbenchError(f"pretrain output {out} is a file; give a folder for the model")
    existing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if existing and not force:
        raise WorkbenchError(
            f"pretrain output folder {out} is not empty ({', '.join(existing[:5])}{'...' if len(existing) > 5 else ''}); "
            "choose a new folder, or add --force to replace the model in it"
        )
    if existing and force and CARD_FILENAME not in existing:
        raise WorkbenchError(f"{out} does not hold a model (no {CARD_FILENAME}); --force replaces only a model folder")
    probe = out if out.is_dir() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK):
        raise WorkbenchError(f"cannot write into {probe} (permission denied); choose a folder you can write to")
    return out


def pretrain_pool(seed: int, settings: PretrainSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """One pool of training samples: (starter input 1YX float32, instance targets YX int64) pairs."""
    from workbench.datasets import corpus_samples
    from workbench.deep import starter_input
    from workbench.store import labels_from_instances, training_targets

    samples = corpus_samples(settings.pool_size, (settings.image_size, settings.image_size), seed=seed,
                             styles=settings.styles)
    return [(starter_input(sample.image), training_targets(labels_from_instances(sample.labels), "instance"))
            for sample in samples]


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] % (2**31 - 1))


class _OverallProgress:
    """Turns each pool's progress into the run's progress (by steps, or by time when only minutes bound it)."""

    def __init__(self, progress, settings: PretrainSettings, started: float):
        self.progress, self.settings, self.started = progress, settings, started
        self.done = 0

    def callback(self, round_steps: int, pool: int):
        from workbench.deep import Callback

        outer = self

        class _Round(Callback):
            def on_progress(self, fraction, message):
                settings = outer.settings
                by_steps = (outer.done + fraction * round_steps) / settings.steps if settings.steps else 0.0
                by_time = ((time.perf_counter() - outer.started) / (settings.minutes * 60.0)
                           if settings.minutes else 0.0)
                step = outer.done + int(round(fraction * round_steps))
                outer.progress(min(1.0, max(by_steps, by_time)), f"pool {pool + 1}, step {step}")

        return _Round()


def pretrain(out: str | os.PathLike, settings: PretrainSettings | None = None, *, command: str | None = None,
             force: bool = False, callbacks: Iterable = (), progress: Callable[[float, str], None] | None = None,
             stop_event: threading.Event | None = None) -> PretrainResult:
    """Pretrain a U-Net on fresh generated pools and write a starter model folder to `out`.

    Parameters
    ----------
    out : path
        The model folder to write (new or empty; with `force`, a model folder to replace). It
        appears whole at the end: a failed or interrupted run leaves what was there before.
    settings : PretrainSettings or None
        None uses the defaults (an hour on the best device).
    command : str or None
        The command line recorded in the card (default: the equivalent `workbench pretrain`).
    force : bool
        Replace the model already in `out`.
    callbacks : iterable of workbench.deep.Callback
        Observers of every pool's training.
    progress : callable or None
        ``progress(fraction, message)`` over the whole run.
    stop_event : threading.Event or None
        Set it to end after the current step; the model so far is written.

    Returns
    -------
    PretrainResult

    Raises
    ------
    WorkbenchError
        For bad settings or an output folder that cannot be used.
    """
    from workbench.deep import Callback, TrainSettings, pick_device, sha256_file, train, WEIGHTS_FILENAME
    from workbench.store import swap_into_place, write_json_atomic

    settings = (settings if settings is not None else PretrainSettings())
    if not isinstance(settings, PretrainSettings):
        raise WorkbenchError(f"`settings` must be a PretrainSettings; got {type(settings).__name__}.")
    settings.validate()
    out = check_pretrain_target(out, force=force)
    device = pick_device(settings.device)
    stop_event = stop_event if stop_event is not None else threading.Event()
    command = command or pretrain_command(out, settings)
    callbacks = list(callbacks)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.parent / f".{out.name}.pretraining-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    started = time.perf_counter()
    deadline = None if settings.minutes is None else started + settings.minutes * 60.0
    overall = _OverallProgress(progress, settings, started) if progress else None
    history: list[dict[str, Any]] = []
    steps, pool, stop_reason, previous, result = 0, 0, "steps", None, None

    class _History(Callback):
        def on_epoch_end(self, epoch, logs):
            history.append({"pool": pool, "steps": steps + logs["steps"], "loss": logs["loss"],
                            "val_score": logs.get("val_score"), "seconds": time.perf_counter() - started})

    try:
        while True:
            left_steps = None if settings.steps is None else settings.steps - steps
            left_seconds = None if deadline is None else deadline - time.perf_counter()
            if left_steps is not None and left_steps <= 0:
                stop_reason = "steps"
                break
            if left_seconds is not None and left_seconds < _MIN_ROUND_SECONDS and result is not None:
                stop_reason = "time"
                break
            if stop_event.is_set() and result is not None:
                stop_reason = "stopped"
                break
            round_steps = settings.pool_steps if left_steps is None else min(settings.pool_steps, left_steps)
            per_epoch = next((n for n in _STEPS_PER_EPOCH if round_steps % n == 0), round_steps)
            samples = pretrain_pool(_derived_seed(settings.seed, pool, 1), settings)
            train_settings = TrainSettings(
                preset=settings.preset, weights=None, mode="instance", device=str(device),
                epochs=round_steps // per_epoch, steps_per_epoch=per_epoch,
                minutes=None if left_seconds is None else max(left_seconds, _MIN_ROUND_SECONDS) / 60.0,
                patch_size=settings.patch_size, batch_size=settings.batch_size, lr=settings.lr,
                augment=settings.augment, val_fraction=settings.val_fraction, distance=settings.distance,
                seed=_derived_seed(settings.seed, pool, 2),
            )
            observers = callbacks + [_History()] + ([overall.callback(round_steps, pool)] if overall else [])
            result = train(samples, train_settings, callbacks=observers, init_from=previous, stop_event=stop_event)
            steps += int(result.best_metrics["steps"])
            if overall:
                overall.done = steps
            folder = scratch / f"pool-{pool:05d}"
            result.save(folder)
            if previous is not None:
                shutil.rmtree(previous, ignore_errors=True)
            previous = folder
            pool += 1
            if result.stop_reason in ("time", "stopped"):
                stop_reason = result.stop_reason
                break
        seconds = time.perf_counter() - started
        final = scratch / "model"
        card = result.card
        calibration = _calibrate(result.model, card, settings, device)
        card.instance_options = {} if calibration is None else dict(calibration.options)
        # The last pool's own choice (on its few held-out objects) would contradict the card's thresholds.
        last_pool = {key: value for key, value in card.metrics.items()
                     if key not in ("instance_options", "val_object_iou_calibrated")}
        card.metrics = {**last_pool, "resumed_from": None, "steps": steps, "total_steps": steps,
                        "seconds": seconds, "stop_reason": stop_reason}
        card.settings = {**card.settings, "weights": None, "minutes": settings.minutes,
                         "pretraining": settings.to_dict()}
        result.card = card
        result.save(final)
        info = _starter_card(settings, device, command, steps, pool, seconds, stop_reason, card.metrics,
                             sha256_file(final / WEIGHTS_FILENAME), calibration)
        write_json_atomic(final / "starter.json", info)
        swap_into_place(final, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if progress:
        progress(1.0, "done")
    return PretrainResult(directory=out, info=info, steps=steps, pools=pool, seconds=seconds,
                          stop_reason=stop_reason, history=history)


def _calibration_seed(settings: PretrainSettings) -> int:
    """Seed of the pool the thresholds are chosen on: stream 3, where the pools' images use 1 and their training 2."""
    return _derived_seed(settings.seed, 0, 3)


def _calibrate(model, card, settings: PretrainSettings, device):
    """Thresholds for the starter's own use (zero-shot), chosen on a pool of images drawn after training.

    The last pool's run also chose some, on the few objects it held out (a tenth of one pool);
    a fresh pool gives `calibrate_on_objects` up to 48 objects no pool trained on.
    """
    from workbench.deep import calibrate_on_objects

    seed = _calibration_seed(settings)
    return calibrate_on_objects(model.to(device), pretrain_pool(seed, settings), card.normalizer(), device, seed=seed)


def _starter_card(settings: PretrainSettings, device, command: str, steps: int, pools: int, seconds: float,
                  stop_reason: str, metrics: dict, sha256: str, calibration=None) -> dict[str, Any]:
    import torch

    import workbench
    from workbench.datasets import CORPUS_STYLES
    from workbench.deep import INSTANCE_CLASSES, PRESETS

    from workbench import config

    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
    # The trainer's CPU threads (it restores torch's own setting when it returns).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = (config.threads() or cores) if device.type == "cpu" else torch.get_num_threads()
    held_out = {key: metrics.get(key) for key in ("val_score", "val_object_iou", "val_objects_found", "val_loss")
                if isinstance(metrics.get(key), (int, float)) and math.isfinite(metrics[key])}
    return {
        "format_version": 1,
        "name": "workbench starter U-Net",
        "model": {"preset": settings.preset, "encoder": PRESETS[settings.preset]["encoder"], "mode": "instance",
                  "classes": list(INSTANCE_CLASSES), "distance_output": settings.distance, "in_channels": 1,
                  "weights_file": "weights.pt"},
        "input": ("each channel normalised to its 1st-99.8th percentiles, channels averaged into one "
                  "(workbench.deep.starter_input); for C channels the first convolution is repeated over the "
                  "channels and divided by C, so the network sees the channel average"),
        "trained_on": {
            "generator": "workbench.datasets.corpus_samples",
            "styles": list(settings.styles or CORPUS_STYLES),
            "image_size": [settings.image_size, settings.image_size],
            "pool_size": settings.pool_size,
            "pool_steps": settings.pool_steps,
            "pools": pools,
            "images": pools * settings.pool_size,
            "targets": "labels_from_instances + training_targets(labels, 'instance'): the store's instance convention",
            "real_images": "none: generated images only. The nuclei image in shared/data (DSB 2018) is never "
                           "used for pretraining; it is how the starter is measured.",
        },
        "training": {
            "steps": steps, "minutes": round(seconds / 60.0, 3), "seconds": round(seconds, 1),
            "device": str(device), "device_name": device_name, "cpu_threads": threads,
            "seed": settings.seed, "batch_size": settings.batch_size, "patch_size": settings.patch_size,
            "lr": settings.lr, "stop_reason": stop_reason, "settings": settings.to_dict(),
            "torch": torch.__version__, "workbench": workbench.__version__,
            "deterministic": ("the same weights file (sha256) on the CPU for the same seed, --steps without "
                              "--minutes, and CPU threads (WORKBENCH_THREADS)"),
        },
        "held_out_generated": held_out,
        "instance_options": None if calibration is None else {
            "options": dict(calibration.options), "held_out_object_iou": round(calibration.score, 4),
            "with_default_thresholds": round(calibration.default_score, 4), "objects": calibration.objects,
            "how": (f"chosen after the run by workbench.deep.calibrate_on_objects (test-time augmentation, the "
                    f"middle of the best-scoring thresholds) on objects of {settings.pool_size} images "
                    f"generated after training (pretrain_pool seed {_calibration_seed(settings)}), none "
                    "of them trained on"),
        },
        "command": command,
        "weights_sha256": sha256,
        "scores": {},
        "scores_note": "measured scores: python -m benchmarks.bench_pretrain (nuclei half split, zero-shot, "
                       "synthetic styles) fills this field with --record",
    }

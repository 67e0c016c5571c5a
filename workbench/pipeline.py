"""Project-level steps: train, predict, export, measure, and the demo.

The command line and the widgets both call these, so a script can do whatever the app does:
every step of the app is one call here or in `workbench.results` (review: uncertain regions,
pictures; segment and measure into a results folder). Each step reads from and writes into the
project store; a model is a folder under ``models/`` recorded in the manifest with its settings,
label counts and metrics, read back as a typed `workbench.records.ModelRecord`.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from workbench import config, speed
from workbench.conventions import (INSTANCE_CLASSES, METHODS, OUTPUT_SUFFIXES, check_method,  # noqa: F401 - METHODS is public here
                                   image_stem, is_ome_zarr_path, probability_names)
from workbench.conventions import MIN_OBJECT_FRACTION, MIN_OBJECT_PIXELS
from workbench.errors import WorkbenchError, app_message
from workbench.records import ModelCardInfo, ModelRecord, TrainingChoices, TrainingPlan
from workbench.store import Project

__all__ = [
    "METHODS", "METHOD_NAMES", "FOREST_TREES", "Segmenter", "load_segmenter", "model_records", "model_record",
    "model_card", "find_local_weights", "check_resume", "plan_training", "train_model", "predict_project",
    "predict_file", "export_prediction", "postprocess", "training_summary", "instance_options", "auto_min_size",
    "min_size_from_labels", "measure_labels", "measure_project", "run_demo", "uncertainty", "segments_volumes",
    "volume_instance_options", "volume_instances", "VOLUME_IN_MEMORY_VOXELS",
    "STARTER", "starter_reason", "default_weights", "default_start", "starter_model", "resolve_model_version",
    "try_starter",
    "sanity_warnings", "result_warnings", "painted_object_areas",
]

#: Prediction backends for U-Nets: torch on any device, ONNX Runtime on the CPU (faster there, see benchmarks/).
BACKENDS = ("torch", "onnx")
Progress = Callable[[float, str], None]
METHOD_NAMES = {"unet": "U-Net", "forest": "Random Forest"}
"""How people call the methods (messages, the app)."""

# A Random Forest trains until done (no time budget): the app's model size picks its trees.
# Kept as the app chose them; the engine's own default (ForestSettings, 16 trees) is what
# benchmarks/RESULTS.md measured for the live preview, where speed matters more.
FOREST_TREES = {"fast": 32, "small": 48, "mobilenet_v2": 64}


# ---------------------------------------------------------------------- model records
def model_records(project: Project) -> list[ModelRecord]:
    """The project's model versions, oldest first, as validated records."""
    return sorted((ModelRecord.from_dict(m) for m in project.models), key=lambda r: r.version)


def model_record(project: Project, version: int | None = None, *, method: str | None = None) -> ModelRecord:
    """One model version's record (the latest, or the latest of `method`, by default).

    Raises
    ------
    WorkbenchError
        When there is no such model, or its manifest entry is damaged.
    """
    return ModelRecord.from_dict(project.model_record(version, method=method))


def model_card(project: Project, record: ModelRecord) -> ModelCardInfo:
    """What the model's ``card.json`` says about its outputs (mode, classes, channels)."""
    return ModelCardInfo.read(record.directory(project.path))


def find_local_weights(encoder: str) -> Path | None:
    """A downloaded ImageNet weights file for `encoder` (offline machines), if one is around.

    Looks in the folders of `workbench.config.weights_dirs` for ``<encoder>-*.pth`` or ``<encoder>.pth``.
    """
    for folder in config.weights_dirs():
        if folder.is_dir():
            found = sorted(folder.glob(f"{encoder}-*.pth")) + sorted(folder.glob(f"{encoder}.pth"))
            if found:
                return found[0]
    return None


#: The model name of the starter shipped with the package (``--weights starter``, ``--model starter``).
STARTER = "starter"


def starter_reason(project: Project, settings: dict | None = None) -> str | None:
    """Why a new U-Net of this project (with these U-Net settings) cannot start from the shipped
    starter model; None when it can.

    The starter fits instance projects of any channel count (its first convolution is adapted)
    whose U-Net has the starter's architecture (the default preset). A semantic project can
    still ask for it explicitly (``weights="starter"``: encoder and decoder, a new head).
    """
    from workbench.deep import starter_dir, starter_fits, unet_architecture

    settings = dict(settings or {})
    if project.mode != "instance":
        return "the starter model finds separate objects, and this project is semantic"
    if starter_dir() is None:
        return "this installation has no starter model"
    try:
        architecture = unet_architecture(preset=settings.get("preset", "fast"), encoder=settings.get("encoder"),
                                         width=settings.get("width", 1.0), depth=settings.get("depth"))
    except WorkbenchError as exc:
        return str(exc)
    return starter_fits(architecture)


def default_weights(project: Project, settings: dict | None = None) -> str | None:
    """Where a new U-Net starts when the settings do not say: the starter for instance projects it
    fits (`starter_reason`), else random weights (None). Given ``weights`` are kept."""
    settings = dict(settings or {})
    if "weights" in settings:
        return settings["weights"]
    return STARTER if starter_reason(project, settings) is None else None


def default_start(project: Project, method: str = "unet") -> str:
    """The training start a person gets unless they choose: the last model of `method` when there is
    one, else the starter for instance projects it fits, else scratch (see `TrainingChoices.start`)."""
    check_method(method)
    if any(m.method == method for m in project.models):
        return "last"
    if method == "unet" and starter_reason(project) is None:
        return "starter"
    return "scratch"


def check_resume(project: Project, method: str) -> ModelRecord:
    """The model a training of `method` continues from, if continuing is possible.

    Raises
    ------
    WorkbenchError
        When the project has no model of `method`, or the last one was trained for the other mode.
    """
    check_method(method)
    if not any(m.method == method for m in project.models):
        raise WorkbenchError(
            f"there is no {METHOD_NAMES[method]} model in this project yet to continue from; "
            "train the first one from scratch (in the app: 'Start from: Scratch'; on the command line: "
            "without --resume)"
        )
    previous = model_record(project, method=method)
    try:
        previous_mode = model_card(project, previous).mode
    except WorkbenchError:
        previous_mode = None  # a card we cannot read: the trainer itself reports what does not fit
    if previous_mode and previous_mode != project.mode:
        raise WorkbenchError(
            f"the last model finds {previous_mode} results but the project is now set to {project.mode}; "
            "start from scratch or pretrained weights to switch.")
    return previous


def plan_training(project: Project, choices: TrainingChoices) -> TrainingPlan:
    """The engine settings that a person's training choices mean for this project.

    Raises
    ------
    WorkbenchError
        When the choices do not fit the project (e.g. continuing without a model).
    """
    choices = choices.validate()
    resume = choices.start == "last"
    if resume:
        check_resume(project, choices.method)
    if choices.method == "forest":
        return TrainingPlan("forest", {"n_estimators": FOREST_TREES[choices.size]}, resume)
    settings: dict[str, Any] = {"minutes": float(choices.seconds) / 60.0, "preset": choices.size,
                                "augment": float(choices.augment)}
    if choices.start == "pretrained":
        from workbench.deep import PRESETS

        encoder = PRESETS[choices.size]["encoder"]
        local = find_local_weights(encoder)
        settings["weights"] = str(local) if local else "imagenet"
    elif choices.start == "starter":
        reason = starter_reason(project, settings)
        if reason is not None:
            raise WorkbenchError(f"the starter model cannot start this training: {reason}; start from scratch "
                                 "or pretrained weights")
        settings["weights"] = STARTER
    elif choices.start == "scratch" and default_weights(project, settings) is not None:
        settings["weights"] = "none"  # scratch means random weights, also where the starter is the default
    return TrainingPlan("unet", settings, resume)


# ---------------------------------------------------------------------- loading a model
@dataclass
class Segmenter:
    """A trained model ready for tiled prediction, whichever method made it."""

    predictor: Callable[[np.ndarray], np.ndarray]
    n_outputs: int
    in_channels: int
    halo: int
    record: ModelRecord
    tile_size: int = 256
    #: Post-processing thresholds the model chose on its held-out objects (empty: the defaults).
    instance_options: dict = field(default_factory=dict)

    @property
    def default_tta(self) -> bool:
        """Whether predictions average the eight symmetries of the square unless told otherwise:
        for a U-Net (measured on the nuclei half split: AP@0.5 0.915 -> 0.982 at 270 steps, for
        about 8x the network time), not for a forest (its features barely change under them)."""
        return self.record.method == "unet"


def load_segmenter(project: Project, version: int | None = None, *, method: str | None = None,
                   device: str | None = None, batch_size: int | None = None, backend: str = "torch") -> Segmenter:
    """Load a model version of the project (the latest, or the latest of `method`) as a tile predictor.

    ``backend="onnx"`` runs a U-Net on ONNX Runtime (CPU), exported once beside its weights.
    """
    if backend not in BACKENDS:
        raise WorkbenchError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    record = project.model_record(version, method=method)
    directory = project.model_dir(record.version)
    if backend == "onnx" and record.method != "unet":
        raise WorkbenchError(f"--backend onnx runs U-Nets; model version {record.version} is a "
                             f"{record.method} model: drop --backend onnx")
    if backend == "onnx" and device not in (None, "auto", "cpu"):
        raise WorkbenchError(f"--backend onnx predicts on the CPU; drop --device {device} or use --backend torch")
    if record.method == "unet":
        from workbench.deep import load_model, make_predictor

        options = {"batch_size": batch_size} if batch_size else {}
        if backend == "onnx":
            from workbench.exchange import make_onnx_predictor

            model, card = load_model(directory, device="cpu")
            predictor = make_onnx_predictor(model, card, directory, **options)
        else:
            model, card = load_model(directory, device=device)
            predictor = make_predictor(model, card, device=device, **options)
        return Segmenter(predictor, card.n_outputs, card.in_channels, 0, record,
                         instance_options=dict(card.instance_options))
    if record.method == "forest":
        from workbench.classic import ForestModel

        forest = ForestModel.load(directory)
        return Segmenter(forest.as_predictor(), forest.n_classes, forest.in_channels, forest.halo, record,
                         tile_size=512)
    raise WorkbenchError(f"model version {record.version} has unknown method {record.method!r}")


# ---------------------------------------------------------------------- training
def _unet_settings(project: Project, settings: dict, *, new_model: bool = True):
    from workbench.deep import TrainSettings

    known = {f.name for f in fields(TrainSettings)} - {"mode", "classes", "n_classes"}
    mapped = dict(settings)
    if new_model and "weights" not in mapped:
        mapped["weights"] = default_weights(project, mapped)
    if mapped.get("weights") == "none":
        mapped["weights"] = None
    if "distance" not in mapped and project.image_names and all(
            segments_volumes(project, name) for name in project.image_names):
        # Stacks split in 3-D are seeded by the painted objects' shape, never by the distance output,
        # and learning it cost the 3-D U-Net (tests/test_volumes.py's draw: AP@0.5 0.676 -> 0.575).
        mapped["distance"] = False
    unknown = sorted(set(mapped) - known)
    if unknown:
        raise WorkbenchError(
            f"unknown U-Net training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    classes = _output_classes(project)
    return TrainSettings(**mapped, mode=project.mode, classes=tuple(classes), n_classes=len(classes))


def _output_classes(project: Project) -> list[str]:
    return list(INSTANCE_CLASSES) if project.mode == "instance" else project.class_names


def train_model(project: Project, *, method: str = "unet", settings: dict | None = None, resume: bool = False,
                callbacks: Sequence = (), stop_event: threading.Event | None = None,
                progress: bool | Progress = False, job_id: str | None = None) -> ModelRecord:
    """Train a new model version on the project's labels and record it.

    Parameters
    ----------
    method : {"unet", "forest"}
    settings : dict
        U-Net: fields of `workbench.deep.TrainSettings` (``minutes``, ``epochs``, ``encoder``,
        ``weights``, ``augment``, ``seed``...). Without ``weights``, a new U-Net starts from
        `default_weights` (the shipped starter for instance projects it fits; ``"none"`` asks for
        random weights). Forest: fields of `workbench.classic._forest` settings.
    resume : bool
        Start from the project's latest model of this method (iterative development).
    callbacks : sequence of workbench.deep.Callback
        Observers (live loss plot, progress bar).
    stop_event : threading.Event, optional
        Set it to stop training early; the best model so far is kept.
    progress : bool or callable
        True shows a progress bar on stderr (command line).
    job_id : str, optional
        The id the project's training record gets (`workbench.jobs.start_training` passes the one
        it is waiting for); a fresh one by default.

    The training is the project's job, whoever runs it: it holds the project's job slot, keeps
    the project's training record (``.workbench/training.json``: state, progress, losses, log,
    pid, the model version it writes, allocated at the start) up to date, and stops when a stop
    is requested through the project (`Project.request_training_stop`), from any process.

    Returns
    -------
    workbench.records.ModelRecord
        The model record written into the manifest.

    Raises
    ------
    WorkbenchError
        Bad settings, nothing painted, or `resume` without a model of `method` for the project's mode.
    ProjectBusyError
        When another job (training, predicting) holds the project.
    """
    import uuid

    from workbench.store._jobs import TrainingJobWriter, clear_stop_request

    check_method(method)
    settings = dict(settings or {})
    with project.job("training"):
        minutes = settings.get("minutes") if method == "unet" else None
        budget = float(minutes) * 60.0 if isinstance(minutes, (int, float)) and not isinstance(minutes, bool) else None
        writer = TrainingJobWriter(project.path, job_id or uuid.uuid4().hex, method=method, budget_seconds=budget)
        clear_stop_request(project.path)
        version = project.begin_training_record(writer)
        writer.log(f"training a {METHOD_NAMES[method]} as model version {version}"
                   + (f" for up to {budget:.0f} s" if budget else ""))
        stop_event = stop_event if stop_event is not None else threading.Event()
        watcher = _StopWatcher(project.path, writer, stop_event)
        watcher.start()
        try:
            record = _train_model(project, method, settings, resume, [*callbacks, _job_callback(writer)],
                                  stop_event, progress, version)
        except BaseException as exc:
            writer.update(state="failed", error=_plain_error(exc), error_in_app=app_message(exc)
                          if isinstance(exc, WorkbenchError) else _plain_error(exc))
            writer.log(f"failed: {_plain_error(exc)}")
            raise
        finally:
            watcher.close()
            clear_stop_request(project.path)
        stopped = stop_event.is_set()
        writer.update(state="stopped" if stopped else "done", version=record.version, progress=1.0,
                      stop_reason=record.metrics.get("stop_reason") or ("stopped" if stopped else None),
                      message="done")
        writer.log(f"saved as model version {record.version}" + (" (stopped early on request)" if stopped else ""))
        return record


def _plain_error(exc: BaseException) -> str:
    """What a failed training's record says: the engine's own sentence, or what kind of failure it was."""
    if isinstance(exc, WorkbenchError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "the training was interrupted (Ctrl-C) before it finished; no model was saved"
    if isinstance(exc, MemoryError):
        return "the training ran out of memory; choose a smaller model size, or close other programs"
    return f"an unexpected problem stopped the training ({type(exc).__name__}: {exc}); the project is unchanged"


class _StopWatcher(threading.Thread):
    """Sets the training's stop event when a stop is requested through the project (any process)."""

    def __init__(self, project_path: Path, writer, stop_event: threading.Event, interval: float = 0.3):
        super().__init__(name="workbench-stop-watcher", daemon=True)
        self.project_path, self.writer, self.stop_event, self.interval = project_path, writer, stop_event, interval
        self._closed = threading.Event()

    def run(self) -> None:
        from workbench.store._jobs import stop_requested

        while not self._closed.wait(self.interval):
            if not self.stop_event.is_set() and stop_requested(self.project_path, self.writer.job_id):
                self.writer.log("stop requested: finishing the current step and keeping the best model so far")
                self.stop_event.set()

    def close(self) -> None:
        self._closed.set()
        self.join(timeout=2.0)


def _job_callback(writer):
    """A training callback that keeps the project's training record up to date."""
    from workbench.deep import Callback

    class _JobRecordCallback(Callback):
        def on_progress(self, fraction, message):
            writer.progress(fraction, message)

        def on_epoch_end(self, epoch, logs):
            writer.epoch({**logs, "epoch": epoch})

    return _JobRecordCallback()


def _train_model(project, method, settings, resume, callbacks, stop_event, progress, version):
    parent = None
    init_from = None
    if resume:
        previous = check_resume(project, method)
        parent, init_from = previous.version, project.model_dir(previous.version)
    samples = [(image, targets) for image, targets, _ in project.training_samples()]
    callbacks = list(callbacks)
    bar = None
    if progress is True:
        from workbench.deep import TqdmProgress

        bar = TqdmProgress()
        callbacks.append(bar)
    elif callable(progress):
        from workbench.deep import ProgressFunctionCallback

        callbacks.append(ProgressFunctionCallback(progress))

    _, directory = project.new_model_dir(method)  # the version was allocated when the job began
    try:
        if method == "unet":
            record_settings, metrics = _train_unet(project, samples, settings, directory, init_from,
                                                   callbacks, stop_event)
        else:
            record_settings, metrics = _train_forest(project, samples, settings, directory, init_from,
                                                     callbacks, stop_event)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return ModelRecord.from_dict(project.register_model(version, directory, method=method,
                                                        settings=record_settings, metrics=metrics,
                                                        parent=parent))


def _train_unet(project, samples, settings, directory, init_from, callbacks, stop_event):
    from workbench.deep import save_model
    from workbench.deep import train

    train_settings = _unet_settings(project, settings, new_model=init_from is None)
    result = train(samples, train_settings, callbacks=callbacks, init_from=init_from, stop_event=stop_event)
    result.card.settings["boundary_width"] = project.boundary_width
    save_model(directory, result.model, result.card)
    metrics = dict(result.best_metrics)
    metrics.update(seconds=round(result.seconds, 1), epochs=len(result.history), stop_reason=result.stop_reason)
    metrics["summary"] = training_summary(metrics)
    # What the next person choosing a training time on this computer is told it buys.
    speed.record_run(train_settings.preset, int(metrics.get("steps") or 0), result.seconds,
                     device=train_settings.device)
    return train_settings.to_dict(), metrics


def training_summary(metrics: dict) -> str:
    """One plain sentence about a trained U-Net: its held-out score, its steps and the hint.

    Parameters
    ----------
    metrics : dict
        A U-Net model record's metrics (``val_object_iou`` or ``val_score``, ``steps``, ``hint``).

    Returns
    -------
    str
        For example "held-out painted objects: 5 of 5 found, mean IoU 0.82 (after 640 optimiser
        steps); still improving — training longer should help".
    """
    steps = metrics.get("total_steps") or metrics.get("steps")
    after = f" (after {steps} optimiser steps)" if steps else ""
    if metrics.get("val_object_iou") is not None:
        n = int(metrics.get("val_objects") or 0)
        found = int(round(float(metrics.get("val_objects_found") or 0.0) * n))
        score = f"held-out painted objects: {found} of {n} found, mean IoU {metrics['val_object_iou']:.2f}{after}"
        calibrated = metrics.get("val_object_iou_calibrated")
        if calibrated is not None and calibrated > metrics["val_object_iou"]:
            score += f", {calibrated:.2f} with the object-finding thresholds fitted to this model"
    elif metrics.get("val_score") is not None:
        score = f"held-out painted pixels: mean class IoU {metrics['val_score']:.2f}{after}"
    else:
        return (f"no labels held out for validation{after}; paint more objects to get a score "
                "on objects the model did not train on")
    hint = metrics.get("hint")
    return f"{score}; {hint}" if hint else score


def _train_forest(project, samples, settings, directory, init_from, callbacks, stop_event):
    from workbench.deep import CallbackList
    from workbench.classic import ForestModel

    # A forest is refitted from scratch: `init_from` only matters to the record's lineage.
    settings = {**project.settings.get("forest", {}), **settings}
    if "seed" in settings:
        settings["random_state"] = settings.pop("seed")
    features = settings.pop("features", None)
    forest = ForestModel(mode=project.mode, n_classes=project.n_outputs, class_names=_output_classes(project),
                         features=features, forest=settings or None)
    observers = CallbackList(callbacks)
    observers.on_train_start({"method": "forest", "images": len(samples)})
    try:
        forest.fit(samples, progress=observers.on_progress)
    except BaseException as exc:
        observers.on_exception(exc)
        raise
    forest.save(directory)
    card = forest.card()
    observers.on_train_end(card["metrics"])
    return {"features": card["features"], "forest": card["forest"]}, dict(card["metrics"] or {})


# ---------------------------------------------------------------------- prediction
class _PlaneOut:
    """Write access to one z-plane of a (Z, K, Y, X) array as if it were (K, Y, X)."""

    def __init__(self, array, z: int):
        self.array, self.z = array, z
        self.shape = tuple(array.shape[1:])
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __setitem__(self, key, value):
        key = key if isinstance(key, tuple) else (key,)
        self.array[(self.z,) + key] = value

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        return self.array[(self.z,) + key]


class _ClassesFirst:
    """A (Z, K, Y, X) probability stack read as (K, Z, Y, X), one class volume per ``[k]``.

    The store keeps probabilities plane by plane; 3-D post-processing reads one class at a
    time through the whole stack, so only one class volume is in memory.
    """

    def __init__(self, array):
        self.array = array
        z, k, *spatial = array.shape
        self.shape = (k, z, *spatial)
        self.dtype = array.dtype

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return np.asarray(self.array[:, int(index)])
        # A window of every class, (slice(None), zs, ys, xs), as blockwise post-processing reads it.
        if (isinstance(index, tuple) and len(index) == 4 and index[0] == slice(None)
                and all(isinstance(i, slice) for i in index)):
            return np.moveaxis(np.asarray(self.array[(index[1], slice(None)) + tuple(index[2:])]), 1, 0)
        raise TypeError("read one class at a time, probabilities[k], or a window of all: probabilities[:, z, y, x]")


#: Stacks with more voxels than this are post-processed block by block (the shape split holds about
#: 68 bytes a voxel in memory: 9.2 GB at 128 x 1024 x 1024, measured), so any size fits.
VOLUME_IN_MEMORY_VOXELS = 64 * 1024 * 1024
#: In-plane core of a block of a large stack; its depth is the whole stack up to `_VOLUME_BLOCK_DEPTH`.
_VOLUME_BLOCK_SIDE, _VOLUME_BLOCK_DEPTH = 512, 64


def volume_instances(probabilities, options: dict, *, out=None, scratch=None,
                     in_memory_voxels: int | None = None):
    """3-D instances of a (K, Z, Y, X) probability stack: in memory, or block by block when large.

    Blocks carry a halo of twice the typical painted object (its width in-plane, its depth along
    z, from `options`' shape split) so each object is seen whole by a block, and objects that
    cross block faces keep one id (`workbench.predict.blockwise_instances`). `out` (e.g. a Zarr
    array) receives the labels and `scratch` (a folder) keeps the blockwise id map on disk.
    """
    from workbench.predict import blockwise_instances, instances_from_probabilities
    from workbench.predict._volumes import SEED_SPACING_FRACTION

    limit = VOLUME_IN_MEMORY_VOXELS if in_memory_voxels is None else in_memory_voxels
    shape = tuple(probabilities.shape[1:])
    if int(np.prod(shape, dtype=np.int64)) <= limit:
        labels = instances_from_probabilities(probabilities, **options)
        if out is None:
            return labels
        out[...] = labels
        return out
    # The shape split's minimum distance is a fixed share of the painted objects' width; without a
    # painted shape, the 2-D batch engine's halo (64 px) serves.
    width = (float(options.get("min_distance", 4)) / SEED_SPACING_FRACTION if options.get("seeds") == "shape"
             else 32.0)
    spacing = options.get("spacing") or (1.0, 1.0, 1.0)
    z_scale = float(spacing[0]) / float(spacing[1])
    halo = (min(shape[0], max(2, int(np.ceil(2 * width / z_scale)))), int(np.ceil(2 * width)),
            int(np.ceil(2 * width)))
    block = (min(shape[0], _VOLUME_BLOCK_DEPTH), _VOLUME_BLOCK_SIDE, _VOLUME_BLOCK_SIDE)
    ids = None
    if scratch is not None:
        import zarr

        ids = zarr.open_array(str(Path(scratch) / "ids.zarr"), mode="w", shape=shape, dtype=np.int64,
                              chunks=tuple(min(b, s) for b, s in zip(block, shape)))
    labels, _ = blockwise_instances(probabilities, out, block_size=block, halo=halo, ids=ids, **options)
    return labels


def segments_volumes(project: Project, name: str | None = None) -> bool:
    """Whether instances of a z-stack are objects through the stack (the project's ``boundaries``
    setting is ``"3d"``) rather than one set per plane; for `name`, whether that image is a stack too."""
    if project.mode != "instance" or project.boundaries != "3d":
        return False
    return name is None or "Z" in project.image_info(name).axes


def uncertainty(probabilities: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Per-pixel uncertainty in [0, 1]: 1 - (top probability - second probability), over the first
    `n_classes` channels (all by default): the classes, not a U-Net's distance map after them."""
    probabilities = np.asarray(probabilities[:n_classes], np.float32)
    top2 = np.sort(probabilities, axis=0)[-2:]
    return 1.0 - (top2[1] - top2[0])


def instance_options(project: Project, *, volume: bool = False, segmenter: Segmenter | None = None) -> dict:
    """Post-processing settings for instances: the thresholds the model chose on its held-out
    objects (`segmenter`'s), under the project's ``instances`` settings, with ``min_size: "auto"``
    (the default) resolved from the objects the user painted.

    With `volume`, for 3-D instances of a z-stack: the automatic minimum size is a volume in voxels.
    """
    options = dict(segmenter.instance_options) if segmenter is not None else {}
    options.update(project.settings.get("instances", {}))
    if options.get("min_size", "auto") == "auto":
        options["min_size"] = auto_min_size(project, volume=volume)
    return options


#: In-plane context predicted around the painted objects when the volume threshold is chosen.
_CALIBRATION_CONTEXT = 32


def volume_instance_options(project: Project, segmenter: Segmenter, *, tile_size: int | None = None,
                            overlap: float = 0.25, tta: bool | None = None) -> dict:
    """Settings of 3-D instances for z-stacks segmented by this project's model.

    With at least three objects painted whole in the project's stacks, volumes are split by those
    objects' shape (distance-transform seeds with their z-scale and width, see
    `workbench.predict.painted_shape`) and the foreground threshold is the one whose instances fit
    the painted objects best: the model predicts the painted regions (with context) and each
    candidate is scored. The project's own ``instances`` settings win over both; with fewer
    painted objects the boundary-seeded watershed of 2-D stays.
    """
    from workbench.predict import calibrate_volume_instances, painted_region, painted_shape

    options = instance_options(project, volume=True, segmenter=segmenter)
    stacks = [(name, project.labels(name)[...]) for name in project.image_names
              if "Z" in project.image_info(name).axes]
    shape = painted_shape([labels for _, labels in stacks])
    if shape is None:
        return options
    own = project.settings.get("instances", {})
    options = {**options, **shape.options(), **own}
    if "foreground_threshold" in own:
        return options
    windows = []
    for name, labels in stacks:
        region = painted_region(labels, _CALIBRATION_CONTEXT)
        if region is None:
            continue
        source = project.image(name)
        zs, ys, xs = region
        planes = [_predict_plane(segmenter, np.asarray(source.plane(z)[:, ys, xs]), None, tile_size=tile_size,
                                 overlap=overlap, tta=tta, progress=None) for z in range(zs.start, zs.stop)]
        windows.append((np.stack(planes, axis=1), labels[region]))
    calibration = calibrate_volume_instances(windows, options)
    if calibration is not None:
        options["foreground_threshold"] = calibration.foreground_threshold
    return options


def auto_min_size(project: Project, *, volume: bool = False) -> int:
    """A tenth of the median painted object's area over the project (at least 16 pixels); with
    `volume`, of the median volume of the objects painted in the project's z-stacks (in voxels)."""
    planes = []
    for name in project.image_names:
        labels = project.labels(name)
        if volume:
            if labels.ndim == 3:
                planes.append(labels[...])
            continue
        labels = labels[...]
        planes.extend(labels if labels.ndim == 3 else [labels])
    return min_size_from_labels(planes)


def min_size_from_labels(label_planes: Iterable[np.ndarray]) -> int:
    """A tenth of the median size of the objects painted in these label planes (at least 16 pixels).

    A (Z, Y, X) label volume among them counts its objects in 3-D (sizes in voxels)."""
    from workbench.store import painted_objects

    areas = []
    for plane in label_planes:
        objects, count = painted_objects(plane)
        if count:
            areas.append(np.bincount(objects.ravel())[1:])
    if not areas:
        return MIN_OBJECT_PIXELS
    return max(MIN_OBJECT_PIXELS, int(MIN_OBJECT_FRACTION * np.median(np.concatenate(areas))))


def postprocess(probabilities, mode: str, **options) -> np.ndarray:
    """Instances (int32 ids) in instance mode, the class map (uint8, 0-based) in semantic mode."""
    from workbench.predict import instances_from_probabilities, semantic_from_probabilities

    if mode == "instance":
        return instances_from_probabilities(probabilities, **options)
    return semantic_from_probabilities(probabilities)


def _predict_plane(segmenter: Segmenter, plane, out, *, tile_size, overlap, tta, progress):
    from workbench.predict import predict_tiled

    tta = segmenter.default_tta if tta is None else bool(tta)

    if plane.shape[0] != segmenter.in_channels:
        raise WorkbenchError(
            f"the model expects {segmenter.in_channels} channel(s) but the image has {plane.shape[0]}; "
            "use a model trained on images with the same channels, or train one for these"
        )
    predictor = segmenter.predictor
    if np.dtype(plane.dtype).kind == "f":
        name = getattr(getattr(plane, "source", None), "name", "the image")

        def predictor(batch, _inner=segmenter.predictor):  # the image's fault, not the model's: say so
            if not np.all(np.isfinite(batch)):
                raise WorkbenchError(
                    f"image {name!r} holds NaN or infinite values; replace them (e.g. with 0) and segment it again"
                )
            return _inner(batch)

    return predict_tiled(plane, predictor, segmenter.n_outputs, tile_size=tile_size or segmenter.tile_size,
                         overlap=overlap, halo=segmenter.halo, out=out, tta=tta, progress=progress)


# Sanity checks on a result: thresholds of what is almost never a real segmentation.
HUGE_OBJECT_FRACTION = 0.5   # one object covering more than this share of the image
SIZE_RATIO_WARNING = 4.0     # typical object this many times larger or smaller than the painted ones


def painted_object_areas(project: Project) -> np.ndarray:
    """Areas in pixels of the objects painted in the project's 2-D label planes (instance mode)."""
    return project.painted_object_areas()


def sanity_warnings(labels, mode: str, *, painted_areas=None, class_names: Sequence[str] = ()) -> list[str]:
    """Plain-language warnings about a result that is probably nonsense, each with its likely cause.

    Instance mode: no objects, one object covering most of the image, or objects far larger or
    smaller than the painted ones (`painted_areas`). Semantic mode: no pixel of any class but the
    background. An empty list means nothing looks wrong (not that the result is right).

    Examples
    --------
    >>> whole = np.ones((64, 64), np.int32)
    >>> sanity_warnings(whole, "instance")[0][:40]
    'one object covers 100 % of the image: th'
    >>> sanity_warnings(np.zeros((64, 64), np.int32), "instance")[0][:24]
    'no objects were found: t'
    """
    labels = np.asarray(labels)
    warnings: list[str] = []
    if mode != "instance":
        if labels.size and not (labels > 0).any():
            warnings.append("only background was found: the model may not have learned the other classes yet "
                            "(paint more of them and train longer), or this image differs from the ones you painted")
        return warnings
    areas = np.bincount(labels.ravel().astype(np.int64))[1:] if labels.size else np.zeros(0, np.int64)
    areas = areas[areas > 0]
    if areas.size == 0:
        warnings.append("no objects were found: the model may not have learned the objects yet (train longer, or "
                        "paint more objects), or this image differs from the ones you painted (another stain, "
                        "brightness or magnification)")
        return warnings
    largest = float(areas.max()) / labels.size
    if largest > HUGE_OBJECT_FRACTION:
        warnings.append(f"one object covers {100 * largest:.0f} % of the image: the model probably took the "
                        "background for an object; this image may differ from the ones you painted (another kind of "
                        "image, stain or magnification): paint some objects and background in it and train again")
    painted = np.asarray(painted_areas if painted_areas is not None else [], dtype=float)
    if painted.size:
        ratio = float(np.median(areas)) / float(np.median(painted))
        if ratio > SIZE_RATIO_WARNING:
            warnings.append(f"the objects found are about {ratio:.0f} times larger than the ones you painted: "
                            "touching objects may have been merged, or the magnification differs; paint the "
                            "background between touching objects and train longer")
        elif ratio < 1 / SIZE_RATIO_WARNING:
            warnings.append(f"the objects found are about {1 / ratio:.0f} times smaller than the ones you painted: "
                            "objects may have been split into pieces, or the magnification differs; paint whole "
                            "objects (fill each one completely) and train longer")
    return warnings


def result_warnings(project: Project, labels) -> list[str]:
    """`sanity_warnings` for a result of this project (compared with the objects painted in it)."""
    painted = painted_object_areas(project) if project.mode == "instance" else None
    return sanity_warnings(labels, project.mode, painted_areas=painted)


def _summary(probabilities, labels, mode: str, n_classes: int) -> dict:
    probs = np.asarray(probabilities)[:n_classes]
    info = {"mean_uncertainty": float(uncertainty(probs).mean())}
    if mode == "instance":
        info["objects"] = int(len(np.unique(labels)) - (1 if (labels == 0).any() else 0))
    else:
        counts = np.bincount(np.asarray(labels).ravel(), minlength=probs.shape[0])
        info["class_fractions"] = [round(float(c) / labels.size, 4) for c in counts]
    return info


def _planes_for_normalisation(project: Project, limit: int = 16) -> list:
    """Up to `limit` lazy CYX planes spread over the project's images (for fitting the normaliser)."""
    planes = [(name, z) for name in project.image_names for z in range(project.image(name).n_slices)]
    chosen = [planes[int(i)] for i in np.unique(np.linspace(0, len(planes) - 1, min(limit, len(planes))).round())]
    return [project.image(name).plane(z) for name, z in chosen]


def starter_model(project: Project) -> ModelRecord:
    """The project's model version that is the shipped starter as it is ("try it before you paint").

    The first call registers it: the starter's weights adapted to the project's channels, and a
    normalisation fitted on the project's images (no labels needed). Later calls return that
    version while the starter and the channel count are the same. Training with ``resume``
    afterwards continues from it.

    Raises
    ------
    WorkbenchError
        For a semantic project, a project without images, or an installation without a starter.
    ProjectBusyError
        When another job holds the project.
    """
    from workbench.deep import (CARD_FILENAME, INSTANCE_CLASSES as CLASSES, ModelCard, PercentileNormalizer,
                                WEIGHTS_FILENAME, build_unet, save_model, sha256_file, starter_dir, starter_info)

    if project.mode != "instance":
        raise WorkbenchError(
            f"the starter model finds separate objects (instance mode) and project {project.name!r} is semantic; "
            "paint your classes and train a model instead")
    folder = starter_dir()
    if folder is None:
        raise WorkbenchError("this installation has no starter model; paint some objects and train a model instead")
    if not project.image_names:
        raise WorkbenchError(f"project {project.name!r} has no images yet; add some first (`workbench add`)")
    channels = {project.image_info(name).channels for name in project.image_names}
    if len(channels) != 1:
        raise WorkbenchError(f"the project's images have different channel counts ({sorted(channels)}); "
                             "one model reads one channel count")
    in_channels = channels.pop()
    sha256 = sha256_file(folder / WEIGHTS_FILENAME)
    for record in reversed(model_records(project)):
        if record.method == "unet" and record.settings.get("zero_shot") and \
                record.settings.get("starter_sha256") == sha256 and \
                ModelCardInfo.read(record.directory(project.path)).in_channels == in_channels:
            return record
    info = starter_info(folder)
    starter_card = _json_card(folder / CARD_FILENAME)
    preset = (starter_card.get("settings") or {}).get("preset") or "fast"
    with project.job("preparing the starter model"):
        distance = bool(starter_card.get("distance"))
        model = build_unet(in_channels, len(CLASSES), preset=preset, weights=STARTER, distance=distance)
        normalizer = PercentileNormalizer().fit(_planes_for_normalisation(project))
        settings = {"preset": preset, "weights": STARTER, "zero_shot": True, "starter_sha256": sha256,
                    "boundary_width": project.boundary_width}
        steps = (info.get("training") or {}).get("steps")
        metrics = {"steps": 0, "starter_steps": steps, "summary": (
            "the starter model as shipped (pretrained on generated images"
            + (f", {steps} steps" if steps else "") + "), not trained on this project's labels: "
            "paint where it is wrong and train to improve it")}
        # The object-finding thresholds the starter chose on its held-out generated objects go with it.
        card = ModelCard(in_channels=in_channels, n_classes=len(CLASSES), classes=list(CLASSES), mode="instance",
                         normalisation=normalizer.to_dict(), settings=settings, metrics=metrics,
                         instance_options=dict(starter_card.get("instance_options") or {}), distance=distance)
        version, directory = project.new_model_dir("unet")
        try:
            save_model(directory, model, card)
            record = project.register_model(version, directory, method="unet", settings=settings, metrics=metrics)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
    return ModelRecord.from_dict(record)


def _json_card(path: Path) -> dict:
    """A model folder's ``card.json`` as a dict ({} when it cannot be read)."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resolve_model_version(project: Project, model_version: int | str | None) -> int | None:
    """A model version number from what a caller named: a number, None (the latest) or ``"starter"``
    (the project's zero-shot starter version, registered on first use: `starter_model`)."""
    if isinstance(model_version, str):
        if model_version.strip().lower() != STARTER:
            raise WorkbenchError(f"model must be a version number or {STARTER!r}, got {model_version!r}")
        return starter_model(project).version
    return model_version


def try_starter(project: Project, *, names: Iterable[str] | None = None, device: str | None = None,
                progress: Progress | None = None) -> dict[str, dict]:
    """Segment the project's images with the shipped starter model, before any painting.

    One call for the app's "try it before you paint": registers the starter as a model version
    (`starter_model`) and predicts the images with it into the store, as `predict_project` does.

    Returns
    -------
    dict
        The summary per image (objects found, mean uncertainty, model version).
    """
    return predict_project(project, names=names, model_version=STARTER, device=device, progress=progress)


def predict_project(project: Project, *, names: Iterable[str] | None = None, model_version: int | str | None = None,
                    tile_size: int | None = None, overlap: float = 0.25, tta: bool | None = None,
                    device: str | None = None, progress: Progress | None = None,
                    segmenter: Segmenter | None = None, backend: str = "torch") -> dict[str, dict]:
    """Predict project images (all by default) into the store: probabilities and instances/classes.

    `model_version` is a version number, None (the latest) or ``"starter"`` (the shipped starter
    model, no training needed: see `starter_model`). Returns a summary per image: mean uncertainty
    and objects (instance) or class fractions.
    """
    _check_tile_size(tile_size)
    if segmenter is None:
        model_version = resolve_model_version(project, model_version)
    with project.job("predicting"):
        return _predict_project(project, names, model_version, tile_size, overlap, tta, device, progress, segmenter,
                                backend)


def _predict_project(project, names, model_version, tile_size, overlap, tta, device, progress, segmenter, backend):
    from workbench.store._lock import owner_tmp

    segmenter = segmenter or load_segmenter(project, model_version, device=device, backend=backend)
    painted = painted_object_areas(project) if project.mode == "instance" else None
    names = list(names) if names is not None else project.image_names
    for name in names:
        _check_memory(project.image(name), segmenter.n_outputs)  # every image checked before any work
    options = instance_options(project, segmenter=segmenter) if project.mode == "instance" else {}
    volume_options = None
    summary = {}
    for index, name in enumerate(names):
        source = project.image(name)
        n_slices = source.n_slices
        spatial = source.spatial_shape
        stacked = "Z" in source.axes
        volume = segments_volumes(project, name)
        if volume and volume_options is None:
            volume_options = volume_instance_options(project, segmenter, tile_size=tile_size, overlap=overlap,
                                                     tta=tta)
        prob_shape = ((n_slices,) if stacked else ()) + (segmenter.n_outputs, *spatial)
        probs = project.create_prediction(name, "probabilities", prob_shape, np.float32,
                                          model_version=segmenter.record.version)
        kind = "instances" if project.mode == "instance" else "classes"
        labels_out = project.create_prediction(name, kind, ((n_slices,) if stacked else ()) + tuple(spatial),
                                               np.int32 if kind == "instances" else np.uint8,
                                               model_version=segmenter.record.version)
        plane_summaries = []
        for z in range(n_slices):
            def plane_progress(fraction, message="", _i=index, _z=z):
                if progress:
                    done = (_i + (_z + fraction) / n_slices) / len(names)
                    progress(done, f"{name}" + (f" z={_z}" if stacked else ""))

            out = _PlaneOut(probs, z) if stacked else probs
            _predict_plane(segmenter, source.plane(z), out, tile_size=tile_size, overlap=overlap, tta=tta,
                           progress=plane_progress)
            plane_probs = out[...] if not stacked else probs[z]
            if volume:  # objects through the stack, once every plane has its probabilities
                plane_summaries.append({"mean_uncertainty": float(uncertainty(plane_probs, project.n_outputs).mean())})
                continue
            labels = postprocess(plane_probs, project.mode, **options)
            if stacked:
                labels_out[z] = labels
            else:
                labels_out[...] = labels
            plane_summaries.append(_summary(plane_probs, labels, project.mode, project.n_outputs))
        if volume:
            # The painted objects' z-scale, when known, overrides the voxel size for splitting.
            scratch = owner_tmp(project.path) / f"volume-{index}"
            try:
                volume_instances(_ClassesFirst(probs), {"spacing": project.voxel_size(name), **volume_options},
                                 out=labels_out, scratch=scratch)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        # Read while the staged layer is still where `labels_out` points: completing moves it.
        result = labels_out[...]
        warnings = sanity_warnings(result, project.mode, painted_areas=painted)
        project.mark_prediction_complete(name)
        info = plane_summaries[0] if len(plane_summaries) == 1 else {
            "mean_uncertainty": float(np.mean([s["mean_uncertainty"] for s in plane_summaries])),
            "slices": plane_summaries,
        }
        if volume:
            info["objects"] = int(result.max())
        info["model_version"] = segmenter.record.version
        info["warnings"] = warnings
        summary[name] = info
    if progress:
        progress(1.0, "done")
    return summary


def predict_file(project: Project, path, out, *, probabilities=None, model_version: int | str | None = None,
                 tile_size: int | None = None, overlap: float = 0.25, tta: bool | None = None, device: str | None = None,
                 axes: str | None = None, progress: Progress | None = None, backend: str = "torch") -> dict:
    """Segment an image file that is not part of the project (any size: read and written tile by tile).

    `out` gets instances (instance mode) or the class map (semantic); `probabilities`, when given,
    the class probabilities. An `out` named ``NAME.ome.zarr`` is an OME-Zarr container of the
    image with its labels (see `export_prediction`), which holds the probabilities too with
    ``probabilities=True``. Outputs are written into temporary siblings and renamed into place
    when whole: an existing output stays until then, and a kill leaves no partial output.
    """
    import zarr

    from workbench.store import open_image, write_image
    from workbench.store._lock import owner_tmp

    label_dtype = np.int32 if project.mode == "instance" else np.uint8
    out, probabilities, probabilities_inside = _check_outputs(out, probabilities, label_dtype=label_dtype)
    _check_tile_size(tile_size)
    source = open_image(path, axes=axes)
    model_version = resolve_model_version(project, model_version)
    segmenter = load_segmenter(project, model_version, device=device, backend=backend)
    volume = "Z" in source.axes and segments_volumes(project)
    if volume:
        options = volume_instance_options(project, segmenter, tile_size=tile_size, overlap=overlap, tta=tta)
    else:
        options = instance_options(project, segmenter=segmenter) if project.mode == "instance" else {}
    voxel_size = _file_voxel_size(project, source) if "Z" in source.axes else None
    stacked = "Z" in source.axes
    _check_memory(source, segmenter.n_outputs)
    registry = owner_tmp(project.path) / "outside.json"
    scratch = owner_tmp(project.path) / f"predict-{Path(out).name}-{np.random.default_rng().integers(1 << 62):x}"
    try:
        shape = ((source.n_slices,) if stacked else ()) + (segmenter.n_outputs, *source.spatial_shape)
        chunk = tuple(1 for _ in shape[:-2]) + tuple(min(s, 512) for s in shape[-2:])
        probs = zarr.open_array(str(scratch / "probabilities.zarr"), mode="w", shape=shape, dtype=np.float32,
                                chunks=chunk)
        labels = np.zeros(((source.n_slices,) if stacked else ()) + tuple(source.spatial_shape), label_dtype)
        for z in range(source.n_slices):
            target = _PlaneOut(probs, z) if stacked else probs
            _predict_plane(segmenter, source.plane(z), target, tile_size=tile_size, overlap=overlap, tta=tta,
                           progress=(lambda f, m="", _z=z: progress((_z + f) / source.n_slices, m)) if progress else None)
            if volume:
                continue  # objects through the stack, below
            plane_labels = postprocess(probs[z] if stacked else probs[...], project.mode, **options)
            if stacked:
                labels[z] = plane_labels
            else:
                labels[...] = plane_labels
        if volume:
            labels[...] = volume_instances(_ClassesFirst(probs), {"spacing": voxel_size, **options},
                                           scratch=scratch)
        if is_ome_zarr_path(out):
            _write_container(project, out, source, labels, probs if probabilities_inside else None,
                             size=voxel_size if stacked else source.pixel_size, registry=registry)
        else:
            write_image(out, labels, axes="ZYX" if stacked else "YX", voxel_size=voxel_size, registry=registry)
        if probabilities is not None:
            write_image(probabilities, probs, axes="ZCYX" if stacked else "CYX", voxel_size=voxel_size,
                        registry=registry)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    info = {"shape": tuple(labels.shape), "model_version": segmenter.record.version}
    if project.mode == "instance":
        info["objects"] = int(labels.max())
    info["warnings"] = result_warnings(project, labels)
    return info


def _file_voxel_size(project: Project, source) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) in µm of a z-stack file: its metadata first, then the project setting."""
    setting = project.settings.get("voxel_size")
    pixel = source.pixel_size or (tuple(setting[1:]) if setting else None)
    z_spacing = source.z_spacing or (setting[0] if setting else None)
    if pixel is None:
        return None
    return (float(z_spacing or min(pixel)), float(pixel[0]), float(pixel[1]))


MIN_TILE, MAX_TILE = 32, 8192


def _check_tile_size(tile_size) -> None:
    if tile_size is None:
        return
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or not MIN_TILE <= tile_size <= MAX_TILE:
        raise WorkbenchError(
            f"tile size must be a whole number of pixels from {MIN_TILE} to {MAX_TILE}, got {tile_size!r}; "
            "256 (the default) suits most images"
        )


def _check_memory(source, n_outputs: int) -> None:
    """Refuse, before reading a pixel, an image whose post-processing would not fit in memory."""
    import psutil

    plane = int(np.prod(source.spatial_shape, dtype=np.int64))
    needed = plane * (4 * n_outputs + 4 * 3) + plane * 4 * source.n_slices  # one plane's probabilities + work, labels
    available = psutil.virtual_memory().available
    if needed > available:
        raise WorkbenchError(
            f"image {source.name!r} ({' x '.join(map(str, source.shape))}) needs about {needed / 2**30:.1f} GiB of "
            f"memory to segment and this machine has {available / 2**30:.1f} GiB free; crop it into smaller "
            "images, or use a machine with more memory"
        )


def _check_output_suffix(path: Path, *, dtype=None) -> None:
    from workbench.store._io import check_output_path

    check_output_path(path, dtype=dtype)


def _check_outputs(out, probabilities, *, label_dtype) -> tuple[Path, Path | None, bool]:
    """Check the output names of a prediction before any work is done.

    Parameters
    ----------
    out : path-like
        The label output; ``NAME.ome.zarr`` is a container of the image with its labels.
    probabilities : path-like, True or None
        A file of their own for the probabilities, or True: into the container `out`.

    Returns
    -------
    out : Path
    probabilities_file : Path or None
        Where the probabilities go as a file of their own.
    probabilities_inside : bool
        Whether they go into the container `out`.
    """
    out = Path(out)
    _check_output_suffix(out, dtype=label_dtype)
    if probabilities is None or probabilities is False:
        return out, None, False
    if probabilities is True:
        if not is_ome_zarr_path(out):
            raise WorkbenchError(f"the probabilities go into the output only when it is an OME-Zarr container: name "
                                 f"it NAME.ome.zarr (not {out.name}), or give the probabilities a file of their own")
        return out, None, True
    probabilities = Path(probabilities)
    _check_output_suffix(probabilities, dtype=np.float32)
    if is_ome_zarr_path(probabilities):
        raise WorkbenchError(f"probabilities output {probabilities}: an .ome.zarr output is a container of the image "
                             "with its labels; put the probabilities inside the label output NAME.ome.zarr "
                             "(--probabilities with no file name; probabilities=True from Python) or write them "
                             "to a .tif or .zarr file")
    if probabilities.absolute() == out.absolute():
        raise WorkbenchError(f"--probabilities and --out both name {out}; give two different files")
    return out, probabilities, False


def _label_layers(project: Project, labels) -> dict:
    """The label images of a result container, in the project's class colours.

    Instance mode: ``instances`` (the ids) and ``classes`` (1 on every object); semantic mode:
    ``classes`` (the class index, 0 = background).
    """
    import dask.array as da

    from workbench.store._omezarr import LabelLayer

    colors, names = project.class_colors, project.class_names
    if project.mode == "instance":
        ids = labels if isinstance(labels, da.Array) else da.from_array(labels, name=False)
        return {"instances": LabelLayer(ids),
                "classes": LabelLayer((ids > 0).astype(np.uint8), {1: colors[1]}, {1: {"class": names[1]}})}
    return {"classes": LabelLayer(labels, {c: colors[c] for c in range(1, len(names))},
                                  {c: {"class": names[c]} for c in range(len(names))})}


def _channels_first(array, axes: str):
    """A stored array (canonical axes: ``YX``, ``CYX``, ``ZYX`` or ``ZCYX``) as a lazy dask array in
    NGFF's order, channels before the spatial axes, with those axes in lower case."""
    import dask.array as da

    ngff = "".join(a for a in "CZYX" if a in axes)
    chunks = tuple(1 if a == "Z" else n if a == "C" else min(n, 1024) for a, n in zip(axes, array.shape))
    # name=False: dask would otherwise hash the whole source to name it.
    lazy = da.from_array(array, chunks=chunks, name=False, meta=np.empty((0,) * len(axes), array.dtype))
    return lazy.transpose([axes.index(a) for a in ngff]), ngff.lower()


def _write_container(project: Project, out: Path, image, labels, probabilities, *, size, registry) -> None:
    """Write `image` (an `ImageSource`), its labels and (optionally) probabilities as the OME-Zarr
    container `out`, into a temporary sibling renamed into place when whole.

    `size` is the voxel size (z, y, x) of a z-stack or the pixel size (y, x) of a 2-D image, in µm.
    """
    from workbench.store import atomic_output
    from workbench.store._omezarr import write_ome_zarr

    volume = "Z" in image.axes
    pixels, image_axes = _channels_first(image, image.axes)
    if probabilities is not None:
        probabilities, _ = _channels_first(probabilities, ("Z" if volume else "") + "CYX")
    with atomic_output(out, registry=registry) as tmp:
        write_ome_zarr(tmp, pixels, image_axes=image_axes, labels=_label_layers(project, labels),
                       probabilities=probabilities,
                       probability_names=None if probabilities is None else probability_names(
                           project.mode, project.class_names, probabilities.shape[0]),
                       pixel_size=None if volume else size, voxel_size=size if volume else None,
                       name=image_stem(out))


def export_prediction(project: Project, name: str, out, *, probabilities=None) -> Path:
    """Write a stored prediction of a project image to a file (.tif, .png, .zarr or .ome.zarr).

    A z-stack goes to TIFF as an ImageJ hyperstack with its voxel size. An `out` named
    ``NAME.ome.zarr`` is an OME-Zarr (NGFF 0.4) container: the image as its root, the
    instances and classes under ``labels/``, and, with ``probabilities=True``, the class
    probabilities under ``probabilities/``, with the pixel or voxel size as their scale. It is
    written into a temporary sibling and renamed into place when whole.

    Parameters
    ----------
    project : Project
    name : str
        The project image.
    out : path-like
        The label output.
    probabilities : path-like or True, optional
        A file for the class probabilities, or True: into the container `out`.

    Returns
    -------
    pathlib.Path
        `out`.

    Raises
    ------
    WorkbenchError
        For an output name of an unknown type, probabilities=True with an output that is not
        ``.ome.zarr``, or an image that has no prediction (or no probabilities, when asked) yet.
    """
    from workbench.store import write_image

    from workbench.store._lock import owner_tmp

    kind = "instances" if project.mode == "instance" else "classes"
    out, probabilities, probabilities_inside = _check_outputs(
        out, probabilities, label_dtype=np.int32 if kind == "instances" else np.uint8)
    labels = project.prediction(name, kind)
    if labels is None:
        raise WorkbenchError(f"image {name!r} has no prediction yet; run `workbench predict {project.path} {name}`",
                             in_app=f"image {name!r} has no prediction yet; open step 4 (Review): it predicts every "
                                    "image with the latest model")
    registry = owner_tmp(project.path) / "outside.json"
    voxel_size = project.voxel_size(name)
    probs = None
    if probabilities is not None or probabilities_inside:
        probs = project.prediction(name, "probabilities")
        if probs is None:
            raise WorkbenchError(f"image {name!r} has a stored {kind} prediction but no probabilities; predict it "
                                 f"again (`workbench predict {project.path} {name}`) to have them")
    if is_ome_zarr_path(out):
        image = project.image(name)
        _write_container(project, out, image, labels, probs if probabilities_inside else None,
                         size=voxel_size if "Z" in image.axes else image.pixel_size, registry=registry)
    else:
        write_image(out, labels, axes="ZYX" if labels.ndim == 3 else "YX", voxel_size=voxel_size, registry=registry)
    if probabilities is not None:
        write_image(probabilities, probs, axes="ZCYX" if probs.ndim == 4 else "CYX", voxel_size=voxel_size,
                    registry=registry)
    return out


# ---------------------------------------------------------------------- measurements
def measure_labels(project: Project, labels, intensity, *, image: str, z: int | None = 0, pixel_size=None):
    """Per-object table of one predicted plane, with ``image``, ``z`` and ``class`` columns.

    Instance mode measures the objects; semantic mode the connected regions of each
    non-background class. A (Z, Y, X) volume (``z=None``, intensity ZYX or ZCYX, `pixel_size`
    the voxel size (z, y, x)) is measured in 3-D, and its ``z`` column is the object's
    centroid plane.
    """
    import pandas as pd
    from scipy import ndimage as ndi

    from workbench.predict import measure_objects

    labels = np.asarray(labels)
    intensity = np.asarray(intensity)
    channel_axis = 0 if labels.ndim == 2 else 1  # CYX, or ZCYX for a volume
    if intensity.ndim == labels.ndim + 1 and intensity.shape[channel_axis] == 1:
        intensity = np.squeeze(intensity, axis=channel_axis)  # no "_ch0" suffix for a gray image
    per_class = [(project.class_names[1], labels)] if project.mode == "instance" else [
        (project.class_names[c], ndi.label(labels == c)[0]) for c in range(1, project.n_classes)]
    tables = []
    for class_name, objects in per_class:
        table = measure_objects(objects, intensity, pixel_size=pixel_size)
        table.insert(0, "class", class_name)
        table.insert(0, "z", z if z is not None else np.rint(table["centroid_z"]).astype(np.int64))
        table.insert(0, "image", image)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def measure_project(project: Project, out=None, *, names: Iterable[str] | None = None):
    """One table of per-object measurements over the project's predicted images (see `measure_labels`)."""
    import pandas as pd

    from workbench.predict import write_table

    names = list(names) if names else project.image_names
    tables = []
    kind = "instances" if project.mode == "instance" else "classes"
    for name in names:
        stored = project.prediction(name, kind)
        if stored is None:
            raise WorkbenchError(f"image {name!r} has no prediction yet; run `workbench predict {project.path}` first",
                                 in_app=f"image {name!r} has no prediction yet; open step 4 (Review): it predicts every "
                                    "image with the latest model")
        source = project.image(name)
        pixel_size = project.image_info(name).pixel_size
        if stored.ndim == 3 and segments_volumes(project, name):
            # One row per object of the volume; the voxel size makes µm columns when known.
            tables.append(measure_labels(project, stored[...], source[...], image=name, z=None,
                                         pixel_size=project.voxel_size(name)))
            continue
        for z in range(source.n_slices):
            labels = stored[z] if stored.ndim == 3 else stored[...]
            tables.append(measure_labels(project, labels, source.plane(z)[...], image=name, z=z,
                                         pixel_size=pixel_size))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if out is not None:
        write_table(table, out)
    return table


# ---------------------------------------------------------------------- the demo
DEMO_OUTPUTS = ("project", "overlay.png", "measurements.csv")


def check_demo_target(out_dir, *, minutes: float = 2.0, force: bool = False) -> Path:
    """Check the demo's arguments and folder before anything is written or deleted.

    Raises
    ------
    WorkbenchError
        For a time budget that is not positive, a file or unwritable path, or a folder that
        already holds something (the demo never deletes without ``force``, and even then only
        its own outputs).
    """
    out_dir = Path(out_dir)
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes <= 24 * 60:
        raise WorkbenchError(f"--minutes must be a positive number of minutes (e.g. 2), got {minutes!r}")
    if out_dir.exists() and not out_dir.is_dir():
        raise WorkbenchError(f"demo output {out_dir} is a file; give a folder for the demo's outputs")
    existing = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if existing and not force:
        raise WorkbenchError(
            f"demo output folder {out_dir} is not empty ({', '.join(existing[:5])}{'...' if len(existing) > 5 else ''}); "
            "choose an empty or new folder, or add --force to replace the demo's own outputs there"
        )
    if force and (out_dir / "project").exists() and not (out_dir / "project" / "project.json").exists():
        raise WorkbenchError(f"{out_dir / 'project'} is not a workbench project; the demo will not replace it")
    probe = out_dir if out_dir.is_dir() else next((p for p in out_dir.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK):
        raise WorkbenchError(f"cannot write into {probe} (permission denied); choose a folder you can write to")
    return out_dir


def run_demo(out_dir, *, minutes: float = 2.0, seed: int = 0, progress: bool = True, force: bool = False) -> dict:
    """Sample project → train → predict → overlay PNG + measurements table; returns where they are.

    Refuses a non-empty `out_dir` unless ``force`` (see `check_demo_target`); with it, the
    previous demo project is replaced only once the new one is built.
    """
    from workbench.store import write_image
    from workbench.predict import average_precision
    from workbench.predict import overlay_instances
    from workbench.datasets._sample import SAMPLE_NAME, build_sample_project, sample_ground_truth

    from workbench.store import swap_into_place

    out_dir = check_demo_target(out_dir, minutes=minutes, force=force)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkbenchError(f"cannot create the demo folder {out_dir}: {exc.strerror}; choose a folder you can "
                             "write to") from exc
    building = out_dir / f".project.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    project = build_sample_project(building, seed=seed)
    swap_into_place(building, out_dir / "project")  # an earlier demo project stays until this one exists
    project = Project.open(out_dir / "project")
    stats = project.label_stats()
    record = train_model(project, settings={"minutes": minutes, "seed": seed}, progress=progress)
    predict_project(project, progress=None)
    instances = project.prediction(SAMPLE_NAME, "instances")[...]
    image = project.image(SAMPLE_NAME)[...]
    overlay_path = write_image(out_dir / "overlay.png", overlay_instances(image, instances))
    table_path = out_dir / "measurements.csv"
    table = measure_project(project, table_path)
    scores = average_precision(sample_ground_truth(), instances)
    return {
        "project": str(project.path),
        "labelled": f"{stats['objects']} objects, {100 * stats['annotated_fraction']:.1f}% of pixels",
        "model": f"version {record.version} ({record.method}), {record.metrics.get('summary', '')}",
        "objects found": int(len(table)),
        "AP@0.5 vs ground truth": round(float(scores["ap50"]), 3),
        "overlay": str(overlay_path),
        "measurements": str(table_path),
    }

"""Data, scoring and the methods under test, shared by the benchmarks.

* `nuclei_split` / `synthetic_pair` – train images with simulated partial
  labels and test images with full ground truth (`SegmentationTask`).
* `score_instances` – instance AP (2018 DSB matching) and foreground IoU / Dice.
* `SkimageForest` – the scikit-image trainable-segmentation reference;
  `train_workbench_forest` – the workbench's classic path.
* `train_and_score_deep` – the workbench's deep path for a time budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from benchmarks._common import FULL, MOBILENET_V2_WEIGHTS, NUCLEI_DIR, TEST_HALF, TRAIN_HALF, BenchConfig, best_of


# ----------------------------------------------------------------------------- data


@dataclass
class SegmentationTask:
    """A train image with partial labels and a test image with full ground truth.

    Attributes
    ----------
    name : str
    train_image : np.ndarray
        YX raw intensities.
    train_labels : np.ndarray
        Painted label layer (0 unlabelled, 1 background, 2 object).
    train_targets : np.ndarray
        int64 targets (-1 ignore, 0 background, 1 interior, 2 boundary).
    test_image : np.ndarray
        YX raw intensities.
    test_gt : np.ndarray
        Instance ground truth of ``test_image``.
    labelled_fraction : float
        Annotated share of the train image.
    painted_objects : int
        Whole objects painted in the train image.
    min_object_size : int
        The product's automatic minimum object size for these labels (`workbench.pipeline`).
    """

    name: str
    train_image: np.ndarray
    train_labels: np.ndarray
    train_targets: np.ndarray
    test_image: np.ndarray
    test_gt: np.ndarray
    labelled_fraction: float
    painted_objects: int

    @property
    def min_object_size(self) -> int:
        from workbench.pipeline import min_size_from_labels

        return min_size_from_labels([self.train_labels])


def _targets_from_partial(labels: np.ndarray) -> np.ndarray:
    from workbench.store import training_targets

    return training_targets(labels, "instance", boundary_width=2)


def _count_painted(labels: np.ndarray, gt: np.ndarray) -> int:
    return int(np.unique(gt[(labels == 2) & (gt > 0)]).size)


def load_nuclei() -> tuple[np.ndarray, np.ndarray]:
    """The real 512 x 512 nuclei image and its instance ground truth."""
    import tifffile

    image_path, labels_path = NUCLEI_DIR / "image.tif", NUCLEI_DIR / "labels.tif"
    if not image_path.is_file() or not labels_path.is_file():
        raise FileNotFoundError(
            f"the nuclei data is missing: expected {image_path} and {labels_path} "
            "(the shared/ folder beside the checkout)."
        )
    return tifffile.imread(image_path), tifffile.imread(labels_path)


def nuclei_split(object_fraction: float = 0.25, seed: int = 0) -> SegmentationTask:
    """The nuclei image split in halves: partial labels on the left (train), full ground truth on the right (test).

    Objects are chosen among those lying wholly inside the left half, so no
    painted object is cut by the split line.
    """
    from workbench.datasets import labelled_fraction, simulate_partial_labels

    image, gt = load_nuclei()
    labels = simulate_partial_labels(gt, object_fraction=object_fraction, region=TRAIN_HALF, seed=seed)
    train_labels = labels[TRAIN_HALF]
    return SegmentationTask(
        name="nuclei half split",
        train_image=image[TRAIN_HALF],
        train_labels=train_labels,
        train_targets=_targets_from_partial(train_labels),
        test_image=image[TEST_HALF],
        test_gt=gt[TEST_HALF],
        labelled_fraction=labelled_fraction(train_labels),
        painted_objects=_count_painted(train_labels, gt[TRAIN_HALF]),
    )


def synthetic_pair(shape: tuple[int, int] = (512, 512), object_fraction: float = 0.25,
                   train_seed: int = 101, test_seed: int = 202) -> SegmentationTask:
    """Two hard synthetic images: partial labels on the first (train), full ground truth on the second (test)."""
    from workbench.datasets import labelled_fraction, simulate_partial_labels
    from workbench.datasets import hard_nuclei

    train_image, train_gt = hard_nuclei(tuple(shape), seed=train_seed)
    test_image, test_gt = hard_nuclei(tuple(shape), seed=test_seed)
    labels = simulate_partial_labels(train_gt, object_fraction=object_fraction, seed=train_seed)
    return SegmentationTask(
        name=f"hard synthetic {shape[0]}x{shape[1]}",
        train_image=train_image,
        train_labels=labels,
        train_targets=_targets_from_partial(labels),
        test_image=test_image,
        test_gt=test_gt,
        labelled_fraction=labelled_fraction(labels),
        painted_objects=_count_painted(labels, train_gt),
    )


def tiled_nuclei(size: int) -> np.ndarray:
    """A ``size`` x ``size`` image made of the nuclei image mirrored in tiles (seamless, real content)."""
    image, _ = load_nuclei()
    mirrored = np.block([[image, image[:, ::-1]], [image[::-1], image[::-1, ::-1]]])
    reps = -(-size // mirrored.shape[0])
    return np.ascontiguousarray(np.tile(mirrored, (reps, reps))[:size, :size])


# ----------------------------------------------------------------------------- scoring


def score_instances(gt: np.ndarray, probabilities: np.ndarray, *, min_size: int = 16,
                    options: dict | None = None) -> dict[str, Any]:
    """Instances from 3-class probabilities with the workbench's post-processing, scored against ``gt``.

    ``min_size`` is the product's automatic minimum object size for the task's labels
    (`SegmentationTask.min_object_size`), the same for every method; ``options`` are the
    thresholds a U-Net chose on its own held-out painted objects (as the product uses them).

    Returns
    -------
    dict
        ``ap50`` and ``map`` (2018 DSB matching, IoU 0.5-0.95), foreground
        ``iou`` and ``dice`` (1 - P(background) > 0.5 against ``gt > 0``),
        ``n_pred`` and ``n_gt``.
    """
    from workbench.predict import _metrics as metrics
    from workbench.predict import instances_from_probabilities

    instances = instances_from_probabilities(probabilities, min_size=min_size, **(options or {}))
    ap = metrics.average_precision(gt, instances)
    foreground = probabilities[0] < 0.5
    at = {round(float(t), 2): i for i, t in enumerate(ap["thresholds"])}
    return {
        "ap50": ap["ap50"],
        "ap75": float(ap["ap"][at[0.75]]),
        "map": ap["map"],
        "tp50": int(ap["tp"][at[0.5]]),
        "fp50": int(ap["fp"][at[0.5]]),
        "fn50": int(ap["fn"][at[0.5]]),
        "iou": metrics.iou(gt > 0, foreground),
        "dice": metrics.dice(gt > 0, foreground),
        "n_pred": ap["n_pred"],
        "n_gt": ap["n_gt"],
    }


# ----------------------------------------------------------------------------- peers


class SkimageForest:
    """scikit-image's trainable segmentation: multiscale_basic_features + RandomForestClassifier.

    The settings are those of scikit-image's "trainable segmentation" gallery
    example (intensity + texture, sigma 1-16; 50 trees of depth 10 on 5 %
    bootstrap samples). It is trained on the same 3-class targets as the
    workbench so that only the pixel classifier differs.
    """

    def __init__(self, random_state: int = 0):
        from sklearn.ensemble import RandomForestClassifier
        from skimage import feature

        self.features = partial(feature.multiscale_basic_features, intensity=True, edges=False, texture=True,
                                sigma_min=1, sigma_max=16)
        self.forest = RandomForestClassifier(n_estimators=50, n_jobs=-1, max_depth=10, max_samples=0.05,
                                             random_state=random_state)

    def fit(self, image: np.ndarray, targets: np.ndarray) -> "SkimageForest":
        """Train on the annotated pixels (targets >= 0) of a YX image."""
        from skimage import future

        # scikit-image counts classes from 1 and treats 0 as unlabelled.
        future.fit_segmenter((targets + 1).astype(np.uint8), self.features(image), self.forest)
        return self

    def predict_features(self, stack: np.ndarray) -> np.ndarray:
        """(Y, X, F) features -> (3, Y, X) float32 probabilities."""
        height, width, n_features = stack.shape
        rows = self.forest.predict_proba(stack.reshape(-1, n_features))
        out = np.zeros((height * width, 3), dtype=np.float32)
        out[:, self.forest.classes_ - 1] = rows  # classes_ are 1..3; absent classes stay 0
        return np.ascontiguousarray(out.T).reshape(3, height, width)

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """(3, Y, X) float32 probabilities of a YX image."""
        return self.predict_features(self.features(image))


def train_workbench_forest(image: np.ndarray, targets: np.ndarray):
    """The workbench's classic path with its default settings, in instance mode."""
    from workbench.classic import ForestModel

    return ForestModel(mode="instance").fit([(image, targets)])


def forest_rows(task: SegmentationTask) -> list[dict[str, Any]]:
    """Train and score both forests on ``task`` (rows with method, train_s, predict_s and scores, marked
    ``forest``): with the default post-processing, then the same probabilities with seeds cut at their
    necks (``neck_ratio``, a project setting), so the deep path is compared with the forests at their
    best, not only at their defaults."""
    from workbench.predict import NECK_RATIO

    rows, cut = [], []
    for method, fit in (("scikit-image forest (reference)",
                         lambda: SkimageForest().fit(task.train_image, task.train_targets)),
                        ("workbench forest (classic path)",
                         lambda: train_workbench_forest(task.train_image, task.train_targets))):
        train_s, model = best_of(1, fit)
        predict_s, probabilities = best_of(1, lambda: model.predict_proba(task.test_image))
        rows.append({"method": method, "train_s": train_s, "predict_s": predict_s, "forest": True,
                     **score_instances(task.test_gt, probabilities, min_size=task.min_object_size)})
        cut.append({"method": method + ", seeds cut at necks", "train_s": train_s, "predict_s": predict_s,
                    "forest": True, **score_instances(task.test_gt, probabilities, min_size=task.min_object_size,
                                                      options={"neck_ratio": NECK_RATIO})})
    return rows + cut


# ----------------------------------------------------------------------------- deep path


def deep_settings(variant: str, budget_s: float | None, device: str, **overrides: Any):
    """TrainSettings of a deep variant in instance mode: "scratch" (default preset, random init),
    "starter" (default preset from the shipped starter model: what a new instance project starts
    from) or "pretrained" (ImageNet MobileNetV2)."""
    from workbench.deep import TrainSettings, starter_dir

    if variant == "scratch":
        base = {}
    elif variant == "starter":
        if starter_dir() is None:
            raise FileNotFoundError("no starter model in this installation (workbench/deep/starter/)")
        base = {"weights": str(starter_dir())}
    elif variant == "pretrained":
        if not MOBILENET_V2_WEIGHTS.is_file():
            raise FileNotFoundError(f"pretrained weights missing: expected {MOBILENET_V2_WEIGHTS}.")
        base = {"preset": "mobilenet_v2", "weights": str(MOBILENET_V2_WEIGHTS)}
    else:
        raise ValueError(f"unknown deep variant {variant!r}; expected 'scratch', 'starter' or 'pretrained'.")
    minutes = None if budget_s is None else budget_s / 60.0
    return TrainSettings(mode="instance", minutes=minutes, device=device, **{"seed": 0, **base, **overrides})


def deep_label(variant: str) -> str:
    """Table label of a deep variant."""
    from workbench.deep import DEFAULT_PRESET, PRESETS

    if variant == "scratch":
        return f"workbench U-Net, scratch ('{DEFAULT_PRESET}': {PRESETS[DEFAULT_PRESET]['encoder']})"
    if variant == "starter":
        return f"workbench U-Net, from the starter ('{DEFAULT_PRESET}')"
    return "workbench U-Net, ImageNet MobileNetV2 encoder"


def train_and_score_deep(task: SegmentationTask, variant: str, budget_s: float, device: str,
                         config: BenchConfig = FULL, *, seed: int = 0) -> dict[str, Any]:
    """Train a deep variant on ``task`` for the step equivalent of ``budget_s`` and score it on the test image."""
    return train_and_score_deep_curve(task, variant, [budget_s], device, config, seed=seed)[0]


def train_and_score_deep_curve(task: SegmentationTask, variant: str, budgets_s, device: str,
                               config: BenchConfig = FULL, *, seed: int = 0) -> list[dict[str, Any]]:
    """One training run to the longest budget, scored at the step equivalent of every budget on the way.

    The trainer keeps a weight average under a constant learning rate and nothing in it depends
    on when the run will end, so the model after N steps of a long run is the model a run of N
    steps returns (bit-identical on CPU): one run gives every budget's result.

    Returns
    -------
    list of dict
        One row per budget: method, device, budget_s, steps, train_s (training time up to that
        step, scoring excluded), setup_s, predict_s, the held-out score and hint, and the scores.
    """
    from workbench.deep import INSTANCE_CLASSES, Callback, ModelCard, Trainer, make_predictor
    from workbench.predict import predict_symmetries

    budgets = sorted(budgets_s)
    steps_at = {config.steps_for(budget): budget for budget in budgets}
    longest = max(steps_at)
    steps_per_epoch = 10 if all(steps % 10 == 0 for steps in steps_at) else 1
    settings = deep_settings(variant, None, device, patch_size=config.train_patch_size, seed=seed,
                             epochs=longest // steps_per_epoch, steps_per_epoch=steps_per_epoch)
    rows: list[dict[str, Any]] = []

    class _Score(Callback):
        scoring_s = 0.0
        started = None

        def on_train_start(self, info):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs):
            if logs["steps"] not in steps_at:
                return
            began = time.perf_counter()
            model = trainer.average_model
            card = ModelCard(in_channels=1, n_classes=3, classes=list(INSTANCE_CLASSES), mode="instance",
                             normalisation=trainer.normalizer.to_dict(),
                             distance=bool(model.workbench_recipe.get("distance")))
            predictor = make_predictor(model, card, device=device)
            # As the product predicts a U-Net: averaged over the eight symmetries of the square.
            predict_s, probabilities = best_of(
                1, lambda: predict_symmetries(predictor, task.test_image[None, None], card.n_outputs)[0])
            calibration = trainer.calibrate()
            options = calibration.options if calibration is not None else {}
            model.eval()
            rows.append({
                "method": deep_label(variant), "device": device, "budget_s": steps_at[logs["steps"]],
                "steps": logs["steps"], "train_s": logs["seconds"] - self.scoring_s,
                "setup_s": max(0.0, self.started - setup_began), "predict_s": predict_s, "seed": seed,
                "val_score": logs.get("val_score"), "thresholds": options,
                **{f"{key}_default": value for key, value in
                   score_instances(task.test_gt, probabilities, min_size=task.min_object_size).items()
                   if key in ("ap50", "ap75", "map")},
                **score_instances(task.test_gt, probabilities, min_size=task.min_object_size, options=options),
            })
            self.scoring_s += time.perf_counter() - began

    setup_began = time.perf_counter()
    # The scorer reads the trainer's weight average, so it refers to the trainer made next.
    trainer = Trainer([(task.train_image, task.train_targets)], settings, callbacks=[_Score()])
    result = trainer.fit()
    for row in rows:
        row["hint"] = result.best_metrics.get("hint") if row["steps"] == longest else None
    return rows

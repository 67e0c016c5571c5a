"""The workbench's classic path vs scikit-image's trainable segmentation: accuracy and prediction throughput.

Both forests train on the same simulated partial labels of the nuclei train
half (3 classes: background, interior, boundary) and are scored on the test
half with the same instance post-processing. Prediction throughput is timed
end to end (features + forest) on a larger image made of the nuclei image
mirrored in tiles, with the feature and forest shares timed separately.

Run alone: ``python -m benchmarks.run_all --only forest [--quick]``.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
from benchmarks._common import FULL, BenchConfig, BenchmarkResult, Target, best_of, margin_text, markdown_table, ratio
from benchmarks._tasks import SkimageForest, nuclei_split, score_instances, tiled_nuclei, train_workbench_forest

NAME = "forest"
SPEEDUP_GOAL = 2.0

COLUMNS = ["method", "n_features", "train_s", "feature_mps", "forest_mps", "predict_mps", "speedup", "ap50",
           "map", "iou", "dice"]
HEADERS = {"n_features": "features", "train_s": "train s", "feature_mps": "features MP/s",
           "forest_mps": "forest MP/s", "predict_mps": "predict MP/s (features + forest)",
           "speedup": "predict speed ÷ scikit-image", "ap50": "AP@0.5", "map": "mAP 0.5–0.95", "iou": "fg IoU",
           "dice": "fg Dice"}


def run(config: BenchConfig = FULL, devices: Sequence[str] = ("cpu",)) -> BenchmarkResult:
    """Train both forests, score them, and time their prediction on a ``forest_image_size``² image.

    ``devices`` is accepted for a uniform interface; forests run on the CPU.
    """
    started = time.perf_counter()
    task = nuclei_split(config.object_fraction)
    big = tiled_nuclei(config.forest_image_size)
    megapixels = big.size / 1e6
    rows: list[dict[str, Any]] = []

    train_s, reference = best_of(1, lambda: SkimageForest().fit(task.train_image, task.train_targets))
    feature_s, stack = best_of(config.repeats, lambda: reference.features(big))
    forest_s, _ = best_of(config.repeats, lambda: reference.predict_features(stack))
    del stack
    predict_s, _ = best_of(config.repeats, lambda: reference.predict_proba(big))
    rows.append({"method": "scikit-image forest (reference)", "n_features": reference.forest.n_features_in_,
                 "train_s": train_s, "feature_mps": megapixels / feature_s, "forest_mps": megapixels / forest_s,
                 "predict_mps": megapixels / predict_s,
                 **score_instances(task.test_gt, reference.predict_proba(task.test_image),
                                  min_size=task.min_object_size)})

    train_s, model = best_of(1, lambda: train_workbench_forest(task.train_image, task.train_targets))
    image = np.asarray(big)[None]
    feature_s, stack = best_of(config.repeats, lambda: model.features.compute(model.normalisation.apply(image)))
    forest_s, _ = best_of(config.repeats, lambda: model.predict_features(stack))
    del stack
    predict_s, _ = best_of(config.repeats, lambda: model.predict_proba(big))
    rows.append({"method": "workbench forest (classic path)", "n_features": model.n_features, "train_s": train_s,
                 "feature_mps": megapixels / feature_s, "forest_mps": megapixels / forest_s,
                 "predict_mps": megapixels / predict_s,
                 **score_instances(task.test_gt, model.predict_proba(task.test_image),
                                  min_size=task.min_object_size)})
    for row in rows:
        row["speedup"] = ratio(row["predict_mps"], rows[0]["predict_mps"])

    description = (
        f"Training: the nuclei train half with simulated partial labels ({task.labelled_fraction:.1%} labelled), "
        "3-class targets for both. Reference: `skimage.feature.multiscale_basic_features` (intensity + texture, "
        "sigma 1–16) and `RandomForestClassifier(n_estimators=50, max_depth=10, max_samples=0.05, n_jobs=-1)`, "
        "as in scikit-image's trainable-segmentation example; workbench: `ForestModel(mode='instance')` with "
        f"its defaults. Throughput: best of {config.repeats} on a {big.shape[0]} × {big.shape[1]} image "
        f"({megapixels:.2f} MP, whole image at once); accuracy on the {task.test_image.shape[0]} × "
        f"{task.test_image.shape[1]} test half."
    )
    return BenchmarkResult(name=NAME, title="Classic path vs scikit-image's trainable segmentation",
                           description=description, rows=rows, columns=COLUMNS,
                           tables=[markdown_table(rows, COLUMNS, HEADERS)], targets=_targets(rows),
                           seconds=time.perf_counter() - started)


def _targets(rows: list[dict[str, Any]]) -> list[Target]:
    reference, ours = rows
    speedup = ours["speedup"]
    accuracy_ok = ours["ap50"] >= reference["ap50"]
    met = speedup >= SPEEDUP_GOAL and accuracy_ok
    reasons = []
    if speedup < SPEEDUP_GOAL:
        feature_gain = ours["feature_mps"] / reference["feature_mps"]
        forest_gain = ours["forest_mps"] / reference["forest_mps"]
        reasons.append(
            f"features {feature_gain:.2f}× and forest {forest_gain:.2f}× the reference's speed "
            f"({ours['n_features']} vs {reference['n_features']} features per pixel)")
    if not accuracy_ok:
        reasons.append(f"AP@0.5 {ours['ap50']:.3f} below the reference's {reference['ap50']:.3f}")
    return [Target(
        goal=f"classic path prediction throughput ≥ {SPEEDUP_GOAL:.0f}× scikit-image's at equal or better AP@0.5",
        measured=f"{margin_text(speedup, SPEEDUP_GOAL, unit='×')}; AP@0.5 {ours['ap50']:.3f} vs "
                 f"{reference['ap50']:.3f}",
        met=met, why="; ".join(reasons))]


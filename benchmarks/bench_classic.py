"""Classic path vs scikit-image's trainable segmentation, on the same partial labels of the nuclei image.

Trains both on 20 annotated nuclei (interior / boundary) plus background
strokes on the left half, scores the right half (foreground Dice, instance
AP@0.5 with the shared post-processing,
workbench.predict.instances_from_probabilities), and times feature computation,
training and end-to-end prediction (features + forest) on a 1-megapixel image
(the nuclei image tiled 2 x 2). Prints a markdown table.

Run: ``python -m benchmarks.bench_classic [--repeats 2]``. The reference is
`benchmarks._tasks.SkimageForest`, the one scikit-image reference of the harness
(its "trainable segmentation" example).
"""

from __future__ import annotations

import argparse

import numpy as np
import tifffile

from benchmarks._common import NUCLEI_DIR as DATA, best_of
from benchmarks._tasks import SkimageForest
from workbench.classic import ForestModel, LivePreview
from workbench.datasets import simulate_partial_labels
from workbench.predict import average_precision, dice, instances_from_probabilities
from workbench.store import training_targets

RIGHT = np.s_[:, 256:]


def score(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    foreground_dice = dice(labels[RIGHT] > 0, probabilities[0][RIGHT] < 0.5)
    ap = average_precision(labels[RIGHT], instances_from_probabilities(probabilities)[RIGHT], thresholds=[0.5])["ap50"]
    return foreground_dice, ap


def bench_reference(image, targets, big, labels, repeats):
    train_s, reference = best_of(repeats, lambda: SkimageForest().fit(image, targets))
    feature_s, stack = best_of(repeats, lambda: reference.features(big))
    predict_s, _ = best_of(repeats, lambda: reference.predict_features(reference.features(big)))
    return {"features": stack.shape[-1], "feature_s": feature_s, "train_s": train_s, "predict_s": predict_s,
            "scores": score(reference.predict_proba(image), labels)}


def bench_classic(image, targets, big, labels, repeats, forest_settings=None):
    def train():
        return ForestModel(mode="instance", forest=forest_settings).fit([(image, targets)])

    train_s, model = best_of(repeats, train)
    feature_s, _ = best_of(repeats, lambda: model.features.compute(model.normalisation.apply(big[None])))
    predict_s, _ = best_of(repeats, lambda: model.predict_proba(big))
    return {"features": model.n_features, "feature_s": feature_s, "train_s": train_s, "predict_s": predict_s,
            "scores": score(model.predict_proba(image), labels), "nodes": model.metrics["n_nodes"]}


def interleaved_speedup(image, targets, big, repeats):
    """Median of reference time / workbench time, the two timed back to back (robust on a shared machine)."""
    reference = SkimageForest().fit(image, targets)
    model = ForestModel(mode="instance").fit([(image, targets)])
    ratios = []
    for _ in range(repeats):
        reference_s, _ = best_of(1, lambda: reference.predict_features(reference.features(big)))
        ours_s, _ = best_of(1, lambda: model.predict_proba(big))
        ratios.append(reference_s / ours_s)
    return float(np.median(ratios))


def partial_instance_targets(labels: np.ndarray) -> np.ndarray:
    """3-class targets from partial labels painted on the left half, as a user would paint them."""
    painted = simulate_partial_labels(labels, object_fraction=0.25, region=(slice(None), slice(0, 240)), seed=0)
    return training_targets(painted, "instance", boundary_width=2)


def bench_preview(big, labels, repeats):
    big_targets = np.tile(partial_instance_targets(labels), (2, 2))
    preview = LivePreview(big, mode="instance")
    first_s, _ = best_of(1, lambda: (preview.update(big_targets), preview.predict(0, 1024, 0, 1024)))
    update_s, _ = best_of(repeats, lambda: preview.update(big_targets))
    view_s, _ = best_of(repeats, lambda: preview.predict(0, 1024, 0, 1024))
    return first_s, update_s, view_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    image = tifffile.imread(DATA / "image.tif")
    labels = tifffile.imread(DATA / "labels.tif")
    targets = partial_instance_targets(labels)
    big = np.tile(image, (2, 2))
    megapixels = big.size / 1e6
    rows = [
        ("scikit-image reference", bench_reference(image, targets, big, labels, args.repeats)),
        ("workbench.classic default", bench_classic(image, targets, big, labels, args.repeats)),
    ]
    print(f"| pipeline | features | feature MP/s | train s | predict MP/s (features + forest) | Dice | AP@0.5 |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows:
        dice, ap = row["scores"]
        print(f"| {name} | {row['features']} | {megapixels / row['feature_s']:.2f} | {row['train_s']:.2f} | "
              f"{megapixels / row['predict_s']:.2f} | {dice:.3f} | {ap:.3f} |")
    print(f"\nInterleaved speedup (scikit-image time / ours, end-to-end prediction of {megapixels:.1f} MP, "
          f"median of {args.repeats * 3}): {interleaved_speedup(image, targets, big, args.repeats * 3):.2f}x")
    first_s, update_s, view_s = bench_preview(big, labels, args.repeats)
    print(f"\nLivePreview on a 1 MP view: first stroke (features + train + predict) {first_s:.2f} s, "
          f"retrain {update_s:.2f} s, viewport prediction from cached features {view_s:.2f} s.")


if __name__ == "__main__":
    main()

"""The starter model: fine-tuning curves from scratch / ImageNet / starter, zero-shot, and per-style fine-tuning.

Three measurements of the starter model (``workbench/deep/starter``, or ``--starter DIR`` for a
fresh ``workbench pretrain`` output before it ships):

1. **Fine-tuning curves** on the nuclei half split (partial labels on the left half, scored on the
   right half, as in the deep-path benchmark): the default U-Net from random weights, the
   MobileNetV2 U-Net from ImageNet weights and the default U-Net from the starter, each scored at
   the optimiser-step equivalent of 10 s, 20 s, 30 s, 1, 2 and 5 minutes (one run per variant: the
   trainer's model after N steps is the same however the run ends).
2. **Zero-shot** on the right half: the starter as shipped, no labels, its normalisation fitted on
   the image itself (what ``workbench predict --model starter`` does).
3. **Fresh synthetic test sets of each corpus style** (`workbench.datasets.corpus_image`, seeds
   never used by a pretraining pool's derivation): partial labels on one image, full ground
   truth on another; the starter fine-tuned for 30 s against scratch for 2 minutes.

Run: ``python -m benchmarks.run_all --only pretrain [--quick]``, or alone
``python -m benchmarks.bench_pretrain [--quick] [--starter DIR] [--record]``; ``--record`` writes
the measured scores into the starter's ``starter.json`` (``scores``; the weights' sha256 is unchanged).
Parts measured in separate runs (``--variants``, ``--parts``, each with ``--jsonl FILE``) become one
section and one plot with ``--report FILE...``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from benchmarks._common import (BENCH_DIR, FULL, MOBILENET_V2_WEIGHTS, QUICK, BenchConfig, BenchmarkResult, Target,
                                margin_text, markdown_table)
from benchmarks._tasks import deep_settings, nuclei_split, score_instances

NAME = "pretrain"
PLOT_NAME = "pretrain_accuracy_vs_time.png"
#: The issue's curve points (10 s, 30 s, 1, 2 and 5 minutes) and 20 s for the "≤ 20 s" goal.
CURVE_BUDGETS_S = (10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
REACH_GOAL_S = 20.0
LEAD_GOAL = 0.02
ZERO_SHOT_GOAL = 0.75
STYLE_STARTER_S, STYLE_SCRATCH_S = 30.0, 120.0
#: Seeds of the per-style train and test images (far from the small integers pretraining pools derive from).
STYLE_TRAIN_SEED, STYLE_TEST_SEED = 7_000_001, 7_000_002

VARIANTS = ("scratch", "imagenet", "starter")
COLUMNS = ["part", "method", "style", "channels", "budget_s", "steps", "ap50", "ap75", "map", "iou", "n_pred",
           "n_gt"]
HEADERS = {"part": "measurement", "budget_s": "budget s (step equivalent)", "steps": "steps", "ap50": "AP@0.5",
           "ap75": "AP@0.75", "map": "mAP 0.5–0.95", "iou": "fg IoU", "n_pred": "objects", "n_gt": "GT objects"}
LABELS = {"scratch": "scratch (default U-Net, random init)", "imagenet": "ImageNet (MobileNetV2 U-Net)",
          "starter": "starter (default U-Net, pretrained on generated images)"}


# ----------------------------------------------------------------------------- machinery


def _as_cyx(image: np.ndarray) -> np.ndarray:
    return image[None] if image.ndim == 2 else image


def _card(in_channels: int, normalizer, model):
    from workbench.deep import INSTANCE_CLASSES, ModelCard

    return ModelCard(in_channels=in_channels, n_classes=3, classes=list(INSTANCE_CLASSES), mode="instance",
                     normalisation=normalizer.to_dict(), distance=bool(model.workbench_recipe.get("distance")))


def _curve(train_image: np.ndarray, train_targets: np.ndarray, test_image: np.ndarray, test_gt: np.ndarray,
           settings_for: Callable[..., Any], budgets_s: Sequence[float], config: BenchConfig, *, min_size: int,
           device: str) -> list[dict[str, Any]]:
    """One training run to the longest budget, scored at the step equivalent of every budget (CYX-aware)."""
    from workbench.deep import Callback, Trainer, make_predictor
    from workbench.predict import predict_symmetries

    steps_at = {config.steps_for(budget): budget for budget in sorted(budgets_s)}
    longest = max(steps_at)
    per_epoch = 10 if all(steps % 10 == 0 for steps in steps_at) else 1
    settings = settings_for(epochs=longest // per_epoch, steps_per_epoch=per_epoch)
    test = _as_cyx(test_image)
    rows: list[dict[str, Any]] = []

    class _Score(Callback):
        def on_epoch_end(self, epoch, logs):
            if logs["steps"] not in steps_at:
                return
            card = _card(test.shape[0], trainer.normalizer, trainer.average_model)
            predictor = make_predictor(trainer.average_model, card, device=device)
            probabilities = predict_symmetries(predictor, test[None], card.n_outputs)[0]  # as the product predicts a U-Net
            calibration = trainer.calibrate()  # the thresholds the product would use with this model
            options = calibration.options if calibration is not None else {}
            trainer.average_model.eval()
            rows.append({"budget_s": steps_at[logs["steps"]], "steps": logs["steps"], "thresholds": options,
                         **score_instances(test_gt, probabilities, min_size=min_size, options=options)})

    trainer = Trainer([(_as_cyx(train_image), train_targets)], settings, callbacks=[_Score()])
    trainer.fit()
    return rows


def _variant_settings(variant: str, starter: Path, device: str, config: BenchConfig):
    base = {"patch_size": config.train_patch_size, "seed": 0}
    if variant == "scratch":
        return lambda **steps: deep_settings("scratch", None, device, weights=None, **base, **steps)
    if variant == "imagenet":
        return lambda **steps: deep_settings("pretrained", None, device, **base, **steps)
    return lambda **steps: deep_settings("scratch", None, device, weights=str(starter), **base, **steps)


def zero_shot(image: np.ndarray, gt: np.ndarray, starter: Path, device: str = "cpu", *,
              min_size: int = 16) -> dict[str, Any]:
    """Scores of the starter as shipped on `image`, its normalisation fitted on the image (no labels),
    with the object-finding thresholds the starter chose on its held-out generated objects."""
    from workbench.deep import PercentileNormalizer, build_unet, load_model, make_predictor
    from workbench.predict import predict_symmetries

    cyx = _as_cyx(image)
    _, card = load_model(starter)
    model = build_unet(cyx.shape[0], 3, weights=str(starter), distance=card.distance).eval()
    ours = _card(cyx.shape[0], PercentileNormalizer().fit([cyx]), model)
    predictor = make_predictor(model, ours, device=device)
    probabilities = predict_symmetries(predictor, cyx[None], ours.n_outputs)[0]  # as the product predicts a U-Net
    return score_instances(gt, probabilities, min_size=min_size, options=card.instance_options)


def style_task(style: str, shape: tuple[int, int], object_fraction: float):
    """(train image, partial labels, targets, test image, test ground truth) of one corpus style."""
    from workbench.datasets import corpus_image, simulate_partial_labels
    from workbench.store import training_targets

    train_image, train_gt = corpus_image(shape, seed=STYLE_TRAIN_SEED, style=style)
    test_image, test_gt = corpus_image(shape, seed=STYLE_TEST_SEED, style=style, channels=train_image.shape[0])
    labels = simulate_partial_labels(train_gt, object_fraction=object_fraction, seed=STYLE_TRAIN_SEED)
    return train_image, labels, training_targets(labels, "instance", boundary_width=2), test_image, test_gt


# ----------------------------------------------------------------------------- the benchmark


PARTS = ("curves", "zero-shot", "styles")


def run(config: BenchConfig = FULL, devices: Sequence[str] = ("cpu",), *, starter: str | Path | None = None,
        styles: Sequence[str] | None = None, variants: Sequence[str] = VARIANTS,
        parts: Sequence[str] = PARTS) -> BenchmarkResult:
    """Fine-tuning curves, zero-shot and per-style fine-tuning of the starter (see the module docstring).

    `variants` limits the curves and the styles to some starts, `parts` the measurements to some of
    `PARTS` (e.g. one missing curve, or a new starter's rows alone, when the others were measured before)."""
    from workbench.datasets import CORPUS_STYLES
    from workbench.pipeline import min_size_from_labels

    started = time.perf_counter()
    starter = _starter_folder(starter)
    device = devices[0]
    budgets = CURVE_BUDGETS_S if config.name == "full" else tuple(config.train_budgets_s)
    whole_run = "curves" in parts and set(variants) == set(VARIANTS)  # only a whole run replaces the plot
    # The styles compare the starter with scratch; a new starter needs only its own rows.
    style_variants = [v for v in ("scratch", "starter") if v in variants]
    variants = [v for v in variants if v != "imagenet" or ("pretrained" in config.deep_variants
                                                            and MOBILENET_V2_WEIGHTS.is_file())]
    if "curves" not in parts:
        variants = []
    rows: list[dict[str, Any]] = []

    task = nuclei_split(config.object_fraction)
    min_size = task.min_object_size
    for variant in variants:
        for row in _curve(task.train_image, task.train_targets, task.test_image, task.test_gt,
                          _variant_settings(variant, starter, device, config), budgets, config, min_size=min_size,
                          device=device):
            rows.append({"part": "nuclei half split", "method": LABELS[variant], "variant": variant, "style": "nuclei",
                         "channels": 1, "device": device, **row})
    if "zero-shot" in parts:
        zero = zero_shot(task.test_image, task.test_gt, starter, device)
        rows.append({"part": "zero-shot, right half", "method": "starter, no labels", "variant": "zero-shot",
                     "style": "nuclei", "channels": 1, "device": device, "budget_s": 0.0, "steps": 0, **zero})

    style_short, style_long = _style_budgets(config)
    for style in (styles or tuple(CORPUS_STYLES)) if "styles" in parts else ():
        train_image, labels, targets, test_image, test_gt = style_task(style, tuple(config.synthetic_shape),
                                                                       config.object_fraction)
        style_min = min_size_from_labels([labels])
        for variant, budget in ((v, style_long if v == "scratch" else style_short) for v in style_variants):
            (row,) = _curve(train_image, targets, test_image, test_gt,
                            _variant_settings(variant, starter, device, config), [budget], config,
                            min_size=style_min, device=device)
            rows.append({"part": "synthetic style", "method": LABELS[variant], "variant": variant, "style": style,
                         "channels": int(_as_cyx(train_image).shape[0]), "device": device, **row})

    return _result(rows, config, starter, task, style_short, style_long, plot=whole_run, started=started)


def report(paths: Sequence[str | Path], config: BenchConfig = FULL, *, starter: str | Path | None = None,
           plot: bool = True) -> BenchmarkResult:
    """The section for RESULTS.md from rows that ``--jsonl`` runs appended (``--report FILE...``).

    Curves, zero-shot and styles measured in separate runs (one variant or part each) become one
    table, one set of targets and, with `plot`, the one plot of all the curves.
    """
    import json

    started = time.perf_counter()
    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines() if line.strip()]
    return _result(rows, config, _starter_folder(starter), nuclei_split(config.object_fraction),
                   *_style_budgets(config), plot=plot, started=started)


def _starter_folder(starter: str | Path | None) -> Path:
    from workbench.deep import starter_dir

    folder = Path(starter) if starter is not None else starter_dir()
    if folder is None:
        raise FileNotFoundError("no starter model to measure: workbench/deep/starter/ is missing; pass --starter DIR")
    return folder


def _style_budgets(config: BenchConfig) -> tuple[float, float]:
    """Seconds of fine-tuning for the starter and for scratch on the synthetic styles."""
    if config.name == "full":
        return STYLE_STARTER_S, STYLE_SCRATCH_S
    return min(config.train_budgets_s), max(config.train_budgets_s)


def _result(rows: list[dict[str, Any]], config: BenchConfig, starter: Path, task, style_short: float,
            style_long: float, *, plot: bool, started: float) -> BenchmarkResult:
    from workbench.deep import starter_info

    info = starter_info(starter)
    plot = _plot(rows, config) if plot else None
    description = (
        f"Starter: `{starter}` ({info.get('training', {}).get('steps')} steps in "
        f"{info.get('training', {}).get('minutes')} min on {info.get('training', {}).get('device')}; "
        f"sha256 {str(info.get('weights_sha256'))[:12]}…; command `{info.get('command')}`). "
        f"Nuclei half split as in the deep-path benchmark ({task.painted_objects} whole nuclei painted, "
        f"{task.labelled_fraction:.1%} of the train half labelled); budgets are optimiser-step equivalents "
        f"({config.steps_per_minute} steps per minute, 8 patches of {config.train_patch_size}²). Zero-shot: the "
        "starter as shipped on the right half, normalisation fitted on that half, no labels. Synthetic styles: "
        f"`corpus_image` train seed {STYLE_TRAIN_SEED} (partial labels, object fraction {config.object_fraction}) "
        f"and test seed {STYLE_TEST_SEED}, {config.synthetic_shape[0]}×{config.synthetic_shape[1]}; the starter "
        f"fine-tuned for {style_short:.0f} s against scratch for {style_long:.0f} s. The nuclei image is never "
        "used for pretraining."
    )
    tables = [markdown_table(rows, COLUMNS, HEADERS)]
    if plot is not None:
        tables.append(f"![AP@0.5 against fine-tuning time]({plot.name})")
    return BenchmarkResult(name=NAME, title="Starter model: fine-tuning, zero-shot, styles", description=description,
                           rows=rows, columns=COLUMNS, tables=tables,
                           targets=_targets(rows, style_short, style_long), seconds=time.perf_counter() - started)


def _targets(rows: list[dict[str, Any]], style_short: float, style_long: float) -> list[Target]:
    curve = {v: sorted((r for r in rows if r["part"] == "nuclei half split" and r["variant"] == v),
                       key=lambda r: r["budget_s"]) for v in VARIANTS}
    targets = []
    scratch, starter = curve["scratch"], curve["starter"]
    if scratch and starter:
        at_two = [r for r in scratch if r["budget_s"] <= 120.0] or scratch
        reference = at_two[-1]
        reached = next((r for r in starter if r["ap50"] >= reference["ap50"]), None)
        met = reached is not None and reached["budget_s"] <= REACH_GOAL_S
        targets.append(Target(
            goal=f"starter reaches scratch's {reference['budget_s']:.0f} s AP@0.5 ({reference['ap50']:.3f}) in "
                 f"≤ {REACH_GOAL_S:.0f} s of fine-tuning",
            measured=("never, within the curve" if reached is None else
                      f"at {reached['budget_s']:.0f} s (AP@0.5 {reached['ap50']:.3f})"),
            met=met,
            why="" if met else "starter AP@0.5 by budget: " + ", ".join(
                f"{r['budget_s']:.0f} s {r['ap50']:.3f}" for r in starter)))
        starter_at = ([r for r in starter if r["budget_s"] <= 120.0] or starter)[-1]
        best = max(r["ap50"] for r in scratch)
        lead = starter_at["ap50"] - best
        met = lead >= LEAD_GOAL
        targets.append(Target(
            goal=f"starter's {starter_at['budget_s']:.0f} s AP@0.5 ≥ scratch's best ({best:.3f}) + {LEAD_GOAL:.2f}",
            measured=f"lead {margin_text(lead, LEAD_GOAL)} (starter {starter_at['ap50']:.3f})",
            met=met,
            why="" if met else f"errors at IoU 0.5: {starter_at['tp50']} matched, {starter_at['fp50']} false, "
                               f"{starter_at['fn50']} missed (of {starter_at['n_gt']})"))
    zero = [r for r in rows if r["variant"] == "zero-shot"]
    if zero:
        row = zero[0]
        met = row["ap50"] >= ZERO_SHOT_GOAL
        targets.append(Target(
            goal=f"zero-shot AP@0.5 on the right half ≥ {ZERO_SHOT_GOAL:.2f} with no labels",
            measured=margin_text(row["ap50"], ZERO_SHOT_GOAL),
            met=met,
            why="" if met else f"{row['tp50']} matched, {row['fp50']} false or merged, {row['fn50']} missed or split "
                               f"(of {row['n_gt']}); foreground IoU {row['iou']:.3f}"))
    styles = dict.fromkeys(r["style"] for r in rows if r["part"] == "synthetic style")
    for style in styles:
        own = {r["variant"]: r for r in rows if r["part"] == "synthetic style" and r["style"] == style}
        if "scratch" not in own or "starter" not in own:
            continue
        gap = own["starter"]["ap50"] - own["scratch"]["ap50"]
        met = gap >= 0
        targets.append(Target(
            goal=f"{style}: starter + {style_short:.0f} s AP@0.5 ≥ scratch + {style_long:.0f} s",
            measured=f"{own['starter']['ap50']:.3f} vs {own['scratch']['ap50']:.3f} ({margin_text(gap, 0.0)})",
            met=met,
            why="" if met else f"starter {own['starter']['tp50']} matched / {own['starter']['fn50']} missed, scratch "
                               f"{own['scratch']['tp50']} / {own['scratch']['fn50']} (of {own['scratch']['n_gt']})"))
    return targets


def _plot(rows: list[dict[str, Any]], config: BenchConfig):
    """AP@0.5 on the nuclei right half against fine-tuning time, per start, with the zero-shot line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import io

    from workbench.store import atomic_write

    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for variant in VARIANTS:
        own = sorted((r for r in rows if r["part"] == "nuclei half split" and r["variant"] == variant),
                     key=lambda r: r["budget_s"])
        if own:
            axis.plot([r["budget_s"] for r in own], [r["ap50"] for r in own], marker="o", label=LABELS[variant])
    for row in (r for r in rows if r["variant"] == "zero-shot"):
        axis.axhline(row["ap50"], linestyle="--", color="grey", label="starter, zero-shot (no labels)")
    axis.set_xscale("log")
    axis.set_xlabel(f"fine-tuning seconds (step equivalent, {config.steps_per_minute} steps per minute)")
    axis.set_ylabel("AP@0.5 on the unseen half")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    path = (BENCH_DIR if config.name == "full" else config.scratch) / PLOT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def record_scores(result: BenchmarkResult, starter: str | Path) -> Path:
    """Write the measured scores into the starter's ``starter.json`` (its ``scores`` field), atomically."""
    from workbench.deep import STARTER_INFO_FILENAME, starter_info
    from workbench.store import write_json_atomic

    info = starter_info(starter)
    keep = ("budget_s", "steps", "ap50", "ap75", "map", "iou")
    # No wall time: a `report` of rows measured earlier would record its own second, not theirs.
    scores: dict[str, Any] = {"measured_by": "python -m benchmarks.bench_pretrain",
                              "measured_on": time.strftime("%Y-%m-%d")}
    for row in result.rows:
        key = row["variant"] if row["part"] != "synthetic style" else f"{row['style']}/{row['variant']}"
        entry = {k: (round(row[k], 4) if isinstance(row[k], float) and math.isfinite(row[k]) else row[k])
                 for k in keep if k in row}
        scores.setdefault(row["part"], {}).setdefault(key, []).append(entry)
    scores["targets"] = [{"goal": t.goal, "measured": t.measured, "met": t.met} for t in result.targets]
    info["scores"] = scores
    path = Path(starter) / STARTER_INFO_FILENAME
    write_json_atomic(path, info)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from workbench.deep import starter_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the harness's quick configuration (numbers mean little)")
    parser.add_argument("--starter", type=Path, help="starter folder to measure (default: the shipped one)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--record", action="store_true", help="write the scores into the starter's starter.json")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="starts to run, for the curves and the styles (default: all)")
    parser.add_argument("--parts", default=",".join(PARTS), help="measurements to run (default: all)")
    parser.add_argument("--jsonl", type=Path, help="also append every row as a JSON line to this file")
    parser.add_argument("--report", type=Path, nargs="+", metavar="FILE",
                        help="measure nothing: the section and plot from rows earlier runs wrote with --jsonl")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    starter = args.starter or starter_dir()
    if args.report:
        result = report(args.report, config, starter=starter)
    else:
        result = run(config, (args.device,), starter=starter, variants=args.variants.split(","),
                     parts=args.parts.split(","))
    if args.jsonl and not args.report:
        import json

        with open(args.jsonl, "a") as handle:
            for row in result.rows:
                handle.write(json.dumps(row, default=str) + "\n")
    print(result.markdown())
    print("\n## Targets\n")
    for target in result.targets:
        state = "met" if target.met else "MISSED"
        print(f"- {state}: {target.goal} — {target.measured}" + (f" ({target.why})" if target.why else ""))
    if args.record:
        print(f"\nscores written to {record_scores(result, starter)}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())

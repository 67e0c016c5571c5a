"""Deep path on the real nuclei image: accuracy against training time, beside both forests.

Partial labels are simulated on the left half (a minority of whole nuclei plus
background strokes); every method trains on exactly those labels and is
scored on the right half, which no method sees during training. Instances
come from the same ``instances_from_probabilities`` for all methods.

Run alone: ``python -m benchmarks.run_all --only deep,throughput [--quick] [--device cpu]``.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from benchmarks._common import FULL, BenchConfig, BenchmarkResult, Target, margin_text, markdown_table, ratio
from benchmarks._tasks import (deep_label, deep_settings, forest_rows, nuclei_split, train_and_score_deep,
                               train_and_score_deep_curve)
from workbench.deep import Callback

NAME = "deep"
AP50_GOAL = 0.92
MAP_GOAL = 0.70
BUDGET_GOAL_S = 120.0
MONOTONE_TOLERANCE = 0.01
SPREAD_GOAL = 0.03
PLOT_NAME = "deep_accuracy_vs_time.png"

COLUMNS = ["method", "device", "budget_s", "steps", "train_s", "ap50", "ap75", "map", "map_vs_skimage", "iou",
           "dice", "n_pred", "val_score"]
HEADERS = {"budget_s": "budget s (step equivalent)", "train_s": "train s (this run)", "steps": "steps",
           "ap50": "AP@0.5", "ap75": "AP@0.75", "map": "mAP 0.5–0.95", "map_vs_skimage": "mAP ÷ scikit-image",
           "iou": "fg IoU", "dice": "fg Dice", "n_pred": "objects", "val_score": "held-out object IoU"}
SPREAD_COLUMNS = ["method", "draw", "seed", "painted", "steps", "ap50", "map", "val_score"]
SPREAD_HEADERS = {"draw": "label draw", "seed": "seed", "painted": "painted nuclei", "steps": "steps",
                  "ap50": "AP@0.5", "map": "mAP 0.5–0.95", "val_score": "held-out object IoU"}


def run(config: BenchConfig = FULL, devices: Sequence[str] = ("cpu",)) -> BenchmarkResult:
    """Train and score the forests and the deep variants for each budget and device, then the seed/draw spread.

    Returns
    -------
    BenchmarkResult
        One row per (method, device, budget); targets: AP@0.5 and mAP within 120 s, monotone in
        time, spread over seeds and label draws, per deep variant.
    """
    started = time.perf_counter()
    task = nuclei_split(config.object_fraction)
    rows: list[dict[str, Any]] = []
    for device in devices:
        for variant in config.deep_variants:
            rows.extend(train_and_score_deep_curve(task, variant, config.train_budgets_s, device, config))
    spread = _spread_rows(config, devices[0]) if config.spread_seeds and config.spread_draws else []
    return _result(task, rows, spread, config, started)


def _result(task, deep_rows: list[dict[str, Any]], spread: list[dict[str, Any]], config: BenchConfig,
            started: float) -> BenchmarkResult:
    """Forests beside the deep rows (and the same rows scored with the default thresholds), tables, plot, targets."""
    rows: list[dict[str, Any]] = [dict(row, device="cpu") for row in forest_rows(task)]
    reference_map = rows[0]["map"]
    rows.extend(deep_rows)
    rows.extend(dict(row, method=row["method"] + ", default thresholds", ap50=row["ap50_default"],
                     ap75=row["ap75_default"], map=row["map_default"], default_thresholds=True)
                for row in deep_rows if "ap50_default" in row)
    for row in rows:
        row["map_vs_skimage"] = ratio(row["map"], reference_map)

    description = (
        f"Data: `{task.name}` – train on the left half (512 × 256) with simulated partial labels "
        f"({task.painted_objects} whole nuclei painted plus background strokes; labelled fraction "
        f"{task.labelled_fraction:.1%} of the train half), test on the right half (512 × 256, "
        f"{rows[0]['n_gt']} ground-truth nuclei, never seen in training). AP is the 2018 Data Science Bowl "
        "score TP/(TP+FP+FN) at IoU 0.5 and its mean over IoU 0.5–0.95; IoU/Dice are foreground "
        "(1 − P(background) > 0.5) against the ground truth. Every method gives 3-class probabilities "
        "(background, interior, boundary) to the same `instances_from_probabilities`; the forests with its "
        "default thresholds, a U-Net as the product uses it: predicted with test-time augmentation (the "
        "mean over the eight flips and rotations) and with the thresholds it chose on its own held-out "
        "painted objects (the rows marked 'default thresholds' show the same predictions with the defaults). "
        f"Deep rows train with the app's defaults (8 patches of {config.train_patch_size}² per step) for the "
        f"optimiser-step equivalent of each budget ({config.steps_per_minute} steps per minute, the idle "
        "2-core CPU's throughput), so the numbers do not depend on how busy the machine was; the trainer keeps "
        "a weight average (EMA) under a constant learning rate, whose model after N steps is the same however "
        "the run ends, so one run per variant is scored at every budget on the way. `train s` is this run's "
        "own wall time to that step; forests' `train s` is not shown (features + fitting take 1–2 s)."
    )
    tables = [markdown_table(rows, COLUMNS, HEADERS)]
    if spread:
        tables.append(markdown_table(spread, SPREAD_COLUMNS, SPREAD_HEADERS))
    plot = _plot(rows, config)
    if plot is not None:
        tables.append(f"![AP@0.5 against training time]({plot.name})")
    return BenchmarkResult(name=NAME, title="Deep path vs forests on the nuclei half split",
                           description=description, rows=rows + spread, columns=COLUMNS, tables=tables,
                           targets=_targets([r for r in rows if not r.get("default_thresholds")], spread, config),
                           seconds=time.perf_counter() - started)


def _spread_rows(config: BenchConfig, device: str) -> list[dict[str, Any]]:
    """The default U-Net at `spread_budget_s` for every (label draw, seed)."""
    rows = []
    for draw in config.spread_draws:
        task = nuclei_split(config.object_fraction, seed=draw)
        for seed in config.spread_seeds:
            row = train_and_score_deep(task, "scratch", config.spread_budget_s, device, config, seed=seed)
            rows.append(dict(row, draw=draw, painted=task.painted_objects, spread=True))
    return rows


def _plot(rows: list[dict[str, Any]], config: BenchConfig):
    """AP@0.5 against training minutes, every method on one chart (PNG beside RESULTS.md)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from benchmarks._common import BENCH_DIR

    from workbench.store import atomic_write

    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for method in dict.fromkeys(r["method"] for r in rows if r.get("budget_s")):
        own = sorted((r for r in rows if r["method"] == method and r.get("budget_s")), key=lambda r: r["budget_s"])
        axis.plot([r["budget_s"] / 60 for r in own], [r["ap50"] for r in own], marker="o", label=method)
    for style, row in zip(("--", ":", "-.", (0, (1, 3))), (r for r in rows if r.get("forest"))):
        axis.axhline(row["ap50"], linestyle=style, color="grey", label=row["method"])
    axis.axhline(AP50_GOAL, color="red", linewidth=0.8, label=f"goal AP@0.5 {AP50_GOAL:.2f} (≤ 2 min)")
    axis.set_xscale("log")
    axis.set_xlabel(f"training minutes (step equivalent, {config.steps_per_minute} steps per minute)")
    axis.set_ylabel("AP@0.5 on the unseen half")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    path = (BENCH_DIR if config.name == "full" else config.scratch) / PLOT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def _targets(rows: list[dict[str, Any]], spread: list[dict[str, Any]], config: BenchConfig) -> list[Target]:
    reference = rows[0]
    forest_best = max((r for r in rows if r.get("forest")), key=lambda r: r["ap50"])
    targets = []
    for variant in config.deep_variants:
        label = deep_label(variant)
        deep_rows = [r for r in rows if r["method"] == label]
        for device in sorted({r["device"] for r in deep_rows}):
            own = sorted((r for r in deep_rows if r["device"] == device), key=lambda r: r["budget_s"])
            within = [r for r in own if r["budget_s"] <= BUDGET_GOAL_S]
            if within:
                at = within[-1]  # the longest budget within the goal: what "train for 2 minutes" gives
                met = at["ap50"] >= AP50_GOAL and at["map"] >= MAP_GOAL
                targets.append(Target(
                    goal=f"{label} on {device}: AP@0.5 ≥ {AP50_GOAL:.2f} and mAP ≥ {MAP_GOAL:.2f} after "
                         f"{at['budget_s']:.0f} s of training (≤ 25 % labelled)",
                    measured=f"AP@0.5 {margin_text(at['ap50'], AP50_GOAL)}, mAP {margin_text(at['map'], MAP_GOAL)} "
                             f"({at['steps']} steps; forest {forest_best['ap50']:.3f} / {forest_best['map']:.3f})",
                    met=met,
                    why="" if met else (
                        f"errors at IoU 0.5: {_error_counts(at)}; AP@0.75 deep {at['ap75']:.3f} vs scikit-image "
                        f"forest {reference['ap75']:.3f}, foreground IoU deep {at['iou']:.3f} vs {reference['iou']:.3f}")))
            if len(own) > 1:
                worst, worst_row = 0.0, None
                for i, row in enumerate(own[1:], start=1):
                    drop = max(r["ap50"] for r in own[:i]) - row["ap50"]
                    if drop > worst:
                        worst, worst_row = drop, row
                met = worst <= MONOTONE_TOLERANCE
                targets.append(Target(
                    goal=f"{label} on {device}: monotone in time – at every budget AP@0.5 ≥ the best shorter "
                         f"budget − {MONOTONE_TOLERANCE:.2f}",
                    measured=("never worse than a shorter budget" if worst_row is None else
                              f"largest drop {worst:.3f} (at {worst_row['budget_s']:.0f} s)"),
                    met=met,
                    why="" if met else (f"AP@0.5 by budget: " + ", ".join(f"{r['budget_s']:.0f} s {r['ap50']:.3f}"
                                                                        for r in own))))
    if spread:
        values = [r["ap50"] for r in spread]
        width = max(values) - min(values)
        met = width <= SPREAD_GOAL
        draws = sorted({r["draw"] for r in spread})
        per_draw = {d: [r["ap50"] for r in spread if r["draw"] == d] for d in draws}
        targets.append(Target(
            goal=f"default U-Net: spread (max − min) of AP@0.5 at {config.spread_budget_s:.0f} s over "
                 f"{len(config.spread_seeds)} seeds × {len(config.spread_draws)} label draws ≤ {SPREAD_GOAL:.2f} "
                 f"(measured: {len(spread)} runs, {len({r['seed'] for r in spread})} seeds × {len(draws)} draws)",
            measured=f"{width:.3f} (AP@0.5 {min(values):.3f}–{max(values):.3f}, mean {np.mean(values):.3f})",
            met=met,
            why="" if met else ("spread within a draw (seeds): " + ", ".join(
                f"draw {d} {max(v) - min(v):.3f}" for d, v in per_draw.items())
                + "; between draws' means: " + f"{np.ptp([np.mean(v) for v in per_draw.values()]):.3f}")))
    return targets


def _error_counts(row: dict[str, Any]) -> str:
    return (f"{row['tp50']} matched, {row['fp50']} false or merged predictions, {row['fn50']} missed or split "
            f"nuclei (of {row['n_gt']})")


# ----------------------------------------------------------------------------- training throughput

class _EpochRecorder(Callback):
    """Keeps every epoch's logs and the parameter count."""

    def __init__(self):
        self.logs: list[dict[str, Any]] = []
        self.parameters: int | None = None

    def on_train_start(self, info):
        self.parameters = info.get("parameters")

    def on_epoch_end(self, epoch, logs):
        self.logs.append(dict(logs))


THROUGHPUT_NAME = "throughput"
THROUGHPUT_GOAL_MPS = 1.0
THROUGHPUT_COLUMNS = ["method", "device", "patch", "batch", "steps_timed", "step_mps", "end_to_end_mps",
                      "parameters"]
THROUGHPUT_HEADERS = {"patch": "patch", "batch": "batch", "steps_timed": "steps timed",
                      "step_mps": "MP/s (optimiser steps)", "end_to_end_mps": "MP/s (incl. patch sampling)",
                      "parameters": "parameters"}


def run_throughput(config: BenchConfig = FULL, devices: Sequence[str] = ("cpu",)) -> BenchmarkResult:
    """Training throughput of the default model at ``config.patch_size``² patches.

    The first epoch is warm-up and is left out. "optimiser steps" counts only
    forward, backward and update (the trainer's own ``pixels_per_second``);
    "incl. patch sampling" divides all pixels of the timed epochs by their
    wall time, so cropping, normalisation and augmentation count too.
    """
    from workbench.deep import train

    started = time.perf_counter()
    task = nuclei_split(config.object_fraction)
    rows = []
    for device in devices:
        record = _EpochRecorder()
        settings = deep_settings("scratch", None, device, epochs=max(2, config.throughput_epochs),
                                 steps_per_epoch=config.throughput_steps, patch_size=config.patch_size,
                                 batch_size=config.batch_size, val_fraction=0.0)
        train([(task.train_image, task.train_targets)], settings, callbacks=[record])
        timed = record.logs[1:]
        pixels_per_step = config.batch_size * config.patch_size ** 2
        steps_timed = len(timed) * config.throughput_steps
        wall = record.logs[-1]["seconds"] - record.logs[0]["seconds"]
        step_mps = sum(log["pixels_per_second"] for log in timed) / len(timed) / 1e6
        rows.append({"method": deep_label("scratch"), "device": device, "patch": f"{config.patch_size}²",
                     "batch": config.batch_size, "steps_timed": steps_timed, "step_mps": step_mps,
                     "end_to_end_mps": steps_timed * pixels_per_step / wall / 1e6 if wall > 0 else None,
                     "parameters": record.parameters})

    targets = []
    for row in rows:
        if row["device"] != "cpu":
            continue
        met = row["end_to_end_mps"] >= THROUGHPUT_GOAL_MPS
        targets.append(Target(
            goal=f"training throughput of the default CPU model ≥ {THROUGHPUT_GOAL_MPS:.0f} MP/s at "
                 f"{config.patch_size}² patches (including patch sampling)",
            measured=f"{margin_text(row['end_to_end_mps'], THROUGHPUT_GOAL_MPS, unit=' MP/s')}; optimiser steps "
                     f"alone {row['step_mps']:.2f} MP/s",
            met=met,
            why="" if met else (
                "the optimiser steps alone are below the goal, so the network's forward/backward pass is the limit"
                if row["step_mps"] < THROUGHPUT_GOAL_MPS else
                "the optimiser steps reach the goal; patch sampling and augmentation on the same cores cost the rest")))
    description = (
        f"Default CPU model (`TrainSettings()` preset, random init) trained on the nuclei train half, "
        f"{config.throughput_epochs} epochs × {config.throughput_steps} steps of {config.batch_size} patches of "
        f"{config.patch_size}², no validation; the first epoch is warm-up and not timed. MP/s = megapixels "
        "of training patches per second."
    )
    return BenchmarkResult(name=THROUGHPUT_NAME, title="Training throughput", description=description, rows=rows,
                           columns=THROUGHPUT_COLUMNS,
                           tables=[markdown_table(rows, THROUGHPUT_COLUMNS, THROUGHPUT_HEADERS)],
                           targets=targets, seconds=time.perf_counter() - started)


def _one_curve(argv: Sequence[str]) -> None:
    """``--curve DRAW SEED BUDGETS [VARIANT]``: one U-Net run scored at each budget, as JSON lines.

    The pieces of the full benchmark one at a time (a machine shared by many can run them side
    by side), e.g. ``python -m benchmarks.bench_deep --curve 0 1 30,60,120``; VARIANT is
    ``scratch`` (the default) or ``starter`` (what a new instance project starts from).
    """
    import json

    draw, seed, budgets = int(argv[0]), int(argv[1]), [float(b) for b in argv[2].split(",")]
    variant = argv[3] if len(argv) > 3 else "scratch"
    task = nuclei_split(FULL.object_fraction, seed=draw)
    for row in train_and_score_deep_curve(task, variant, budgets, "cpu", FULL, seed=seed):
        print(json.dumps({key: value for key, value in dict(row, draw=draw, variant=variant).items()
                          if isinstance(value, (int, float, str, dict, type(None)))}), flush=True)


def report(path, config: BenchConfig = FULL) -> BenchmarkResult:
    """The section for RESULTS.md from the JSON lines of ``--curve`` runs (``--report FILE``).

    The curve of label draw 0, seed 0 is the accuracy-against-time row set (with both forests on
    the same labels); every run's row at ``spread_budget_s`` is the seed / label-draw spread.
    The plot goes beside RESULTS.md for the full configuration (else into the scratch folder).
    """
    import json
    from pathlib import Path

    started = time.perf_counter()
    runs = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    curve = sorted((r for r in runs if r["draw"] == 0 and r["seed"] == 0), key=lambda r: r["budget_s"])
    spread = [dict(r, painted=nuclei_split(config.object_fraction, seed=r["draw"]).painted_objects)
              for r in runs if r["budget_s"] == config.spread_budget_s]
    return _result(nuclei_split(config.object_fraction), curve, spread, config, started)


def _print_report(result: BenchmarkResult) -> None:
    print(result.description + "\n")
    print("\n\n".join(result.tables) + "\n")
    for target in result.targets:
        print(f"- {'met' if target.met else 'MISSED'}: {target.goal} — {target.measured}"
              + (f" ({target.why})" if target.why else ""))


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--curve"]:
        _one_curve(sys.argv[2:])
    elif sys.argv[1:2] == ["--report"]:
        _print_report(report(sys.argv[2]))
    else:
        raise SystemExit("run the deep benchmarks with `python -m benchmarks.run_all --only deep,throughput`, "
                         "or one curve with `--curve DRAW SEED BUDGETS` and the report with `--report FILE`")

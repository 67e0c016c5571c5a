"""Plumbing of the benchmark harness: configurations, results, tables, timing, memory, files.

Every benchmark module exposes ``run(config, devices) -> BenchmarkResult``;
what they share lives here (plumbing), in `_tasks` (data, scoring, the
methods) and in `_report` (RESULTS.md):

* `BenchConfig` – the sizes and budgets of one run (`FULL`, `QUICK`).
* `BenchmarkResult`, `Target`, `markdown_table` – what a benchmark hands back.
* `best_of`, `TimedPredictor`, `peak_rss_mb` – timing and memory.
* `write_atomic`, `dump_json` – safe writing of the results.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

SHARED_DIR = ROOT.parent / "shared"
NUCLEI_DIR = SHARED_DIR / "data" / "dsb2018_nuclei"
MOBILENET_V2_WEIGHTS = SHARED_DIR / "weights" / "mobilenet_v2-b0353104.pth"
#: Scratch space for models, zarr arrays and worker outputs (git-ignored).
WORK_DIR = BENCH_DIR / "_work"

#: Train on the left half of the nuclei image, test on the right half.
TRAIN_HALF = np.s_[:, :256]
TEST_HALF = np.s_[:, 256:]


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class BenchConfig:
    """Sizes, budgets and repeats of one harness run.

    Attributes
    ----------
    name : str
        "full", "quick" or a custom name; printed in the report.
    train_budgets_s : tuple of float
        Training time budgets of the deep path on the nuclei half split. Each is run as its
        optimiser-step equivalent (``steps_per_minute``), so results do not depend on how busy
        the machine is; the trainer's result after N steps is the same however the run ends, so
        one run per variant is scored at every budget along the way.
    steps_per_minute : int
        Optimiser steps (8 patches of 128²) one minute of training gives on the reference CPU
        (2 cores, idle); measured by the throughput benchmark and stated in RESULTS.md.
    spread_seeds, spread_draws : tuple of int
        Seeds and partial-label draws of the stability benchmark (empty: not run).
    spread_budget_s : float
        Training budget of each stability run.
    deep_variants : tuple of str
        Deep variants to train: "scratch" (default preset, random init) and/or
        "pretrained" (MobileNetV2 encoder with ImageNet weights).
    object_fraction : float
        Share of the train half's whole nuclei painted as object. Half of them, with the
        background strokes, labels about 16 % of the train half: within the targets' "at most
        25 % labelled" (the labelled fraction is reported with every result).
    synthetic_shape : tuple of int
        Size of the synthetic train and test images.
    synthetic_budget_s : float
        Training budget of the deep path on the synthetic image.
    throughput_epochs, throughput_steps : int
        Training run of the throughput benchmark (the first epoch is warm-up).
    patch_size, batch_size : int
        Training patches of the throughput and tiling benchmarks.
    train_patch_size : int
        Patch side of the accuracy runs (the trainer's default in `FULL`, with its batch of 8):
        what a user of the app gets.
    tile_size, overlap, tile_batch : int, float, int
        Tiled prediction settings shared by the workbench and MONAI.
    tiling_image_size : int
        Edge of the square image of the tiling comparison (whole-image
        prediction must fit in memory).
    tiling_model_steps : int
        Optimiser steps of the short training run that makes the tiling model.
    memory_sizes : tuple of int
        Square image edges of the zarr-to-zarr peak-memory scaling.
    forest_image_size : int
        Edge of the square image timed for forest prediction throughput.
    repeats : int
        Best-of repeats for timings.
    isolate : bool
        Measure tiling in fresh subprocesses (real peak memory); False runs in
        process (for tests; memory numbers are then not meaningful).
    work_dir : str or None
        Scratch folder for models and zarr arrays; None = ``benchmarks/_work``.
    """

    name: str = "full"
    train_budgets_s: tuple[float, ...] = (30.0, 60.0, 120.0, 300.0, 600.0)
    steps_per_minute: int = 540
    spread_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    spread_draws: tuple[int, ...] = (0, 1, 2)
    spread_budget_s: float = 120.0
    deep_variants: tuple[str, ...] = ("scratch", "pretrained")
    object_fraction: float = 0.5
    synthetic_shape: tuple[int, int] = (512, 512)
    synthetic_budget_s: float = 120.0
    throughput_epochs: int = 3
    throughput_steps: int = 8
    patch_size: int = 256
    batch_size: int = 8
    train_patch_size: int = 128
    tile_size: int = 256
    overlap: float = 0.25
    tile_batch: int = 4
    tiling_image_size: int = 1024
    tiling_model_steps: int = 30
    memory_sizes: tuple[int, ...] = (1024, 2048, 4096, 8192)
    forest_image_size: int = 1024
    repeats: int = 3
    isolate: bool = True
    work_dir: str | None = None

    @property
    def scratch(self) -> Path:
        """The scratch folder of this run."""
        return Path(self.work_dir) if self.work_dir else WORK_DIR

    def steps_for(self, budget_s: float) -> int:
        """Optimiser steps equivalent to a training budget (a multiple of 10, the trainer's epoch; at least 1)."""
        steps = budget_s / 60.0 * self.steps_per_minute
        return max(1, int(round(steps / 10.0)) * 10) if steps >= 10 else max(1, int(round(steps)))

    def with_(self, **changes: Any) -> "BenchConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)


FULL = BenchConfig()
QUICK = BenchConfig(
    name="quick",
    train_budgets_s=(6.0, 12.0),
    spread_seeds=(0, 1),
    spread_draws=(0,),
    spread_budget_s=6.0,
    synthetic_shape=(256, 256),
    synthetic_budget_s=6.0,
    throughput_epochs=2,
    throughput_steps=2,
    tiling_image_size=384,
    tiling_model_steps=4,
    memory_sizes=(256, 512),
    forest_image_size=512,
    repeats=1,
)


# ----------------------------------------------------------------------------- results


@dataclass
class Target:
    """One goal of the issue and whether this run met it.

    Attributes
    ----------
    goal : str
        The target in words, e.g. "AP@0.5 >= 0.90 after <= 120 s".
    measured : str
        What was measured, with the margin (e.g. "0.86 (short by 0.04)").
    met : bool or None
        None when it could not be measured in this run.
    why : str
        For a miss: the cause, read off the measurements.
    """

    goal: str
    measured: str
    met: bool | None
    why: str = ""


@dataclass
class BenchmarkResult:
    """What one benchmark hands back to the harness.

    Attributes
    ----------
    name : str
        Short name used by ``--only``.
    title : str
        Section heading in RESULTS.md.
    description : str
        What is measured and how (a paragraph of markdown).
    rows : list of dict
        One dict per table row (also written to the JSON results).
    columns : list of str
        Keys of ``rows`` shown in the table, in order.
    tables : list of str
        Markdown tables (the first one is built from ``rows``/``columns``).
    targets : list of Target
    seconds : float
        Wall-clock time of the benchmark.
    """

    name: str
    title: str
    description: str
    rows: list[dict[str, Any]]
    columns: list[str]
    tables: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    seconds: float = 0.0

    def markdown(self) -> str:
        """The section of RESULTS.md for this benchmark."""
        parts = [f"## {self.title}", "", self.description.strip(), ""]
        for table in self.tables:
            parts += [table, ""]
        parts.append(f"_Benchmark wall time: {self.seconds:.0f} s._")
        return "\n".join(parts)


def _format(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not np.isfinite(value):
            return "–"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}" if magnitude < 1 else f"{value:.2f}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str],
                   headers: dict[str, str] | None = None) -> str:
    """A markdown table of ``rows`` restricted to ``columns`` (missing values shown as "–").

    Parameters
    ----------
    rows : sequence of dict
    columns : sequence of str
        Keys to show, in order.
    headers : dict, optional
        Column key -> header text (default: the key).
    """
    headers = headers or {}
    lines = ["| " + " | ".join(headers.get(c, c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_format(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return float(numerator) / float(denominator)


def margin_text(value: float, goal: float, *, higher_is_better: bool = True, unit: str = "") -> str:
    """``"0.86 (short by 0.04)"`` / ``"0.93 (0.03 to spare)"`` for a value against its goal."""
    gap = (value - goal) if higher_is_better else (goal - value)
    amount = f"{_format(abs(gap))}{unit}"
    shown = f"{_format(value)}{unit}"
    if gap >= 0:
        return f"{shown} ({amount} to spare)"
    return f"{shown} ({'short by' if higher_is_better else 'over by'} {amount})"


# ----------------------------------------------------------------------------- timing


def best_of(repeats: int, run: Callable[[], Any]) -> tuple[float, Any]:
    """Smallest wall time of ``repeats`` calls of ``run`` and the last result."""
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


class TimedPredictor:
    """Wrap a predictor callable and add up the seconds spent inside it (the model's share of the time)."""

    def __init__(self, predictor: Callable[[np.ndarray], np.ndarray]):
        self.predictor = predictor
        self.reset()

    def reset(self) -> None:
        """Zero the counters: seconds inside the predictor, calls and tiles (batch items) seen."""
        self.seconds = 0.0
        self.calls = 0
        self.tiles = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        result = self.predictor(batch)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        self.tiles += len(batch)
        return result


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Read from ``VmHWM`` in /proc/self/status: Linux carries ``ru_maxrss`` over
    ``fork`` + ``exec``, so a worker started by a large parent would report the
    parent's peak. Falls back to ``getrusage(RUSAGE_SELF).ru_maxrss`` elsewhere.
    """
    high_water = read_proc("/proc/self/status", "VmHWM")
    if high_water:
        return int(high_water.split()[0]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Resident memory of this process now, in MiB (from /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


# ----------------------------------------------------------------------------- files and /proc


def read_proc(path: str, key: str) -> str | None:
    try:
        with open(path) as handle:
            for line in handle:
                if line.lower().startswith(key.lower()):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new file, never half of one."""
    from workbench.store import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def dump_json(path: Path, data: Any) -> None:
    """Results as JSON, written atomically."""
    from workbench.store import write_json_atomic

    write_json_atomic(path, data)


"""How fast a U-Net trains on this computer, and what a training time buys here.

A training time means nothing by itself: 30 seconds are 270 optimiser steps on an idle 2-core CPU
(too few for a model from scratch) and thousands on a GPU. This module keeps, per model size and
device, the measured training speed in steps per second, in the user's workbench folder
(``WORKBENCH_HOME``, file ``training-speed.json``):

- every finished U-Net training records its own speed (`record_run`, called by
  `workbench.pipeline.train_model`) — the best measure, on real data;
- before the first training, `measure_speed` times a few steps of the model on a small made-up
  image (a couple of seconds on a CPU) — `training_speed(measure=True)` does it once and keeps it;
- until then `ASSUMED_STEPS_PER_SECOND` (an idle 2-core laptop CPU) stands in, and says so.

`duration_choices` turns the training times offered into choices that say what each buys on this
computer ("2 minutes — about 1,100 training steps on this computer") and leaves out the times too
short to give a usable model from scratch (`MIN_STEPS`).

Examples
--------
>>> speed = Speed(steps_per_second=9.0, source="run", preset="fast")
>>> steps_in(120, speed), round(seconds_for(MIN_STEPS["scratch"], speed))
(1080, 33)
>>> [label for label, _ in duration_choices([("30 seconds", 30), ("2 minutes", 120)], speed, start="scratch")]
['2 minutes — about 1,080 training steps on this computer']
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from workbench import config
from workbench.errors import WorkbenchError

__all__ = ["Speed", "MIN_STEPS", "ASSUMED_STEPS_PER_SECOND", "assumed_speed", "training_speed", "measure_speed", "record_run",
           "steps_in", "seconds_for", "duration_choices", "speed_note", "SPEED_FILE"]

SPEED_FILE = "training-speed.json"

MIN_STEPS = {"scratch": 300, "pretrained": 100, "starter": 100, "last": 0}
"""Optimiser steps a training needs to give a usable model, by where it starts: from scratch the
U-Net needs about 300 (measured on the sample project: fewer give one blob or '1 object found');
pretrained weights (ImageNet encoder, or the whole U-Net from the shipped starter) start from
useful features; continuing the last model can add any amount."""

ASSUMED_STEPS_PER_SECOND = {"fast": 9.0, "small": 4.5, "mobilenet_v2": 2.0}
"""Steps per second assumed before anything was measured here: an idle 2-core laptop CPU (about
540 steps a minute for the small model, measured), slower for the bigger models."""

MIN_RUN_STEPS = 10
"""A training shorter than this says little about the speed and is not recorded."""


@dataclass(frozen=True)
class Speed:
    """Training speed of one model size on this computer.

    Attributes
    ----------
    steps_per_second : float
    source : {"run", "probe", "assumed"}
        Measured by a real training, by `measure_speed`, or `ASSUMED_STEPS_PER_SECOND`.
    preset : str
        The model size (``workbench.deep.PRESETS``).
    device : str
        What it ran on, e.g. ``"cpu (2 cores)"`` or ``"cuda"``.
    measured : str
        When (ISO time, UTC); empty for an assumption.
    """

    steps_per_second: float
    source: str
    preset: str
    device: str = ""
    measured: str = ""

    @property
    def measured_here(self) -> bool:
        return self.source in ("run", "probe")


def _cpus() -> int:
    threads = config.threads()
    if threads:
        return int(threads)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _device(requested: str = "auto") -> str:
    from workbench.deep import pick_device

    kind = pick_device(requested).type
    return f"cpu ({_cpus()} cores)" if kind == "cpu" else kind


def _file() -> Path:
    return config.user_dir() / SPEED_FILE


def _read() -> dict:
    try:
        data = json.loads(_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("speeds", {}) if isinstance(data, dict) and isinstance(data.get("speeds"), dict) else {}


def _key(preset: str, device: str) -> str:
    return f"{preset} on {device}"


def _check_preset(preset: str) -> str:
    if preset not in ASSUMED_STEPS_PER_SECOND:
        raise WorkbenchError(f"`preset` must be one of {', '.join(ASSUMED_STEPS_PER_SECOND)}, got {preset!r}")
    return preset


def _remember(speed: Speed) -> Speed:
    """Keep `speed` in the user's folder (silently not, when that folder cannot be written)."""
    import filelock

    from workbench.store import write_json_atomic

    try:
        _file().parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(_file()) + ".lock", timeout=5):
            speeds = _read()
            speeds[_key(speed.preset, speed.device)] = {
                "steps_per_second": speed.steps_per_second, "source": speed.source, "measured": speed.measured}
            write_json_atomic(_file(), {"speeds": speeds})
    except (OSError, filelock.Timeout):
        pass
    return speed


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def record_run(preset: str, steps: int, seconds: float, *, device: str = "auto") -> Speed | None:
    """Keep the speed of a finished U-Net training (its steps over its wall-clock seconds).

    Returns the `Speed` kept, or None for a run too short to tell (`MIN_RUN_STEPS`).
    """
    if preset not in ASSUMED_STEPS_PER_SECOND or not steps or steps < MIN_RUN_STEPS or not seconds or seconds <= 0:
        return None
    return _remember(Speed(float(steps) / float(seconds), "run", preset, _device(device), _now()))


def measure_speed(preset: str = "fast", *, steps: int = 12, device: str = "auto") -> Speed:
    """Time `steps` training steps of a `preset` U-Net on a made-up 256 x 256 image and keep the result.

    Takes a few seconds on a CPU (the model is built and trained for real, then thrown away).
    Validation is part of a real training's time and not of this one, so the speed kept is 15 %
    below the one timed.
    """
    import numpy as np

    from workbench.deep import TrainSettings, train

    _check_preset(preset)
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 256, 256)).astype(np.float32)
    targets = np.where(rng.random((256, 256)) < 0.5, 0, 1)
    settings = TrainSettings(preset=preset, minutes=None, epochs=1, steps_per_epoch=int(steps), val_fraction=0.0,
                             augment=0.5, device=device)
    result = train([(image, targets)], settings)
    timed = float(result.best_metrics.get("steps_per_second") or 0.0)
    if not timed > 0:
        raise WorkbenchError("timing the training on this computer gave no result; try again")
    return _remember(Speed(0.85 * timed, "probe", preset, _device(device), _now()))


def assumed_speed(preset: str = "fast") -> Speed:
    """`ASSUMED_STEPS_PER_SECOND` as a `Speed` (what to show before anything is measured; instant)."""
    return Speed(ASSUMED_STEPS_PER_SECOND[_check_preset(preset)], "assumed", preset)


def training_speed(preset: str = "fast", *, measure: bool = False, device: str = "auto") -> Speed:
    """The training speed of a `preset` U-Net on this computer.

    The last one measured (by a training or by `measure_speed`); when none was, `measure_speed`
    with ``measure=True``, else the assumption `ASSUMED_STEPS_PER_SECOND` (``source="assumed"``).
    """
    _check_preset(preset)
    where = _device(device)
    entry = _read().get(_key(preset, where))
    if isinstance(entry, dict):
        try:
            value = float(entry["steps_per_second"])
        except (KeyError, TypeError, ValueError):
            value = 0.0
        if value > 0:
            return Speed(value, str(entry.get("source") or "run"), preset, where, str(entry.get("measured") or ""))
    if measure:
        return measure_speed(preset, device=device)
    return Speed(ASSUMED_STEPS_PER_SECOND[preset], "assumed", preset, where)


def steps_in(seconds: float, speed: Speed) -> int:
    """Optimiser steps a training of `seconds` makes at `speed`."""
    return int(float(seconds) * speed.steps_per_second)


def seconds_for(steps: int, speed: Speed) -> float:
    """Seconds `steps` optimiser steps take at `speed`."""
    return float(steps) / speed.steps_per_second


def _where(speed: Speed) -> str:
    return "on this computer" if speed.measured_here else "on a typical laptop"


def duration_choices(durations: Sequence[tuple[str, float]], speed: Speed, *, start: str = "scratch",
                     keep: float | None = None) -> list[tuple[str, float]]:
    """Training times worth offering, each labelled with what it buys at `speed`.

    Parameters
    ----------
    durations : sequence of (label, seconds)
        The times to choose from, shortest first.
    speed : Speed
    start : {"scratch", "pretrained", "last"}
        Where the training starts; a time giving fewer than ``MIN_STEPS[start]`` steps is left
        out (but the longest time is always offered).
    keep : float, optional
        A time to offer whatever it buys (one asked for explicitly, e.g. ``WORKBENCH_TRAIN_SECONDS``).

    Returns
    -------
    list of (label, seconds)
    """
    if start not in MIN_STEPS:
        raise WorkbenchError(f"`start` must be one of {', '.join(MIN_STEPS)}, got {start!r}")
    chosen = [(label, float(seconds)) for label, seconds in durations
              if steps_in(seconds, speed) >= MIN_STEPS[start] or float(seconds) == keep]
    if not chosen and durations:
        chosen = [(durations[-1][0], float(durations[-1][1]))]
    return [(f"{label} — about {steps_in(seconds, speed):,} training steps {_where(speed)}", seconds)
            for label, seconds in chosen]


def speed_note(speed: Speed, *, start: str = "scratch") -> str:
    """One plain sentence: how fast training goes here, and how long a usable model takes."""
    need = MIN_STEPS.get(start, 0)
    rate = f"about {speed.steps_per_second * 60:,.0f} training steps a minute"
    if speed.measured_here:
        text = f"This computer ({speed.device}) trains this model size at {rate}."
    else:
        text = f"Not measured on this computer yet; a typical laptop trains this model size at {rate}."
    if need:
        what = "from scratch" if start == "scratch" else "from pretrained weights"
        seconds = seconds_for(need, speed)
        took = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
        text += f" A usable model {what} needs about {need} steps (about {took} here)."
    return text

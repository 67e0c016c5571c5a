"""The training step: settings a biologist understands, Start / Stop, a live loss plot and time left.

Training is the project's job, not the page's: Start hands the choices to `workbench.jobs`,
which trains in a process of its own and keeps the project's training record up to date. The
panel follows that record from a background thread (progress, live loss plot, messages; the
thread only changes the values of widgets made beforehand), so a reloaded page finds a running
training of its project and follows it again, and Stop works through the project from any page.
The machine learning lives in `workbench.pipeline`; this panel turns choices into its settings.

Examples
--------
>>> panel = TrainingPanel(project)          # doctest: +SKIP
>>> panel                                   # shows the panel in a notebook   # doctest: +SKIP
>>> panel.start(); panel.wait()             # what the Start button does      # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import logging
import threading
import time
from typing import Any, Callable

import ipywidgets as W
import numpy as np

from workbench import config, jobs, pipeline, speed
from workbench.errors import WorkbenchError, app_message
from workbench.records import ModelRecord, TrainingChoices
from workbench.store import Project

__all__ = ["TrainingPanel", "DURATIONS", "MODEL_SIZES", "AUGMENTATION", "train_seconds_from_env"]

log = logging.getLogger(__name__)

# Choices shown to people -> engine values. Each is one entry; the engine validates the values.
DURATIONS: list[tuple[str, float]] = [
    ("30 seconds", 30), ("1 minute", 60), ("2 minutes", 120), ("5 minutes", 300),
    ("10 minutes", 600), ("20 minutes", 1200), ("1 hour", 3600),
]
MODEL_SIZES: list[tuple[str, str]] = [
    ("Small: fastest, fine on a laptop", "fast"),
    ("Medium: more detail, about half the speed", "small"),
    ("Large: MobileNetV2, for a GPU or a patient CPU", "mobilenet_v2"),
]
AUGMENTATION: list[tuple[str, float]] = [("None", 0.0), ("Light", 0.25), ("Medium", 0.5), ("Strong", 0.8)]
METHOD_NAMES = pipeline.METHOD_NAMES
MODE_CHOICES = [("Regions (semantic)", "semantic"), ("Separate objects (instance)", "instance")]
START_CHOICES = [("Scratch", "scratch"), ("Starter model (pretrained on microscopy-like images)", "starter"),
                 ("Pretrained weights (ImageNet)", "pretrained"), ("The last model (train longer)", "last")]
TRAIN_SECONDS_ENV = config.TRAIN_SECONDS
train_seconds_from_env = config.train_seconds  # the training time ``WORKBENCH_TRAIN_SECONDS`` sets, else `default`


def format_seconds(seconds: float) -> str:
    """'45 s', '3 min 05 s', '1 h 02 min' — durations as people read them."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _when(timestamp: str) -> str:
    """'2026-11-25T21:08:47+00:00' -> '2026-11-25 21:08' (the manifest's UTC time, shortened)."""
    return str(timestamp).replace("T", " ")[:16]


def _duration_label(seconds: float) -> str:
    for label, value in DURATIONS:
        if value == seconds:
            return label
    return format_seconds(seconds)


# ---------------------------------------------------------------------- small shared view helpers
_STATUS_STYLE = {
    "info": ("#1f4e79", "#e8f1fb"),
    "success": ("#1d5e20", "#e7f5e8"),
    "warning": ("#7a4f00", "#fff4db"),
    "error": ("#8a1c1c", "#fdeaea"),
}


def _status_html(kind: str, text: str) -> str:
    """A coloured message box; `text` is escaped (user-facing engine messages may hold <, >)."""
    if not text:
        return ""
    color, background = _STATUS_STYLE[kind]
    role = ' role="alert"' if kind == "error" else ""
    return (f'<div class="wb-status wb-{kind}"{role} style="color:{color};background:{background};'
            f'border-left:4px solid {color};padding:6px 10px;margin:4px 0;border-radius:3px;'
            f'white-space:pre-wrap;line-height:1.4">{html.escape(text)}</div>')


def _png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB(A) uint8 array as PNG bytes (for ipywidgets.Image and downloads)."""
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", np.ascontiguousarray(rgb), extension=".png")


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _user_message(exc: BaseException, doing: str) -> str:
    """What went wrong, in one readable paragraph (the traceback goes to the log, not to the page)."""
    if isinstance(exc, WorkbenchError):
        return f"{doing.capitalize()} did not work: {app_message(exc)}"
    if isinstance(exc, MemoryError):
        return (f"{doing.capitalize()} ran out of memory. Choose a smaller model size, or close other "
                "programs, and try again.")
    log.error("%s failed", doing, exc_info=exc)
    return (f"{doing.capitalize()} stopped because of an unexpected problem ({type(exc).__name__}: {exc}). "
            "Your project and labels are safe. If it happens again, please report this message.")


def _loss_plot_png(epochs: list[int], losses: list[float], val_losses: list[float | None], *,
                   steps: list[int] | None = None, current_step: int | None = None,
                   width: float = 5.2, height: float = 2.8, dpi: int = 90) -> bytes:
    """Training and validation loss as a PNG, drawn with matplotlib's Agg backend.

    With `steps` (the optimiser steps at each epoch's end) the x axis counts steps, and
    `current_step` marks where training is now, so the picture moves during the first epoch too.
    A `Figure` (not pyplot) is thread-safe enough to draw from the training thread.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    xs = list(steps) if steps is not None and len(steps) == len(epochs) else list(epochs)
    by_steps = steps is not None and len(steps) == len(epochs)
    if current_step:
        axes.axvline(current_step, color="#999999", linestyle="--", linewidth=1)
        axes.text(current_step, 1.0, f" step {current_step}", transform=axes.get_xaxis_transform(),
                  va="top", ha="left" if not xs or current_step < 0.8 * max(max(xs), current_step) else "right",
                  fontsize=8, color="#555555")
    if epochs:
        axes.plot(xs, losses, "-o", color="#1f77b4", markersize=3, label="training")
        val = [(e, v) for e, v in zip(xs, val_losses) if v is not None]
        if val:
            axes.plot([e for e, _ in val], [v for _, v in val], "-o", color="#d62728", markersize=3,
                      label="validation")
            best = min(val, key=lambda item: item[1])
            axes.plot([best[0]], [best[1]], "*", color="#d62728", markersize=11, label="best (kept)")
        axes.legend(loc="upper right", fontsize=8, frameon=False)
        right = max(xs + [current_step or 0])
        axes.set_xlim(0 if by_steps else 0.5, right * 1.05 + (0 if by_steps else 0.5))
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    else:
        text = ("Training has started: the first loss points appear\nat the end of the first pass (epoch)"
                if current_step else "The loss curves appear here\nwhile the model trains")
        axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="#777777", fontsize=10)
        if current_step:
            axes.set_xlim(0, current_step * 1.25 + 1)
        else:
            axes.set_xticks([])
        axes.set_yticks([])
    axes.set_xlabel("training steps" if by_steps or (current_step and not epochs) else "epoch", fontsize=9)
    axes.set_ylabel("loss (lower is better)", fontsize=9)
    axes.tick_params(labelsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _labelled(text: str, control: W.Widget) -> W.HBox:
    """`control` with a label on its left, lined up with the 150-px descriptions of the other controls.

    ToggleButtons put their own description above the buttons when the row is narrow.
    """
    label = W.HTML(f'<div style="text-align:right;padding-right:8px;line-height:28px">{html.escape(text)}</div>',
                   layout=W.Layout(width="150px", min_width="150px"))
    return W.HBox([label, control], layout=W.Layout(align_items="flex-start"))


class TrainingPanel:
    """Train a model on the project's labels from a few understandable choices.

    Parameters
    ----------
    project : workbench.store.Project
        The project whose labels are trained on; the new model version is recorded in it.
    seconds : float, optional
        Training time to preselect (default: ``$WORKBENCH_TRAIN_SECONDS`` or 2 minutes). Any
        positive number of seconds is offered alongside the usual choices.

    Attributes
    ----------
    widget : ipywidgets.VBox
        The panel (a notebook shows the panel itself, too).
    history : list of dict
        The ``logs`` of every finished epoch of the current or last run.
    record : workbench.records.ModelRecord or None
        The model record of the last finished training.
    error : str or None
        The message shown for the last failure, else None.
    plot_updates : int
        How often the loss plot was redrawn (tests watch it change).
    """

    def __init__(self, project: Project, *, seconds: float | None = None, measure_speed: bool = True):
        if not isinstance(project, Project):
            raise TypeError(f"`project` must be a workbench Project, got {type(project).__name__}; "
                            "open one with workbench.store.Project.open(folder)")
        self.project = project
        self.history: list[dict] = []
        self.record: ModelRecord | None = None
        self.error: str | None = None
        self.plot_updates = 0
        self.job: jobs.TrainingJob | None = None
        self.job_record: dict | None = None
        self._thread: threading.Thread | None = None
        self._busy = threading.Event()
        self._closed = threading.Event()
        self._stopped = False
        self._started_at = 0.0
        self._budget = 0.0
        self._step_drawn = 0
        self._drawn_at = 0.0
        self._trained_callbacks: list[Callable[[ModelRecord], Any]] = []

        seconds = seconds if seconds is not None else train_seconds_from_env(120.0)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise WorkbenchError(f"`seconds` must be a positive number of seconds, got {seconds!r}")
        durations = list(DURATIONS)
        if seconds not in [v for _, v in durations]:
            durations = sorted(durations + [(_duration_label(seconds), float(seconds))], key=lambda d: d[1])
        self._durations = durations
        self._asked_seconds = float(seconds)  # offered whatever it buys: someone asked for it
        self.speed = speed.assumed_speed("fast")  # until this computer's speed is known (`measure_speed`)
        self._speed_thread: threading.Thread | None = None

        style = {"description_width": "150px"}
        toggle_style = {"button_width": "230px"}
        wide = W.Layout(width="480px")
        self.mode = W.ToggleButtons(options=MODE_CHOICES, value=project.mode, style=toggle_style,
                                    tooltips=["One class per pixel: e.g. tissue types, cell vs. background",
                                              "Each object separately: e.g. count and measure nuclei"])
        self.method = W.ToggleButtons(options=[("U-Net (deep learning)", "unet"),
                                               ("Random Forest (classic, quick)", "forest")],
                                      value="unet", style=toggle_style)
        self.model_size = W.Dropdown(options=MODEL_SIZES, value="fast", description="Model size", style=style,
                                     layout=wide)
        self.duration = W.Dropdown(options=durations, value=float(seconds), description="Training time",
                                   style=style, layout=W.Layout(width="620px"))
        self.speed_note = W.HTML(layout=W.Layout(margin="0 0 4px 154px", max_width="620px"))
        self.augmentation = W.ToggleButtons(options=AUGMENTATION, value=0.5,
                                            style={"button_width": "110px"},
                                            tooltips=["Train on the images as they are",
                                                      "Small flips, turns and brightness changes",
                                                      "Good default: flips, turns, zoom, brightness, blur",
                                                      "Large distortions: for few labels or varied images"])
        self.start_from = W.Dropdown(options=START_CHOICES, value=self._default_start(), description="Start from",
                                     style=style, layout=wide)
        self.start_button = W.Button(description="Start training", button_style="success", icon="play",
                                     layout=W.Layout(width="180px"))
        self.stop_button = W.Button(description="Stop", button_style="", icon="stop", disabled=True,
                                    layout=W.Layout(width="120px"),
                                    tooltip="Stop now and keep the best model so far")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="Progress", style=style,
                                        layout=wide)
        self.time_left = W.HTML(value="")
        self.plot = W.Image(value=_loss_plot_png([], [], []), format="png",
                            layout=W.Layout(width="468px", height="252px"))
        self.status = W.HTML(value="")
        self.summary = W.HTML(value=self._labels_summary())

        self.start_button.on_click(lambda _button: self.start())
        self.stop_button.on_click(lambda _button: self.stop())
        self.method.observe(self._method_changed, names="value")
        self.mode.observe(self._mode_changed, names="value")
        self.mode.disabled = project.n_classes != 2
        self._method_changed()
        self.model_size.observe(lambda _change: self.measure_speed(), names="value")
        self.start_from.observe(lambda _change: self._offer_durations(), names="value")
        self._offer_durations()

        self.widget = W.VBox([
            self.summary,
            _labelled("Find", self.mode), _labelled("Method", self.method), self.model_size, self.duration,
            self.speed_note,
            _labelled("Augmentation", self.augmentation), self.start_from,
            W.HBox([self.start_button, self.stop_button], layout=W.Layout(margin="4px 0 4px 154px")),
            W.HBox([self.progress, self.time_left], layout=W.Layout(align_items="center")),
            self.plot,
            self.status,
        ], layout=W.Layout(padding="4px"))
        self.widget.add_class("wb-training")
        self.attach()  # a training of this project that runs already (started by another page, or the CLI)
        if measure_speed:
            self.measure_speed()

    # ------------------------------------------------------------------ display
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ public actions
    @property
    def running(self) -> bool:
        """Whether a training is in progress."""
        return self._busy.is_set()

    def on_trained(self, callback: Callable[[ModelRecord], Any]) -> Callable[[ModelRecord], Any]:
        """Call ``callback(record)`` after each successful training (from the training thread)."""
        self._trained_callbacks.append(callback)
        return callback

    def choices(self) -> TrainingChoices:
        """The current choices as the engine's record."""
        return TrainingChoices(method=self.method.value, size=self.model_size.value,
                               seconds=float(self.duration.value), augment=float(self.augmentation.value),
                               start=self.start_from.value)

    def settings(self) -> tuple[str, dict, bool]:
        """The method, engine settings and resume flag that the current choices mean
        (`workbench.pipeline.plan_training`).

        Raises
        ------
        WorkbenchError
            When the choices do not fit the project (e.g. continuing without a model).
        """
        return pipeline.plan_training(self.project, self.choices()).as_tuple()

    def start(self) -> bool:
        """Start training with the current choices, as the project's job; False when it could not start."""
        if self.running:
            self._set_status("warning", "Training is already running; press Stop first to start again.")
            return False
        try:
            plan = pipeline.plan_training(self.project, self.choices())
            job = jobs.start_training(self.project, plan)
        except WorkbenchError as exc:
            self._fail(_user_message(exc, "starting the training"))
            return False
        budget = f" for up to {format_seconds(float(self.duration.value))}" if plan.method == "unet" else ""
        self._follow(job, float(self.duration.value) if plan.method == "unet" else 0.0,
                     f"Training a {METHOD_NAMES[plan.method]}{budget} on {self._labels_summary(plain=True)} …")
        return True

    def attach(self) -> bool:
        """Follow the project's running training, if there is one (after a page reload); True when found."""
        if self.running:
            return True
        job = jobs.running_training(self.project)
        if job is None:
            return False
        record = job.poll()
        budget = float(record.get("budget_seconds") or 0.0)
        version = f" (model version {record['version']})" if record.get("version") else ""
        method = METHOD_NAMES.get(record.get("method"), "model")
        since = _when(record.get("started", ""))[11:16]
        self._follow(job, budget, f"A {method} training of this project is running{version}, started at {since} "
                                  "(UTC) — shown here again. Stop ends it and keeps the best model so far.",
                     started=record.get("elapsed") or 0.0)
        return True

    def measure_speed(self, *, wait: bool = False) -> None:
        """Find how fast the chosen model size trains on this computer (in a thread; `wait` to block).

        The last measurement is read from the user's folder; the first time, a few training steps
        are timed (`workbench.speed.training_speed`), never while a training runs. The training
        times offered are then labelled with what they buy here.
        """
        preset = self.model_size.value
        self.speed = speed.assumed_speed(preset)
        self._offer_durations()

        def find():
            try:
                found = speed.training_speed(preset, measure=not self.running)
            except Exception as exc:  # noqa: BLE001 - the assumed speed stays; nothing to show the user
                log.warning("could not measure the training speed: %s", exc)
                return
            if self.model_size.value == preset:
                self.speed = found
                self._offer_durations()

        # Not a daemon: torch must not be torn down mid-step when the process exits (a few seconds at most).
        self._speed_thread = threading.Thread(target=find, daemon=False, name="workbench-training-speed")
        self._speed_thread.start()
        if wait:
            self._speed_thread.join()

    def _offer_durations(self) -> None:
        """The training times worth offering for the current start, labelled with what they buy here."""
        start = self.start_from.value
        options = speed.duration_choices(self._durations, self.speed, start=start, keep=self._asked_seconds)
        current = float(self.duration.value)
        values = [value for _, value in options]
        value = current if current in values else next((v for v in values if v >= current), values[-1])
        self.duration.options = options
        self.duration.value = value
        note = speed.speed_note(self.speed, start=start)
        self.speed_note.value = f'<span style="color:#555;font-size:90%">{html.escape(note)}</span>'


    def stop(self) -> None:
        """Ask the training to stop (through the project: it works for a training another page started);
        the best model so far is kept."""
        if self.running:
            self._stopped = True
            jobs.stop_training(self.project)
            self.stop_button.disabled = True
            self._set_status("info", "Stopping … the best model so far is kept.")

    def wait(self, timeout: float | None = None) -> ModelRecord | None:
        """Block until the current training ends; return its model record (None after a failure)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.record

    def close(self) -> None:
        """Stop following the training (the training itself goes on: it belongs to the project)."""
        self._closed.set()

    def refresh(self) -> None:
        """Update the label summary and the default start (after painting or a new model)."""
        self.summary.value = self._labels_summary()
        has_model = self._has_model(self.method.value)
        if not self.running and self.start_from.value == "last" and not has_model:
            self.start_from.value = self._default_start()  # keep the person's choice unless it cannot work

    def prepare_longer_training(self, factor: float = 2.0) -> None:
        """Preselect 'continue from the last model' with a longer time (the review's 'Train longer')."""
        if self._has_model(self.method.value):
            self.start_from.value = "last"
        longer = [v for _, v in self.duration.options if v >= float(self.duration.value) * factor]
        if longer:
            self.duration.value = longer[0]
        self._set_status("info", "Continue from the last model: press Start training.")

    # ------------------------------------------------------------------ following the job
    def _follow(self, job: "jobs.TrainingJob", budget: float, message: str, *, started: float = 0.0) -> None:
        self.job = job
        self.job_record = None
        self.history = []
        self.error = None
        self.record = None
        self._stopped = False
        self._started_at = time.monotonic() - float(started)
        self._budget = float(budget)
        self._step_drawn = 0
        self.progress.value = 0.0
        self.progress.bar_style = "info"
        self.time_left.value = ""
        self._redraw_plot()
        self._set_status("info", message)
        self._set_running(True)
        self._thread = threading.Thread(target=self._watch, args=(job,), daemon=True, name="workbench-training")
        self._thread.start()

    def _watch(self, job: "jobs.TrainingJob", interval: float = 0.25) -> None:
        """Runs in a thread: mirror the job's record into the panel until the job ends."""
        try:
            while not self._closed.is_set():
                record = job.poll()
                self._show_record(record)
                if record.get("state") in jobs.ENDED_STATES:
                    self._finish(record)
                    return
                time.sleep(interval)
        except Exception as exc:  # noqa: BLE001 - shown to the user; the thread must not die silently
            self._set_running(False)
            self.progress.bar_style = "danger"
            self._fail(_user_message(exc, "following the training"))

    def _show_record(self, record: dict) -> None:
        self.job_record = record
        epochs = list(record.get("epochs") or [])
        if len(epochs) != len(self.history):
            self.history = [dict(entry) for entry in epochs]
            self._redraw_plot(record.get("step"))
        elif (record.get("step") or 0) != self._step_drawn and time.monotonic() - self._drawn_at > 1.0:
            self._redraw_plot(record.get("step"))  # the plot moves during the first epoch as well
        if record.get("state") == "running":
            self._show_progress(float(record.get("progress") or 0.0), record.get("elapsed"))

    def _finish(self, record: dict) -> None:
        state = record.get("state")
        if state not in ("done", "stopped"):
            self._set_running(False)
            self.progress.bar_style = "danger"
            why = record.get("error_in_app") or record.get("error") or "it ended without a model"
            self._fail(f"Training did not work: {why}")
            return
        model = pipeline.model_record(self.project, int(record["version"]))
        self.record = model
        self.progress.value = 1.0
        self.progress.bar_style = "success"
        self.time_left.value = "done"
        self._set_running(False)
        self._set_status("success", self._success_text(model, stopped=state == "stopped"))
        self.start_from.value = "last"
        self.summary.value = self._labels_summary()
        if model.method == "unet":
            self.measure_speed()  # the run just kept its own speed: the times offered say so now
        for callback in list(self._trained_callbacks):
            try:
                callback(model)
            except Exception as exc:  # noqa: BLE001 - a listener's failure must not hide the new model
                self._fail(_user_message(exc, "showing the new model"))

    def _show_progress(self, fraction: float, elapsed: float | None = None) -> None:
        fraction = float(min(max(fraction, 0.0), 1.0))
        self.progress.value = fraction
        elapsed = float(elapsed) if elapsed is not None else time.monotonic() - self._started_at
        budget = self._budget or elapsed / max(fraction, 1e-3)
        left = elapsed * (1 - fraction) / fraction if fraction > 0.01 else budget - elapsed
        left = min(max(left, 0.0), max(budget - elapsed, 0.0) + 5.0)
        epoch = f"epoch {len(self.history) + 1} · " if fraction < 1 else ""
        self.time_left.value = (f'<span style="margin-left:10px">{epoch}about '
                                f'{html.escape(format_seconds(left))} left</span>')

    def _redraw_plot(self, current_step: int | None = None) -> None:
        epochs = [int(h.get("epoch") or i + 1) for i, h in enumerate(self.history)]
        losses = [float(h["loss"]) for h in self.history]
        val = [None if h.get("val_loss") is None else float(h["val_loss"]) for h in self.history]
        steps = [int(h["steps"]) for h in self.history] if all(h.get("steps") for h in self.history) else None
        self.plot.value = _loss_plot_png(epochs, losses, val, steps=steps, current_step=current_step or None)
        self._step_drawn = current_step or 0
        self._drawn_at = time.monotonic()
        self.plot_updates += 1

    # ------------------------------------------------------------------ view state
    def _success_text(self, record: ModelRecord, *, stopped: bool = False) -> str:
        parts = [f"Model version {record.version} is ready ({METHOD_NAMES.get(record.method, record.method)}"]
        best = record.metrics.val_loss  # the loss of the weights kept: the best one
        if best is not None:
            parts.append(f", best validation loss {best:.3f}")
        metrics = record.metrics
        parts.append(f", {_plural(len(self.history), 'epoch')}).")
        if metrics.get("summary"):
            parts.append(f" {metrics['summary'][0].upper()}{metrics['summary'][1:]}.")
        if stopped:
            parts.append(" Stopped early: the best model so far was kept.")
        parts.append(" Go to Review to see what it finds.")
        return "".join(parts)

    def _set_running(self, running: bool) -> None:
        (self._busy.set if running else self._busy.clear)()
        self.start_button.disabled = running
        self.stop_button.disabled = not running
        self.stop_button.button_style = "danger" if running else ""  # red only when there is something to stop
        for control in (self.mode, self.method, self.duration, self.augmentation, self.start_from):
            control.disabled = running
        self.mode.disabled = running or self.project.n_classes != 2
        self.model_size.disabled = running
        self.augmentation.disabled = running or self.method.value == "forest"
        self.duration.disabled = running or self.method.value == "forest"

    def _set_status(self, kind: str, text: str) -> None:
        self.status.value = _status_html(kind, text)

    def _fail(self, message: str) -> None:
        self.error = message
        self._set_status("error", message)

    def _has_model(self, method: str) -> bool:
        return any(record.method == method for record in pipeline.model_records(self.project))

    def _default_start(self) -> str:
        method = getattr(getattr(self, "method", None), "value", "unet")
        return pipeline.default_start(self.project, method)

    def _method_changed(self, _change=None) -> None:
        forest = self.method.value == "forest"
        self.augmentation.disabled = forest
        self.duration.disabled = forest
        self.start_from.options = [c for c in START_CHOICES if not (forest and c[1] in ("pretrained", "starter"))]
        self.start_from.value = self._default_start()

    def _mode_changed(self, change) -> None:
        if change["new"] == self.project.mode:
            return
        if self.project.n_classes != 2:
            self.mode.value = self.project.mode
            self._fail("Separate objects (instance) needs a project with exactly one object class.")
            return
        # Labels mean the same in both modes (1 = background, 2 = the class); only the training targets differ.
        self.project.set_mode(change["new"])
        self.start_from.value = "scratch"
        finds = "separate objects" if change["new"] == "instance" else "regions"
        self._set_status("info", f"The project now finds {finds}; the next model learns that from scratch.")

    def _labels_summary(self, plain: bool = False) -> str:
        stats = self.project.label_stats()
        n_images = len(self.project.image_names)
        objects = f"{_plural(stats['objects'], 'painted object')}, " if "objects" in stats else ""
        text = (f"{objects}{100 * stats['annotated_fraction']:.1f} % of the pixels of {_plural(n_images, 'image')} "
                "labelled")
        if plain:
            return text
        models = pipeline.model_records(self.project)
        last = f" · last model: version {models[-1].version}" if models else " · no model yet"
        return f'<div style="color:#444;margin:2px 0 6px 0">Your labels: {html.escape(text)}{html.escape(last)}</div>'

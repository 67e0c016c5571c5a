"""The training step: settings a biologist understands, Start / Stop, a live loss plot and time left.

Training runs in a background thread so the page stays responsive; the thread only changes the
values of widgets made beforehand (progress, plot picture, messages), never creates widgets.
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

from workbench import config, pipeline
from workbench.deep import Callback
from workbench.errors import WorkbenchError
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
        return f"{doing.capitalize()} did not work: {exc}"
    if isinstance(exc, MemoryError):
        return (f"{doing.capitalize()} ran out of memory. Choose a smaller model size, or close other "
                "programs, and try again.")
    log.error("%s failed", doing, exc_info=exc)
    return (f"{doing.capitalize()} stopped because of an unexpected problem ({type(exc).__name__}: {exc}). "
            "Your project and labels are safe. If it happens again, please report this message.")


def _loss_plot_png(epochs: list[int], losses: list[float], val_losses: list[float | None], *,
                   width: float = 5.2, height: float = 2.8, dpi: int = 90) -> bytes:
    """Training and validation loss per epoch as a PNG, drawn with matplotlib's Agg backend.

    A `Figure` (not pyplot) is thread-safe enough to draw from the training thread.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    if epochs:
        axes.plot(epochs, losses, "-o", color="#1f77b4", markersize=3, label="training")
        val = [(e, v) for e, v in zip(epochs, val_losses) if v is not None]
        if val:
            axes.plot([e for e, _ in val], [v for _, v in val], "-o", color="#d62728", markersize=3,
                      label="validation")
            best = min(val, key=lambda item: item[1])
            axes.plot([best[0]], [best[1]], "*", color="#d62728", markersize=11, label="best (kept)")
        axes.legend(loc="upper right", fontsize=8, frameon=False)
        axes.set_xlim(0.5, max(epochs) + 0.5)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    else:
        axes.text(0.5, 0.5, "The loss curves appear here\nwhile the model trains", ha="center", va="center",
                  transform=axes.transAxes, color="#777777", fontsize=10)
        axes.set_xticks([])
        axes.set_yticks([])
    axes.set_xlabel("epoch", fontsize=9)
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


class _PanelCallback(Callback):
    """Forwards the trainer's reports to the panel (runs in the training thread)."""

    def __init__(self, panel: "TrainingPanel"):
        self.panel = panel

    def on_epoch_end(self, epoch, logs):
        self.panel._record_epoch(epoch, logs)

    def on_progress(self, fraction, message):
        self.panel._show_progress(fraction, message)


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

    def __init__(self, project: Project, *, seconds: float | None = None):
        if not isinstance(project, Project):
            raise TypeError(f"`project` must be a workbench Project, got {type(project).__name__}; "
                            "open one with workbench.store.Project.open(folder)")
        self.project = project
        self.history: list[dict] = []
        self.record: ModelRecord | None = None
        self.error: str | None = None
        self.plot_updates = 0
        self._thread: threading.Thread | None = None
        self._busy = threading.Event()
        self._stop_event = threading.Event()
        self._started_at = 0.0
        self._budget = 0.0
        self._trained_callbacks: list[Callable[[ModelRecord], Any]] = []

        seconds = seconds if seconds is not None else train_seconds_from_env(120.0)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise WorkbenchError(f"`seconds` must be a positive number of seconds, got {seconds!r}")
        durations = list(DURATIONS)
        if seconds not in [v for _, v in durations]:
            durations = sorted(durations + [(_duration_label(seconds), float(seconds))], key=lambda d: d[1])

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
                                   style=style, layout=wide)
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
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True,
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

        self.widget = W.VBox([
            self.summary,
            _labelled("Find", self.mode), _labelled("Method", self.method), self.model_size, self.duration,
            _labelled("Augmentation", self.augmentation), self.start_from,
            W.HBox([self.start_button, self.stop_button], layout=W.Layout(margin="4px 0 4px 154px")),
            W.HBox([self.progress, self.time_left], layout=W.Layout(align_items="center")),
            self.plot,
            self.status,
        ], layout=W.Layout(padding="4px"))
        self.widget.add_class("wb-training")

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
        """Start training in the background with the current choices; False when it could not start."""
        if self.running:
            self._set_status("warning", "Training is already running; press Stop first to start again.")
            return False
        try:
            method, settings, resume = self.settings()
        except WorkbenchError as exc:
            self._fail(_user_message(exc, "starting the training"))
            return False
        self.history = []
        self.error = None
        self.record = None
        self._stop_event = threading.Event()
        self._started_at = time.monotonic()
        self._budget = float(self.duration.value)
        self.progress.value = 0.0
        self.progress.bar_style = "info"
        self.time_left.value = ""
        self._redraw_plot()
        budget = f" for up to {format_seconds(self._budget)}" if method == "unet" else ""
        self._set_status("info", f"Training a {METHOD_NAMES[method]}{budget} on {self._labels_summary(plain=True)} …")
        self._set_running(True)
        self._thread = threading.Thread(target=self._run, args=(method, settings, resume), daemon=True,
                                        name="workbench-training")
        self._thread.start()
        return True

    def stop(self) -> None:
        """Ask the training to stop; the best model so far is kept."""
        if self.running:
            self._stop_event.set()
            self.stop_button.disabled = True
            self._set_status("info", "Stopping … the best model so far is kept.")

    def wait(self, timeout: float | None = None) -> ModelRecord | None:
        """Block until the current training ends; return its model record (None after a failure)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.record

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

    # ------------------------------------------------------------------ training thread
    def _run(self, method: str, settings: dict, resume: bool) -> None:
        try:
            record = pipeline.train_model(self.project, method=method, settings=settings, resume=resume,
                                          callbacks=[_PanelCallback(self)], stop_event=self._stop_event)
        except BaseException as exc:  # noqa: BLE001 - shown to the user; the thread must not die silently
            self._set_running(False)
            self.progress.bar_style = "danger"
            self._fail(_user_message(exc, "training"))
            return
        self.record = record
        self.progress.value = 1.0
        self.progress.bar_style = "success"
        self.time_left.value = "done"
        self._set_running(False)
        self._set_status("success", self._success_text(record))
        self.start_from.value = "last"
        self.summary.value = self._labels_summary()
        for callback in list(self._trained_callbacks):
            try:
                callback(record)
            except Exception as exc:  # noqa: BLE001 - a listener's failure must not hide the new model
                self._fail(_user_message(exc, "showing the new model"))

    def _record_epoch(self, epoch: int, logs: dict) -> None:
        entry = dict(logs)
        entry.setdefault("epoch", epoch)
        self.history.append(entry)
        self._redraw_plot()

    def _show_progress(self, fraction: float, message: str) -> None:
        fraction = float(min(max(fraction, 0.0), 1.0))
        self.progress.value = fraction
        elapsed = time.monotonic() - self._started_at
        left = elapsed * (1 - fraction) / fraction if fraction > 0.01 else self._budget - elapsed
        left = min(max(left, 0.0), max(self._budget - elapsed, 0.0) + 5.0)
        epoch = f"epoch {len(self.history)} · " if self.history else ""
        self.time_left.value = (f'<span style="margin-left:10px">{epoch}about '
                                f'{html.escape(format_seconds(left))} left</span>')

    def _redraw_plot(self) -> None:
        epochs = [int(h.get("epoch", i + 1)) for i, h in enumerate(self.history)]
        losses = [float(h["loss"]) for h in self.history]
        val = [None if h.get("val_loss") is None else float(h["val_loss"]) for h in self.history]
        self.plot.value = _loss_plot_png(epochs, losses, val)
        self.plot_updates += 1

    # ------------------------------------------------------------------ view state
    def _success_text(self, record: ModelRecord) -> str:
        parts = [f"Model version {record.version} is ready ({METHOD_NAMES.get(record.method, record.method)}"]
        best = record.metrics.val_loss  # the loss of the weights kept: the best one
        if best is not None:
            parts.append(f", best validation loss {best:.3f}")
        metrics = record.metrics
        parts.append(f", {_plural(len(self.history), 'epoch')}).")
        if metrics.get("summary"):
            parts.append(f" {metrics['summary'][0].upper()}{metrics['summary'][1:]}.")
        if self._stop_event.is_set():
            parts.append(" Stopped early: the best model so far was kept.")
        parts.append(" Go to Review to see what it finds.")
        return "".join(parts)

    def _set_running(self, running: bool) -> None:
        (self._busy.set if running else self._busy.clear)()
        self.start_button.disabled = running
        self.stop_button.disabled = not running
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

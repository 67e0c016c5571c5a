"""Live preview in the annotator: a small Random Forest retrained after each stroke, shown on the view.

`LivePreviewController` adds a "Live preview (Random Forest)" toggle to the annotator's toolbar.
While it is on, every saved stroke retrains `workbench.classic.LivePreview` on the labels of the
image plane being painted, and every pan or zoom predicts the visible region; the result is drawn
in the annotator's prediction layer (`Annotator.set_preview`): class colours in a semantic project,
instance outlines (`workbench.predict.instances_from_probabilities`) in an instance project.

The work runs on one background thread. Requests that arrive while it is busy are merged into one
(a retrain if any of them asked for it, at the view of the moment it starts), so a fast painter
never queues up stale previews.

The preview is predicted at full resolution, where the forest was trained (features at another
pyramid level would not match the ones it learnt). A view larger than `MAX_PREVIEW_PIXELS`
(1 megapixel, about a second of prediction) is cropped to its central 1 megapixel, with the view's
proportions; the rest of the canvas shows no preview until you zoom in there.

Examples
--------
>>> annotator = Annotator(project)                                   # doctest: +SKIP
>>> preview = LivePreviewController(annotator, project)              # doctest: +SKIP
>>> preview.enabled = True; preview.wait(); preview.status.value     # doctest: +SKIP
'<small>preview: 0.8 s, 3 classes</small>'
"""

from __future__ import annotations

import html
import logging
import threading
import time
from dataclasses import dataclass

import ipywidgets as w
import numpy as np

from workbench.classic import LivePreview
from workbench.errors import WorkbenchError, app_message
from workbench.predict import instances_from_probabilities, semantic_from_probabilities
from workbench.store import training_targets

__all__ = ["LivePreviewController", "MAX_PREVIEW_PIXELS", "ONE_CLASS_MESSAGE", "preview_region"]

MAX_PREVIEW_PIXELS = 1 << 20
ONE_CLASS_MESSAGE = "paint background and at least one object to see a preview"


def preview_region(region: tuple[slice, slice], max_pixels: int = MAX_PREVIEW_PIXELS) -> tuple[slice, slice]:
    """The part of the visible `region` to predict: all of it, or its centre cut to `max_pixels`.

    Examples
    --------
    >>> preview_region((slice(0, 2048), slice(0, 2048)))
    (slice(512, 1536, None), slice(512, 1536, None))
    """
    ys, xs = region
    height, width = ys.stop - ys.start, xs.stop - xs.start
    if height * width <= max_pixels:
        return region
    scale = np.sqrt(max_pixels / (height * width))
    new_height, new_width = max(1, int(height * scale)), max(1, int(width * scale))
    y0, x0 = ys.start + (height - new_height) // 2, xs.start + (width - new_width) // 2
    return slice(y0, y0 + new_height), slice(x0, x0 + new_width)


def _contains(outer: tuple[slice, slice], inner: tuple[slice, slice]) -> bool:
    return all(o.start <= i.start and i.stop <= o.stop for o, i in zip(outer, inner))


@dataclass
class _Request:
    retrain: bool


class LivePreviewController:
    """The annotator's live preview: toggle, background retraining and the preview overlay.

    Parameters
    ----------
    annotator : workbench_widgets.annotator.Annotator
    project : workbench.store.Project, optional
        The annotator's project (default ``annotator.project``).
    max_pixels : int
        Largest region predicted at once (see the module notes).
    show_in_toolbar : bool
        Put `widget` (toggle and status) in the annotator's toolbar.

    Attributes
    ----------
    widget : ipywidgets.HBox
        The toggle and the status text.
    toggle : ipywidgets.Checkbox
    status : ipywidgets.HTML
        ``"preview: 0.8 s, 3 classes"``, or what to paint first.
    message : str
        The status as plain text.
    preview : workbench.classic.LivePreview or None
        The engine object of the plane shown (released when the preview is turned off).
    update_count : int
        How often the forest was retrained.
    last_metrics : dict
        The last `LivePreview.update` metrics with ``"update_seconds"``, plus ``"predict_seconds"``
        and ``"seconds"`` (the whole last job: retraining, prediction and outlines).
    errors : list of Exception
        Unexpected failures of the background thread (shown in the status too).
    """

    def __init__(self, annotator, project=None, *, max_pixels: int = MAX_PREVIEW_PIXELS,
                 show_in_toolbar: bool = True):
        if not hasattr(annotator, "set_preview") or not hasattr(annotator, "on_labels_changed"):
            raise WorkbenchError(f"annotator must be a workbench_widgets.annotator.Annotator, got {type(annotator).__name__}")
        if int(max_pixels) < 1024:
            raise WorkbenchError(f"max_pixels must be at least 1024, got {max_pixels}")
        self.annotator = annotator
        self.project = project if project is not None else annotator.project
        self.max_pixels = int(max_pixels)
        self.toggle = w.Checkbox(value=False, description="Live preview (Random Forest)", indent=False,
                                 layout=w.Layout(width="auto"))
        self.status = w.HTML()
        self.widget = w.HBox([self.toggle, self.status], layout=w.Layout(align_items="center"))
        self.message = ""
        self.preview: LivePreview | None = None
        self.update_count = 0
        self.last_metrics: dict = {}
        self.errors: list[Exception] = []
        self._condition = threading.Condition()
        self._pending: _Request | None = None
        self._busy = False
        self._generation = 0  # bumped when turned off: work started before is not drawn
        self._plane: tuple[str, int] | None = None  # (image, z) that `preview` was made for
        self._trained = False
        self._model_version = 0
        self._shown: tuple | None = None  # (plane, model version, region) on the canvas now
        self._closed = False
        self._release_wanted = False
        self.toggle.observe(self._toggled, names="value")
        annotator.on_labels_changed(self._labels_changed)
        annotator.on_view_changed(self._view_changed)
        if show_in_toolbar:
            annotator.add_to_toolbar(self.widget)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ public
    @property
    def enabled(self) -> bool:
        return bool(self.toggle.value)

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self.toggle.value = bool(on)

    @property
    def busy(self) -> bool:
        """Whether the background thread has work in hand or waiting."""
        with self._condition:
            return self._busy

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until the background thread has finished all requested work.

        Returns False when `timeout` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        with self._condition:
            while self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._condition.wait(left)
        return True

    def refresh(self) -> None:
        """Retrain and predict now (e.g. after labels were imported outside the annotator)."""
        if self.enabled:
            self._request(retrain=True)

    def close(self) -> None:
        """Turn the preview off and stop listening to the annotator."""
        self.enabled = False
        self._closed = True
        self.wait()

    # ------------------------------------------------------------------ events
    def _toggled(self, change) -> None:
        if change["new"]:
            self._set_message("preview: training…")
            self._request(retrain=True)
            return
        with self._condition:
            self._generation += 1
            self._pending = None
            self._release_wanted = True  # the thread lets go of the engine when it is between jobs
            if not self._busy:
                self._release()
        if self.annotator.name is not None:
            self.annotator.clear_preview()
        self._set_message("")

    def _release(self) -> None:
        """Forget the engine object (its cached features are tens of MB per megapixel); hold the lock."""
        self.preview, self._plane, self._trained, self._shown = None, None, False, None
        self._release_wanted = False

    def _labels_changed(self, event) -> None:
        if self._closed or not self.enabled:
            return
        if event.image == self.annotator.name and (event.z or 0) == self.annotator.z:
            self._request(retrain=True)

    def _view_changed(self, event: dict) -> None:
        if not self._closed and self.enabled:
            self._request(retrain=False)

    # ------------------------------------------------------------------ the background thread
    def _request(self, *, retrain: bool) -> None:
        with self._condition:
            if self._pending is None:
                self._pending = _Request(retrain)
            else:
                self._pending.retrain |= retrain
            if self._busy:
                return
            self._busy = True
        threading.Thread(target=self._work, name="live-preview", daemon=True).start()

    def _work(self) -> None:
        finished = False
        try:
            while not finished:
                with self._condition:
                    if self._release_wanted:
                        self._release()
                    request, self._pending = self._pending, None
                    generation = self._generation
                    if request is None:  # idle: in the same lock as the check, so no request is missed
                        self._busy, finished = False, True
                        self._condition.notify_all()
                        continue
                try:
                    self._run(request, generation)
                except WorkbenchError as exc:  # e.g. labels the engine cannot train on: say what to do
                    self._discard_preview(generation)
                    self._say(generation, app_message(exc), error=True)
                except Exception as exc:  # noqa: BLE001 - a thread has nobody to raise to
                    self.errors.append(exc)
                    self._discard_preview(generation)
                    logging.getLogger(__name__).error("live preview failed", exc_info=exc)
                    self._say(generation, "the live preview stopped because of an unexpected problem; your labels "
                                          "are safe — paint again to retry", error=True)
        finally:
            if not finished:  # an error escaped the loop (none should): do not hang wait()
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def _current(self, generation: int) -> bool:
        with self._condition:
            return generation == self._generation

    def _discard_preview(self, generation: int) -> None:
        self._trained, self._shown = False, None
        if self._current(generation) and self.annotator.name is not None:
            self.annotator.clear_preview()

    def _run(self, request: _Request, generation: int) -> None:
        annotator = self.annotator
        if annotator.name is None:
            self._say(generation, "open an image to see a preview")
            return
        started = time.perf_counter()
        plane = (annotator.name, annotator.z)
        if self.preview is None or self._plane != plane:
            image = annotator.pyramid.image.plane(plane[1])[:, :, :]
            self.preview = LivePreview(image, mode=self.project.mode, n_classes=self.project.n_outputs)
            self._plane, self._trained, self._shown = plane, False, None
        preview = self.preview
        classes_painted = None
        if request.retrain or not self._trained:
            labels = annotator.editor.read_plane(plane[1])
            targets = training_targets(labels, self.project.mode, self.project.boundary_width)
            counts = np.bincount(targets[targets >= 0].ravel(), minlength=self.project.n_outputs)
            if counts[0] == 0 or np.count_nonzero(counts) < 2:
                self._discard_preview(generation)
                self._say(generation, ONE_CLASS_MESSAGE)
                return
            metrics = preview.update(targets)
            self.update_count += 1
            self._trained = True
            self._model_version += 1
            classes_painted = int(np.count_nonzero(counts))
            self.last_metrics = dict(metrics, update_seconds=metrics["seconds"])
        region = preview_region(annotator.visible_region(), self.max_pixels)
        shown = self._shown
        if (shown is not None and shown[:2] == (plane, self._model_version) and _contains(shown[2], region)):
            return  # the overlay on the canvas already covers this view
        ys, xs = region
        if ys.stop <= ys.start or xs.stop <= xs.start:
            return
        probabilities = preview.predict(ys.start, ys.stop, xs.start, xs.stop)
        if self.project.mode == "instance":
            values, kind = instances_from_probabilities(probabilities), "instances"
        else:
            values, kind = semantic_from_probabilities(probabilities), "classes"
        if not self._current(generation) or (annotator.name, annotator.z) != plane:
            return  # turned off or another plane opened meanwhile
        annotator.set_preview(values, region, kind=kind)
        self._shown = (plane, self._model_version, region)
        seconds = time.perf_counter() - started
        self.last_metrics.update(predict_seconds=round(preview.timings.get("predict_seconds", 0.0), 3),
                                 seconds=round(seconds, 3))
        if classes_painted is None:
            classes_painted = self._classes_of_model()
        cropped = "" if region == annotator.visible_region() else ", centre of the view (zoom in for more)"
        self._say(generation, f"preview: {seconds:.1f} s, {classes_painted} classes{cropped}")

    def _classes_of_model(self) -> int:
        counts = self.last_metrics.get("sampled_pixels_per_class", [])
        return int(np.count_nonzero(counts)) if counts else 0

    def _say(self, generation: int, message: str, *, error: bool = False) -> None:
        if self._current(generation):
            self._set_message(message, error=error)

    def _set_message(self, message: str, *, error: bool = False) -> None:
        self.message = message
        text = html.escape(message)
        self.status.value = f"<small style='color:#b00'>{text}</small>" if error else f"<small>{text}</small>"

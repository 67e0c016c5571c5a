"""The guided app: one page that walks through project → annotate → train → review → segment.

`WorkbenchApp` puts the step panels in tabs and wires them together: a model that finished
training is predicted on every image at once, the review's "annotate here" opens the annotator
at the place, "train longer" and "add images" jump to their steps. It starts on the bundled
sample project so a first visitor can try every step at once; step 1 opens or creates their own.

Examples
--------
>>> from workbench_widgets.app import WorkbenchApp
>>> WorkbenchApp()          # in a notebook or Voila: the whole app     # doctest: +SKIP
"""

from __future__ import annotations

import html
import os

import ipywidgets as W

from workbench import config
from workbench.datasets import default_project_path, is_sample_project, open_default_project
from workbench.errors import WorkbenchError
from workbench.records import ModelRecord
from workbench.store import Project, last_project, remember_project

from workbench_widgets.project_setup import ProjectSetupPanel
from workbench_widgets.review import ReviewPanel, SegmentPanel
from workbench_widgets.training import TrainingPanel, _status_html, _user_message

__all__ = ["WorkbenchApp", "default_project_path", "open_default_project", "STEPS", "PROJECT_ENV"]

PROJECT_ENV = config.PROJECT
STEPS = ["1 · Project & images", "2 · Annotate", "3 · Train", "4 · Review", "5 · Segment & measure"]
PROJECT, ANNOTATE, TRAIN, REVIEW, SEGMENT = range(len(STEPS))

INTRO = {
    PROJECT: "A project holds your images, your labels and every model trained on them. {where}",
    ANNOTATE: "Paint a few examples of each class: choose a class, then drag over the image. You do not need to "
              "paint everything — a few objects and some background are enough to start; unpainted pixels are "
              "ignored. In instance mode the outline between touching objects is added for you.",
    TRAIN: "The model learns from your painted pixels. Pick a training time and press <b>Start</b>. The curves "
           "should go down; the red one (pixels kept aside for checking) tells you when more training stops "
           "helping. You can stop at any time: the best model so far is kept.",
    REVIEW: "The latest model on all your images: each object outlined (press <b>Full size</b> under a picture to "
            "enlarge it); below, the places where the model is least sure, hatched black and white. If it is not "
            "good enough yet, paint where it is unsure, add images, or train longer — then come back.",
    SEGMENT: "Happy with the model? Segment your images (any size, tile by tile) and download the label images, "
             "a table of measurements per object and overlay pictures.",
}


INSTANCE_ANNOTATE = (
    "Paint a few examples: choose a class, then drag over the image. <b>Fill each nucleus you paint, "
    "completely; paint background between touching nuclei.</b> You do not need to paint every nucleus — a "
    "few whole ones and some background are enough to start; unpainted pixels are ignored. But a stroke "
    "inside a nucleus that does not cover it is learned as a small object of its own. <b>Fill outline</b> "
    "paints everything inside the outline you draw. The outline between objects is added for you.")

# Left: a nucleus filled whole, background painted between it and its touching neighbour (right);
# far right: a scribble inside a nucleus, crossed out.
_CONVENTION_PICTURE = (
    '<svg width="250" height="70" viewBox="0 0 250 70" role="img" aria-label="fill each nucleus whole" '
    'style="vertical-align:middle;margin-left:10px">'
    '<rect x="0" y="0" width="250" height="70" fill="#222"/>'
    '<ellipse cx="40" cy="35" rx="24" ry="20" fill="#e6550d" stroke="#ffd92f" stroke-width="2"/>'
    '<path d="M64 10 L64 60" stroke="#9e9e9e" stroke-width="5"/>'
    '<ellipse cx="88" cy="35" rx="22" ry="20" fill="#777"/>'
    '<text x="48" y="68" fill="#bde5b5" font-size="10" font-family="sans-serif">whole ✓</text>'
    '<ellipse cx="190" cy="35" rx="24" ry="20" fill="#777"/>'
    '<path d="M180 36 Q190 28 200 36" stroke="#e6550d" stroke-width="5" fill="none"/>'
    '<path d="M222 14 L240 32 M240 14 L222 32" stroke="#ff6b6b" stroke-width="3"/>'
    '<text x="168" y="68" fill="#ffb3b3" font-size="10" font-family="sans-serif">part ✗</text></svg>')


SAMPLE_INTRO = ("You are looking at the <b>sample project</b> (nuclei, some of them painted already) — try the "
                "steps with it, or start your own project below.")
OWN_INTRO = ("You are working on <b>{name}</b>. Add images below, open one of your recent projects, or start a "
             "new one.")


def _intro(index: int, project: Project) -> str:
    if index == ANNOTATE and project.mode == "instance":
        return INSTANCE_ANNOTATE + _CONVENTION_PICTURE
    if index != PROJECT:
        return INTRO[index]
    where = SAMPLE_INTRO if is_sample_project(project) else OWN_INTRO.format(name=html.escape(project.name))
    return INTRO[PROJECT].format(where=where)


# Step titles are longer than ipywidgets' default tab width; the page is wide enough for them.
_APP_CSS = ("<style>.wb-app .lm-TabBar-tab, .wb-app .p-TabBar-tab {flex: 0 1 200px !important; "
            "min-width: 170px !important;}</style>")


class WorkbenchApp:
    """All steps of the workbench on one page (tabs), over one project at a time.

    Parameters
    ----------
    project : Project or path-like, optional
        The project to start on (default: the project opened last, as a reloaded page expects; the
        first time `open_default_project`, the sample).
    train_seconds : float, optional
        Preselected training time (default: ``$WORKBENCH_TRAIN_SECONDS`` or 2 minutes).
    canvas_size : (int, int)
        Width and height of the painting canvas in screen pixels.

    Attributes
    ----------
    tabs : ipywidgets.Tab
    setup, annotator, training, review, segment
        The step panels (the latter four are rebuilt when another project is opened).
    live_preview : workbench_widgets.live_preview.LivePreviewController
        The annotator's "Live preview (Random Forest)" toggle, in its toolbar.
    """

    def __init__(self, project: Project | str | os.PathLike | None = None, *, train_seconds: float | None = None,
                 canvas_size: tuple[int, int] = (720, 520)):
        if project is None:
            last = last_project()
            project = _open_last(last) if last is not None else None
        if project is None or isinstance(project, (str, os.PathLike)):
            project = open_default_project(project)
        if not isinstance(project, Project):
            raise TypeError(f"`project` must be a Project or a folder, got {type(project).__name__}")
        self.train_seconds = train_seconds
        self.canvas_size = canvas_size
        self.project = project
        self.annotator = None
        self.live_preview = None
        self.title = W.HTML()
        self.status = W.HTML()
        self.setup = ProjectSetupPanel(project)
        self.setup.on_project_changed(self.set_project)
        self.tabs = W.Tab()
        self.tabs.observe(self._step_shown, names="selected_index")
        self.widget = W.VBox([self.title, self.status, self.tabs], layout=W.Layout(padding="0 8px"))
        self.widget.add_class("wb-app")
        self.set_project(project)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ public actions
    def set_project(self, project: Project) -> None:
        """Show `project` in every step (called when step 1 opens or creates one)."""
        from workbench_widgets.annotator import Annotator
        from workbench_widgets.live_preview import LivePreviewController

        self.project = project
        remember_project(project)
        if self.live_preview is not None:
            self.live_preview.close()
        if self.annotator is not None:
            self.annotator.close()
        width, height = self.canvas_size
        self.annotator = Annotator(project, width=width, height=height)
        self.live_preview = LivePreviewController(self.annotator, project)
        self.training = TrainingPanel(project, seconds=self.train_seconds)
        self.review = ReviewPanel(project, open_annotator=self.open_annotator, on_add_images=self.add_images,
                                  on_train_longer=self.train_longer)
        self.segment = SegmentPanel(project)
        self.training.on_trained(self._model_trained)
        panels = [self.setup.widget, self.annotator.widget, self.training.widget, self.review.widget,
                  self.segment.widget]
        self.tabs.children = [self._step(index, panel, project) for index, panel in enumerate(panels)]
        for index, title in enumerate(STEPS):
            self.tabs.set_title(index, title)
        name = project.name
        self.title.value = (
            _APP_CSS +
            '<div style="display:flex;align-items:baseline;gap:14px;margin:6px 0 4px 0">'
            '<span style="font-size:22px;font-weight:600">Microscopy segmentation workbench</span>'
            f'<span style="color:#555">project: <b>{html.escape(name)}</b></span></div>')
        self.status.value = ""

    def go_to_step(self, step: int) -> None:
        """Show step `step` (0 = project & images … 4 = segment & measure)."""
        if not 0 <= int(step) < len(STEPS):
            raise WorkbenchError(f"step must be 0..{len(STEPS) - 1}, got {step!r}")
        self.tabs.selected_index = int(step)

    def open_annotator(self, name: str, y: float, x: float, zoom: float | None = None, *,
                       z: int | None = None) -> None:
        """Show the annotator on image `name` (plane `z` of a stack), centred on (`y`, `x`)."""
        self.annotator.go_to(name, y, x, zoom, z=z)
        self.go_to_step(ANNOTATE)

    def add_images(self) -> None:
        self.setup.sections.selected_index = 0
        self.go_to_step(PROJECT)

    def train_longer(self) -> None:
        self.training.prepare_longer_training()
        self.go_to_step(TRAIN)

    # ------------------------------------------------------------------ machinery
    def _step(self, index: int, panel: W.Widget, project: Project) -> W.VBox:
        children = [W.HTML(f'<p style="max-width:900px;color:#333;line-height:1.45;margin:6px 0 10px 0">'
                           f'{_intro(index, project)}</p>'), panel]
        if index + 1 < len(STEPS):
            next_button = W.Button(description=f"Next: {STEPS[index + 1].split('·', 1)[1].strip()}",
                                   icon="arrow-right", layout=W.Layout(width="260px", margin="12px 0 0 0"))
            next_button.on_click(lambda _b, _next=index + 1: self.go_to_step(_next))
            children.append(next_button)
        return W.VBox(children)

    def _step_shown(self, change) -> None:
        step = change["new"]
        try:
            if step == ANNOTATE and self.project.image_names:
                self.annotator.refresh_predictions()
            elif step == TRAIN:
                self.training.refresh()
            elif step == REVIEW and not self.review.running:
                self.review.refresh()
            elif step == SEGMENT and not self.segment.running:
                self.segment.refresh()
        except Exception as exc:  # noqa: BLE001 - shown on the page, never a traceback
            self.status.value = _status_html("error", _user_message(exc, "opening this step"))

    def _model_trained(self, record: ModelRecord) -> None:
        """Runs in the training thread: predict every image so the review is ready when it is opened."""
        self.segment.refresh()
        self.review.refresh()
        self.review.predict(background=False)


def _open_last(path) -> Project | None:
    """The project opened last, if it still opens (else the app starts on the default project)."""
    try:
        return Project.open(path)
    except WorkbenchError:
        return None

"""Review a model and use it: a gallery of predictions, where it is unsure, and the results to download.

`ReviewPanel` predicts every project image with the latest model and shows, per image, the
overlay (enlarged to full size by the button under it), how much of it is labelled, how sure the
model is and how many objects it found (`workbench.results.count_objects`, the count Segment shows
too); then the regions where the model is least certain (hatched black and white where it is unsure), each with a button that opens the annotator there, and the three ways forward
when the result is not good enough (add annotations, add images, train longer).

`SegmentPanel` accepts a model: it segments chosen project images or the images of a folder / a
Zarr on this computer, tile by tile, and offers label images (TIFF), measurements (CSV) and
overlays (PNG) as downloads, in JupyterLab and in Voila alike (links with ``data:`` URLs).

As in `workbench_widgets.training`, long work runs in a thread that only updates widgets made beforehand.
What is computed (uncertain regions, pictures, the results folder) comes from `workbench.results`.
"""

from __future__ import annotations

import html
import math
import threading
from pathlib import Path
from typing import Any, Callable

import ipywidgets as W
import numpy as np

from workbench import pipeline, results
from workbench.errors import WorkbenchError
from workbench.results import ResultFiles, UncertainRegion
from workbench.store import Project
from workbench.validate import whole_number

from workbench_widgets.training import METHOD_NAMES, _data_url, _plural, _png_bytes, _status_html, _user_message, _when

__all__ = ["ReviewPanel", "SegmentPanel", "quality_hint"]

THUMBNAIL = 256       # gallery picture side, pixels
FULL_SIZE = 2048      # an enlarged gallery picture is the whole result, at most this many pixels a side
REGION_VIEW = 224     # side of a region picture, pixels
DOWNLOAD_LIMIT = 60 * 2**20  # bigger files are offered by their path on this computer instead

# Mean uncertainty (0 = sure, 1 = a coin toss) -> what it means for a biologist.
QUALITY_HINTS = [
    (0.08, "confident", "#1d5e20"),
    (0.18, "mostly confident: check the marked regions", "#7a4f00"),
    (1.01, "unsure: add labels where it is unsure, or train longer", "#8a1c1c"),
]


def quality_hint(mean_uncertainty: float) -> tuple[str, str]:
    """(words, colour) describing a mean uncertainty in [0, 1]."""
    for limit, words, color in QUALITY_HINTS:
        if mean_uncertainty < limit:
            return words, color
    return QUALITY_HINTS[-1][1], QUALITY_HINTS[-1][2]


class ReviewPanel:
    """Predictions on all project images, the model's doubts, and what to do next.

    Parameters
    ----------
    project : workbench.store.Project
    open_annotator : callable, optional
        ``open_annotator(name, y, x, zoom)`` shows the annotator at that place (the app wires it).
        Without it, the buttons say where to look.
    on_add_images, on_train_longer : callable, optional
        Called without arguments by the corresponding buttons (the app switches steps).
    regions : int
        How many uncertain regions to offer.

    Attributes
    ----------
    summary : dict
        What `workbench.pipeline.predict_project` returned for the last prediction.
    regions : list of UncertainRegion
        The regions shown, most uncertain first.
    error : str or None
        The message shown for the last failure.
    """

    def __init__(self, project: Project, *, open_annotator: Callable[[str, int, int, float], Any] | None = None,
                 on_add_images: Callable[[], Any] | None = None, on_train_longer: Callable[[], Any] | None = None,
                 regions: int = 6):
        if not isinstance(project, Project):
            raise TypeError(f"`project` must be a workbench Project, got {type(project).__name__}")
        whole_number(regions, "regions")
        self.project = project
        self.open_annotator = open_annotator
        self.on_add_images = on_add_images
        self.on_train_longer = on_train_longer
        self.summary: dict[str, dict] = {}
        self.regions: list[UncertainRegion] = []
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._busy = threading.Event()

        self.header = W.HTML()
        self.predict_button = W.Button(description="Predict all images", icon="eye", button_style="primary",
                                       layout=W.Layout(width="200px"))
        self.progress = W.FloatProgress(value=0, min=0, max=1, layout=W.Layout(width="300px", visibility="hidden"))
        self.gallery = W.HTML()
        self.gallery.add_class("wb-gallery")
        # Under the gallery: one button per picture that shows it at full size, in this view.
        self.enlarge_buttons = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.enlarge_buttons.add_class("wb-enlarge")
        self.full_title = W.HTML()
        self.full_image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.close_full_button = W.Button(description="Close", icon="times", layout=W.Layout(width="100px"))
        self.close_full_button.on_click(lambda _b: self.close_full_size())
        self.full_view = W.VBox([W.HBox([self.full_title, self.close_full_button],
                                        layout=W.Layout(align_items="center")), self.full_image],
                                layout=W.Layout(display="none", border="1px solid #ccc", padding="4px",
                                                overflow="auto", max_height="90vh"))
        self.full_view.add_class("wb-full-size")
        self.shown_full_size: str | None = None
        self.status = W.HTML()
        self._region_images = [W.Image(format="png", layout=W.Layout(width=f"{REGION_VIEW}px"))
                               for _ in range(regions)]
        self._region_captions = [W.HTML() for _ in range(regions)]
        self._region_buttons = [W.Button(description="Annotate here", icon="paint-brush",
                                         layout=W.Layout(width=f"{REGION_VIEW}px")) for _ in range(regions)]
        self._region_boxes = [W.VBox([image, caption, button], layout=W.Layout(display="none", margin="4px"))
                              for image, caption, button in zip(self._region_images, self._region_captions,
                                                                self._region_buttons)]
        for index, button in enumerate(self._region_buttons):
            button.on_click(lambda _button, _i=index: self.annotate_region(_i))
        self.regions_title = W.HTML()
        self.add_annotations_button = W.Button(description="Add annotations", icon="paint-brush",
                                               tooltip="Paint where the model is least sure",
                                               layout=W.Layout(width="200px"))
        self.add_images_button = W.Button(description="Add images", icon="image", layout=W.Layout(width="200px"),
                                          tooltip="Add more example images to the project")
        self.train_longer_button = W.Button(description="Train longer", icon="repeat", layout=W.Layout(width="200px"),
                                            tooltip="Continue training from the last model")
        self.predict_button.on_click(lambda _b: self.predict())
        self.add_annotations_button.on_click(lambda _b: self.annotate_region(0))
        self.add_images_button.on_click(lambda _b: self._action(self.on_add_images, "add images",
                                                                "Use step 1 (notebook 01) to add images."))
        self.train_longer_button.on_click(lambda _b: self._action(self.on_train_longer, "train longer",
                                                                  "Use step 3 (notebook 03) with 'Start from: "
                                                                  "The last model'."))
        self.widget = W.VBox([
            self.header,
            W.HBox([self.predict_button, self.progress], layout=W.Layout(align_items="center")),
            self.status,
            self.gallery,
            self.enlarge_buttons,
            self.full_view,
            self.regions_title,
            W.HBox(self._region_boxes, layout=W.Layout(flex_flow="row wrap")),
            W.HTML("<b>Not good enough yet?</b> As often as needed:"),
            W.HBox([self.add_annotations_button, self.add_images_button, self.train_longer_button]),
        ], layout=W.Layout(padding="4px"))
        self.widget.add_class("wb-review")
        self.refresh()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ public actions
    @property
    def running(self) -> bool:
        """Whether a prediction is in progress (in a thread of its own or of the caller's)."""
        return self._busy.is_set()

    def predict(self, *, background: bool = True) -> bool:
        """Predict all project images with the latest model, then show them; False if it cannot start."""
        if self.running:
            return False
        if not pipeline.model_records(self.project):
            self._fail("There is no model yet. Train one first (step 3), then come back here.")
            return False
        if not self.project.image_names:
            self._fail("The project has no images yet. Add some in step 1.")
            return False
        self.error = None
        self._busy.set()
        self.predict_button.disabled = True
        self.progress.value = 0
        self.progress.layout.visibility = "visible"
        self.status.value = _status_html("info", "Predicting all images with the latest model …")
        if not background:
            self._predict()
            return True
        self._thread = threading.Thread(target=self._predict, daemon=True, name="workbench-review")
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> dict:
        """Block until a running prediction ends; return the summary."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.summary

    def refresh(self) -> None:
        """Show what is stored: the model, the latest predictions and their uncertain regions."""
        models = pipeline.model_records(self.project)
        if not models:
            self.header.value = ('<div style="color:#444">No model yet: train one in step 3, then predict here.'
                                 '</div>')
        else:
            latest = models[-1]
            self.header.value = (f'<div style="color:#444">Latest model: <b>version {latest.version}</b> '
                                 f'({METHOD_NAMES.get(latest.method, html.escape(latest.method))}, trained '
                                 f'{html.escape(_when(latest.created))}).</div>')
        self._show_results()

    def annotate_region(self, index: int) -> None:
        """Open the annotator on uncertain region `index` (0 = the least certain)."""
        if index >= len(self.regions):
            self._fail("There are no uncertain regions to show yet: predict first.")
            return
        region = self.regions[index]
        zoom = max(1.0, min(4.0, 256 / max(region.size, 1)))
        if self.open_annotator is None:
            self.status.value = _status_html(
                "info", f"Paint in image {region.name!r} around row {region.y}, column {region.x} "
                        f"(use notebook 02: annotator.go_to({region.name!r}, {region.y}, {region.x}, {zoom:g})).")
            return
        try:
            extra = {"z": region.z} if region.z else {}  # only z-stacks need the plane
            self.open_annotator(region.name, region.y, region.x, zoom, **extra)
        except Exception as exc:  # noqa: BLE001 - shown, not raised into the button's callback
            self._fail(_user_message(exc, "opening the annotator"))

    def show_full_size(self, name: str) -> None:
        """Show image `name`'s result at full size (up to `FULL_SIZE` pixels a side) in this view."""
        try:
            picture = results.prediction_picture(self.project, name, max_side=FULL_SIZE, z=0)
        except Exception as exc:  # noqa: BLE001 - shown, not raised into the button's callback
            self._fail(_user_message(exc, "enlarging the picture"))
            return
        if picture is None:
            self._fail(f"Image {name!r} has no prediction yet: press 'Predict all images' first.")
            return
        self.full_image.value = _png_bytes(picture)
        self.full_image.layout.width = f"{picture.shape[1]}px"
        self.full_title.value = (f'<b>{html.escape(name)}</b> at full size ({picture.shape[1]} x {picture.shape[0]} '
                                 'pixels shown)&nbsp;')
        self.full_view.layout.display = "flex"
        self.shown_full_size = name

    def close_full_size(self) -> None:
        """Hide the enlarged picture."""
        self.full_view.layout.display = "none"
        self.full_image.value = b""
        self.shown_full_size = None

    # ------------------------------------------------------------------ machinery
    def _predict(self) -> None:
        try:
            self.summary = pipeline.predict_project(self.project, progress=self._progress)
            self._show_results()
            self.status.value = _status_html("success", "Predictions are ready. Black-and-white hatching = where "
                                                        "the model is unsure.")
        except BaseException as exc:  # noqa: BLE001 - the thread reports every failure on the page
            self._fail(_user_message(exc, "predicting"))
        finally:
            self.predict_button.disabled = False
            self.progress.layout.visibility = "hidden"
            self._busy.clear()

    def _progress(self, fraction: float, message: str) -> None:
        self.progress.value = float(min(max(fraction, 0.0), 1.0))

    def _show_results(self) -> None:
        figures = []
        predicted = []
        for name in self.project.image_names:
            picture = results.prediction_picture(self.project, name, max_side=THUMBNAIL, z=0)
            if picture is None:
                continue
            predicted.append(name)
            figures.append(self._figure(name, picture))
        self.enlarge_buttons.children = [self._enlarge_button(name) for name in predicted]
        if self.shown_full_size is not None:
            if self.shown_full_size in predicted:
                self.show_full_size(self.shown_full_size)  # a new prediction: show the new result
            else:
                self.close_full_size()
        if not figures:
            self.gallery.value = ""
            self.regions = []
            self.regions_title.value = ""
            for box in self._region_boxes:
                box.layout.display = "none"
            return
        self.gallery.value = ('<div style="display:flex;flex-wrap:wrap;gap:10px;margin:6px 0">'
                              + "".join(figures) + "</div>")
        self.regions = results.least_certain_regions(self.project, predicted, count=len(self._region_boxes))
        self.regions_title.value = ("<b>Where the model is least sure</b> (hatched black and white): labels "
                                    "here help most."
                                    if self.regions else "")
        for index, box in enumerate(self._region_boxes):
            if index < len(self.regions):
                region = self.regions[index]
                self._region_images[index].value = _png_bytes(results.region_picture(self.project, region, side=REGION_VIEW))
                plane = f", plane {region.z}" if region.z else ""
                self._region_captions[index].value = (
                    f'<div style="font-size:12px">{html.escape(region.name)}{plane}: row {region.y}, column '
                    f'{region.x}<br>uncertainty {region.score:.2f}</div>')
                box.layout.display = "flex"
            else:
                box.layout.display = "none"

    def _enlarge_button(self, name: str) -> W.Button:
        button = W.Button(description=f"Full size: {name}", icon="search-plus", tooltip=f"Show {name} at full size",
                          layout=W.Layout(width=f"{THUMBNAIL}px", margin="0 10px 0 0"))
        button.on_click(lambda _b, _name=name: self.show_full_size(_name))
        return button

    def _figure(self, name: str, picture: np.ndarray) -> str:
        info = self.summary.get(name)
        if info is None:  # predicted in an earlier session: summarise what is stored
            info = results.stored_summary(self.project, name)
        labelled = self.project.label_stats(name)["annotated_fraction"]
        words, color = quality_hint(info["mean_uncertainty"])
        found = ""
        if self.project.mode == "instance":  # the count Segment shows for the same result
            found = f"{_plural(results.count_objects(self.project, name) or 0, 'object')} found<br>"
        elif "class_fractions" in info:
            parts = [f"{html.escape(c)} {100 * f:.0f} %" for c, f in zip(self.project.class_names[1:],
                                                                           info["class_fractions"][1:])]
            found = ", ".join(parts) + "<br>"
        version = info.get("model_version")
        warnings = "".join(
            f'<div class="wb-result-warning" style="color:#7a4f00;background:#fff4db;border-left:3px solid '
            f'#7a4f00;padding:2px 5px;margin-top:3px">&#9888; {html.escape(text[0].upper() + text[1:])}.</div>'
            for text in info.get("warnings") or [])
        return (f'<figure class="wb-figure" style="margin:0;width:{THUMBNAIL}px;font-size:12px">'
                f'<img alt="{html.escape(name)} prediction" src="{_data_url(_png_bytes(picture), "image/png")}" '
                f'style="width:{THUMBNAIL}px;image-rendering:pixelated;border:1px solid #ccc">'
                f'<figcaption><b>{html.escape(name)}</b>'
                f'{f" · model v{version}" if version is not None else ""}<br>{found}'
                f'labelled: {100 * labelled:.1f} % of pixels<br>'
                f'uncertainty {info["mean_uncertainty"]:.2f}: <span style="color:{color}">{html.escape(words)}'
                f'</span>{warnings}</figcaption></figure>')

    def _action(self, callback: Callable[[], Any] | None, what: str, hint: str) -> None:
        if callback is None:
            self.status.value = _status_html("info", hint)
            return
        try:
            callback()
        except Exception as exc:  # noqa: BLE001
            self._fail(_user_message(exc, what))

    def _fail(self, message: str) -> None:
        self.error = message
        self.status.value = _status_html("error", message)


class SegmentPanel:
    """Accept a model: segment images tile by tile and download labels, measurements and overlays.

    Parameters
    ----------
    project : workbench.store.Project
    output_dir : path-like, optional
        Results are written to ``<output_dir>/model-v<version>/`` (default: ``<project>/results``).

    Attributes
    ----------
    outputs : workbench.results.ResultFiles or None
        What the last run wrote.
    error : str or None
        The message shown for the last failure.
    """

    def __init__(self, project: Project, *, output_dir=None):
        if not isinstance(project, Project):
            raise TypeError(f"`project` must be a workbench Project, got {type(project).__name__}")
        self.project = project
        self.output_dir = Path(output_dir) if output_dir is not None else project.path / "results"
        self.outputs: ResultFiles | None = None
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._busy = threading.Event()
        style = {"description_width": "150px"}
        self.model = W.Dropdown(description="Model", style=style, layout=W.Layout(width="480px"))
        self.images = W.SelectMultiple(description="Project images", style=style, rows=5,
                                       layout=W.Layout(width="480px"))
        self.folder = W.Text(description="Or a folder / Zarr", style=style, layout=W.Layout(width="640px"),
                             placeholder="full path on this computer, e.g. /data/experiment-12 (optional)")
        # The model's own tile size by default: what Review predicts with, so both show the same objects.
        self.tile_size = W.Dropdown(description="Tile size", style=style, value=None,
                                    options=[("the model's (as in Review)", None), ("256 px (least memory)", 256),
                                             ("512 px", 512), ("1024 px (GPU)", 1024)])
        self.run_button = W.Button(description="Segment and measure", icon="check", button_style="success",
                                   layout=W.Layout(width="220px"))
        self.progress = W.FloatProgress(value=0, min=0, max=1, layout=W.Layout(width="300px", visibility="hidden"))
        self.status = W.HTML()
        self.results = W.HTML()
        self.results.add_class("wb-downloads")
        self.run_button.on_click(lambda _b: self.run())
        self.widget = W.VBox([
            self.model, self.images, self.folder, self.tile_size,
            W.HBox([self.run_button, self.progress], layout=W.Layout(align_items="center")),
            self.status, self.results,
        ], layout=W.Layout(padding="4px"))
        self.widget.add_class("wb-segment")
        self.refresh()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def running(self) -> bool:
        return self._busy.is_set()

    def refresh(self) -> None:
        """Offer the project's current models and images."""
        models = sorted(pipeline.model_records(self.project), key=lambda m: m.version, reverse=True)
        self.model.options = [(f"version {m.version} ({METHOD_NAMES.get(m.method, m.method)}, "
                               f"{_when(m.created)})", m.version)
                              for m in models] or [("no model yet: train one first", None)]
        self.model.value = self.model.options[0][1]
        names = self.project.image_names
        self.images.options = names
        self.images.value = tuple(names)

    def run(self, *, background: bool = True) -> bool:
        """Segment the chosen images with the chosen model; False when it cannot start."""
        if self.running:
            return False
        version = self.model.value
        names = list(self.images.value)
        folder = self.folder.value.strip()
        try:
            if version is None:
                raise WorkbenchError("there is no model yet. Train one in step 3 first")
            files = results.list_inputs(Path(folder).expanduser()) if folder else []
            if not names and not files:
                raise WorkbenchError("choose at least one project image, or type a folder of images")
        except WorkbenchError as exc:
            self._fail(_user_message(exc, "segmenting"))
            return False
        self.error = None
        self._busy.set()
        self.run_button.disabled = True
        self.progress.value = 0
        self.progress.layout.visibility = "visible"
        self.results.value = ""
        self.status.value = _status_html("info", f"Segmenting {len(names) + len(files)} image(s) …")
        tile_size = None if self.tile_size.value is None else int(self.tile_size.value)
        args = (int(version), names, files, tile_size)
        if not background:
            self._run(*args)
            return True
        self._thread = threading.Thread(target=self._run, args=args, daemon=True, name="workbench-segment")
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> ResultFiles | None:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.outputs

    # ------------------------------------------------------------------ machinery
    def _run(self, version: int, names: list[str], files: list[Path], tile_size: int | None) -> None:
        try:
            self.outputs = results.segment_and_measure(self.project, names=names, files=files, model_version=version,
                                               tile_size=tile_size,
                                               output_dir=self.output_dir / f"model-v{version:03d}",
                                               progress=self._set_progress)
            n_objects = self.outputs.objects
            self.status.value = _status_html(
                "success", f"Done: {len(self.outputs.labels)} image(s) segmented, "
                           f"{_plural(n_objects, 'object')} measured"
                           + (f" ({', '.join(f'{n}: {c}' for n, c in self.outputs.counts.items())})"
                              if self.outputs.counts else "")
                           + f". Files are in {self.outputs.folder}.") + "".join(
                _status_html("warning", f"Check {name}: {text}.")
                for name, texts in self.outputs.warnings.items() for text in texts)
            self.results.value = self._downloads_html()
        except BaseException as exc:  # noqa: BLE001 - the thread reports every failure on the page
            self._fail(_user_message(exc, "segmenting"))
        finally:
            self.run_button.disabled = False
            self.progress.layout.visibility = "hidden"
            self._busy.clear()

    def _set_progress(self, fraction: float) -> None:
        self.progress.value = float(min(max(fraction, 0.0), 1.0))

    def _downloads_html(self) -> str:
        rows = [("All results (zip)", self.outputs.zip, "application/zip"),
                ("Measurements (CSV)", self.outputs.measurements, "text/csv")]
        rows += [(f"Labels: {p.name}", p, "image/tiff") for p in self.outputs.labels]
        rows += [(f"Overlay: {p.name}", p, "image/png") for p in self.outputs.overlays]
        links = "".join(f"<li>{_download_link(title, path, mime)}</li>" for title, path, mime in rows)
        previews = "".join(
            f'<img alt="{html.escape(p.name)}" src="{_data_url(_png_bytes(_shrink(p)), "image/png")}" '
            f'style="width:{THUMBNAIL}px;margin:4px;border:1px solid #ccc">' for p in self.outputs.overlays[:4])
        return (f'<div><b>Download</b><ul style="margin:4px 0">{links}</ul>'
                f'<div style="display:flex;flex-wrap:wrap">{previews}</div></div>')

    def _fail(self, message: str) -> None:
        self.error = message
        self.status.value = _status_html("error", message)


def _shrink(png_path: Path) -> np.ndarray:
    import imageio.v3 as iio

    picture = iio.imread(png_path)
    stride = max(1, math.ceil(max(picture.shape[:2]) / THUMBNAIL))
    return picture[::stride, ::stride]


def _download_link(title: str, path: Path, mime: str) -> str:
    """An anchor that downloads `path` (a ``data:`` URL works in JupyterLab and Voila alike)."""
    path = Path(path)
    size = path.stat().st_size
    if size > DOWNLOAD_LIMIT:
        return (f"{html.escape(title)}: too big to download here ({size / 2**20:.0f} MB); "
                f"it is at {html.escape(str(path))}")
    href = _data_url(path.read_bytes(), mime)
    return (f'<a class="wb-download" download="{html.escape(path.name)}" href="{href}" '
            f'style="color:#1a5fb4">{html.escape(title)}</a> <span style="color:#777">({_size(size)})</span>')


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size > 2**20 else f"{max(1, size // 1024)} kB"

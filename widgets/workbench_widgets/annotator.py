"""The painting annotator: an ipycanvas view over one image of a project, with its labels.

The canvas has four layers: the image (rendered from the image's pyramid, only the viewport),
the prediction overlay, the label overlay and, on top, the stroke/cursor layer that receives the
mouse and keyboard. A stroke is drawn on the top layer as it is made (a line path, no pixels
sent); when the mouse is released the stroke is rasterised into the label layer by
`workbench.annotate.LabelEditor`, the label overlay is re-sent as one PNG, and the changed label
chunks are saved shortly after.

All behaviour is in plain methods (`handle_mouse_down`, `handle_key_down`, `paint`, `undo`...)
that ipycanvas's event callbacks call, so tests drive the annotator without a browser.
"""

from __future__ import annotations

import html
import threading
from typing import Callable, Sequence

import ipywidgets as w
import numpy as np
from ipycanvas import MultiCanvas, hold_canvas

from workbench_widgets import _controls
from workbench_widgets._render import PREDICTION_VIEWS, RegionPlane, label_overlay, prediction_overlay, prediction_reader
from workbench.conventions import probability_names
from workbench.errors import WorkbenchError, app_message
from workbench.store import OBJECT, UNLABELLED, boundary_reach
from workbench.annotate import DEFAULT_SAVE_DELAY, Edit, LabelEditor, LabelsChanged
from workbench.annotate import (ChannelDisplay, NearestPyramid, auto_contrast, default_channel_displays,
                               ensure_pyramid, hex_to_rgb, render_image)
from workbench.annotate import Viewport

IMAGE, PREDICTION, LABELS, STROKE = range(4)
LAYER_NAMES = ("image", "prediction", "labels", "stroke")
TOOLS = ("brush", "eraser", "fill", "pan")
ZOOM_STEP = 1.5
WHEEL_PIXELS_PER_DOUBLING = 300.0  # a wheel notch (100 px) zooms by 2 ** (1/3)
NO_PREDICTION = "none"
KEY_TOOLS = {"b": "brush", "e": "eraser", "l": "fill", "p": "pan"}
PREVIEW_KINDS = ("classes", "instances", "heat")

__all__ = ["Annotator"]


class Annotator:
    """Paint labels on the images of a project.

    Parameters
    ----------
    project : workbench.store.Project
    image_name : str, optional
        The image to open first (default: the project's first image).
    width, height : int
        Canvas size in screen pixels.
    save_delay : float
        Seconds after the last stroke before changed label chunks are written (0: at once).

    Attributes
    ----------
    widget : ipywidgets.VBox
        What to display (displaying the Annotator itself works too).
    viewport : workbench.annotate.Viewport
    frames : dict
        The last picture sent to each canvas layer (``"image"`` RGB, overlays RGBA), for tests.

    Examples
    --------
    >>> annotator = Annotator(project, "nuclei")                    # doctest: +SKIP
    >>> annotator.paint([(100, 100), (100, 160)], class_value=2)    # doctest: +SKIP
    >>> annotator.go_to("nuclei", 250, 300, zoom=4)                 # doctest: +SKIP
    >>> annotator.widget                                            # doctest: +SKIP
    """

    def __init__(self, project, image_name: str | None = None, *, width: int = 800, height: int = 600,
                 save_delay: float = DEFAULT_SAVE_DELAY):
        if not hasattr(project, "image_names") or not hasattr(project, "write_labels"):
            raise WorkbenchError(
                f"project must be a workbench Project (Project.open(path)), got {type(project).__name__}"
            )
        if int(width) < 64 or int(height) < 64:
            raise WorkbenchError(f"the canvas must be at least 64 x 64 pixels, got width={width}, height={height}")
        self.project = project
        self.save_delay = float(save_delay)
        self.viewport = Viewport(int(width), int(height))
        self.canvas = MultiCanvas(len(LAYER_NAMES), width=int(width), height=int(height))
        # An ipycanvas canvas stretches to the cell's width by default, which would rescale it.
        self.canvas.layout = w.Layout(width=f"{int(width)}px", height=f"{int(height)}px",
                                      min_width=f"{int(width)}px", border="1px solid #999")
        self.controls = _controls.build_controls(project.class_names, project.class_colors)
        self.frames: dict[str, np.ndarray] = {}
        self.render_count = 0
        self.name: str | None = None
        self.z = 0
        self.pyramid = None
        self.editor: LabelEditor | None = None
        self.channels: list[ChannelDisplay] = []
        self._labels_pyramid: NearestPyramid | None = None
        self._z_window: dict[int, NearestPyramid] = {}  # label planes around z for the 3-D boundary
        self._shown_boundary_width: int | None = None  # the derived boundary's width on screen now
        self._prediction_planes: dict = {}
        self._preview: tuple[RegionPlane, str] | None = None  # set_preview's overlay, over the stored one
        # Another source (the live preview's thread) may draw the prediction layer: one drawer at a time.
        self._render_lock = threading.RLock()
        self._label_callbacks: list[Callable[[LabelsChanged], None]] = []
        self._view_callbacks: list[Callable[[dict], None]] = []
        self._class_value = OBJECT if project.n_classes >= 2 else 1
        self._objects: int | None = None
        self._pointer: tuple[float, float] | None = None  # last canvas (x, y) of the mouse
        self._stroke: list[tuple[float, float]] | None = None  # image (y, x) points of the stroke
        self._stroke_canvas: list[tuple[float, float]] = []
        self._drag_from: tuple[float, float] | None = None  # canvas point where a pan drag is
        self._space_pan = False
        self._silent = False  # set while the annotator itself changes control values
        self._notice: str | None = None
        self.widget = self._layout()
        self._wire()
        _controls.mark_class(self.controls, self._class_value)
        self.controls.image.options = project.image_names
        if image_name is not None or project.image_names:
            self.open_image(image_name or project.image_names[0])
        else:
            self._set_status("this project has no images yet: add one (Project.add_image) and reopen")

    # ------------------------------------------------------------------ layout and wiring
    def _layout(self) -> w.VBox:
        c = self.controls
        toolbar = w.HBox([c.image, c.tool, c.undo, c.redo, c.zoom_out, c.zoom_in, c.fit, c.actual_size],
                         layout=w.Layout(flex_flow="row wrap", align_items="center"))
        self.toolbar = toolbar
        palette = w.HBox([w.HTML("<b>class</b>&nbsp;"), c.palette], layout=w.Layout(align_items="center"))
        show_boundaries = c.show_boundaries
        show_boundaries.layout.display = None if self.project.mode == "instance" else "none"
        side = w.VBox([c.brush_size, c.opacity, w.HBox([c.show_labels, show_boundaries]), c.prediction,
                       c.prediction_opacity, c.z, c.channels, c.stats],
                      layout=w.Layout(width="380px", padding="0 0 0 8px"))
        body = w.HBox([self.canvas, side], layout=w.Layout(align_items="flex-start"))
        return w.VBox([toolbar, palette, c.notice, body, c.status, w.HTML(f"<small>{_controls.HELP}</small>")])

    def _wire(self) -> None:
        c = self.controls
        self.canvas.on_mouse_down(self.handle_mouse_down)
        self.canvas.on_mouse_move(self.handle_mouse_move)
        self.canvas.on_mouse_up(self.handle_mouse_up)
        self.canvas.on_mouse_out(self.handle_mouse_out)
        self.canvas.on_mouse_wheel(self.handle_wheel)
        self.canvas.on_key_down(self.handle_key_down)
        # Under Voila the notebook ran before the page connected: draw again once it is there.
        self.canvas.on_client_ready(self.render)
        c.undo.on_click(lambda _: self.undo())
        c.redo.on_click(lambda _: self.redo())
        c.zoom_in.on_click(lambda _: self.zoom_by(ZOOM_STEP))
        c.zoom_out.on_click(lambda _: self.zoom_by(1 / ZOOM_STEP))
        c.fit.on_click(lambda _: self.fit())
        c.actual_size.on_click(lambda _: self.set_view(self.viewport.center, 1.0))
        for button in c.class_buttons:
            button.on_click(lambda b: self.select_class(b.label_value))
        self._observe(c.image, lambda v: v and v != self.name and self.open_image(v))
        self._observe(c.tool, lambda v: self._draw_cursor())
        self._observe(c.brush_size, lambda v: self._draw_cursor())
        for control in (c.opacity, c.show_labels, c.show_boundaries):
            self._observe(control, lambda v: self._render_layers(LABELS))
        for control in (c.prediction, c.prediction_opacity):
            self._observe(control, lambda v: self._render_layers(PREDICTION))
        self._observe(c.z, lambda v: v != self.z and self.set_z(v))

    def _observe(self, control, callback) -> None:
        def on_change(change):
            if not self._silent:
                self._guard(callback, change["new"])
        control.observe(on_change, names="value")

    def _guard(self, function, *args, **kwargs):
        """Run a UI handler; a user mistake is shown in the status line instead of vanishing."""
        try:
            return function(*args, **kwargs)
        except WorkbenchError as exc:
            self._set_status(f"<span style='color:#b00'>{html.escape(app_message(exc))}</span>")
            return None

    def _set_quietly(self, control, **values) -> None:
        self._silent = True
        try:
            for key, value in values.items():
                setattr(control, key, value)
        finally:
            self._silent = False

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ images
    def open_image(self, name: str, z: int = 0) -> None:
        """Show image `name` of the project (builds its zoom pyramid the first time).

        Raises
        ------
        WorkbenchError
            When the project has no image of that name.
        """
        self.project.image_info(name)  # names the available images when `name` is wrong
        if self.editor is not None:
            self.editor.close()
        self._set_status(f"opening {name}…")
        self.pyramid = ensure_pyramid(self.project, name,
                                      progress=lambda f, m: self._set_status(f"{m}: {100 * f:.0f} %"))
        self.name = name
        self.editor = LabelEditor(self.project, name, save_delay=self.save_delay)
        self.editor.on_edit(self._after_edit)
        self.editor.on_saved(self._after_save)
        self._show_notice(None)
        self._history_buttons()  # a new image: nothing to undo or redo yet
        self._prediction_planes = {}
        self.z = 0
        self.channels = default_channel_displays(self.pyramid, 0)
        self._build_channel_panel()
        n_slices = self.pyramid.image.n_slices
        self._set_quietly(self.controls.z, max=max(n_slices - 1, 0), value=0)
        self.controls.z.layout.display = None if n_slices > 1 else "none"
        self._set_quietly(self.controls.image, options=self.project.image_names, value=name)
        self.refresh_predictions()
        self._objects = None
        self.viewport.fit(self.pyramid.shape)
        self.set_z(int(z))
        self._update_stats(count_objects=True)

    def set_z(self, z: int) -> None:
        """Show z-slice `z` of a z-stack."""
        self._require_image()
        z = int(z)
        if not 0 <= z < self.pyramid.image.n_slices:
            raise WorkbenchError(
                f"image {self.name!r} has {self.pyramid.image.n_slices} z-slice(s); slice {z} does not exist"
            )
        self.z = z
        self._preview = None  # a preview belongs to one plane
        self._set_quietly(self.controls.z, value=z)
        editor = self.editor
        self._labels_pyramid = NearestPyramid(lambda ys, xs: editor.read(ys, xs, z), self.pyramid.shape,
                                              self.pyramid.factors, editor.dtype)
        self._z_window = self._boundary_planes(z)
        self.render()
        self._view_changed()

    def _boundary_planes(self, z: int) -> dict[int, NearestPyramid]:
        """Label planes whose paint shapes plane `z`'s 3-D boundary (none for 2-D or per-plane)."""
        n_slices = self.pyramid.image.n_slices
        if self.project.mode != "instance" or n_slices == 1 or self.project.boundaries != "3d":
            return {}
        reach = boundary_reach(self.project.boundary_width, self.project.voxel_size(self.name))[0]
        editor, planes = self.editor, {}
        for other in range(max(z - reach, 0), min(z + reach + 1, n_slices)):
            planes[other] = self._labels_pyramid if other == z else NearestPyramid(
                lambda ys, xs, _z=other: editor.read(ys, xs, _z), self.pyramid.shape, self.pyramid.factors,
                editor.dtype)
        return planes

    def _require_image(self) -> None:
        if self.name is None:
            raise WorkbenchError("no image is open: add an image to the project and call open_image(name)")

    # ------------------------------------------------------------------ channels
    def _build_channel_panel(self) -> None:
        thumb = self.pyramid.coarsest_plane(self.z)
        rows = _controls.build_channel_rows(self.channels, _controls.data_range(thumb),
                                            integer=self.pyramid.image.dtype.kind in "iub")
        for row in rows:
            index = row["index"]
            self._observe(row["visible"], lambda v, i=index: self.set_channel(i, visible=v))
            self._observe(row["color"], lambda v, i=index: self.set_channel(i, color=v))
            self._observe(row["limits"], lambda v, i=index: self.set_channel(i, limits=v))
            row["auto"].on_click(lambda _, i=index: self._guard(self.auto_contrast, i))
        _controls.channel_panel(self.controls, rows)

    def set_channel(self, index: int, *, color: str | None = None, visible: bool | None = None,
                    limits: tuple[float, float] | None = None) -> None:
        """Change how channel `index` is drawn: colour ``"#rrggbb"``, on/off, contrast ``(low, high)``."""
        self._require_image()
        if not 0 <= int(index) < len(self.channels):
            raise WorkbenchError(f"channel {index} does not exist; the image has {len(self.channels)} channel(s)")
        display = self.channels[int(index)]
        row = self.controls.channel_rows[int(index)] if self.controls.channel_rows else None
        if color is not None:
            hex_to_rgb(color)
            display.color = color
        if visible is not None:
            display.visible = bool(visible)
        if limits is not None:
            low, high = (float(v) for v in limits)
            if not high > low:
                raise WorkbenchError(f"contrast limits must be (low, high) with high > low, got {tuple(limits)}")
            display.low, display.high = low, high
        if row is not None:
            self._set_quietly(row["color"], value=display.color)
            self._set_quietly(row["visible"], value=display.visible)
            slider = row["limits"]
            self._set_quietly(slider, min=min(slider.min, display.low), max=max(slider.max, display.high))
            self._set_quietly(slider, value=(display.low, display.high))
        self._render_layers(IMAGE)

    def auto_contrast(self, index: int | None = None) -> None:
        """Contrast limits from the 0.5 and 99.8 percentiles of the slice (all channels by default)."""
        self._require_image()
        thumb = self.pyramid.coarsest_plane(self.z)
        for i in range(len(self.channels)) if index is None else [int(index)]:
            self.set_channel(i, limits=auto_contrast(thumb[i]))

    # ------------------------------------------------------------------ view
    def set_view(self, center: tuple[float, float], zoom: float | None = None) -> None:
        """Centre the canvas on image coordinate ``center = (y, x)``, at `zoom` screen pixels per image pixel."""
        self._require_image()
        self.viewport.set_view(center, zoom)
        self.viewport.clamp(self.pyramid.shape)
        self._view_moved()

    def fit(self) -> None:
        """Show the whole image."""
        self._require_image()
        self.viewport.fit(self.pyramid.shape)
        self._view_moved()

    def zoom_by(self, factor: float, canvas_x: float | None = None, canvas_y: float | None = None) -> None:
        """Zoom by `factor` around canvas point ``(x, y)`` (default: the centre)."""
        self._require_image()
        self.viewport.zoom_at(factor, canvas_x, canvas_y)
        self.viewport.clamp(self.pyramid.shape)
        self._view_moved()

    def pan_by(self, canvas_dx: float, canvas_dy: float) -> None:
        """Move the image by ``(dx, dy)`` screen pixels."""
        self._require_image()
        self.viewport.pan(canvas_dx, canvas_dy)
        self.viewport.clamp(self.pyramid.shape)
        self._view_moved()

    def go_to(self, name: str, y: float, x: float, zoom: float | None = None, *, z: int | None = None) -> None:
        """Open image `name` (if not open) centred on pixel ``(y, x)``, e.g. at an uncertain region.

        `zoom` defaults to the current zoom, at least 2 screen pixels per image pixel.
        """
        if name != self.name:
            self.open_image(name)
        if z is not None and int(z) != self.z:
            self.set_z(z)
        self.set_view((float(y) + 0.5, float(x) + 0.5), zoom if zoom is not None else max(self.viewport.zoom, 2.0))

    def visible_region(self) -> tuple[slice, slice]:
        """Image rows and columns on the canvas now."""
        self._require_image()
        return self.viewport.visible_region(self.pyramid.shape)

    def _view_moved(self) -> None:
        self.render()
        self._view_changed()

    def _view_changed(self) -> None:
        event = {"image": self.name, "z": self.z, "region": self.visible_region(), "zoom": self.viewport.zoom}
        for callback in list(self._view_callbacks):
            callback(event)

    # ------------------------------------------------------------------ rendering
    def render(self) -> None:
        """Redraw every layer (only the viewport, from the pyramid level that suits the zoom)."""
        if self.name is None:
            return
        self._render_layers(IMAGE, PREDICTION, LABELS, STROKE)

    def _render_layers(self, *layers: int) -> None:
        if self.name is None:
            return
        factor = self.viewport.level_for(self.pyramid.factors)
        with self._render_lock, hold_canvas():
            for layer in layers:
                if layer == IMAGE:
                    picture = render_image(self.pyramid, self.viewport, self.channels, self.z)
                elif layer == LABELS:
                    picture = self._labels_picture(factor)
                elif layer == PREDICTION:
                    picture = self._prediction_picture(factor)
                else:
                    picture = None
                self._send(layer, picture)
            self.render_count += 1
        self._set_status()

    def _send(self, layer: int, picture: np.ndarray | None) -> None:
        canvas = self.canvas[layer]
        canvas.clear()
        if picture is not None:
            self.frames[LAYER_NAMES[layer]] = picture
            if picture.shape[-1] == 3 or picture[..., 3].any():  # a fully transparent overlay sends nothing
                canvas.put_image_data(picture, 0, 0)  # ipycanvas sends RGB as JPEG, RGBA as PNG

    def _labels_picture(self, factor: int) -> np.ndarray | None:
        if not self.controls.show_labels.value:
            return np.zeros((self.viewport.height, self.viewport.width, 4), np.uint8)
        width = None
        if self.project.mode == "instance" and self.controls.show_boundaries.value:
            width = self.project.boundary_width  # follows the painted objects' size unless the project fixes it
        self._shown_boundary_width = width
        window = sorted(self._z_window) if width else []
        return label_overlay(self._labels_pyramid, self.viewport, factor, self.project.class_colors,
                             self.controls.opacity.value, boundary_width=width,
                             z_window=[self._z_window[z] for z in window],
                             z_centre=window.index(self.z) if window else 0,
                             spacing=self.project.voxel_size(self.name) if window else None)

    def _prediction_picture(self, factor: int) -> np.ndarray:
        preview = self._preview
        if preview is not None:
            plane, kind = preview
            return prediction_overlay(kind, plane, self.viewport, 1, self._overlay_colors(kind),
                                      self.controls.prediction_opacity.value)
        view = self.controls.prediction.value
        if view in (None, NO_PREDICTION):
            return np.zeros((self.viewport.height, self.viewport.width, 4), np.uint8)
        key = (view, self.z)
        plane = self._prediction_planes.get(key)
        if plane is None:
            layer = "probabilities" if view.startswith("probability:") else PREDICTION_VIEWS[view][0]
            array = self.project.prediction(self.name, layer)
            if array is None:  # removed since the menu was filled
                self.refresh_predictions()
                return np.zeros((self.viewport.height, self.viewport.width, 4), np.uint8)
            reader, dtype = prediction_reader(array, view, self.z, self.pyramid.image.n_slices > 1,
                                              n_classes=self.project.n_outputs)
            plane = NearestPyramid(reader, self.pyramid.shape, self.pyramid.factors, dtype)
            self._prediction_planes[key] = plane
        kind = "heat" if view.startswith("probability:") else PREDICTION_VIEWS[view][1]
        return prediction_overlay(kind, plane, self.viewport, factor, self._overlay_colors(kind),
                                  self.controls.prediction_opacity.value)

    def _overlay_colors(self, kind: str) -> list[str]:
        if self.project.mode == "instance" and kind == "classes":
            return [self.project.class_colors[0], self.project.class_colors[1]]  # then boundary yellow
        return list(self.project.class_colors)

    def refresh_predictions(self) -> list:
        """Look again for stored predictions (after a model predicted) and fill the prediction menu."""
        self._require_image()
        self._prediction_planes = {}
        options: list = [("none", NO_PREDICTION)]
        if self.project.prediction(self.name, "classes") is not None:
            options.append(("classes", "classes"))
        if self.project.prediction(self.name, "instances") is not None:
            options.append(("instance outlines", "instance outlines"))
        probabilities = self.project.prediction(self.name, "probabilities")
        if probabilities is not None:
            options.append(("uncertainty", "uncertainty"))
            n = probabilities.shape[-3]
            names = probability_names(self.project.mode, self.project.class_names, n)
            options += [(f"probability: {names[k] if k < len(names) else k}", f"probability:{k}")
                        for k in range(n)]
        current = self.controls.prediction.value
        self._set_quietly(self.controls.prediction, options=options,
                          value=current if current in [v for _, v in options] else NO_PREDICTION)
        return options

    def show_prediction(self, view: str | None) -> None:
        """Show a prediction overlay: ``"classes"``, ``"instance outlines"``, ``"uncertainty"``,
        ``"probability:<k>"``; None (or ``"none"``) hides it."""
        self._require_image()
        view = NO_PREDICTION if view is None else view
        values = [v for _, v in self.refresh_predictions()]
        if view not in values:
            raise WorkbenchError(
                f"prediction view {view!r} is not available for image {self.name!r}; available: "
                f"{', '.join(str(v) for v in values)} (a model must predict this image first)"
            )
        self.controls.prediction.value = view
        self._render_layers(PREDICTION)

    def set_preview(self, values: np.ndarray, region: tuple[slice, slice], *, kind: str = "classes") -> None:
        """Show a prediction supplied from outside (e.g. a live preview) for one image region.

        It replaces the stored prediction in the prediction layer, follows pan and zoom, and is
        transparent outside `region`, until `clear_preview` or another image or z-slice. Safe to
        call from a worker thread.

        Parameters
        ----------
        values : array (h, w)
            Full-resolution values of `region` of the current plane: class indices (``"classes"``,
            0 = background, transparent), object ids (``"instances"``, outlined) or 0..1 (``"heat"``).
        region : (slice, slice)
            Image rows and columns that `values` cover.
        kind : {"classes", "instances", "heat"}
        """
        self._require_image()
        if kind not in PREVIEW_KINDS:
            raise WorkbenchError(f"preview kind must be one of {', '.join(PREVIEW_KINDS)}, got {kind!r}")
        try:
            plane = RegionPlane(values, region)
        except (ValueError, TypeError, AttributeError) as exc:
            raise WorkbenchError(f"set_preview: {exc}; give (h, w) values and the (rows, columns) slices "
                                 "they cover") from None
        with self._render_lock:
            self._preview = (plane, kind)
            self._render_layers(PREDICTION)

    def clear_preview(self) -> None:
        """Remove the `set_preview` overlay; the prediction menu's view shows again."""
        with self._render_lock:
            self._preview = None
            self._render_layers(PREDICTION)

    @property
    def has_preview(self) -> bool:
        return self._preview is not None

    def add_to_toolbar(self, widget: w.Widget) -> None:
        """Append `widget` (e.g. another panel's toggle) to the toolbar above the canvas."""
        self.toolbar.children = tuple(self.toolbar.children) + (widget,)

    # ------------------------------------------------------------------ tools and classes
    @property
    def tool(self) -> str:
        return self.controls.tool.value

    def set_tool(self, tool: str) -> None:
        """Choose ``"brush"``, ``"eraser"``, ``"fill"`` ("Fill outline": a lasso) or ``"pan"``."""
        if tool not in TOOLS:
            raise WorkbenchError(f"tool must be one of {', '.join(TOOLS)}, got {tool!r}")
        self.controls.tool.value = tool

    @property
    def class_value(self) -> int:
        """Label value the brush paints (1 = background, 2.. = classes)."""
        return self._class_value

    def select_class(self, value: int) -> None:
        """Paint with label value `value` (1 = background, 2.. = the project's classes)."""
        value = int(value)
        if not 1 <= value <= self.project.n_classes:
            raise WorkbenchError(
                f"class value must be 1..{self.project.n_classes} (1 = {self.project.class_names[0]}, "
                f"{self.project.n_classes} = {self.project.class_names[-1]}), got {value}"
            )
        self._class_value = value
        _controls.mark_class(self.controls, value)
        if self.tool not in ("brush", "fill"):
            self.set_tool("brush")

    @property
    def brush_size(self) -> int:
        """Brush diameter in image pixels."""
        return int(self.controls.brush_size.value)

    @brush_size.setter
    def brush_size(self, size: int) -> None:
        slider = self.controls.brush_size
        slider.value = int(np.clip(int(size), slider.min, slider.max))

    @property
    def opacity(self) -> float:
        return float(self.controls.opacity.value)

    @opacity.setter
    def opacity(self, value: float) -> None:
        self.controls.opacity.value = float(np.clip(value, 0.0, 1.0))

    # ------------------------------------------------------------------ painting
    def paint(self, points: Sequence[tuple[float, float]], class_value: int | None = None, *,
              diameter: float | None = None) -> Edit | None:
        """Paint a brush stroke through image points ``(y, x)`` with label value `class_value`.

        Returns the `Edit` (None when nothing changed). Saved to the store after `save_delay`.
        """
        self._require_image()
        value = self._class_value if class_value is None else int(class_value)
        if value == UNLABELLED:
            return self.erase(points, diameter=diameter)
        if not 1 <= value <= self.project.n_classes:
            raise WorkbenchError(f"class_value must be 1..{self.project.n_classes} (or 0 to erase), got {value}")
        return self._noted(self.editor.paint(points, value, diameter or self.brush_size, self.z))

    def erase(self, points: Sequence[tuple[float, float]], *, diameter: float | None = None) -> Edit | None:
        """Set the pixels along a brush stroke back to "not annotated"."""
        self._require_image()
        return self._noted(self.editor.paint(points, UNLABELLED, diameter or self.brush_size, self.z))

    def fill(self, points: Sequence[tuple[float, float]], class_value: int | None = None) -> Edit | None:
        """Fill the closed outline through image points ``(y, x)`` with `class_value` (the "Fill outline" tool).

        In instance mode, a stroke that covers only part of an object shows `notice` (and returns
        an `Edit` whose ``warning`` says so), as `paint` does.
        """
        self._require_image()
        value = self._class_value if class_value is None else int(class_value)
        return self._noted(self.editor.fill(points, value, self.z))

    def _noted(self, edit: Edit | None) -> Edit | None:
        """Show the engine's note on a stroke (instance mode: part of an object?) until the next one."""
        if edit is not None:
            self._show_notice(edit.warning)
        return edit

    def undo(self) -> Edit | None:
        """Take back the last stroke (several steps are kept)."""
        self._require_image()
        self._show_notice(None)
        return self.editor.undo()

    def redo(self) -> Edit | None:
        self._require_image()
        return self.editor.redo()

    def flush(self) -> None:
        """Save pending strokes now."""
        if self.editor is not None:
            self.editor.flush()

    def close(self) -> None:
        """Save pending strokes and close the widgets."""
        self.flush()
        self.widget.close()

    def labels(self) -> np.ndarray:
        """The current z-plane's labels, unsaved strokes included."""
        self._require_image()
        return self.editor.read_plane(self.z)

    def _after_edit(self, edit: Edit) -> None:
        if edit.z == self.z and self._labels_pyramid is not None:
            self._labels_pyramid.update(edit.region, self.editor.read(*edit.region, edit.z))
        elif edit.z in self._z_window:  # an undo on a neighbouring plane moves this plane's 3-D boundary
            self._z_window[edit.z].update(edit.region, self.editor.read(*edit.region, edit.z))
        self._render_layers(LABELS)
        self._history_buttons()
        self._update_stats(count_objects=False)

    def _history_buttons(self) -> None:
        """Undo and redo look (and are) inactive when there is nothing to take back or apply again."""
        self.controls.undo.disabled = not self.editor.can_undo
        self.controls.redo.disabled = not self.editor.can_redo

    def _after_save(self, event: LabelsChanged) -> None:
        self._update_stats(count_objects=True)
        shown = self._shown_boundary_width
        if shown is not None and self.project.boundary_width != shown:
            self._z_window = self._boundary_planes(self.z)  # a z-stack's band may now reach more planes
            self._render_layers(LABELS)  # the new paint changed the objects' typical size, and so the outline
        for callback in list(self._label_callbacks):
            callback(event)

    # ------------------------------------------------------------------ callbacks for other widgets
    def on_labels_changed(self, callback: Callable[[LabelsChanged], None]) -> Callable[[LabelsChanged], None]:
        """Call ``callback(LabelsChanged(image, z, regions))`` once changed labels are in the store.

        Plain callback for e.g. a live preview that retrains and predicts the visible region. It
        may run on the save thread; keep long work off it (start a thread).
        """
        self._label_callbacks.append(callback)
        return callback

    def on_view_changed(self, callback: Callable[[dict], None]) -> Callable[[dict], None]:
        """Call ``callback({"image", "z", "region", "zoom"})`` after every pan, zoom or slice change."""
        self._view_callbacks.append(callback)
        return callback

    # ------------------------------------------------------------------ statistics and status
    @property
    def statistics(self) -> dict:
        """Pixels per class, annotated fraction and (instance mode) objects of the open image."""
        self._require_image()
        return self.editor.statistics()

    def _update_stats(self, *, count_objects: bool) -> None:
        if self.editor is None:
            return
        stats = self.editor.statistics(count_objects=count_objects)
        if "objects" in stats:
            if count_objects:
                self._objects = stats["objects"]
            stats["objects"] = self._objects
        error = self.editor.save_errors[-1] if self.editor.save_errors else None
        self.controls.stats.value = _controls.stats_html(
            stats, self.project.class_names, self.project.class_colors, pending=self.editor.pending,
            save_error=str(error) if error else None)

    def _set_status(self, message: str | None = None) -> None:
        if message is None and self.name is not None:
            factor = self.viewport.level_for(self.pyramid.factors)
            message = f"{self.name}"
            if self.pyramid.image.n_slices > 1:
                message += f" · z {self.z}/{self.pyramid.image.n_slices - 1}"
            message += f" · zoom {self.viewport.zoom:.3g}× (level 1/{factor})"
            if self._pointer is not None:
                y, x = self.viewport.canvas_to_pixel(*self._pointer)
                if 0 <= y < self.pyramid.shape[0] and 0 <= x < self.pyramid.shape[1]:
                    value = int(self.editor.read(slice(y, y + 1), slice(x, x + 1), self.z)[0, 0])
                    name = "not annotated" if value == 0 else self.project.class_names[value - 1]
                    message += f" · pixel (y {y}, x {x}): {name}"
        self.controls.status.value = f"<small>{message or ''}</small>"

    # ------------------------------------------------------------------ mouse and keyboard
    def handle_mouse_down(self, x: float, y: float) -> None:
        """Start a stroke or a pan drag at canvas point ``(x, y)`` (ipycanvas calls this)."""
        if self.name is None:
            return
        self._pointer = (float(x), float(y))
        if self.tool == "pan" or self._space_pan:
            self._drag_from = self._pointer
            return
        self._stroke = [self.viewport.canvas_to_image(x, y)]
        self._stroke_canvas = [self._pointer]
        self._draw_stroke()

    def handle_mouse_move(self, x: float, y: float) -> None:
        """Extend the stroke, move the pan drag, or move the brush outline."""
        if self.name is None:
            return
        self._pointer = (float(x), float(y))
        if self._drag_from is not None:
            dx, dy = x - self._drag_from[0], y - self._drag_from[1]
            self._drag_from = self._pointer
            self.pan_by(dx, dy)
        elif self._stroke is not None:
            self._stroke.append(self.viewport.canvas_to_image(x, y))
            self._stroke_canvas.append(self._pointer)
            self._draw_stroke()
        else:
            self._draw_cursor()
            self._set_status()

    def handle_mouse_up(self, x: float, y: float) -> None:
        """Finish the stroke (rasterise, show, save) or the pan drag."""
        if self.name is None:
            return
        if self._drag_from is not None:
            dx, dy = x - self._drag_from[0], y - self._drag_from[1]
            self._drag_from = None
            self._space_pan = False
            self._pointer = (float(x), float(y))
            if dx or dy:
                self.pan_by(dx, dy)
            return
        self._pointer = (float(x), float(y))
        if self._stroke is None:
            return
        self._stroke.append(self.viewport.canvas_to_image(x, y))
        points, self._stroke, self._stroke_canvas = self._stroke, None, []
        self._guard(self._apply_stroke, points)
        self._send(STROKE, None)
        self._draw_cursor()

    def handle_mouse_out(self, x: float, y: float) -> None:
        """Leaving the canvas ends a stroke (the button may be released outside it)."""
        if self._stroke is not None:
            self.handle_mouse_up(x, y)
        self._drag_from = None
        self._pointer = None
        self.canvas[STROKE].clear()

    def handle_wheel(self, delta_x: float, delta_y: float) -> None:
        """Zoom around the mouse (ipycanvas reports the wheel's deltas, not its position)."""
        if self.name is None or not delta_y:
            return
        factor = float(np.clip(2.0 ** (-float(delta_y) / WHEEL_PIXELS_PER_DOUBLING), 0.5, 2.0))
        anchor = self._pointer or (self.viewport.width / 2, self.viewport.height / 2)
        self.zoom_by(factor, *anchor)

    def handle_key_down(self, key: str, shift_key: bool = False, ctrl_key: bool = False,
                        meta_key: bool = False) -> None:
        """Keyboard shortcuts (the canvas must have focus: click it once)."""
        if self.name is None:
            return
        self._guard(self._key, str(key), bool(shift_key), bool(ctrl_key or meta_key))

    def _key(self, key: str, shift: bool, ctrl: bool) -> None:
        lower = key.lower()
        if lower == "z" and (shift and ctrl):
            self.redo()
        elif lower == "z":
            self.undo()
        elif lower == "y":
            self.redo()
        elif lower in KEY_TOOLS and not ctrl:
            self.set_tool(KEY_TOOLS[lower])
        elif key.isdigit() and key != "0":
            self.select_class(int(key))
        elif key == "[":
            self.brush_size = self.brush_size - max(1, round(self.brush_size * 0.2))
        elif key == "]":
            self.brush_size = self.brush_size + max(1, round(self.brush_size * 0.2))
        elif key in ("+", "="):
            self.zoom_by(ZOOM_STEP, *(self._pointer or (None, None)))
        elif key in ("-", "_"):
            self.zoom_by(1 / ZOOM_STEP, *(self._pointer or (None, None)))
        elif lower == "f":
            self.fit()
        elif key == " ":
            # ipycanvas reports key presses but not releases: space arms panning for the next drag.
            self._space_pan = True
        elif key.startswith("Arrow"):
            step = 0.2 * min(self.viewport.width, self.viewport.height)
            dx = {"ArrowLeft": step, "ArrowRight": -step}.get(key, 0.0)
            dy = {"ArrowUp": step, "ArrowDown": -step}.get(key, 0.0)
            self.pan_by(dx, dy)

    def _apply_stroke(self, points: list[tuple[float, float]]) -> None:
        if self.tool == "fill":
            if len(points) >= 3:
                self.fill(points)
        elif self.tool == "eraser":
            self.erase(points)
        else:
            self.paint(points)

    @property
    def notice(self) -> str | None:
        """The note on the last stroke shown above the canvas (e.g. it looks like part of an object)."""
        return self._notice

    def _show_notice(self, message: str | None) -> None:
        self._notice = message
        self.controls.notice.value = _controls.notice_html(message)

    # ------------------------------------------------------------------ stroke layer drawing
    def _stroke_color(self) -> str:
        if self.tool == "eraser":
            return "#ffffff"
        return self.project.class_colors[self._class_value - 1]

    def _draw_stroke(self) -> None:
        """Draw the stroke so far as a path: it shows at once, before the labels are updated."""
        layer = self.canvas[STROKE]
        pts = self._stroke_canvas
        with hold_canvas():
            layer.clear()
            layer.stroke_style = self._stroke_color()
            layer.fill_style = self._stroke_color()
            if self.tool == "fill":
                layer.global_alpha = 1.0
                layer.line_width = 2
                layer.set_line_dash([6, 4])
                if len(pts) > 1:
                    layer.stroke_lines(pts)
                return
            layer.set_line_dash([])
            layer.global_alpha = 0.7
            layer.line_width = max(1.0, self.brush_size * self.viewport.zoom)
            layer.line_cap = "round"
            layer.line_join = "round"
            if len(pts) > 1:
                layer.stroke_lines(pts)
            else:
                layer.fill_circle(pts[0][0], pts[0][1], layer.line_width / 2)

    def _draw_cursor(self) -> None:
        """The brush outline under the mouse, at its true size on the image."""
        if self.name is None or self._stroke is not None:
            return
        layer = self.canvas[STROKE]
        with hold_canvas():
            layer.clear()
            if self._pointer is None or self.tool not in ("brush", "eraser"):
                return
            layer.global_alpha = 1.0
            layer.set_line_dash([])
            layer.line_width = 1
            layer.stroke_style = self._stroke_color()
            layer.stroke_circle(self._pointer[0], self._pointer[1],
                                max(1.0, self.brush_size * self.viewport.zoom / 2))

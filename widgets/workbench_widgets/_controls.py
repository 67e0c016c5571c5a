"""The annotator's controls: toolbar, class palette, display settings, channel panel, stats.

Only builds widgets; `workbench_widgets.annotator.Annotator` wires them to its state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Sequence

import ipywidgets as w
import numpy as np

from workbench.annotate import ChannelDisplay

TOOLS = [("Brush (b)", "brush"), ("Eraser (e)", "eraser"), ("Fill outline (l)", "fill"), ("Pan (p)", "pan")]
TOOL_TIPS = ["Paint with a round brush", "Erase back to 'not annotated'",
             "Draw around an object: everything inside the outline is painted when you let go",
             "Drag to move (or hold space while dragging)"]
HELP = ("<b>keys</b>: b brush · e eraser · l fill outline · p pan · space+drag pan · 1–9 class · "
        "z / y undo / redo · [ ] brush size · + / − zoom · f fit · wheel zoom")


def _readable_text(color: str) -> str:
    r, g, b = (int(color.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"


@dataclass
class Controls:
    """Every control widget of the annotator, by role."""

    image: w.Dropdown
    tool: w.ToggleButtons
    undo: w.Button
    redo: w.Button
    zoom_in: w.Button
    zoom_out: w.Button
    fit: w.Button
    actual_size: w.Button
    brush_size: w.IntSlider
    opacity: w.FloatSlider
    show_labels: w.Checkbox
    show_boundaries: w.Checkbox
    prediction: w.Dropdown
    prediction_opacity: w.FloatSlider
    z: w.IntSlider
    palette: w.HBox
    channels: w.Accordion
    stats: w.HTML
    status: w.HTML
    notice: w.HTML
    class_buttons: list = field(default_factory=list)
    channel_rows: list = field(default_factory=list)


def build_controls(class_names: Sequence[str], class_colors: Sequence[str]) -> Controls:
    small = w.Layout(width="auto")
    controls = Controls(
        image=w.Dropdown(description="image", layout=w.Layout(width="260px")),
        tool=w.ToggleButtons(options=TOOLS, value="brush", tooltips=TOOL_TIPS,
                             style={"button_width": "116px"}),
        undo=w.Button(description="undo", icon="undo", tooltip="Undo (z)", layout=small),
        redo=w.Button(description="redo", icon="repeat", tooltip="Redo (y)", layout=small),
        zoom_in=w.Button(icon="search-plus", tooltip="Zoom in (+)", layout=w.Layout(width="40px")),
        zoom_out=w.Button(icon="search-minus", tooltip="Zoom out (-)", layout=w.Layout(width="40px")),
        fit=w.Button(description="fit", icon="expand", tooltip="Fit the image to the window (f)", layout=small),
        actual_size=w.Button(description="1:1", tooltip="One image pixel per screen pixel", layout=small),
        brush_size=w.IntSlider(value=8, min=1, max=200, description="brush", continuous_update=False,
                               tooltip="Brush diameter in image pixels ([ and ])"),
        opacity=w.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="labels",
                              continuous_update=False),
        show_labels=w.Checkbox(value=True, description="show labels", indent=False),
        show_boundaries=w.Checkbox(value=True, description="show derived boundaries", indent=False),
        prediction=w.Dropdown(options=[("none", "none")], value="none", description="prediction"),
        prediction_opacity=w.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="pred.",
                                         continuous_update=False),
        z=w.IntSlider(value=0, min=0, max=0, description="z", continuous_update=False),
        palette=w.HBox(),
        channels=w.Accordion(),
        stats=w.HTML(),
        status=w.HTML(),
        notice=w.HTML(),
    )
    buttons = []
    for i, (name, color) in enumerate(zip(class_names, class_colors)):
        button = w.Button(description=f"{i + 1} {name}" if i < 9 else name, tooltip=f"Paint {name}",
                          layout=w.Layout(width="auto", border="3px solid transparent"))
        button.style.button_color = color
        button.style.text_color = _readable_text(color)
        button.label_value = i + 1
        buttons.append(button)
    controls.class_buttons = buttons
    controls.palette.children = buttons
    return controls


def notice_html(message: str | None) -> str:
    """A note on the last stroke, shown until the next one (empty when there is none)."""
    if not message:
        return ""
    return (f"<div class='wb-stroke-notice' style='background:#fff4d6;border:1px solid #d9a400;padding:4px 8px;"
            f"margin:2px 0;max-width:1100px'>⚠ {escape(message)}</div>")


def mark_class(controls: Controls, value: int) -> None:
    """Frame the palette button of the selected label value."""
    for button in controls.class_buttons:
        selected = button.label_value == value
        button.layout.border = "3px solid black" if selected else "3px solid transparent"
        button.style.font_weight = "bold" if selected else "normal"


def build_channel_rows(displays: Sequence[ChannelDisplay], ranges: Sequence[tuple[float, float]],
                       integer: bool) -> list[dict]:
    """One row (show, colour, contrast limits, auto) per channel."""
    rows = []
    for index, (display, (lo, hi)) in enumerate(zip(displays, ranges)):
        lo, hi = min(lo, display.low), max(hi, display.high)
        if hi <= lo:
            hi = lo + 1
        step = 1.0 if integer else float((hi - lo) / 1000)
        rows.append({
            "visible": w.Checkbox(value=display.visible, description="show", indent=False,
                                  layout=w.Layout(width="70px")),
            "color": w.ColorPicker(value=display.color, concise=True, layout=w.Layout(width="40px")),
            "limits": w.FloatRangeSlider(value=(display.low, display.high), min=float(lo), max=float(hi),
                                         step=step, description="contrast", continuous_update=False,
                                         readout_format=".0f" if integer else ".3g",
                                         layout=w.Layout(width="330px")),
            "auto": w.Button(description="auto", tooltip="Contrast from the 0.5–99.8 percentiles",
                             layout=w.Layout(width="60px")),
            "index": index,
        })
    return rows


def channel_panel(controls: Controls, rows: list[dict]) -> None:
    controls.channel_rows = rows
    controls.channels.children = [
        w.VBox([w.HBox([row["visible"], row["color"], row["auto"]]), row["limits"]]) for row in rows
    ]
    for i in range(len(rows)):
        controls.channels.set_title(i, f"channel {i}" if len(rows) > 1 else "display")


def stats_html(stats: dict, class_names: Sequence[str], class_colors: Sequence[str], *, pending: bool,
               save_error: str | None = None) -> str:
    """The statistics panel: pixels per class, objects, annotated fraction, save state."""
    lines = ["<b>labelled</b><table style='border-collapse:collapse'>"]
    for name, color in zip(class_names, class_colors):
        lines.append(
            f"<tr><td><span style='display:inline-block;width:12px;height:12px;background:{escape(color)};"
            f"border:1px solid #444'></span></td><td style='padding:0 6px'>{escape(name)}</td>"
            f"<td style='text-align:right'>{stats['pixels'].get(name, 0):,} px</td></tr>"
        )
    lines.append("</table>")
    if "objects" in stats:
        objects = stats["objects"]
        lines.append(f"objects: {'—' if objects is None else f'{objects:,}'}<br>")
    lines.append(f"annotated: {100 * stats['annotated_fraction']:.2f} % of {stats['pixels_total']:,} px<br>")
    if save_error:
        lines.append(f"<span style='color:#b00'>not saved: {escape(save_error)}</span>")
    else:
        lines.append("<span style='color:#777'>saving…</span>" if pending
                     else "<span style='color:#080'>saved</span>")
    return "".join(lines)


def data_range(thumbnail: np.ndarray) -> list[tuple[float, float]]:
    """Per-channel (min, max) of a small CYX plane, for the contrast sliders' ends."""
    return [(float(ch.min()), float(ch.max())) for ch in thumbnail]

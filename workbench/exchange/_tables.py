"""The measurement table with the column names QuPath, ImageJ and CellProfiler use.

`workbench.predict.measure_objects` names columns in snake case with their unit
(``area_px``, ``centroid_x_um``). Analysts who merge our tables with another tool's want that
tool's names and conventions: ImageJ's Analyze Particles ``Results`` (``Area``, ``X``, ``Perim.``,
``Major``, ``Angle`` in degrees from the x axis, 0–180), CellProfiler's MeasureObjectSizeShape
and MeasureObjectIntensity (``AreaShape_Area``, ``Location_Center_X``,
``Intensity_MeanIntensity_<image>``, orientation in degrees −90–90) and QuPath's measurement
table (``Centroid X µm``, ``Area µm^2``, ``<channel>: Mean``). A column without a counterpart
keeps its name, so nothing is lost.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np
import pandas as pd

from workbench.errors import WorkbenchError

__all__ = ["TABLE_STYLES", "table_for_tool"]


def _imagej(table: pd.DataFrame, calibrated: bool, channels: list[str]) -> dict[str, str]:
    unit = "um" if calibrated else "px"
    names = {
        "image": "Label", f"area_{'um2' if calibrated else 'px'}": "Area",
        f"centroid_x_{unit}" if calibrated else "centroid_x": "X",
        f"centroid_y_{unit}" if calibrated else "centroid_y": "Y",
        f"perimeter_{unit}": "Perim.", f"major_axis_length_{unit}": "Major",
        f"minor_axis_length_{unit}": "Minor", "solidity": "Solidity", "angle_deg": "Angle",
        "bbox_x0": "BX", "bbox_y0": "BY", "width_px": "Width", "height_px": "Height",
    }
    for stat, name in (("mean", "Mean"), ("std", "StdDev"), ("min", "Min"), ("max", "Max"),
                       ("integrated", "RawIntDen")):
        for suffix, channel in _channel_suffixes(table, channels):
            names[f"intensity_{stat}{suffix}"] = f"{name}{'' if not suffix else ' ' + channel}"
    return names


def _cellprofiler(table: pd.DataFrame, calibrated: bool, channels: list[str]) -> dict[str, str]:
    # CellProfiler measures in pixels; µm columns keep their names.
    names = {
        "image": "FileName_Image", "label": "ObjectNumber", "area_px": "AreaShape_Area",
        "centroid_x": "Location_Center_X", "centroid_y": "Location_Center_Y",
        "perimeter_px": "AreaShape_Perimeter", "eccentricity": "AreaShape_Eccentricity",
        "solidity": "AreaShape_Solidity", "major_axis_length_px": "AreaShape_MajorAxisLength",
        "minor_axis_length_px": "AreaShape_MinorAxisLength", "orientation_deg": "AreaShape_Orientation",
        "bbox_x0": "AreaShape_BoundingBoxMinimum_X", "bbox_y0": "AreaShape_BoundingBoxMinimum_Y",
        "bbox_x1": "AreaShape_BoundingBoxMaximum_X", "bbox_y1": "AreaShape_BoundingBoxMaximum_Y",
    }
    for stat, name in (("mean", "MeanIntensity"), ("std", "StdIntensity"), ("min", "MinIntensity"),
                       ("max", "MaxIntensity"), ("integrated", "IntegratedIntensity")):
        for suffix, channel in _channel_suffixes(table, channels):
            image_name = re.sub(r"\W+", "_", channel)
            names[f"intensity_{stat}{suffix}"] = f"Intensity_{name}_{image_name}"
    return names


def _qupath(table: pd.DataFrame, calibrated: bool, channels: list[str]) -> dict[str, str]:
    names = {
        "image": "Image", "label": "Object ID", "class": "Class",
        "centroid_x": "Centroid X px", "centroid_y": "Centroid Y px",
        "centroid_x_um": "Centroid X µm", "centroid_y_um": "Centroid Y µm",
        "area_px": "Area px^2", "area_um2": "Area µm^2", "perimeter_px": "Perimeter px",
        "perimeter_um": "Perimeter µm", "eccentricity": "Eccentricity", "solidity": "Solidity",
        "major_axis_length_px": "Length px", "major_axis_length_um": "Length µm",
        "minor_axis_length_px": "Width px", "minor_axis_length_um": "Width µm",
    }
    for stat, name in (("mean", "Mean"), ("std", "Std.Dev."), ("min", "Min"), ("max", "Max"),
                       ("integrated", "Sum")):
        for suffix, channel in _channel_suffixes(table, channels):
            names[f"intensity_{stat}{suffix}"] = f"{channel}: {name}"
    return names


#: Tool name -> column mapping builder; a new tool is one entry.
TABLE_STYLES: dict[str, Callable[[pd.DataFrame, bool, list[str]], dict[str, str]]] = {
    "imagej": _imagej,
    "cellprofiler": _cellprofiler,
    "qupath": _qupath,
}


def _channel_suffixes(table: pd.DataFrame, channels: list[str]) -> list[tuple[str, str]]:
    if "intensity_mean" in table.columns:
        return [("", channels[0] if channels else "Channel 1")]
    count = sum(1 for c in table.columns if re.fullmatch(r"intensity_mean_ch\d+", c))
    return [(f"_ch{c}", channels[c] if c < len(channels) else f"Channel {c + 1}") for c in range(count)]


def table_for_tool(table: pd.DataFrame, tool: str, *, channel_names: list[str] | None = None) -> pd.DataFrame:
    """The measurement table renamed (and angles converted) for another tool.

    Parameters
    ----------
    table : pandas.DataFrame
        From `workbench.predict.measure_objects` or `workbench.pipeline.measure_project`.
    tool : {"imagej", "cellprofiler", "qupath"}
    channel_names : list of str, optional
        Names for intensity channels (default "Channel 1", ...).

    Returns
    -------
    pandas.DataFrame
        A new table; columns without a counterpart keep their names.

    Raises
    ------
    WorkbenchError
        For an unknown tool (the message lists the known ones).
    """
    if tool not in TABLE_STYLES:
        raise WorkbenchError(f"unknown table style {tool!r}; choose one of {', '.join(sorted(TABLE_STYLES))}")
    table = table.copy()
    if "orientation" in table.columns:
        # skimage: radians between the row axis and the major axis. As an angle from the x axis,
        # counter-clockwise on screen (y up): ImageJ wants 0-180, CellProfiler -90-90.
        from_x = np.degrees(table.pop("orientation")) - 90.0
        from_x = np.where(from_x <= -90.0, from_x + 180.0, from_x)
        table["angle_deg"] = np.mod(from_x, 180.0)
        table["orientation_deg"] = from_x
    if {"bbox_x0", "bbox_x1"} <= set(table.columns):
        table["width_px"] = table["bbox_x1"] - table["bbox_x0"]
        table["height_px"] = table["bbox_y1"] - table["bbox_y0"]
    calibrated = "area_um2" in table.columns
    names = TABLE_STYLES[tool](table, calibrated, list(channel_names or []))
    keep_deg = {"imagej": "angle_deg", "cellprofiler": "orientation_deg"}.get(tool)
    table = table.drop(columns=[c for c in ("angle_deg", "orientation_deg", "width_px", "height_px")
                                if c in table.columns and c not in names and c != keep_deg])
    return table.rename(columns={k: v for k, v in names.items() if k in table.columns})

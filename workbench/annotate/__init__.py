"""What the painting annotator stands on: the image pyramid, the viewport mapping, the label editor."""

from workbench.annotate._pyramid import (
    Pyramid,
    ChannelDisplay,
    NearestPyramid,
    build_pyramid,
    ensure_pyramid,
    open_pyramid,
    pyramid_factors,
    default_channel_displays,
    auto_contrast,
    render_image,
    hex_to_rgb,
)
from workbench.annotate._viewport import (
    Viewport,
    MIN_ZOOM,
    MAX_ZOOM,
)
from workbench.annotate._painting import (
    Edit,
    LabelsChanged,
    LabelEditor,
    rasterize_stroke,
    rasterize_lasso,
    DEFAULT_SAVE_DELAY,
)

__all__ = [
    "Pyramid",
    "ChannelDisplay",
    "NearestPyramid",
    "build_pyramid",
    "ensure_pyramid",
    "open_pyramid",
    "pyramid_factors",
    "default_channel_displays",
    "auto_contrast",
    "render_image",
    "hex_to_rgb",
    "Viewport",
    "MIN_ZOOM",
    "MAX_ZOOM",
    "Edit",
    "LabelsChanged",
    "LabelEditor",
    "rasterize_stroke",
    "rasterize_lasso",
    "DEFAULT_SAVE_DELAY",
]

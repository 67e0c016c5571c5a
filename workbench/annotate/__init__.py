"""What the painting annotator stands on: the image pyramid, the viewport mapping, the label editor,
the instance-mode painting convention checked per stroke."""

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
from workbench.annotate._convention import (
    PART_OF_OBJECT,
    looks_like_part_of_an_object,
    stroke_window,
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
    "PART_OF_OBJECT",
    "looks_like_part_of_an_object",
    "stroke_window",
]

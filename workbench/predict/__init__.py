"""From probabilities to results: smooth tiled prediction, instances, measurements, metrics, overlays."""

from workbench.predict._tiling import (
    DEFAULT_WINDOW,
    EDGES,
    WINDOWS,
    TilingError,
    predict_tiled,
    predict_tiled_zarr,
)
from workbench.predict._instances import (
    InstancesError,
    instances_from_probabilities,
    semantic_from_probabilities,
)
from workbench.predict._blockwise import (
    BlockGrid,
    BlockRecord,
    BlockwiseError,
    BlockwiseSummary,
    RelabelTable,
    blockwise_instances,
    measure_block,
    merge_blocks,
    neighbour_distances,
    relabel_block,
    segment_block,
)
from workbench.predict._measure import (
    MeasureError,
    measure_objects,
    write_table,
)
from workbench.predict._metrics import (
    DSB_THRESHOLDS,
    InstanceOverlap,
    MetricsInputError,
    average_precision,
    dice,
    iou,
    match_instances,
    per_class_dice,
    per_class_iou,
)
from workbench.predict._overlay import (
    to_display,
    overlay_instances,
    overlay_classes,
    hex_to_rgb,
)

__all__ = [
    "DEFAULT_WINDOW",
    "EDGES",
    "WINDOWS",
    "TilingError",
    "predict_tiled",
    "predict_tiled_zarr",
    "InstancesError",
    "instances_from_probabilities",
    "semantic_from_probabilities",
    "BlockGrid",
    "BlockRecord",
    "BlockwiseError",
    "BlockwiseSummary",
    "RelabelTable",
    "blockwise_instances",
    "measure_block",
    "merge_blocks",
    "neighbour_distances",
    "relabel_block",
    "segment_block",
    "MeasureError",
    "measure_objects",
    "write_table",
    "DSB_THRESHOLDS",
    "InstanceOverlap",
    "MetricsInputError",
    "average_precision",
    "dice",
    "iou",
    "match_instances",
    "per_class_dice",
    "per_class_iou",
    "to_display",
    "overlay_instances",
    "overlay_classes",
    "hex_to_rgb",
]

"""Models and results that travel: bioimage.io packages, ONNX, napari, QuPath / ImageJ / CellProfiler.

- `export_model`: a project's U-Net as a bioimage.io package (``.zip``), ONNX or TorchScript file.
- `import_bioimageio`: such a package back into a project, to predict with or train on.
- `OnnxPredictor`: ONNX Runtime on the CPU as a `workbench.predict.predict_tiled` predictor.
- `write_geojson` / `geojson_to_labels`: instance outlines as QuPath-ready GeoJSON polygons.
- `write_imagej_labels`: calibrated label TIFFs for ImageJ / Fiji.
- `table_for_tool`: the measurement table in ImageJ, CellProfiler or QuPath column names.
- `export_instances` / `export_table`: the one-call versions of those for a project image.
- napari: the npe2 manifest ``napari.yaml`` (reader of projects and OME-Zarr, writer of labels).
"""

from workbench.exchange._onnx import (
    ONNX_OPSET,
    OnnxPredictor,
    export_onnx,
    make_onnx_predictor,
)
from workbench.exchange._bioimageio import (
    BioimageioExport,
    export_bioimageio,
)
from workbench.exchange._import import (
    import_bioimageio,
)
from workbench.exchange._export import (
    MODEL_FORMATS,
    ModelExport,
    export_model,
)
from workbench.exchange._outlines import (
    ObjectOutline,
    outline_objects,
    outlines_to_geojson,
    write_geojson,
    read_geojson,
    geojson_to_labels,
)
from workbench.exchange._imagej import (
    write_imagej_labels,
    label_lut,
)
from workbench.exchange._tables import (
    TABLE_STYLES,
    table_for_tool,
)
from workbench.exchange._results import (
    export_instances,
    export_table,
)

__all__ = [
    "ONNX_OPSET",
    "OnnxPredictor",
    "export_onnx",
    "make_onnx_predictor",
    "BioimageioExport",
    "export_bioimageio",
    "import_bioimageio",
    "MODEL_FORMATS",
    "ModelExport",
    "export_model",
    "ObjectOutline",
    "outline_objects",
    "outlines_to_geojson",
    "write_geojson",
    "read_geojson",
    "geojson_to_labels",
    "write_imagej_labels",
    "label_lut",
    "TABLE_STYLES",
    "table_for_tool",
    "export_instances",
    "export_table",
]

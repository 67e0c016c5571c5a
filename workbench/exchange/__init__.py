"""Models and results that travel: bioimage.io packages, ONNX, napari, QuPath/ImageJ/CellProfiler."""

from workbench.exchange._onnx import (
    ONNX_OPSET,
    OnnxPredictor,
    export_onnx,
    make_onnx_predictor,
)

__all__ = [
    "ONNX_OPSET",
    "OnnxPredictor",
    "export_onnx",
    "make_onnx_predictor",
]

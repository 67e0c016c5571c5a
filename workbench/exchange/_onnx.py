"""ONNX export of a workbench U-Net and an ONNX Runtime predictor for tiled prediction.

The exported graph takes normalised intensities ``(B, C, H, W)`` (H and W multiples of the
network's output stride, any batch) and returns softmax probabilities ``(B, K, H, W)`` (and, for
an instance U-Net, its distance map after them, through a sigmoid): the softmax travels with the
model, so another tool gets probabilities without knowing our head.
The normalisation stays outside the graph (it is the model card's, and bioimage.io describes it
as preprocessing); `OnnxPredictor` applies it exactly as `workbench.deep.TorchPredictor` does,
so both predictors are interchangeable callables for `workbench.predict.predict_tiled`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError
from workbench.store import atomic_write

__all__ = ["ONNX_OPSET", "with_probabilities", "export_onnx", "OnnxPredictor", "make_onnx_predictor"]

#: Opset 17 runs in every ONNX Runtime of the last three years and in bioimage.io's tooling.
ONNX_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"


def with_probabilities(model, n_classes: int):
    """The logits network wrapped so that it returns what the engine's predictors return: softmax
    probabilities over its `n_classes` classes, and the sigmoid of a distance output after them
    (`workbench.deep.output_probabilities`).

    Built lazily so that importing this module does not import torch.
    """
    import torch

    from workbench.deep._models import output_probabilities

    class _ProbabilityModel(torch.nn.Module):
        def __init__(self, network: torch.nn.Module):
            super().__init__()
            self.network = network

        def forward(self, x):
            return output_probabilities(self.network(x), n_classes)

    return _ProbabilityModel(model).eval()


def export_onnx(model, card, path: str | os.PathLike, *, tile_size: int = 256, opset: int = ONNX_OPSET) -> Path:
    """Write a model as an ONNX file with dynamic batch, height and width.

    Parameters
    ----------
    model : torch.nn.Module
        A U-Net from `workbench.deep.load_model` (outputs logits).
    card : workbench.deep.ModelCard
        Gives the input channel count and which outputs are classes.
    path : path-like
        The ``.onnx`` file to write (atomically).
    tile_size : int
        Height and width of the example input used for tracing (a multiple of 32).
    opset : int
        ONNX opset version.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    WorkbenchError
        When the exporter or the checker rejects the model.
    """
    import onnx
    import torch

    path = Path(path)
    wrapped = with_probabilities(model.to("cpu").eval(), int(card.n_classes))
    example = torch.zeros(1, int(card.in_channels), int(tile_size), int(tile_size))
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with atomic_write(path) as tmp, warnings.catch_warnings():
        # The TorchScript-based exporter: smp's U-Net traces to a graph whose spatial sizes stay
        # symbolic without the shape constraints the dynamo exporter asks for.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(wrapped, (example,), str(tmp), dynamo=False, opset_version=int(opset),
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic})
            graph = onnx.load(str(tmp))
            # The exporter leaves the channel count of a concatenation (classes, then the distance
            # map) symbolic; it is fixed, and readers of the file should see it.
            channels = graph.graph.output[0].type.tensor_type.shape.dim[1]
            if not channels.HasField("dim_value"):
                channels.dim_value = int(card.n_outputs)
                onnx.save(graph, str(tmp))
            onnx.checker.check_model(str(tmp))
        except Exception as exc:  # exporter and checker raise many types; the message says which
            raise WorkbenchError(f"could not export the model to ONNX ({type(exc).__name__}: {exc})") from exc
    return path


class OnnxPredictor:
    """Callable ``(B, C, h, w)`` raw intensities -> ``(B, K, h, w)`` float32 probabilities, on ONNX Runtime.

    The same contract as `workbench.deep.TorchPredictor`: the card's normalisation, reflect
    padding to a multiple of the network stride, cropping back, batches of at most
    ``batch_size`` tiles.

    Parameters
    ----------
    onnx_path : path-like
        A file written by `export_onnx`.
    card : workbench.deep.ModelCard
    batch_size : int
    n_threads : int or None
        Intra-op threads; None uses ``WORKBENCH_THREADS`` or every core this process may use.
    stride : int
        Output stride of the network (32 for the workbench's U-Nets).
    """

    def __init__(self, onnx_path, card, *, batch_size: int = 8, n_threads: int | None = None, stride: int = 32):
        import onnxruntime as ort

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise WorkbenchError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
        self.batch_size = batch_size
        self.in_channels = int(card.in_channels)
        self.n_classes = int(card.n_classes)
        self.n_outputs = int(card.n_outputs)
        self.normalizer = card.normalizer()
        self.stride = int(stride)
        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads(n_threads)
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise WorkbenchError(f"ONNX Runtime cannot load {onnx_path}: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        array = np.asarray(batch)
        if array.ndim != 4 or array.shape[1] != self.in_channels:
            raise WorkbenchError(
                f"predictor input must be (B, {self.in_channels}, h, w); got shape {array.shape}. "
                f"The model was trained on {self.in_channels}-channel images."
            )
        array = self.normalizer(array) if self.normalizer is not None else array.astype(np.float32, copy=False)
        if array.shape[0] == 0:
            return np.zeros((0, self.n_outputs) + array.shape[2:], dtype=np.float32)
        outputs = [self._predict_chunk(array[start:start + self.batch_size])
                   for start in range(0, array.shape[0], self.batch_size)]
        return np.concatenate(outputs, axis=0)

    def _predict_chunk(self, chunk: np.ndarray) -> np.ndarray:
        height, width = chunk.shape[2:]
        import torch

        from workbench.deep._models import pad_to_multiple  # the torch predictor's padding, so both see the same pixels

        padded = pad_to_multiple(torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)), self.stride).numpy()
        probabilities = self.session.run(None, {self.input_name: padded})[0]
        return np.ascontiguousarray(probabilities[:, :, :height, :width], dtype=np.float32)


def make_onnx_predictor(model, card, directory: str | os.PathLike, *, batch_size: int = 8,
                        n_threads: int | None = None) -> OnnxPredictor:
    """Export `model` to ``directory/model.onnx`` unless a current export is there, and wrap it.

    The export is cached beside the model's weights and remade when the weights are newer.
    """
    directory = Path(directory)
    onnx_path = directory / "model.onnx"
    weights = directory / "weights.pt"
    stale = not onnx_path.is_file() or (weights.is_file() and weights.stat().st_mtime > onnx_path.stat().st_mtime)
    if stale:
        export_onnx(model, card, onnx_path)
    stride = int(getattr(getattr(model, "encoder", None), "output_stride", 32))
    return OnnxPredictor(onnx_path, card, batch_size=batch_size, n_threads=n_threads, stride=stride)


def _threads(n_threads: int | None) -> int:
    if n_threads is not None:
        return int(n_threads)
    from workbench.deep._device import configure_cpu_threads

    # The torch predictor's rule: WORKBENCH_THREADS, else every core this process may run on.
    return configure_cpu_threads()

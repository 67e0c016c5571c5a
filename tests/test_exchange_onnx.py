"""ONNX export and the ONNX Runtime predictor: same tiles, same probabilities as torch."""

import numpy as np
import onnx
import pytest

from _exchange_project import make_unet_project
from workbench import pipeline
from workbench.deep import load_model, make_predictor
from workbench.errors import WorkbenchError
from workbench.exchange import OnnxPredictor, export_model, export_onnx, make_onnx_predictor
from workbench.predict import predict_tiled

TOLERANCE = 1e-4  # float32 probabilities from two runtimes of the same graph


@pytest.fixture(scope="module")
def unet_project(tmp_path_factory):
    return make_unet_project(tmp_path_factory.mktemp("onnx") / "project")


@pytest.fixture(scope="module")
def model_and_card(unet_project):
    project, _, _ = unet_project
    return load_model(project.model_dir(), device="cpu")


@pytest.fixture(scope="module")
def onnx_file(model_and_card, tmp_path_factory):
    model, card = model_and_card
    return export_onnx(model, card, tmp_path_factory.mktemp("export") / "model.onnx")


def test_onnx_file_has_dynamic_batch_and_size(model_and_card, onnx_file):
    model, card = model_and_card
    path = onnx_file
    graph = onnx.load(str(path)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", card.in_channels, "height", "width"]
    out_dims = [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    assert out_dims[1] == card.n_outputs == 4  # the classes and the distance map


def test_onnx_runtime_matches_torch_through_predict_tiled(unet_project, model_and_card, onnx_file):
    _, image, _ = unet_project
    model, card = model_and_card
    onnx_predictor = OnnxPredictor(onnx_file, card, batch_size=3)
    torch_predictor = make_predictor(model, card, device="cpu", batch_size=3)
    # Tiles of 96 and an image edge that is no multiple of the network stride: both pad the same way.
    plane = image[None, :177, :190]
    expected = predict_tiled(plane, torch_predictor, card.n_outputs, tile_size=96, overlap=0.25)
    got = predict_tiled(plane, onnx_predictor, card.n_outputs, tile_size=96, overlap=0.25)
    assert got.shape == expected.shape == (card.n_outputs, 177, 190)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    np.testing.assert_allclose(got[:card.n_classes].sum(axis=0), 1.0, atol=TOLERANCE)


def test_onnx_predictor_checks_channels(model_and_card, onnx_file):
    model, card = model_and_card
    predictor = OnnxPredictor(onnx_file, card)
    with pytest.raises(WorkbenchError, match="1-channel"):
        predictor(np.zeros((1, 2, 64, 64), np.float32))
    assert predictor(np.zeros((0, 1, 64, 64), np.float32)).shape == (0, card.n_outputs, 64, 64)


def test_onnx_backend_predicts_the_project_like_torch(unet_project, tmp_path):
    project, _, _ = unet_project
    options = dict(tile_size=128, overlap=0.25)
    torch_info = pipeline.predict_project(project, **options)
    torch_probs = project.prediction("nuclei", "probabilities")[...]
    onnx_info = pipeline.predict_project(project, backend="onnx", **options)
    onnx_probs = project.prediction("nuclei", "probabilities")[...]
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=TOLERANCE)
    assert onnx_info["nuclei"]["model_version"] == torch_info["nuclei"]["model_version"]
    assert (project.model_dir() / "model.onnx").is_file()  # exported once, beside the weights


def test_onnx_export_is_cached_until_the_weights_change(unet_project):
    project, _, _ = unet_project
    model, card = load_model(project.model_dir(), device="cpu")
    first = make_onnx_predictor(model, card, project.model_dir())
    stamp = (project.model_dir() / "model.onnx").stat().st_mtime_ns
    make_onnx_predictor(model, card, project.model_dir())
    assert (project.model_dir() / "model.onnx").stat().st_mtime_ns == stamp
    assert first.n_classes == card.n_classes


def test_onnx_backend_refuses_gpu_devices_and_unknown_backends(unet_project):
    project, _, _ = unet_project
    with pytest.raises(WorkbenchError, match="CPU"):
        pipeline.load_segmenter(project, backend="onnx", device="cuda")
    with pytest.raises(WorkbenchError, match="backend must be one of"):
        pipeline.load_segmenter(project, backend="tensorrt")


def test_export_model_writes_onnx_and_torchscript_that_reproduce_torch(unet_project, tmp_path):
    import torch

    project, image, _ = unet_project
    model, card = load_model(project.model_dir(), device="cpu")
    tile = card.normalizer()(image[None, None, :128, :128])
    from workbench.deep import output_probabilities

    with torch.inference_mode():
        expected = output_probabilities(model(torch.from_numpy(tile)), card.n_classes).numpy()
    onnx_export = export_model(project, tmp_path / "m.onnx")
    assert onnx_export.format == "onnx" and onnx_export.model_version == 1
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_export.path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": tile})[0], expected, atol=TOLERANCE)
    script = export_model(project, tmp_path / "m.pt")
    loaded = torch.jit.load(str(script.path))
    with torch.inference_mode():
        np.testing.assert_allclose(loaded(torch.from_numpy(tile)).numpy(), expected, atol=TOLERANCE)

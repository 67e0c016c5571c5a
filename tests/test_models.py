"""U-Net factory, pretrained encoders (local file and offline hub cache), model card, predictor, normalisation."""

import json

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.deep import (
    CARD_FILENAME,
    PRESETS,
    WEIGHTS_FILENAME,
    ModelCard,
    build_unet,
    load_model,
    make_predictor,
    save_model,
)
from workbench.deep import PercentileNormalizer

MOBILENET_FILE = ("weights", "mobilenet_v2-b0353104.pth")


@pytest.fixture(scope="module")
def mobilenet_state(shared_dir):
    return torch.load(shared_dir.joinpath(*MOBILENET_FILE), map_location="cpu", weights_only=True)


def _card_for(model_in_channels, n_classes, image):
    normalizer = PercentileNormalizer().fit([image])
    return ModelCard(in_channels=model_in_channels, n_classes=n_classes, classes=["background", "nucleus", "edge"][:n_classes],
                     mode="instance", normalisation=normalizer.to_dict(), settings={"preset": "fast"})


@pytest.mark.parametrize("in_channels", [1, 2, 3, 5])
def test_default_model_builds_for_any_channel_count(in_channels, nuclei_image):
    torch.manual_seed(0)
    model = build_unet(in_channels, 3).eval()
    image = np.repeat(nuclei_image[None, :96, :80], in_channels, axis=0).astype(np.float32)
    with torch.inference_mode():
        logits = model(torch.from_numpy(image / image.max())[None])
    assert logits.shape == (1, 3, 96, 80)
    assert model.workbench_recipe["init_kwargs"]["in_channels"] == in_channels
    assert sum(p.numel() for p in model.parameters()) < 1_000_000  # the CPU default stays small


def test_presets_and_encoder_override_build():
    model = build_unet(1, 2, preset="mobilenet_v2", width=0.5, depth=4)
    assert model.workbench_recipe["init_kwargs"]["decoder_channels"] == [32, 16, 8, 8]
    model = build_unet(2, 4, encoder="resnet18", depth=3)
    assert model(torch.zeros(1, 2, 64, 64)).shape == (1, 4, 64, 64)


def test_unknown_names_list_the_choices():
    with pytest.raises(WorkbenchError, match="fast") as info:
        build_unet(1, 3, preset="tiny-unet")
    assert "tiny-unet" in str(info.value)
    with pytest.raises(WorkbenchError, match="resnet18"):
        build_unet(1, 3, encoder="resnet19")
    with pytest.raises(WorkbenchError, match="timm"):
        build_unet(1, 3, encoder="tu-not_a_timm_model")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"in_channels": 0, "n_classes": 3}, "in_channels"),
        ({"in_channels": 1, "n_classes": 1}, "n_classes"),
        ({"in_channels": 1, "n_classes": 3, "depth": 7}, "depth"),
        ({"in_channels": 1, "n_classes": 3, "width": 0}, "width"),
        ({"in_channels": 1, "n_classes": 3, "weights": 5}, "weights"),
        ({"in_channels": 1, "n_classes": 3, "weights": "/no/such/file.pth"}, "does not exist"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, message):
    in_channels = kwargs.pop("in_channels")
    n_classes = kwargs.pop("n_classes")
    with pytest.raises(WorkbenchError, match=message):
        build_unet(in_channels, n_classes, **kwargs)


@pytest.mark.parametrize("in_channels", [1, 3, 4])
def test_local_pretrained_weights_load_into_the_encoder(in_channels, shared_dir, mobilenet_state):
    model = build_unet(in_channels, 3, preset="mobilenet_v2", weights=shared_dir.joinpath(*MOBILENET_FILE))
    encoder_state = model.encoder.state_dict()
    for key in ("features.1.conv.0.0.weight", "features.18.0.weight", "features.10.conv.1.1.running_mean"):
        assert torch.equal(encoder_state[key], mobilenet_state[key]), key
    stem = encoder_state["features.0.0.weight"]
    assert stem.shape[1] == in_channels
    if in_channels == 1:  # smp's patch_first_conv sums the RGB filters
        assert torch.allclose(stem, mobilenet_state["features.0.0.weight"].sum(1, keepdim=True))
    elif in_channels == 3:
        assert torch.equal(stem, mobilenet_state["features.0.0.weight"])


def test_weights_file_for_another_encoder_is_refused(shared_dir):
    with pytest.raises(WorkbenchError, match="does not fit encoder 'resnet18'"):
        build_unet(1, 3, encoder="resnet18", weights=shared_dir.joinpath(*MOBILENET_FILE))


def _point_hub_cache_at(tmp_path, monkeypatch):
    """Redirect huggingface_hub's cache (read by smp 0.6 for mobilenet_v2) and forbid network access."""
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


def test_imagenet_weights_through_the_hub_path_offline(tmp_path, monkeypatch, mobilenet_state):
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders as smp_encoders

    cache = _point_hub_cache_at(tmp_path, monkeypatch)
    hub = smp_encoders["mobilenet_v2"]["pretrained_settings"]["imagenet"]
    snapshot = cache / f"models--{hub['repo_id'].replace('/', '--')}" / "snapshots" / hub["revision"]
    snapshot.mkdir(parents=True)
    encoder_state = {k: v.contiguous() for k, v in mobilenet_state.items() if not k.startswith("classifier.")}
    save_file(encoder_state, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(json.dumps({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}))

    model = build_unet(2, 3, preset="mobilenet_v2", weights="imagenet")
    state = model.encoder.state_dict()
    assert torch.equal(state["features.5.conv.1.0.weight"], mobilenet_state["features.5.conv.1.0.weight"])
    assert state["features.0.0.weight"].shape[1] == 2


def test_imagenet_weights_without_cache_or_network_explain_the_fix(tmp_path, monkeypatch):
    _point_hub_cache_at(tmp_path, monkeypatch)
    with pytest.raises(WorkbenchError, match="weights=<path"):
        build_unet(1, 3, preset="mobilenet_v2", weights="imagenet")


def test_save_load_round_trip_gives_identical_outputs(tmp_path, nuclei_image):
    torch.manual_seed(1)
    model = build_unet(1, 3).eval()
    card = _card_for(1, 3, nuclei_image[None])
    save_model(tmp_path / "model", model, card)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [CARD_FILENAME, WEIGHTS_FILENAME]
    stored = json.loads((tmp_path / "model" / CARD_FILENAME).read_text())
    assert stored["architecture"] == "Unet"
    assert stored["init_kwargs"]["encoder_name"] == PRESETS["fast"]["encoder"]
    assert stored["in_channels"] == 1 and stored["n_classes"] == 3 and stored["mode"] == "instance"
    assert stored["normalisation"]["kind"] == "percentile"

    loaded, loaded_card = load_model(tmp_path / "model")
    assert loaded_card.classes == card.classes
    tiles = nuclei_image[None, None, :128, :128].astype(np.float32)
    expected = make_predictor(model, card, device="cpu")(tiles)
    actual = make_predictor(loaded, loaded_card, device="cpu")(tiles)
    np.testing.assert_array_equal(actual, expected)


def test_loading_for_other_channels_or_classes_names_problem_and_fix(tmp_path, nuclei_image):
    save_model(tmp_path / "m", build_unet(1, 3), _card_for(1, 3, nuclei_image[None]))
    with pytest.raises(WorkbenchError, match=r"expects images with 1 channel\(s\) but the data has 3.*train a new model"):
        load_model(tmp_path / "m", in_channels=3)
    with pytest.raises(WorkbenchError, match="predicts 3 classes but the labels need 4"):
        load_model(tmp_path / "m", n_classes=4)
    with pytest.raises(WorkbenchError, match="not a saved model"):
        load_model(tmp_path / "nothing-here")


def test_save_refuses_card_that_disagrees_with_model(tmp_path, nuclei_image):
    with pytest.raises(WorkbenchError, match="card"):
        save_model(tmp_path / "m", build_unet(1, 3), _card_for(2, 3, np.stack([nuclei_image] * 2)))
    with pytest.raises(WorkbenchError, match="recipe"):
        save_model(tmp_path / "m", torch.nn.Conv2d(1, 3, 1), _card_for(1, 3, nuclei_image[None]))


def test_predictor_returns_probabilities_for_any_tile_size(nuclei_image):
    torch.manual_seed(2)
    model = build_unet(1, 3)
    predictor = make_predictor(model, _card_for(1, 3, nuclei_image[None]), device="cpu", batch_size=2)
    tiles = np.stack([nuclei_image[None, :75, :101], nuclei_image[None, 100:175, 200:301], nuclei_image[None, -75:, -101:]])
    probabilities = predictor(tiles.astype(np.float32))
    assert probabilities.shape == (3, 3, 75, 101) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    tiny = predictor(nuclei_image[None, None, :5, :7].astype(np.float32))
    assert tiny.shape == (1, 3, 5, 7)
    with pytest.raises(WorkbenchError, match=r"\(B, 1, h, w\)"):
        predictor(np.zeros((1, 2, 32, 32), np.float32))


def test_normalizer_maps_percentiles_and_round_trips(nuclei_image):
    image = nuclei_image[None]
    normalizer = PercentileNormalizer().fit([image])
    low, high = np.percentile(nuclei_image, [1, 99.8])
    out = normalizer(image)
    assert out.dtype == np.float32
    assert np.isclose(out.min(), (nuclei_image.min() - low) / (high - low), atol=1e-5)
    assert abs(np.mean(out <= 0) - 0.01) < 0.05 and abs(np.mean(out >= 1) - 0.002) < 0.01
    again = PercentileNormalizer.from_dict(json.loads(json.dumps(normalizer.to_dict())))
    np.testing.assert_array_equal(again(image), out)


def test_normalizer_fits_huge_images_from_a_subsample():
    rng = np.random.default_rng(0)
    huge = rng.integers(0, 4000, size=(2, 3000, 3000), dtype=np.uint16)
    normalizer = PercentileNormalizer(0.5, 99.5).fit([huge])
    np.testing.assert_allclose(normalizer.offsets, 20, atol=6)
    np.testing.assert_allclose(normalizer.offsets + normalizer.scales, 3980, atol=6)


def test_normalizer_rejects_constant_nan_and_mismatched_inputs(nuclei_image):
    with pytest.raises(WorkbenchError, match="channel 1 is constant"):
        PercentileNormalizer().fit([np.stack([nuclei_image, np.full_like(nuclei_image, 7)])])
    with pytest.raises(WorkbenchError, match="NaN"):
        PercentileNormalizer().fit([np.full((1, 8, 8), np.nan, np.float32)])
    with pytest.raises(WorkbenchError, match="same channel count"):
        PercentileNormalizer().fit([nuclei_image[None], np.stack([nuclei_image] * 2)])
    with pytest.raises(WorkbenchError, match="percentiles"):
        PercentileNormalizer(50, 10)
    fitted = PercentileNormalizer().fit([nuclei_image[None]])
    with pytest.raises(WorkbenchError, match="2 channel"):
        fitted(np.zeros((2, 4, 4)))
    with pytest.raises(WorkbenchError, match="not fitted"):
        PercentileNormalizer()(nuclei_image[None])
    # A sparse channel with equal percentiles but real signal falls back to min/max instead of failing.
    sparse = np.zeros((1, 100, 100), np.uint8)
    sparse[0, 0, 0] = 9
    assert PercentileNormalizer().fit([sparse]).scales[0] == 9

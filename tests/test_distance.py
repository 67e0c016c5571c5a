"""The distance output of instance U-Nets on the real nuclei image: its target, the seeds it gives,
and how it travels (training, saving, the starter's head, ONNX)."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from workbench.conventions import DISTANCE_OUTPUT
from workbench.deep import TrainSettings, build_unet, load_model, make_predictor, save_model, train
from workbench.deep._distance import distance_targets
from workbench.predict import _metrics as metrics
from workbench.predict import instances_from_probabilities
from workbench.store import labels_from_instances, training_targets


@pytest.fixture(scope="module")
def instance_targets(nuclei_labels):
    return training_targets(labels_from_instances(nuclei_labels), "instance")


def test_the_target_peaks_at_each_whole_nucleus_centre(nuclei_labels, instance_targets):
    crop = np.s_[64:256, 64:256]
    gt = nuclei_labels[crop]
    targets = instance_targets[crop].copy()
    edge = np.unique(np.concatenate([gt[0], gt[-1], gt[:, 0], gt[:, -1]]))
    inner = [i for i in np.unique(gt) if i and i not in edge]
    unpainted = inner[0]
    targets[ndi.binary_dilation(gt == unpainted, iterations=2)] = -1  # a nucleus nobody painted
    target, known = distance_targets(targets[None])
    target, known = target[0], known[0]
    assert target.dtype == np.float32 and 0 <= target.min() and target.max() == 1
    assert np.all(target[targets != 1] == 0)
    assert not known[targets == -1].any() and known[targets == 0].all()
    assert len(inner) >= 10 and len(edge) >= 5
    for nucleus in inner[1:]:  # every whole nucleus is known, and its deepest point is 1
        inside = gt == nucleus
        assert known[inside].all() and target[inside].max() == 1, nucleus
    for nucleus in edge[edge > 0]:  # a nucleus the patch edge cuts has no known distance
        assert not known[(gt == nucleus) & (targets > 0)].any(), nucleus


def _probabilities_from_truth(labels, boundary_strength):
    """Ideal class probabilities of `labels` whose boundary class is only `boundary_strength`
    sure, with the ideal distance map after them, smooth as a network predicts it (the exact
    transform's pixel ripples would be peaks of their own)."""
    from skimage.segmentation import find_boundaries

    inside = labels > 0
    boundary = find_boundaries(labels, mode="inner") & inside
    probabilities = np.zeros((4,) + labels.shape, np.float32)
    probabilities[0] = ~inside
    probabilities[2] = boundary * boundary_strength
    probabilities[1] = inside - probabilities[2]
    interior = inside & ~boundary
    distance = ndi.distance_transform_edt(interior)
    peaks = ndi.maximum(distance, labels, index=np.arange(labels.max() + 1))
    probabilities[3] = ndi.gaussian_filter(np.where(interior, distance / np.maximum(peaks[labels], 1), 0), 1.0)
    return probabilities


def test_distance_seeds_part_touching_nuclei_that_a_faint_boundary_merges(nuclei_labels):
    probabilities = _probabilities_from_truth(nuclei_labels, boundary_strength=0.2)
    with_distance = instances_from_probabilities(probabilities, min_size=16)
    boundaries_only = instances_from_probabilities(probabilities[:3], min_size=16)
    assert np.array_equal(with_distance, instances_from_probabilities(probabilities, seeds="distance", min_size=16))
    ap_distance = metrics.average_precision(nuclei_labels, with_distance)["ap50"]
    ap_boundaries = metrics.average_precision(nuclei_labels, boundaries_only)["ap50"]
    # The faint boundary joins the touching nuclei's seeds; the distance's peaks stay apart.
    assert ap_distance > 0.95 and ap_distance > ap_boundaries + 0.03, (ap_distance, ap_boundaries)
    # The boundary seeds of the same four outputs are what the first three give.
    assert np.array_equal(instances_from_probabilities(probabilities, seeds="boundaries", min_size=16),
                          boundaries_only)


def _two_bumps(dip, shape=(40, 80)):
    """One foreground blob whose distance map has two peaks (1.0 and 0.9) with the given
    lowest value between them."""
    x = np.arange(shape[-1], dtype=np.float32)
    profile = np.maximum(1.0 - np.abs(x - 25) / 15 * (1 - dip), 0.9 - np.abs(x - 55) / 15 * (0.9 - dip))
    profile = np.where((x >= 10) & (x <= 70), np.clip(profile, dip, None), 0)
    probabilities = np.zeros((4,) + shape, np.float32)
    inside = np.zeros(shape, bool)
    inside[..., 10:71] = True
    inside[..., :5, :] = inside[..., -5:, :] = False
    probabilities[0] = ~inside
    probabilities[1] = inside
    probabilities[3] = np.where(inside, profile, 0)
    return probabilities


@pytest.mark.parametrize("shape", [(40, 80), (12, 40, 80)], ids=["2-D", "3-D"])
@pytest.mark.parametrize("dip, objects", [(0.5, 2), (0.85, 1), (0.0, 2)])
def test_distance_seeds_are_peaks_deeper_than_the_prominence(shape, dip, objects):
    # The lower peak (0.9) dips to `dip` before the higher one: 0.4 or 0.9 deep parts, 0.05 does not
    # (the default prominence is 0.2); asking for more than the dip's depth keeps one object.
    probabilities = _two_bumps(dip, shape)
    assert instances_from_probabilities(probabilities, min_size=16).max() == objects
    assert instances_from_probabilities(probabilities, min_size=16, peak_prominence=0.95 - dip).max() == 1


def test_two_equal_tips_on_a_ridge_are_one_seed():
    probabilities = _two_bumps(0.5)
    ridge = probabilities[3]
    ridge[5:-5, 15:66] = 0.95
    ridge[18:22, 24:27] = ridge[18:22, 54:57] = 1.0  # two tips, equally high, joined at 0.95
    assert instances_from_probabilities(probabilities, min_size=16, peak_prominence=0.04).max() == 2
    assert instances_from_probabilities(probabilities, min_size=16).max() == 1


def test_the_default_candidates_are_what_a_model_that_chose_nothing_predicts_with(nuclei_labels):
    """A model with no held-out objects keeps no thresholds and predicts with the post-processing's
    defaults; each candidate list's first entry (its `default_score`) is that same setting."""
    from workbench.deep._validation import DISTANCE_CANDIDATES, THRESHOLD_CANDIDATES

    probabilities = _probabilities_from_truth(nuclei_labels[:256, :256], boundary_strength=0.6)
    # a halo of growing certainty around every nucleus, so the foreground threshold moves edges
    halo = ndi.gaussian_filter(1.0 - probabilities[0], 2.0)
    probabilities[0] = np.minimum(probabilities[0], 1.0 - 0.9 * halo)
    probabilities[1] = 1.0 - probabilities[0] - probabilities[2]
    for outputs, candidates in ((probabilities, DISTANCE_CANDIDATES), (probabilities[:3], THRESHOLD_CANDIDATES)):
        chose_nothing = instances_from_probabilities(outputs, min_size=16)
        assert np.array_equal(chose_nothing, instances_from_probabilities(outputs, min_size=16, **candidates[0]))
        others = [instances_from_probabilities(outputs, min_size=16, **options) for options in candidates[1:]]
        assert any(not np.array_equal(chose_nothing, other) for other in others)  # the choice matters here


def test_calibration_sees_the_distance_as_the_product_predicts_it(nuclei_image, instance_targets):
    """The held-out windows a model chooses its thresholds on, predicted with test-time
    augmentation: three class probabilities that sum to one and the distance beside them (a
    softmax over all four outputs once skewed both, and the pretrained starter chose on that)."""
    from workbench.deep import PercentileNormalizer
    from workbench.deep._validation import _region_logits, _window, hold_out
    from workbench.predict import predict_symmetries

    torch.manual_seed(0)
    model = build_unet(1, 3, distance=True).eval()
    samples = [(nuclei_image[None, :256, :256].astype(np.float32), instance_targets[:256, :256])]
    normalizer = PercentileNormalizer().fit([samples[0][0]])
    _, held = hold_out(samples, fraction=0.5, block=64, instance=True, rng=np.random.default_rng(0))
    regions = [region for region in held if region.object_mask is not None][:3]
    assert regions
    for window in _region_logits(model, samples, regions, normalizer, 32, torch.device("cpu"), tta=True):
        window = window.numpy()
        assert window.shape[0] == 4
        assert np.allclose(window[:3].sum(0), 1, atol=1e-5)
    # and the first window is exactly the product's TTA prediction of the same pixels
    wy0, wy1, wx0, wx1 = _window(regions[0], (256, 256))
    crop = normalizer(samples[0][0][:, wy0:wy1, wx0:wx1])

    def product(batch):
        from workbench.deep._models import output_probabilities, pad_to_multiple

        tensor = torch.from_numpy(np.ascontiguousarray(batch))
        with torch.inference_mode():
            logits = model(pad_to_multiple(tensor, 32))[..., :batch.shape[-2], :batch.shape[-1]]
        return output_probabilities(logits, 3).numpy()

    expected = predict_symmetries(product, crop[None], 4)[0]
    first = next(_region_logits(model, samples, regions[:1], normalizer, 32, torch.device("cpu"), tta=True)).numpy()
    assert np.allclose(first, expected, atol=1e-5)


def test_an_instance_unet_learns_the_distance_and_keeps_it(tmp_path, nuclei_image, nuclei_labels, instance_targets):
    targets = np.full(instance_targets.shape, -1, np.int64)
    targets[:, :256] = instance_targets[:, :256]
    settings = TrainSettings(mode="instance", minutes=None, epochs=6, steps_per_epoch=10, device="cpu", seed=0)
    result = train([(nuclei_image[None], targets)], settings)
    card = result.card
    assert card.distance and card.n_outputs == 4 and card.output_names[-1] == DISTANCE_OUTPUT
    assert card.instance_options["seeds"] == "distance"

    probabilities = make_predictor(result.model, card, device="cpu")(nuclei_image[None, None])[0]
    assert probabilities.shape == (4, 512, 512)
    assert np.allclose(probabilities[:3].sum(0), 1, atol=1e-5)
    distance = probabilities[3, :, 256:]
    # After 60 steps the map already rises towards the middle of the unseen half's nuclei.
    truth = _probabilities_from_truth(nuclei_labels[:, 256:], 1.0)[3]
    assert np.corrcoef(distance.ravel(), truth.ravel())[0, 1] > 0.6

    save_model(tmp_path / "model", result.model, card)
    model, loaded = load_model(tmp_path / "model")
    assert loaded.distance and loaded.n_outputs == 4
    again = make_predictor(model, loaded, device="cpu")(nuclei_image[None, None])[0]
    assert np.allclose(again, probabilities, atol=1e-5)

    without = train([(nuclei_image[None], targets)],
                          TrainSettings(mode="instance", minutes=None, epochs=1, steps_per_epoch=2, patch_size=64,
                                        batch_size=2, device="cpu", distance=False))
    assert not without.card.distance and without.card.n_outputs == 3
    assert without.card.instance_options.get("seeds") != "distance"


def test_the_starter_gives_its_class_outputs_and_the_distance_starts_afresh():
    from workbench.deep import init_from_model, starter_dir

    shipped, card = load_model(starter_dir())
    assert not card.distance  # the shipped starter predates the distance output
    model = build_unet(1, 3, weights="starter", distance=True)
    head, theirs = model.segmentation_head[0], shipped.segmentation_head[0]
    assert head.out_channels == 4
    assert torch.equal(head.weight[:3], theirs.weight) and torch.equal(head.bias[:3], theirs.bias)
    assert not torch.equal(head.weight[3], head.weight[2])
    report = init_from_model(build_unet(1, 3, distance=True), starter_dir())
    assert report["classes_kept"] and not report["reinitialised"]
    assert torch.equal(model.state_dict()["decoder.blocks.0.conv1.0.weight"],
                       shipped.state_dict()["decoder.blocks.0.conv1.0.weight"])


def test_a_model_without_the_distance_output_keeps_the_class_outputs_of_one_with_it(tmp_path, nuclei_image,
                                                                                  instance_targets):
    from workbench.deep import init_from_model

    # A 3-D project (or `distance=False`) fine-tuned from a folder whose model has the distance output.
    result = train([(nuclei_image[None], instance_targets)],
                   TrainSettings(mode="instance", minutes=None, epochs=1, steps_per_epoch=2, patch_size=64,
                                 batch_size=2, device="cpu", distance=True))
    save_model(tmp_path / "with", result.model, result.card)
    theirs = result.model.segmentation_head[0]
    model = build_unet(1, 3, distance=False)
    report = init_from_model(model, tmp_path / "with")
    head = model.segmentation_head[0]
    assert head.out_channels == 3 and report["classes_kept"] == ["segmentation_head.0.weight", "segmentation_head.0.bias"]
    assert torch.equal(head.weight, theirs.weight[:3]) and torch.equal(head.bias, theirs.bias[:3])
    # and the other way round, as from the shipped starter
    back = build_unet(1, 3, distance=True)
    assert init_from_model(back, tmp_path / "with")["classes_kept"] == []  # same outputs: loaded whole
    assert torch.equal(back.segmentation_head[0].weight, theirs.weight)


def test_onnx_and_torch_predict_the_same_distance(tmp_path, nuclei_image):
    from workbench.deep import ModelCard, PercentileNormalizer
    from workbench.exchange import make_onnx_predictor

    torch.manual_seed(0)
    model = build_unet(1, 3, distance=True).eval()
    normalizer = PercentileNormalizer().fit([nuclei_image[None]])
    card = ModelCard(in_channels=1, n_classes=3, mode="instance", distance=True,
                     classes=["background", "interior", "boundary"], normalisation=normalizer.to_dict())
    save_model(tmp_path, model, card)
    model, card = load_model(tmp_path)
    tile = nuclei_image[None, None, :96, :160]
    expected = make_predictor(model, card, device="cpu")(tile)
    got = make_onnx_predictor(model, card, tmp_path)(tile)
    assert got.shape == expected.shape == (1, 4, 96, 160)
    assert np.allclose(got, expected, atol=1e-4)
    assert np.allclose(got[0, :3].sum(0), 1, atol=1e-4) and 0 < got[0, 3].min() and got[0, 3].max() < 1


"""Training on partial labels of the real nuclei image: learning, stop, resume, determinism, errors."""

import threading

import numpy as np
import pytest
import torch
from skimage.segmentation import find_boundaries

from workbench.deep import Callback, CallbackList, HistoryCallback, TqdmProgress
from workbench.errors import WorkbenchError
from workbench.deep import load_model, make_predictor
from workbench.deep import TrainSettings, Trainer, masked_loss, train
from workbench.deep._validation import HINT_IMPROVING, HINT_PLATEAU, training_hint

LOG_KEYS = {"loss", "val_loss", "seconds", "epoch", "lr", "pixels_per_second"}


@pytest.fixture(scope="module")
def full_targets(nuclei_labels):
    """0 background, 1 interior, 2 inner boundary, for every pixel (built here, independent of labels.py)."""
    targets = (nuclei_labels > 0).astype(np.int64)
    targets[find_boundaries(nuclei_labels, mode="inner")] = 2
    return targets


@pytest.fixture(scope="module")
def left_quarter_targets(full_targets):
    """25 % of the left half annotated, as four 32-row bands; everything else -1 (not annotated)."""
    targets = np.full(full_targets.shape, -1, np.int64)
    for row in (0, 128, 256, 384):
        targets[row:row + 32, :256] = full_targets[row:row + 32, :256]
    return targets


def _tiny_settings(**overrides):
    values = dict(mode="instance", epochs=2, steps_per_epoch=2, minutes=None, patch_size=64, batch_size=2,
                  augment=0.5, device="cpu", seed=5)
    values.update(overrides)
    return TrainSettings(**values)


def test_short_training_learns_nuclei_on_the_unlabelled_right_half(nuclei_image, nuclei_labels,
                                                                   left_quarter_targets):
    history = HistoryCallback()
    # Bounded by steps, not minutes, so the outcome does not depend on how busy the machine is:
    # 120 steps of 8 x 128^2 patches take about 12 s on an idle 2-core CPU.
    settings = TrainSettings(mode="instance", minutes=None, epochs=12, steps_per_epoch=10, device="cpu", seed=0)
    result = train([(nuclei_image[None], left_quarter_targets)], settings, callbacks=[history])

    assert result.stop_reason == "epochs"
    assert LOG_KEYS <= set(history.epochs[0])
    losses = history.series("loss")
    assert len(losses) >= 3
    assert np.mean(losses[-2:]) < 0.8 * losses[0]
    assert result.labelled_pixels["total"] == 4 * 32 * 256
    assert result.labelled_pixels["validation"] > 0
    assert result.labelled_pixels["train"] + result.labelled_pixels["validation"] == result.labelled_pixels["total"]
    assert result.card.classes == ["background", "interior", "boundary"]
    # The kept model is the weight average at the last step, and its metrics are that step's.
    assert result.best_metrics["val_loss"] == history.epochs[-1]["val_loss"]
    assert result.best_metrics["steps"] == result.best_metrics["total_steps"] == 120
    assert 0.0 <= result.best_metrics["val_score"] <= 1.0
    assert result.best_metrics["hint"] in (HINT_IMPROVING, HINT_PLATEAU)

    probabilities = make_predictor(result.model, result.card, device="cpu")(nuclei_image[None, None])[0]
    foreground = (probabilities[1] + probabilities[2] > 0.5)[:, 256:]
    truth = nuclei_labels[:, 256:] > 0
    dice = 2 * (foreground & truth).sum() / (foreground.sum() + truth.sum())
    # Measured 0.915 with these settings (seeded, step-bounded); the bar leaves room for other CPUs and versions.
    assert dice > 0.85, dice


def test_time_budget_ends_training(nuclei_image, left_quarter_targets):
    result = train([(nuclei_image[None], left_quarter_targets)], _tiny_settings(epochs=10_000, minutes=0.05))
    assert result.stop_reason == "time"
    # It never stops before its budget; how far past it depends on the machine's load (a step under
    # way finishes, then a last validation), which a test must not assert.
    assert result.seconds >= 3.0
    assert result.best_metrics["stop_reason"] == "time"
    assert 1 <= result.best_metrics["steps"] < 10_000 * 2


def test_stop_event_ends_training_and_keeps_the_model_so_far(nuclei_image, left_quarter_targets):
    stop = threading.Event()

    class StopAfterFirstEpoch(Callback):
        def on_epoch_end(self, epoch, logs):
            stop.set()

    history = HistoryCallback()
    result = train([(nuclei_image[None], left_quarter_targets)], _tiny_settings(epochs=50), stop_event=stop,
                   callbacks=[StopAfterFirstEpoch(), history])
    assert result.stopped and result.stop_reason == "stopped"
    assert len(result.history) == 1
    assert history.result is result
    assert result.model.training is False


def test_trainer_stop_method_before_start_raises_clear_error(nuclei_image, left_quarter_targets):
    trainer = Trainer([(nuclei_image[None], left_quarter_targets)], _tiny_settings())
    trainer.stop()
    with pytest.raises(WorkbenchError, match="before the first step"):
        trainer.fit()


def test_resume_continues_from_previous_weights(tmp_path, nuclei_image, left_quarter_targets):
    sample = [(nuclei_image[None], left_quarter_targets)]
    first = train(sample, _tiny_settings())
    first.save(tmp_path / "v1")
    previous, _ = load_model(tmp_path / "v1")

    # A (nearly) zero learning rate: the continued model must still hold the saved weights.
    resumed = train(sample, _tiny_settings(lr=1e-12, epochs=1, steps_per_epoch=1, seed=9), init_from=tmp_path / "v1")
    fresh = train(sample, _tiny_settings(lr=1e-12, epochs=1, steps_per_epoch=1, seed=9))
    saved = dict(previous.named_parameters())
    for name, parameter in resumed.model.named_parameters():
        torch.testing.assert_close(parameter, saved[name], atol=1e-6, rtol=0)
    assert not all(torch.equal(p, saved[n]) for n, p in fresh.model.named_parameters())
    assert resumed.card.normalisation == first.card.normalisation
    assert resumed.card.metrics["resumed_from"] == str(tmp_path / "v1")


def test_resume_with_other_channels_or_classes_is_refused(tmp_path, nuclei_image, left_quarter_targets):
    train([(nuclei_image[None], left_quarter_targets)], _tiny_settings(epochs=1, steps_per_epoch=1)).save(tmp_path / "m")
    two_channels = np.stack([nuclei_image, nuclei_image[::-1]])
    with pytest.raises(WorkbenchError, match=r"1 channel\(s\) but the data has 2"):
        train([(two_channels, left_quarter_targets)], _tiny_settings(), init_from=tmp_path / "m")
    semantic = np.where(left_quarter_targets == 2, 3, left_quarter_targets)
    with pytest.raises(WorkbenchError, match="predicts 3 classes but the labels need 4"):
        train([(nuclei_image[None], semantic)], _tiny_settings(mode="semantic"), init_from=tmp_path / "m")


def test_same_seed_gives_identical_weights_on_cpu(nuclei_image, left_quarter_targets):
    sample = [(nuclei_image[None], left_quarter_targets)]
    first = train(sample, _tiny_settings(seed=3))
    second = train(sample, _tiny_settings(seed=3))
    other = train(sample, _tiny_settings(seed=4))
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert first.history[-1]["loss"] == second.history[-1]["loss"]
    assert not all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                      other.model.state_dict().values()))


def test_a_stopped_run_holds_exactly_the_model_of_a_run_of_that_many_steps(nuclei_image, left_quarter_targets):
    """Nothing depends on when a run will end, so how it ended (clock, stop, step bound) does not matter."""
    sample = [(nuclei_image[None], left_quarter_targets)]
    stop = threading.Event()

    class StopAfterFirstEpoch(Callback):
        def on_epoch_end(self, epoch, logs):
            stop.set()

    stopped = train(sample, _tiny_settings(epochs=50, minutes=10.0), stop_event=stop, callbacks=[StopAfterFirstEpoch()])
    bounded = train(sample, _tiny_settings(epochs=1))
    assert stopped.best_metrics["steps"] == bounded.best_metrics["steps"] == 2
    for (name, a), (_, b) in zip(stopped.model.state_dict().items(), bounded.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_whole_painted_objects_are_held_out_and_scored(nuclei_image, nuclei_labels):
    """A third of the left half's nuclei painted whole (as the annotator asks): some are held out and scored."""
    from workbench.datasets import simulate_partial_labels
    from workbench.store import training_targets

    labels = simulate_partial_labels(nuclei_labels, object_fraction=0.3, region=np.s_[:, :256], seed=0)
    targets = training_targets(labels, "instance")
    trainer = Trainer([(nuclei_image[None], targets)], _tiny_settings(epochs=3))
    result = trainer.fit()
    held = result.labelled_pixels["validation_objects"]
    assert held >= 2
    assert result.best_metrics["val_objects"] == held
    assert 0.0 <= result.best_metrics["val_object_iou"] <= 1.0
    assert result.best_metrics["val_score"] == result.best_metrics["val_object_iou"]
    # The thresholds the model chose on those objects travel with it, and never score worse than the defaults.
    from workbench.deep._validation import DISTANCE_CANDIDATES

    assert result.card.distance and result.card.instance_options in DISTANCE_CANDIDATES
    assert result.best_metrics["instance_options"] == result.card.instance_options
    calibration = trainer.calibrate()  # the same choice again, with its scores
    assert calibration.options == result.card.instance_options
    assert result.best_metrics["val_object_iou_calibrated"] == calibration.score >= calibration.default_score
    # The held-out objects and their background ring are not trained on.
    assert result.labelled_pixels["train"] + result.labelled_pixels["validation"] == int((targets >= 0).sum())


def test_training_hint_follows_the_held_out_score():
    def history(scores):
        return [{"steps": 10 * (i + 1), "val_score": score} for i, score in enumerate(scores)]

    assert training_hint(history([0.2, 0.4, 0.5, 0.6, 0.7, 0.8])) == ("improving", HINT_IMPROVING)
    assert training_hint(history([0.2, 0.7, 0.8, 0.8, 0.8, 0.8])) == ("plateau", HINT_PLATEAU)
    # Worse at the end than before: training longer will not fix it, painting where it errs may.
    assert training_hint(history([0.5, 0.8, 0.8, 0.7, 0.6, 0.6])) == ("plateau", HINT_PLATEAU)
    assert training_hint(history([0.3, 0.5])) == ("improving", HINT_IMPROVING)
    assert training_hint([{"steps": 10, "val_score": None}]) == (None, None)


def test_small_images_multichannel_and_semantic_classes(nuclei_image, full_targets):
    # Two 40 x 50 crops (smaller than a patch), two channels, three semantic classes.
    image = np.stack([nuclei_image, np.sqrt(nuclei_image.astype(np.float32))])
    samples = [(image[:, :40, :50], full_targets[:40, :50]), (image[:, 200:240, 300:350], full_targets[200:240, 300:350])]
    history = HistoryCallback()
    result = train(samples, _tiny_settings(mode="semantic", classes=("background", "nucleus", "edge"),
                                           val_fraction=0.0), callbacks=[history])
    assert result.card.in_channels == 2 and result.card.classes == ["background", "nucleus", "edge"]
    assert history.epochs[0]["val_loss"] is None
    assert 0.0 < history.progress[0][0] <= history.progress[-1][0] <= 1.0
    probabilities = make_predictor(result.model, result.card, device="cpu")(image[None, :, :40, :50])
    assert probabilities.shape == (1, 3, 40, 50)


def test_masked_loss_ignores_unannotated_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    targets = torch.randint(0, 3, (2, 8, 8))
    partial = targets.clone()
    partial[:, :4] = -1
    loss = masked_loss(logits, partial)
    loss.backward()
    assert torch.all(logits.grad[:, :, :4] == 0)
    changed = logits.detach().clone()
    changed[:, :, :4] += 100.0
    assert torch.isclose(masked_loss(changed, partial), loss)
    flat = masked_loss(logits.detach().permute(0, 2, 3, 1).reshape(-1, 3), partial.reshape(-1))
    assert torch.isclose(flat, loss.detach())
    assert masked_loss(logits, torch.full((2, 8, 8), -1)).item() == 0.0


@pytest.mark.parametrize(
    "samples, settings, message",
    [
        ([], TrainSettings(), "non-empty list"),
        ([(np.zeros((1, 8, 8)), np.zeros((8, 9), np.int64))], TrainSettings(), "targets shape"),
        ([(np.zeros((1, 8, 8)), np.full((8, 8), -1))], TrainSettings(), "no annotated pixels"),
        ([(np.zeros((1, 8, 8)), np.zeros((8, 8), np.float32))], TrainSettings(), "integers"),
        ([(np.zeros((2, 3, 8, 8)), np.zeros((8, 8), np.int64))], TrainSettings(), "CYX"),
        ([(np.ones((1, 8, 8)), np.zeros((8, 8), np.int64))], TrainSettings(batch_size=0), "batch_size"),
        ([(np.ones((1, 8, 8)), np.zeros((8, 8), np.int64))], TrainSettings(mode="panoptic"), "mode"),
        ([(np.ones((1, 8, 8)), np.zeros((8, 8), np.int64))], TrainSettings(minutes=-1), "minutes"),
        ([(np.ones((1, 8, 8)), np.full((8, 8), 5))], TrainSettings(mode="instance"), "class 5"),
    ],
)
def test_bad_inputs_are_explained(samples, settings, message):
    with pytest.raises(WorkbenchError, match=message):
        train(samples, settings)


def test_constant_image_is_refused_before_training(nuclei_labels):
    targets = (nuclei_labels > 0).astype(np.int64)
    with pytest.raises(WorkbenchError, match="constant"):
        train([(np.full((1, 512, 512), 3, np.uint16), targets)], _tiny_settings(mode="semantic"))


def test_callbacks_see_exceptions_and_cli_bar_runs(nuclei_image, left_quarter_targets):
    import io

    class Explode(Callback):
        def on_epoch_end(self, epoch, logs):
            raise RuntimeError("plot failed")

    history = HistoryCallback()
    with pytest.raises(RuntimeError, match="plot failed"):
        train([(nuclei_image[None], left_quarter_targets)], _tiny_settings(), callbacks=[history, Explode()])
    assert isinstance(history.exception, RuntimeError)

    stream = io.StringIO()
    train([(nuclei_image[None], left_quarter_targets)], _tiny_settings(epochs=1),
          callbacks=[TqdmProgress(file=stream, mininterval=0)])
    assert "100%" in stream.getvalue()
    with pytest.raises(TypeError, match="Callback"):
        CallbackList([print])



class _CodeModel(torch.nn.Module):
    """A stand-in network whose probabilities are written into the image as codes.

    Each pixel's (normalised) value is matched to the nearest code, and the code's row of
    `PROBABILITIES` is the output, so a test can say exactly how sure "the model" is where.
    """

    #: background; interior; the contact between two touching nuclei (a faint boundary); the outer edge.
    PROBABILITIES = np.array([[0.96, 0.02, 0.02], [0.02, 0.96, 0.02], [0.05, 0.73, 0.22], [0.30, 0.20, 0.50]],
                             np.float32)

    def __init__(self, codes):
        super().__init__()
        self.codes = torch.as_tensor(np.asarray(codes, np.float32))
        self.logits = torch.log(torch.from_numpy(self.PROBABILITIES))

    def forward(self, x):
        nearest = (x[:, :1, :, :, None] - self.codes).abs().argmin(-1)[:, 0]
        return self.logits[nearest].permute(0, 3, 1, 2)


def test_calibration_chooses_thresholds_that_split_touching_nuclei(nuclei_labels):
    """Default thresholds merge nuclei whose contact the model marks only faintly; the held-out
    objects show it, and calibration picks a boundary threshold that keeps them apart."""
    from skimage.segmentation import find_boundaries

    from workbench.deep import PercentileNormalizer, calibrate_instances
    from workbench.deep._validation import THRESHOLD_CANDIDATES, hold_out
    from workbench.store import labels_from_instances, training_targets

    gt = nuclei_labels[:, :256]
    contact = find_boundaries(gt, mode="inner") & (gt > 0)
    touching = contact & _touches_another_nucleus(gt)
    code = np.zeros(gt.shape, np.float32)
    code[gt > 0] = 1
    code[contact] = 3
    code[touching] = 2
    assert touching.sum() > 50  # the real image has touching nuclei
    targets = training_targets(labels_from_instances(gt), "instance")
    samples = [(code[None], targets)]
    normalizer = PercentileNormalizer(low=0.0, high=100.0).fit([code[None]])
    model = _CodeModel(normalizer(np.array([[[0, 1, 2, 3]]], np.float32))[0, 0])
    _, held = hold_out(samples, fraction=0.9, block=64, instance=True, rng=np.random.default_rng(0))
    calibration = calibrate_instances(model, samples, held, normalizer, 1, torch.device("cpu"), min_size=16)

    assert calibration.objects == len(held) >= 20
    assert calibration.options in THRESHOLD_CANDIDATES
    assert calibration.options["boundary_threshold"] < 0.22  # below the faint contact: the seeds separate
    assert calibration.score > calibration.default_score + 0.02


def _touches_another_nucleus(labels):
    """Pixels with a pixel of another nucleus among their 8 neighbours."""
    from scipy import ndimage as ndi

    others = np.where(labels > 0, labels, labels.max() + 1)
    largest = ndi.maximum_filter(labels, size=3, mode="nearest")
    smallest = ndi.minimum_filter(others, size=3, mode="nearest")
    return ((largest != labels) & (largest > 0)) | ((smallest != labels) & (smallest <= labels.max()))

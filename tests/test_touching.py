"""Touching pairs from painted objects, on partial labels of the real nuclei image."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from workbench.datasets import simulate_partial_labels
from workbench.deep import TrainSettings, train
from workbench.deep._touching import TouchingPairs
from workbench.deep._train import _crop
from workbench.errors import WorkbenchError
from workbench.normalize import PercentileNormalizer
from workbench.store import training_targets


@pytest.fixture(scope="module")
def painted(nuclei_image, nuclei_labels):
    image = nuclei_image[None, :256, :256].astype(np.float32)
    labels = simulate_partial_labels(nuclei_labels[:256, :256], object_fraction=0.3, seed=3)
    targets = training_targets(labels, "instance", boundary_width=2)
    return image, targets, PercentileNormalizer().fit([image])


def _patches(painted, pairs, count, seed=0):
    """`count` (before, after, pasted pixels) patches centred on painted objects, each with a copy pasted."""
    image, targets, normalizer = painted
    rng = np.random.default_rng(seed)
    points = np.flatnonzero(targets.ravel() >= 1)
    found = []
    for _ in range(20 * count):
        cy, cx = divmod(int(points[rng.integers(points.size)]), targets.shape[1])
        crop, crop_targets = _crop(image, targets, cy - 48, cx - 48, 96)
        crop = normalizer(crop)
        out_image, out_targets, pasted = pairs.paste(crop, crop_targets)
        if pasted is not None:
            found.append(((crop, crop_targets), (out_image, out_targets), pasted))
        if len(found) == count:
            break
    return found


def test_copies_are_the_painted_whole_objects(painted):
    image, targets, normalizer = painted
    pairs = TouchingPairs([(image, targets)], normalizer, probability=1.0, max_size=48,
                          rng=np.random.default_rng(0))
    painted_objects = ndi.label(targets >= 1)[1]
    assert 5 <= len(pairs.copies) <= painted_objects
    assert pairs.boundary_width == 2  # read off the labels, which used a band of 2
    for copy in pairs.copies:
        assert set(np.unique(copy.targets[copy.mask])) == {1, 2}
        assert (copy.targets[~copy.mask] == -1).all()
        assert copy.brighter.tolist() == [True]  # fluorescence nuclei are brighter than their surroundings


def test_a_copy_is_placed_against_a_painted_object_with_the_contact_as_boundary(painted):
    image, targets, normalizer = painted
    pairs = TouchingPairs([(image, targets)], normalizer, probability=1.0, max_size=48,
                          rng=np.random.default_rng(1))
    found = _patches(painted, pairs, 12)
    assert len(found) == 12
    more_objects = 0
    for (before_image, before), (after_image, after), pasted in found:
        assert set(np.unique(after)) <= {-1, 0, 1, 2}
        newly_labelled = (before == -1) & (after != -1)
        assert not ((after_image != before_image).any(axis=0) & ~pasted).any()
        # Nothing is labelled outside the pasted outline, and nothing painted is dropped.
        assert not (newly_labelled & ~pasted).any()
        assert ((after == -1) <= (before == -1)).all()
        # The copy touches an object that was painted before: its band lies next to old object pixels.
        outline = ndi.binary_dilation(pasted, iterations=2) & ~pasted
        assert ((before >= 1) & outline).any()
        # Old object pixels along the contact became boundary; so did the copy's own rim.
        contact = ndi.binary_dilation(pasted) & ~pasted & (before >= 1)
        assert (after[contact] == 2).all()
        more_objects += ndi.label(after == 1)[1] > ndi.label(before == 1)[1]
    # Interiors stay apart: pasting adds an object far more often than it only covers one.
    assert more_objects >= 9


def test_bright_copies_keep_the_brighter_value_where_they_overlap(painted):
    image, targets, normalizer = painted
    pairs = TouchingPairs([(image, targets)], normalizer, probability=1.0, max_size=48,
                          rng=np.random.default_rng(2))
    overlapping = 0
    for (before_image, before), (after_image, after), pasted in _patches(painted, pairs, 12, seed=5):
        over = pasted & (before >= 1)
        overlapping += bool(over.any())
        assert (after_image[:, over] >= before_image[:, over]).all()
    assert overlapping >= 3


def test_pasting_is_reproducible_and_off_leaves_patches_alone(painted):
    image, targets, normalizer = painted

    def run():
        pairs = TouchingPairs([(image, targets)], normalizer, probability=0.5, max_size=48,
                              rng=np.random.default_rng(7))
        return _patches(painted, pairs, 4, seed=9)

    first, second = run(), run()
    assert len(first) == len(second) == 4
    for (_, (a_image, a_targets), _), (_, (b_image, b_targets), _) in zip(first, second):
        np.testing.assert_array_equal(a_image, b_image)
        np.testing.assert_array_equal(a_targets, b_targets)
    off = TouchingPairs([(image, targets)], normalizer, probability=0.0, max_size=48, rng=np.random.default_rng(0))
    crop, crop_targets = _crop(image, targets, 0, 0, 64)
    assert not off
    assert off(crop, crop_targets)[1] is crop_targets


def test_training_with_touching_pairs_is_bit_identical_under_a_seed(painted):
    image, targets, _ = painted
    settings = dict(mode="instance", minutes=None, epochs=1, steps_per_epoch=3, patch_size=64, batch_size=2,
                    touching_pairs=1.0, val_fraction=0.0, device="cpu")
    first = train([(image, targets)], TrainSettings(**settings))
    second = train([(image, targets)], TrainSettings(**settings))
    plain = train([(image, targets)], TrainSettings(**{**settings, "touching_pairs": 0.0}))
    for a, b, c in zip(first.model.state_dict().values(), second.model.state_dict().values(),
                       plain.model.state_dict().values()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, c) for a, c in zip(first.model.state_dict().values(),
                                                      plain.model.state_dict().values()))
    assert first.card.settings["touching_pairs"] == 1.0


def test_touching_pairs_must_be_a_share():
    with pytest.raises(WorkbenchError, match="touching_pairs"):
        TrainSettings(touching_pairs=1.5).validate()

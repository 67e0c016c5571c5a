"""Augmentation keeps image and targets aligned, never invents background, works for any channel count."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.segmentation import find_boundaries

from workbench.deep import Augmenter
from workbench.errors import WorkbenchError


@pytest.fixture(scope="module")
def nuclei_targets(nuclei_labels):
    targets = (nuclei_labels > 0).astype(np.int64)
    targets[find_boundaries(nuclei_labels, mode="inner")] = 2
    return targets


def test_image_equal_to_its_label_map_stays_aligned(nuclei_targets):
    """Warp a picture of the targets with the targets: both must agree wherever the targets are kept."""
    augment = Augmenter(1.0, seed=0)
    crop = nuclei_targets[100:356, 100:356]
    picture = (crop[None] * 10.0).astype(np.float32)
    agreement, warped = [], 0
    for _ in range(25):
        image, targets = augment(picture, crop)
        assert image.shape == (1, 256, 256) and targets.shape == (256, 256)
        assert image.dtype == np.float32 and targets.dtype == np.int64
        kept = targets >= 0
        # Intensity jitter and blur move values by a few units; a class step is 10 units.
        agreement.append(np.mean(np.abs(image[0][kept] - 10.0 * targets[kept]) < 5.0))
        warped += int(not np.array_equal(targets, crop))
    assert warped >= 20
    assert np.mean(agreement) > 0.9
    assert min(agreement) > 0.75


def test_pixels_from_outside_the_image_become_ignore_never_background():
    augment = Augmenter(1.0, seed=3)
    picture = np.full((1, 128, 128), 10.0, np.float32)  # outside pixels are filled with 0
    background = np.zeros((128, 128), np.int64)         # fully annotated as background
    ignored_total = 0
    for _ in range(30):
        image, targets = augment(picture, background)
        assert set(np.unique(targets)) <= {-1, 0}
        ignored_total += int((targets == -1).sum())
        # Far from the ignore region (beyond blur and interpolation reach), dark pixels are outside pixels.
        distance_to_ignore = ndimage.distance_transform_edt(targets != -1)
        dark_background = (targets == 0) & (image[0] < 3.0) & (distance_to_ignore > 3)
        assert not dark_background.any()
    assert ignored_total > 0  # rotations, zoom-out and shear did bring outside pixels in


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_any_channel_count_and_unclipped_float_range(channels):
    rng = np.random.default_rng(channels)
    image = rng.normal(0.5, 2.0, size=(channels, 96, 80)).astype(np.float32)
    targets = rng.integers(-1, 3, size=(96, 80))
    augment = Augmenter(0.8, seed=1)
    for _ in range(5):
        out_image, out_targets = augment(image, targets)
        assert out_image.shape == (channels, 96, 80)
        assert out_targets.shape == (96, 80)
        assert np.isfinite(out_image).all()
        assert out_image.min() < -1.0 and out_image.max() > 2.0  # normalised data is not clipped to [0, 1]
        assert set(np.unique(out_targets)) <= {-1, 0, 1, 2}


def test_strength_zero_is_identity_and_seed_reproduces(nuclei_image, nuclei_targets):
    image = nuclei_image[None, :64, :64].astype(np.float32)
    targets = nuclei_targets[:64, :64]
    same_image, same_targets = Augmenter(0.0)(image, targets)
    np.testing.assert_array_equal(same_image, image)
    np.testing.assert_array_equal(same_targets, targets)
    first, second = Augmenter(0.7, seed=11), Augmenter(0.7, seed=11)
    for _ in range(4):
        a, b = first(image, targets), second(image, targets)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_many_classes_survive_the_mask_encoding():
    targets = np.tile(np.arange(300, dtype=np.int64), (8, 1))[:, :256].reshape(16, 128)
    image = np.zeros((1, 16, 128), np.float32)
    _, out = Augmenter(0.3, seed=0)(image, targets)
    assert out.max() <= 255 and out.min() >= -1


def test_bad_inputs_are_explained():
    with pytest.raises(WorkbenchError, match="strength"):
        Augmenter(1.5)
    with pytest.raises(WorkbenchError, match="same size"):
        Augmenter(0.5)(np.zeros((1, 8, 8), np.float32), np.zeros((9, 8), np.int64))
    with pytest.raises(WorkbenchError, match="CYX"):
        Augmenter(0.5)(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.int64))
    with pytest.raises(WorkbenchError, match=">= -1"):
        Augmenter(0.5)(np.zeros((1, 8, 8), np.float32), np.full((8, 8), -2))

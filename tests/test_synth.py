"""Hard synthetic nuclei: determinism, shapes, density, touching objects, variety, clutter, speed."""


import numpy as np
import pytest
from scipy import ndimage as ndi

from workbench.errors import WorkbenchError
from workbench.datasets import hard_nuclei


@pytest.fixture(scope="module")
def three_channel():
    return hard_nuclei((512, 512), seed=0, channels=3)


def touching_pairs(labels: np.ndarray) -> int:
    """Number of distinct pairs of different objects that share a 4-connected edge."""
    pairs = []
    for first, second in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        contact = (first > 0) & (second > 0) & (first != second)
        pairs.append(np.sort(np.stack([first[contact], second[contact]]), axis=0))
    return np.unique(np.concatenate(pairs, axis=1), axis=1).shape[1]


def test_deterministic_under_seed():
    first = hard_nuclei((128, 192), seed=5, channels=2)
    again = hard_nuclei((128, 192), seed=5, channels=2)
    other = hard_nuclei((128, 192), seed=6, channels=2)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_shapes_and_dtypes(three_channel):
    image, labels = hard_nuclei((256, 256), seed=0)
    assert image.shape == (256, 256) and image.dtype == np.uint16
    assert labels.shape == (256, 256) and labels.dtype == np.int32
    image3, labels3 = three_channel
    assert image3.shape == (3, 512, 512) and image3.dtype == np.uint16 and labels3.dtype == np.int32
    np.testing.assert_array_equal(np.unique(labels3), np.arange(labels3.max() + 1))  # ids 1..n, contiguous


def test_non_square_shape():
    image, labels = hard_nuclei((300, 700), seed=2, channels=3)
    assert image.shape == (3, 300, 700) and labels.shape == (300, 700)
    assert labels[:, 600:].max() > 0 and labels[250:].max() > 0, "nuclei fill the whole field"


def test_object_count_scales_with_area():
    small = np.mean([hard_nuclei((256, 512), seed=seed)[1].max() for seed in range(2)])
    large = np.mean([hard_nuclei((512, 1024), seed=seed)[1].max() for seed in range(2)])
    assert 100 < small and 3.3 < large / small < 4.7


def test_dense_touching_nuclei(three_channel):
    _, labels = three_channel
    assert 0.15 < np.mean(labels > 0) < 0.45
    assert touching_pairs(labels) > 0.4 * labels.max()


def test_every_label_is_one_connected_region(three_channel):
    _, labels = three_channel
    boxes = ndi.find_objects(labels)
    pieces = [ndi.label(labels[box] == index + 1)[1] for index, box in enumerate(boxes)]
    assert pieces == [1] * labels.max()
    assert np.bincount(labels.ravel())[1:].min() >= 12


def test_nuclei_vary_in_size_shape_and_brightness(three_channel):
    image, labels = three_channel
    ids = np.arange(1, labels.max() + 1)
    areas = np.bincount(labels.ravel())[1:]
    assert areas.std() / areas.mean() > 0.4 and areas.max() > 5 * np.percentile(areas, 5)
    means = np.asarray(ndi.mean(image[0].astype(float), labels, ids))
    background = np.median(image[0][ndi.distance_transform_edt(labels == 0) > 5])
    signal = means - background
    assert np.percentile(signal, 90) > 3 * np.percentile(signal, 20)
    # Dim nuclei: a share of objects barely above the background, with noise and texture that large.
    background_noise = image[0][ndi.distance_transform_edt(labels == 0) > 5].std()
    assert np.mean(signal < 3 * background_noise) > 0.08
    # Elongated, not only round: ratio of principal axes of the pixel cloud.
    elongated = 0
    for index, box in enumerate(ndi.find_objects(labels)[:100]):
        ys, xs = np.nonzero(labels[box] == index + 1)
        eigen = np.linalg.eigvalsh(np.cov(np.stack([ys, xs])))
        elongated += eigen[1] > 1.8 * eigen[0]
    assert elongated > 10


def test_clutter_is_bright_and_unlabelled():
    clean_image, clean_labels = hard_nuclei((512, 512), seed=4, clutter=0.0)
    image, labels = hard_nuclei((512, 512), seed=4, clutter=1.0)
    np.testing.assert_array_equal(labels, clean_labels)  # clutter changes pixels, never labels
    far_from_nuclei = ndi.distance_transform_edt(labels == 0) > 4
    typical_nucleus = np.median(image[labels > 0])
    assert image[far_from_nuclei].max() > typical_nucleus, "debris as bright as nuclei lies outside labels"
    assert image[far_from_nuclei].max() > clean_image[far_from_nuclei].max()


def test_uneven_background():
    image, labels = hard_nuclei((512, 512), seed=1)
    background = np.where(ndi.distance_transform_edt(labels == 0) > 5, image.astype(float), np.nan)
    blocks = [block for row in np.array_split(background, 4) for block in np.array_split(row, 4, axis=1)]
    block_medians = [np.nanmedian(block) for block in blocks]
    assert max(block_medians) - min(block_medians) > 5


def test_extra_channels(three_channel):
    image, labels = three_channel
    distance = ndi.distance_transform_edt(labels == 0)
    near, far = (distance > 0) & (distance < 6), distance > 25
    assert image[1][near].mean() > 1.2 * image[1][far].mean(), "channel 1 is a halo around nuclei"
    assert image[2][labels > 0].mean() == pytest.approx(image[2][labels == 0].mean(), rel=0.1)


def test_large_non_square_image():
    # Speed is measured in benchmarks/, never asserted here.
    image, labels = hard_nuclei((2048, 1536), seed=0)
    assert image.shape == labels.shape == (2048, 1536)
    assert labels.max() > 3_000


def test_invalid_arguments_raise_readable_errors():
    with pytest.raises(WorkbenchError, match="shape"):
        hard_nuclei((8, 512))
    with pytest.raises(ValueError, match="channels"):
        hard_nuclei((64, 64), channels=0)
    with pytest.raises(WorkbenchError, match="size_range"):
        hard_nuclei((64, 64), size_range=(10, 5))
    with pytest.raises(WorkbenchError, match="density"):
        hard_nuclei((64, 64), density=2.0)

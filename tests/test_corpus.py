"""The pretraining corpus: every style, channel counts, determinism, and ground truth that matches the image."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from workbench.datasets import CORPUS_STYLES, SynthError, corpus_image, corpus_samples
from workbench.deep import starter_input

SHAPE = (160, 192)


def _regions_are_single(labels: np.ndarray) -> bool:
    """Every id is one 4-connected region."""
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is not None and ndi.label(labels[box] == index)[1] != 1:
            return False
    return True


@pytest.mark.parametrize("style", list(CORPUS_STYLES))
def test_each_style_gives_its_channel_counts_and_clean_instance_labels(style):
    for channels in CORPUS_STYLES[style]:
        image, labels = corpus_image(SHAPE, seed=5, style=style, channels=channels)
        assert image.ndim == 3 and image.shape == (channels, *SHAPE)
        assert image.dtype == (np.uint16 if style in ("fluorescence", "cytoplasm", "membrane") else np.uint8)
        assert labels.shape == SHAPE and labels.dtype == np.int32
        ids = np.unique(labels)
        assert ids[0] == 0 and labels.max() >= 1
        assert np.array_equal(ids[1:], np.arange(1, labels.max() + 1)), "ids are 1..n"
        assert _regions_are_single(labels)
        assert image.std() > 0


def test_same_seed_same_sample_other_seed_other_sample():
    for style in CORPUS_STYLES:
        first, second = corpus_image(SHAPE, seed=11, style=style), corpus_image(SHAPE, seed=11, style=style)
        assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
        other = corpus_image(SHAPE, seed=12, style=style)
        assert other[0].shape != first[0].shape or not np.array_equal(other[0], first[0])
    pool = corpus_samples(12, (64, 64), seed=3)
    again = corpus_samples(12, (64, 64), seed=3)
    assert [s.seed for s in pool] == [s.seed for s in again]
    assert all(np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels) for a, b in zip(pool, again))
    # Balanced: 12 images over 6 styles, two of each; each sample redraws from its own seed.
    assert sorted(s.style for s in pool) == sorted(list(CORPUS_STYLES) * 2)
    redrawn = corpus_image((64, 64), seed=pool[0].seed, style=pool[0].style)
    assert np.array_equal(redrawn[0], pool[0].image)


def test_the_corpus_covers_one_to_three_channels_and_every_style():
    pool = corpus_samples(36, (64, 64), seed=0)
    assert {s.style for s in pool} == set(CORPUS_STYLES)
    assert {s.image.shape[0] for s in pool} == {1, 2, 3}


def _object_contrast(image: np.ndarray, labels: np.ndarray) -> float:
    """(median inside objects - median of the background around them) / its spread, on the starter's input."""
    gray = starter_input(image)[0]
    objects = labels > 0
    ring = ndi.binary_dilation(objects, iterations=8) & ~ndi.binary_dilation(objects, iterations=2)
    inside, outside = gray[objects], gray[ring]
    spread = np.subtract(*np.percentile(outside, [84, 16])) / 2 + 1e-6
    return float((np.median(inside) - np.median(outside)) / spread)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ground_truth_matches_what_each_style_draws(seed):
    """Objects are where the image says: bright in fluorescence, dark in transmitted light, outlined by
    membranes, edged by a halo in phase contrast."""
    image, labels = corpus_image((192, 192), seed=seed, style="fluorescence", channels=1)
    assert _object_contrast(image, labels) > 1.0
    image, labels = corpus_image((192, 192), seed=seed, style="cytoplasm", channels=1)
    assert _object_contrast(image, labels) > 1.0
    for style in ("brightfield", "histology"):
        image, labels = corpus_image((192, 192), seed=seed, style=style)
        assert _object_contrast(image, labels) < -1.0, style
    # Membranes: the cells' outlines are brighter than their insides.
    image, labels = corpus_image((192, 192), seed=seed, style="membrane", channels=1)
    gray = starter_input(image)[0]
    interior = ndi.binary_erosion(labels > 0, iterations=3)
    outline = (ndi.morphological_gradient(labels, size=3) > 0) & ndi.binary_dilation(labels > 0)
    assert np.median(gray[outline]) > np.median(gray[interior]) + 0.1
    # Phase contrast: the image changes most at the objects' edges (the halo), not in the background.
    image, labels = corpus_image((192, 192), seed=seed, style="phase")
    gradient = ndi.gaussian_gradient_magnitude(starter_input(image)[0], 1.5)
    edges = ndi.morphological_gradient((labels > 0).astype(np.uint8), size=5) > 0
    far = ndi.binary_dilation(labels > 0, iterations=12) == 0
    assert gradient[edges].mean() > 2 * gradient[far].mean()


def test_touching_objects_are_separate_ids():
    touching = 0
    for seed in range(4):
        _, labels = corpus_image((128, 128), seed=seed, style="membrane")
        touching += int(((labels[:, :-1] != labels[:, 1:]) & (labels[:, :-1] > 0) & (labels[:, 1:] > 0)).sum())
    assert touching > 50


@pytest.mark.parametrize("kwargs, message", [
    ({"style": "confocal"}, "unknown corpus style"),
    ({"style": "histology", "channels": 1}, "gives 3 channel"),
    ({"shape": (20, 64)}, "`shape` must be"),
    ({"seed": -1}, "`seed` must be"),
])
def test_bad_arguments_name_the_problem(kwargs, message):
    with pytest.raises(SynthError, match=message):
        corpus_image(**{"shape": (64, 64), **kwargs})
    with pytest.raises(SynthError, match="unknown corpus style"):
        corpus_samples(2, styles=["fluorescence", "sketch"])

"""A varied generated corpus of microscopy-like images with instance ground truth, for pretraining.

Each image is drawn in one of six styles, with its own random density, size, shape, brightness,
blur, noise, illumination and debris:

``fluorescence``
    Nuclei bright on dark, from `hard_nuclei` with randomised difficulty: touching and overlapping,
    dim ones, chromatin texture, out-of-focus ghosts, specks and fibres; 1-3 channels (a
    cytoplasm-like halo, a clutter channel). Objects: the nuclei.
``cytoplasm``
    Whole cells filled with a textured cytoplasm stain, the nucleus a darker hole, often
    confluent; a second channel, when asked, is a nuclear stain. Objects: the cells.
``membrane``
    A tissue-like tessellation of touching cells outlined by a bright membrane stain, a few gaps;
    a second channel, when asked, is a nuclear stain. Objects: the cells.
``brightfield``
    Absorbing objects, dark on a bright background (Beer-Lambert), gray or tinted RGB, with dark
    specks, fibres and out-of-focus blots. Objects: the stained nuclei or cells.
``phase``
    Phase-contrast-like cells: dark (or, less often, bright) bodies with the opposite halo
    around their edge, on a gray background. Objects: the cells.
``histology``
    H&E-like RGB tissue: hematoxylin nuclei (dense, elongated, touching) over eosin stroma with
    fibres, white gaps and unlabelled red blood cells. Objects: the nuclei.

`corpus_image` draws one image, `corpus_samples` a list of them; both are deterministic under a
seed. Images are channel-first ``CYX`` in the integer type a camera or scanner would give
(uint16 fluorescence, uint8 transmitted light). A 256 x 256 image takes a few tens of
milliseconds, so a pretraining run can draw a fresh pool of images as often as it likes.

Examples
--------
>>> image, labels = corpus_image((128, 128), seed=3, style="histology")
>>> image.shape, image.dtype, labels.shape, labels.dtype
((3, 128, 128), dtype('uint8'), (128, 128), dtype('int32'))
>>> [sample.style for sample in corpus_samples(3, (64, 64), seed=0, styles=("phase", "membrane"))]
['membrane', 'phase', 'phase']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
from scipy import ndimage as ndi

from workbench.datasets._synth import (
    SynthError,
    _clutter,
    _illumination,
    _object_geometry,
    _texture,
    hard_nuclei,
)

__all__ = ["CORPUS_STYLES", "CorpusSample", "corpus_image", "corpus_samples"]

#: Styles and the channel counts each one can give (the first is not preferred: channels are drawn).
CORPUS_STYLES: dict[str, tuple[int, ...]] = {
    "fluorescence": (1, 2, 3),
    "cytoplasm": (1, 2),
    "membrane": (1, 2),
    "brightfield": (1, 3),
    "phase": (1,),
    "histology": (3,),
}
_MIN_AREA = 12  # pixels; label fragments smaller than this become background
# Optical densities of hematoxylin and eosin per RGB channel (Ruifrok & Johnston 2001).
_HEMATOXYLIN = np.array([0.650, 0.704, 0.286], np.float32)
_EOSIN = np.array([0.072, 0.990, 0.105], np.float32)
# Tints of transmitted-light stains (optical density per RGB channel): hematoxylin, DAB, methylene blue, gray.
_TINTS = np.array([[0.650, 0.704, 0.286], [0.268, 0.570, 0.776], [0.80, 0.45, 0.20], [0.58, 0.58, 0.58]],
                  np.float32)


@dataclass(frozen=True)
class CorpusSample:
    """One generated image with its ground truth.

    Attributes
    ----------
    image : numpy.ndarray
        ``CYX`` (uint16 for fluorescence styles, uint8 for transmitted light).
    labels : numpy.ndarray of int32, shape (Y, X)
        Instance ground truth, ids 1..n, 0 = background; each id one 4-connected region.
    style : str
        A key of `CORPUS_STYLES`.
    seed : int
        The seed that redraws exactly this sample with `corpus_image`.
    """

    image: np.ndarray
    labels: np.ndarray
    style: str
    seed: int


# ----------------------------------------------------------------------------- helpers


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _size_range(rng: np.random.Generator, low: float, high: float, shape: tuple[int, int]) -> tuple[float, float]:
    """A random (min, max) radius range inside [low, high], capped by the image size."""
    cap = max(3.0, min(shape) / 6)
    smallest = min(_log_uniform(rng, low, high), cap)
    return smallest, min(max(smallest * rng.uniform(1.1, 2.2), smallest), cap * 1.5)


def _geometry(shape, rng, *, density, radius, aspect, irregularity):
    return _object_geometry(shape, rng, density, radius, (1.0, aspect), irregularity)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return ndi.gaussian_filter(image, sigma) if sigma > 0.05 else image


def _smooth_noise(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field, zero mean, about unit standard deviation, features of about `scale` pixels."""
    step = max(1, int(scale // 2))
    small = (-(-shape[0] // step) + 2, -(-shape[1] // step) + 2)
    coarse = ndi.gaussian_filter(rng.standard_normal(small, dtype=np.float32), 1.0)
    field = ndi.zoom(coarse, step, order=1)[: shape[0], : shape[1]]
    return (field - field.mean()) / (field.std() + 1e-6)


def _counts(signal: np.ndarray, photons: float, read_noise: float, rng: np.random.Generator) -> np.ndarray:
    """Fluorescence camera: `signal` (about 0-1) times `photons`, Poisson + read noise, offset, as uint16."""
    expected = np.maximum(signal, 0) * photons
    values = rng.poisson(expected).astype(np.float32) * 2.0 + 100.0
    values += rng.normal(0, read_noise, signal.shape).astype(np.float32)
    return np.clip(np.round(values), 0, 65535).astype(np.uint16)


def _transmitted(intensity: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Transmitted light (0-1 of the lamp) with Gaussian noise, as uint8."""
    values = intensity * 235.0 + rng.normal(0, noise, intensity.shape).astype(np.float32)
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def _tidy(labels: np.ndarray) -> np.ndarray:
    """Split labels into 4-connected regions, drop fragments under `_MIN_AREA`, renumber 1..n."""
    from skimage.measure import label

    regions = label(labels, connectivity=1, background=0)
    areas = np.bincount(regions.ravel())
    keep = areas >= _MIN_AREA
    keep[0] = False
    ids = np.zeros(areas.size, np.int32)
    ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return ids[regions]


# ----------------------------------------------------------------------------- styles


def _fluorescence(shape, rng, channels):
    size = _size_range(rng, 2.5, 16.0, shape)
    image, labels = hard_nuclei(
        shape, seed=int(rng.integers(2**31)), channels=channels,
        density=_log_uniform(rng, 0.03, 0.6), size_range=size,
        aspect_range=(1.0, rng.uniform(1.05, 2.5)), irregularity=rng.uniform(0.0, 0.22),
        dim_fraction=rng.uniform(0.0, 0.3), clutter=rng.uniform(0.0, 2.0), blur_sigma=rng.uniform(0.3, 2.2),
        photons=_log_uniform(rng, 15.0, 1500.0), read_noise=rng.uniform(1.0, 10.0),
    )
    return (image[None] if image.ndim == 2 else image), labels


def _cells(shape, rng, confluent: bool):
    """Cell-sized objects: large, irregular, often touching."""
    size = _size_range(rng, 7.0, 28.0, shape)
    density = rng.uniform(0.45, 0.9) if confluent else _log_uniform(rng, 0.08, 0.45)
    return _geometry(shape, rng, density=density, radius=size, aspect=rng.uniform(1.05, 2.2),
                     irregularity=rng.uniform(0.05, 0.3))


def _cytoplasm(shape, rng, channels):
    labels, rho, _ = _cells(shape, rng, confluent=rng.random() < 0.5)
    inside = labels > 0
    n = int(labels.max()) + 1
    level = rng.lognormal(0, 0.35, n).astype(np.float32)
    level[0] = 0
    nucleus_size = rng.uniform(0.25, 0.55)
    nucleus = inside & (rho < nucleus_size * rng.uniform(0.8, 1.2, n).astype(np.float32)[labels])
    grain = np.maximum(1 + rng.uniform(0.1, 0.5) * _smooth_noise(shape, rng.uniform(1.5, 5), rng), 0.1)
    rim = 1 + rng.uniform(-0.3, 0.6) * rho**2  # brighter (or dimmer) towards the membrane
    signal = level[labels] * grain * rim * np.where(nucleus, rng.uniform(0.15, 0.7), 1.0)
    background = rng.uniform(0.02, 0.2) * (1 + 0.5 * _smooth_noise(shape, 40, rng))
    debris = _clutter(shape, rng, rng.uniform(0, 1.5), 1.0)
    illumination = _illumination(shape, rng)
    sigma = rng.uniform(0.4, 2.0)
    photons = _log_uniform(rng, 20.0, 800.0)
    read_noise = rng.uniform(1.0, 8.0)
    planes = [_counts((_blur(signal + debris, sigma) + background) * illumination, photons, read_noise, rng)]
    if channels == 2:
        stain = nucleus * level[labels] * np.maximum(1 + 0.3 * _texture(shape, rng), 0.2)
        planes.append(_counts((_blur(stain, sigma) + 0.05) * illumination, photons, read_noise, rng))
    return np.stack(planes), labels


def _membrane(shape, rng, channels):
    height, width = shape
    radius = _log_uniform(rng, 6.0, min(30.0, min(shape) / 5))
    count = max(2, int(height * width / (np.pi * radius**2)))
    seeds = rng.uniform((0, 0), (height, width), size=(count, 2))
    # Nearest seed of every pixel of a smoothly warped grid: irregular, touching, convex-ish cells.
    warp = radius * rng.uniform(0.0, 0.35)
    dy, dx = (warp * _smooth_noise(shape, 3 * radius, rng) for _ in range(2))
    grid = np.zeros(shape, bool)
    rows, cols = np.clip(seeds[:, 0].astype(int), 0, height - 1), np.clip(seeds[:, 1].astype(int), 0, width - 1)
    grid[rows, cols] = True
    ids = np.zeros(shape, np.int32)
    ids[rows, cols] = np.arange(1, count + 1)
    distance, (near_y, near_x) = ndi.distance_transform_edt(~grid, return_indices=True)
    nearest = ids[near_y, near_x]
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    sy = np.clip(np.round(yy + dy), 0, height - 1).astype(np.int64)
    sx = np.clip(np.round(xx + dx), 0, width - 1).astype(np.int64)
    labels = nearest[sy, sx]
    gap = distance[sy, sx] > radius * rng.uniform(1.1, 2.0)  # spaces between cells
    dropped = np.zeros(count + 1, bool)
    dropped[1:] = rng.random(count) < rng.uniform(0.0, 0.25)  # missing cells: holes in the tissue
    labels = np.where(gap | dropped[labels], 0, labels).astype(np.int32)
    labels = _tidy(labels)
    # The membrane: where a pixel's neighbour belongs to another cell (or to a gap beside a cell).
    edge = np.zeros(shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, :-1] != labels[:, 1:]
    edge &= ndi.binary_dilation(labels > 0)
    thickness = rng.uniform(0.0, 1.5)
    membrane = ndi.gaussian_filter(edge.astype(np.float32), max(thickness, 0.5)) * (1 + thickness)
    membrane *= np.maximum(1 + 0.4 * _smooth_noise(shape, rng.uniform(2, 8), rng), 0.1)
    interior = rng.uniform(0.0, 0.25) * (labels > 0)
    background = rng.uniform(0.02, 0.15)
    illumination = _illumination(shape, rng)
    sigma = rng.uniform(0.4, 1.8)
    photons = _log_uniform(rng, 20.0, 800.0)
    read_noise = rng.uniform(1.0, 8.0)
    debris = _clutter(shape, rng, rng.uniform(0, 1.0), 1.0)
    planes = [_counts((_blur(membrane + interior + debris, sigma) + background) * illumination, photons,
                      read_noise, rng)]
    if channels == 2:  # a nucleus at each cell's centre of mass
        index = np.arange(1, int(labels.max()) + 1)
        spots = np.zeros(shape, bool)
        if index.size:
            centres = np.round(np.asarray(ndi.center_of_mass(labels > 0, labels, index))).astype(int)
            spots[np.clip(centres[:, 0], 0, height - 1), np.clip(centres[:, 1], 0, width - 1)] = True
        nuclear = ((ndi.distance_transform_edt(~spots) < 0.4 * radius) & (labels > 0)).astype(np.float32)
        planes.append(_counts((_blur(nuclear, sigma) + background) * illumination, photons, read_noise, rng))
    return np.stack(planes), labels


def _absorbers(shape, rng):
    """Objects for transmitted light: nuclei-sized or cell-sized, any density."""
    if rng.random() < 0.6:
        return _geometry(shape, rng, density=_log_uniform(rng, 0.04, 0.55), radius=_size_range(rng, 3.0, 16.0, shape),
                         aspect=rng.uniform(1.05, 2.5), irregularity=rng.uniform(0.0, 0.22))
    return _cells(shape, rng, confluent=rng.random() < 0.3)


def _brightfield(shape, rng, channels):
    labels, rho, _ = _absorbers(shape, rng)
    n = int(labels.max()) + 1
    strength = rng.uniform(0.25, 1.6)
    level = strength * rng.lognormal(0, 0.3, n).astype(np.float32)
    level[0] = 0
    pale = rng.random(n) < rng.uniform(0.0, 0.2)  # weakly stained objects
    level[pale] *= 0.3
    texture = np.maximum(1 + rng.uniform(0.1, 0.5) * _texture(shape, rng), 0.1)
    dome = 1 - rng.uniform(0.0, 0.5) * rho**2
    density = level[labels] * texture * dome
    density += 0.08 * strength * np.maximum(_smooth_noise(shape, 30, rng), 0)  # uneven stain of the background
    density += strength * _clutter(shape, rng, rng.uniform(0, 2.0), 1.0)  # dark specks and fibres
    blots = np.maximum(_smooth_noise(shape, 25, rng) - 1.8, 0)  # out-of-focus blots (unlabelled)
    density = _blur(density, rng.uniform(0.4, 2.0)) + rng.uniform(0, 0.8) * strength * blots
    lamp = _illumination(shape, rng) * rng.uniform(0.75, 1.0)
    noise = rng.uniform(0.5, 6.0)
    if channels == 1:
        return _transmitted(lamp * np.exp(-density), noise, rng)[None], labels
    tint = _TINTS[rng.integers(len(_TINTS))] * rng.uniform(0.8, 1.2, 3).astype(np.float32)
    planes = [_transmitted(lamp * np.exp(-density * tint[c]), noise, rng) for c in range(3)]
    return np.stack(planes), labels


def _phase(shape, rng, channels):
    labels, rho, _ = _absorbers(shape, rng)
    n = int(labels.max()) + 1
    thickness = rng.lognormal(0, 0.3, n).astype(np.float32)
    thickness[0] = 0
    body = thickness[labels] * (1 - rng.uniform(0.2, 0.8) * rho**2)
    body *= np.maximum(1 + rng.uniform(0.0, 0.3) * _texture(shape, rng), 0.2)
    body = _blur(body, 1.0)
    halo = rng.uniform(1.5, 5.0)
    sign = 1.0 if rng.random() < 0.8 else -1.0  # mostly dark bodies with a bright halo
    contrast = rng.uniform(0.15, 0.45)
    image = 0.55 + sign * contrast * (ndi.gaussian_filter(body, halo) - body) \
        - sign * rng.uniform(0.0, 0.25) * body
    image += 0.3 * _clutter(shape, rng, rng.uniform(0, 1.0), 1.0) * sign * -1
    image = _blur(image, rng.uniform(0.3, 1.2)) * _illumination(shape, rng)
    return _transmitted(np.clip(image, 0.02, 1.1), rng.uniform(1.0, 7.0), rng)[None], labels


def _histology(shape, rng, channels):
    labels, rho, _ = _geometry(shape, rng, density=_log_uniform(rng, 0.08, 0.55),
                               radius=_size_range(rng, 3.0, 12.0, shape), aspect=rng.uniform(1.2, 3.2),
                               irregularity=rng.uniform(0.03, 0.25))
    n = int(labels.max()) + 1
    hema = rng.uniform(0.5, 1.6) * rng.lognormal(0, 0.25, n).astype(np.float32)
    hema[0] = 0
    chromatin = np.maximum(1 + rng.uniform(0.2, 0.6) * _texture(shape, rng), 0.1)
    h_density = hema[labels] * chromatin * (1 - rng.uniform(0, 0.4) * rho**2)
    stroma = np.clip(0.55 + 0.35 * _smooth_noise(shape, rng.uniform(10, 40), rng), 0, None)
    fibres = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (rng.uniform(0.5, 1.5), 4.0))
    if rng.random() < 0.5:
        fibres = fibres.T if shape[0] == shape[1] else fibres
    stroma *= np.maximum(1 + 1.5 * fibres / (fibres.std() + 1e-6) * rng.uniform(0.1, 0.4), 0.05)
    lumen = _smooth_noise(shape, rng.uniform(20, 60), rng) > rng.uniform(1.0, 2.5)  # white gaps in the tissue
    stroma[lumen & (labels == 0)] *= 0.05
    e_density = rng.uniform(0.3, 1.0) * stroma
    # Red blood cells: small eosin-dark discs, not labelled.
    cells = np.zeros(shape, np.float32)
    n_rbc = rng.poisson(rng.uniform(0, 3) * shape[0] * shape[1] / 10_000)
    cells[rng.integers(0, shape[0], n_rbc), rng.integers(0, shape[1], n_rbc)] = 1
    cells = ndi.gaussian_filter(cells, 2.0) * 2 * np.pi * 4 * rng.uniform(0.8, 1.6)
    e_density = e_density + np.where(labels == 0, cells, 0)
    sigma = rng.uniform(0.4, 1.6)
    h_density, e_density = _blur(h_density, sigma), _blur(e_density, sigma)
    lamp = _illumination(shape, rng) * 0.3 + 0.7
    noise = rng.uniform(0.5, 5.0)
    h_tint = _HEMATOXYLIN * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    e_tint = _EOSIN * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    planes = [_transmitted(lamp * np.exp(-(h_density * h_tint[c] + e_density * e_tint[c])), noise, rng)
              for c in range(3)]
    return np.stack(planes), labels


_DRAW: dict[str, Callable] = {
    "fluorescence": _fluorescence,
    "cytoplasm": _cytoplasm,
    "membrane": _membrane,
    "brightfield": _brightfield,
    "phase": _phase,
    "histology": _histology,
}


# ----------------------------------------------------------------------------- public API


def _check_styles(styles: Iterable[str] | None) -> tuple[str, ...]:
    if styles is None:
        return tuple(CORPUS_STYLES)
    if isinstance(styles, str):
        styles = (styles,)
    styles = tuple(styles)
    unknown = [s for s in styles if s not in CORPUS_STYLES]
    if unknown or not styles:
        raise SynthError(f"unknown corpus style(s) {unknown or styles!r}; choose from {list(CORPUS_STYLES)}.")
    return styles


def corpus_image(
    shape: tuple[int, int] = (256, 256),
    *,
    seed: int = 0,
    style: str | None = None,
    channels: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one varied microscopy-like image with its instance ground truth.

    Parameters
    ----------
    shape : tuple of int
        Image size (Y, X), each at least 32.
    seed : int
        Seed of every random choice: equal arguments give equal outputs.
    style : str or None
        A key of `CORPUS_STYLES`; None draws one (all styles equally likely).
    channels : int or None
        1, 2 or 3, among those the style gives (`CORPUS_STYLES`); None draws one.

    Returns
    -------
    image : numpy.ndarray
        ``CYX``: uint16 for fluorescence-like styles, uint8 for transmitted light.
    labels : numpy.ndarray of int32, shape (Y, X)
        Instance ids 1..n of exactly the objects drawn (0 = background).

    Raises
    ------
    SynthError
        For a bad shape, an unknown style or a channel count the style does not give.
    """
    if len(shape) != 2 or any(int(n) != n or n < 32 for n in shape):
        raise SynthError(f"`shape` must be two integers (Y, X), each >= 32; got {shape!r}, e.g. (256, 256).")
    shape = (int(shape[0]), int(shape[1]))
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise SynthError(f"`seed` must be a whole number >= 0; got {seed!r}.")
    rng = np.random.default_rng(int(seed))
    chosen = tuple(CORPUS_STYLES)[int(rng.integers(len(CORPUS_STYLES)))] if style is None else style
    if chosen not in CORPUS_STYLES:
        raise SynthError(f"unknown corpus style {style!r}; choose from {list(CORPUS_STYLES)}.")
    allowed = CORPUS_STYLES[chosen]
    drawn = allowed[int(rng.integers(len(allowed)))]
    if channels is None:
        channels = drawn
    elif channels not in allowed:
        raise SynthError(f"style {chosen!r} gives {' or '.join(map(str, allowed))} channel(s); got channels={channels!r}.")
    image, labels = _DRAW[chosen](shape, rng, int(channels))
    return np.ascontiguousarray(image), _tidy(labels)


def corpus_samples(
    count: int,
    shape: tuple[int, int] = (256, 256),
    *,
    seed: int = 0,
    styles: Iterable[str] | None = None,
    channels: int | None = None,
) -> list[CorpusSample]:
    """Draw `count` images, styles taken in turn from a seeded shuffle of `styles`.

    Parameters
    ----------
    count : int
        Number of images.
    shape : tuple of int
        Size (Y, X) of every image.
    seed : int
        The whole list is a function of `seed` (each sample's own seed is derived from it).
    styles : iterable of str or None
        Styles to draw from (default: all of `CORPUS_STYLES`), balanced over the list.
    channels : int or None
        Force a channel count (every style must give it); None lets each sample draw its own.

    Returns
    -------
    list of CorpusSample
    """
    styles = _check_styles(styles)
    if isinstance(count, bool) or int(count) != count or count < 0:
        raise SynthError(f"`count` must be a whole number >= 0; got {count!r}.")
    sequence = np.random.SeedSequence([int(seed), 0x57A7])
    rng = np.random.default_rng(sequence)
    order = [styles[i % len(styles)] for i in range(int(count))]
    order = [order[i] for i in rng.permutation(len(order))]
    seeds = sequence.generate_state(max(1, int(count)), dtype=np.uint32)
    samples = []
    for style, sample_seed in zip(order, seeds):
        image, labels = corpus_image(shape, seed=int(sample_seed), style=style, channels=channels)
        samples.append(CorpusSample(image=image, labels=labels, style=style, seed=int(sample_seed)))
    return samples

"""Seeded generator of hard synthetic fluorescence nuclei images with instance ground truth.

"Hard" means the cases where engineered intensity features fail: dense,
touching nuclei of varied size, shape and brightness (some barely above
background), granular chromatin texture, uneven illumination, unlabelled
clutter (bright specks, fibres, out-of-focus ghosts), optical blur and
Poisson + read noise.

Everything is vectorised: nuclei are rasterised in small local patches, all
objects of one patch size at once, and composited by z-order, so a 4096 x 4096
image takes seconds.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from workbench.errors import WorkbenchError

__all__ = ["SynthError", "hard_nuclei"]

_HARMONICS = np.arange(2, 6)  # low-frequency outline wobble: 2- to 5-fold
_MIN_VISIBLE_SHARE = 0.5  # a nucleus hidden more than this by nuclei on top is dropped
_MIN_AREA = 12  # pixels; smaller visible remnants are dropped
_CAMERA_OFFSET = 100.0
_CAMERA_GAIN = 2.0  # grey values per photon
_LOWRES = 8  # smooth fields are made at 1/8 resolution and interpolated up
_PATCH_ELEMENTS = 4_000_000  # bound on patch pixels processed at once (memory)


class SynthError(WorkbenchError, ValueError):
    """Arguments to the synthetic image generator are invalid."""


# ----------------------------------------------------------------------------- validation


def _check_arguments(shape, channels, density, size_range, aspect_range, dim_fraction) -> tuple[int, int]:
    if len(shape) != 2 or any(int(n) != n or n < 16 for n in shape):
        raise SynthError(f"`shape` must be two integers (Y, X), each >= 16, got {shape!r}; e.g. (512, 512).")
    if int(channels) != channels or channels < 1:
        raise SynthError(f"`channels` must be an integer >= 1, got {channels!r}; 1 gives a YX image, 3 a CYX one.")
    if not 0 < density <= 1:
        raise SynthError(f"`density` is the share of the image covered by nuclei, in (0, 1]; got {density!r}.")
    if len(size_range) != 2 or not 1.5 <= size_range[0] <= size_range[1]:
        raise SynthError(
            f"`size_range` must be (min, max) nucleus radius in pixels with 1.5 <= min <= max, "
            f"got {size_range!r}; e.g. (4, 13)."
        )
    if len(aspect_range) != 2 or not 1.0 <= aspect_range[0] <= aspect_range[1]:
        raise SynthError(f"`aspect_range` must be (min, max) with 1 <= min <= max, got {aspect_range!r}.")
    if not 0 <= dim_fraction <= 1:
        raise SynthError(f"`dim_fraction` must be between 0 and 1, got {dim_fraction!r}.")
    return int(shape[0]), int(shape[1])


# ----------------------------------------------------------------------------- nucleus geometry


def _place_centres(
    shape: tuple[int, int], count: int, radii: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Centres (count, 2): a third scattered, the rest in clusters of touching nuclei."""
    height, width = shape
    scattered = count // 3
    centres = np.empty((count, 2))
    centres[:scattered] = rng.uniform((0, 0), (height, width), size=(scattered, 2))
    clustered = count - scattered
    cluster_size = 8
    n_clusters = max(1, -(-clustered // cluster_size))
    # Each new member sits against a random earlier member of its cluster, at about the sum of radii.
    members = np.empty((n_clusters, cluster_size, 2))
    member_radii = np.resize(radii[scattered:], (n_clusters, cluster_size))
    members[:, 0] = rng.uniform((0, 0), (height, width), size=(n_clusters, 2))
    for k in range(1, cluster_size):
        anchor = rng.integers(0, k, size=n_clusters)
        direction = rng.uniform(0, 2 * np.pi, size=n_clusters)
        distance = (member_radii[:, k] + member_radii[np.arange(n_clusters), anchor]) * rng.uniform(
            0.85, 1.05, size=n_clusters
        )
        step = distance[:, None] * np.stack([np.sin(direction), np.cos(direction)], axis=1)
        members[:, k] = members[np.arange(n_clusters), anchor] + step
    centres[scattered:] = members.reshape(-1, 2)[:clustered]
    return centres


def _rasterise_nuclei(
    shape: tuple[int, int],
    centres: np.ndarray,
    semi_axes: np.ndarray,
    angles: np.ndarray,
    wobble: np.ndarray,
    wobble_phase: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels covered by each nucleus: flat index, z (object order, 1-based) and normalised radius.

    Objects are grouped by patch size; each group is drawn at once on a
    (n_objects, patch_pixels) grid, so the work is proportional to the
    objects' area, not to the image.
    """
    height, width = shape
    extent = semi_axes[:, 0] * (1 + np.abs(wobble).sum(axis=1))
    half_sizes = 3 * np.ceil((np.ceil(extent) + 1) / 3).astype(np.int64)
    flat_parts, z_parts, rho_parts = [], [], []
    for half in np.unique(half_sizes):
        offsets = np.arange(-half, half + 1)
        dy, dx = (a.ravel() for a in np.meshgrid(offsets, offsets, indexing="ij"))
        group = np.flatnonzero(half_sizes == half)
        chunk = max(1, _PATCH_ELEMENTS // dy.size)
        for start in range(0, group.size, chunk):
            objects = group[start : start + chunk]
            cy, cx = centres[objects, 0:1], centres[objects, 1:2]
            rows = np.round(cy).astype(np.int64) + dy
            cols = np.round(cx).astype(np.int64) + dx
            ry, rx = (rows - cy).astype(np.float32), (cols - cx).astype(np.float32)
            cos_a, sin_a = np.cos(angles[objects, None]), np.sin(angles[objects, None])
            u = (rx * cos_a + ry * sin_a) / semi_axes[objects, 0:1]
            v = (ry * cos_a - rx * sin_a) / semi_axes[objects, 1:2]
            rho = np.hypot(u, v)
            safe = np.maximum(rho, 1e-6)
            cos_t, sin_t = u / safe, v / safe
            boundary = _outline_radius(cos_t, sin_t, wobble[objects], wobble_phase[objects])
            inside = (rho < boundary) & (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
            flat_parts.append((rows * width + cols)[inside])
            z_parts.append(np.broadcast_to(objects[:, None] + 1, inside.shape)[inside].astype(np.int32))
            rho_parts.append((rho / boundary)[inside])
    return np.concatenate(flat_parts), np.concatenate(z_parts), np.concatenate(rho_parts)


def _outline_radius(cos_t: np.ndarray, sin_t: np.ndarray, wobble: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """1 + sum_k a_k cos(k theta + phi_k), from cos/sin of theta by the angle-addition recurrence."""
    boundary = np.ones_like(cos_t)
    cos_k, sin_k = cos_t, sin_t
    for index in range(_HARMONICS.size + 1):
        next_cos = cos_k * cos_t - sin_k * sin_t
        sin_k = sin_k * cos_t + cos_k * sin_t
        cos_k = next_cos  # now cos((index + 2) theta)
        if index == _HARMONICS.size:
            break
        a = wobble[:, index : index + 1].astype(np.float32)
        p = phase[:, index : index + 1]
        boundary += a * (cos_k * np.cos(p).astype(np.float32) - sin_k * np.sin(p).astype(np.float32))
    return np.maximum(boundary, 0.4)


def _composite(size: int, flat: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Topmost object per pixel (z-buffer): 0 = none, else 1-based object order."""
    top = np.zeros(size, dtype=np.int32)
    np.maximum.at(top, flat, z)
    return top


def _resolve_occlusion(
    shape: tuple[int, int], flat: np.ndarray, z: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer of the nuclei that stay, and the keep flags (index = z).

    A nucleus is dropped when less than half of it (or under `_MIN_AREA` px)
    is visible, or when nuclei on top cut its visible part in two, so every
    label is one 4-connected region. Dropping uncovers nuclei beneath, so the
    check repeats until nothing changes.
    """
    keep = np.ones(count + 1, dtype=bool)
    keep[0] = False
    drawn_area = np.bincount(z, minlength=count + 1)
    for _ in range(8):
        live = keep[z]
        top = _composite(shape[0] * shape[1], flat[live], z[live])
        visible_area = np.bincount(top, minlength=count + 1)
        dropped = keep & ((visible_area < _MIN_VISIBLE_SHARE * drawn_area) | (visible_area < _MIN_AREA))
        top_image = top.reshape(shape)
        occluded = keep & ~dropped & (visible_area < drawn_area)
        boxes = ndi.find_objects(top_image)
        for index in np.flatnonzero(occluded):
            if ndi.label(top_image[boxes[index - 1]] == index)[1] > 1:
                dropped[index] = True
        if not dropped.any():
            return top, keep
        keep &= ~dropped
    live = keep[z]
    return _composite(shape[0] * shape[1], flat[live], z[live]), keep


def _object_geometry(
    shape: tuple[int, int],
    rng: np.random.Generator,
    density: float,
    size_range: tuple[float, float],
    aspect_range: tuple[float, float],
    irregularity: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Placed, rasterised and occlusion-resolved objects: labels 1..n, normalised radius, mean radius.

    Sizes are log-uniform in `size_range`, a third of the objects scattered and the rest in
    clusters of touching objects; overlaps go to the object on top, and objects mostly hidden
    (or cut in two) are dropped, so every label is one 4-connected region. ``rho_map`` is 0 at
    an object's centre, 1 at its outline (and outside objects).
    """
    height, width = shape
    log_low, log_high = np.log(size_range[0]), np.log(size_range[1])
    mean_area = np.pi * np.mean(np.exp(rng.uniform(log_low, log_high, 4096)) ** 2)
    count = max(1, int(round(density * height * width / mean_area)))
    radii = np.exp(rng.uniform(log_low, log_high, count))
    aspect = rng.uniform(*aspect_range, count)
    semi_axes = np.stack([radii * np.sqrt(aspect), radii / np.sqrt(aspect)], axis=1)
    angles = rng.uniform(0, np.pi, count)
    blobbiness = irregularity * rng.lognormal(0, 0.6, count)
    wobble = blobbiness[:, None] * rng.normal(0, 1, (count, _HARMONICS.size)) / (_HARMONICS / 2)
    wobble_phase = rng.uniform(0, 2 * np.pi, (count, _HARMONICS.size))
    mean_radius = float(np.exp((log_low + log_high) / 2))
    centres = _place_centres(shape, count, radii, rng)

    # Rasterise, then drop objects mostly hidden (or cut in two) by objects on top.
    flat, z, rho = _rasterise_nuclei(shape, centres, semi_axes, angles, wobble, wobble_phase)
    top, keep = _resolve_occlusion(shape, flat, z, count)
    kept_pixels = keep[z]
    flat, z, rho = flat[kept_pixels], z[kept_pixels], rho[kept_pixels]
    winners = top[flat] == z
    rho_map = np.ones(height * width, dtype=np.float32)
    rho_map[flat[winners]] = rho[winners]
    new_ids = np.zeros(count + 1, dtype=np.int32)
    new_ids[keep] = np.arange(1, np.count_nonzero(keep) + 1, dtype=np.int32)
    return new_ids[top].reshape(shape), rho_map.reshape(shape), mean_radius


# ----------------------------------------------------------------------------- image formation


def _smooth_field(shape: tuple[int, int], lowres: np.ndarray) -> np.ndarray:
    """Interpolate a coarse field up to `shape` (bilinear)."""
    zoom = (shape[0] / lowres.shape[0], shape[1] / lowres.shape[1])
    return ndi.zoom(lowres.astype(np.float32), zoom, order=1, grid_mode=True, mode="nearest")[: shape[0], : shape[1]]


def _lowres_shape(shape: tuple[int, int]) -> tuple[int, int]:
    return (-(-shape[0] // _LOWRES), -(-shape[1] // _LOWRES))


def _illumination(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Multiplicative uneven illumination: a tilted plane times a vignette, 0.55-1.0."""
    height, width = shape
    y = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    tilt_y, tilt_x = rng.uniform(-0.2, 0.2, size=2).astype(np.float32)
    centre_y, centre_x = rng.uniform(-0.5, 0.5, size=2).astype(np.float32)
    field = (1 + tilt_y * y + tilt_x * x) * (1 - 0.25 * ((y - centre_y) ** 2 + (x - centre_x) ** 2))
    return field / field.max()


def _haze(shape: tuple[int, int], mean_radius: float, rng: np.random.Generator, clutter: float) -> np.ndarray:
    """Additive background: low-frequency autofluorescence and out-of-focus ghost nuclei (unlabelled)."""
    small = _lowres_shape(shape)
    haze = ndi.gaussian_filter(rng.normal(0, 1, small).astype(np.float32), 3, mode="wrap")
    haze = 0.5 + 0.5 * haze / (np.abs(haze).max() + 1e-6)
    ghosts = np.zeros(small, dtype=np.float32)
    n_ghosts = rng.poisson(clutter * shape[0] * shape[1] / (40 * mean_radius) ** 2 * 4)
    ghosts[rng.integers(0, small[0], n_ghosts), rng.integers(0, small[1], n_ghosts)] = rng.uniform(
        0.5, 3.0, n_ghosts
    )
    sigma = max(1.0, 1.5 * mean_radius / _LOWRES)
    ghosts = ndi.gaussian_filter(ghosts, sigma) * (2 * np.pi * sigma**2)
    return _smooth_field(shape, haze + ghosts)


def _texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Granular chromatin-like texture: band-passed noise, positive-skewed, mean ~0, std ~1."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    grains = ndi.gaussian_filter(noise, 1.0)
    grains = grains / grains.std()
    return np.maximum(grains, -1.0) ** 2 * np.sign(grains) - 0.5


def _clutter(shape: tuple[int, int], rng: np.random.Generator, amount: float, brightness: float) -> np.ndarray:
    """Unlabelled debris before blur: bright specks (1-3 px) and thin curved fibres."""
    height, width = shape
    layer = np.zeros(shape, dtype=np.float32)
    area = height * width
    n_specks = rng.poisson(amount * area / 2500)
    rows, cols = rng.integers(0, height, n_specks), rng.integers(0, width, n_specks)
    amplitude = brightness * rng.lognormal(0.5, 0.7, n_specks).astype(np.float32)
    for dy, dx, share in ((0, 0, 1.0), (1, 0, 0.5), (0, 1, 0.5), (1, 1, 0.3)):
        grow = rng.random(n_specks) < share
        grown_rows, grown_cols = np.minimum(rows + dy, height - 1)[grow], np.minimum(cols + dx, width - 1)[grow]
        np.add.at(layer, (grown_rows, grown_cols), amplitude[grow])
    # Fibres: smooth random walks, rasterised by dense sampling along each segment.
    n_fibres = rng.poisson(amount * area / 30_000)
    if n_fibres:
        steps, step_length = 30, 4.0
        heading = rng.uniform(0, 2 * np.pi, (n_fibres, 1)) + np.cumsum(rng.normal(0, 0.15, (n_fibres, steps)), axis=1)
        start = rng.uniform((0, 0), (height, width), (n_fibres, 2))
        path_y = start[:, :1] + np.cumsum(step_length * np.sin(heading), axis=1)
        path_x = start[:, 1:] + np.cumsum(step_length * np.cos(heading), axis=1)
        fine = np.linspace(0, 1, int(2 * step_length), endpoint=False)
        ys = (path_y[:, :-1, None] + np.diff(path_y, axis=1)[:, :, None] * fine).reshape(n_fibres, -1)
        xs = (path_x[:, :-1, None] + np.diff(path_x, axis=1)[:, :, None] * fine).reshape(n_fibres, -1)
        # About two samples land on each pixel of the path, so each carries half the fibre's level.
        level = brightness * rng.uniform(0.15, 0.6, (n_fibres, 1)).astype(np.float32) / 2
        keep = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
        np.add.at(layer, (ys[keep].astype(np.int64), xs[keep].astype(np.int64)), np.broadcast_to(level, ys.shape)[keep])
    return layer


def _to_counts(photons: np.ndarray, read_noise: float, rng: np.random.Generator) -> np.ndarray:
    """Camera model: Poisson shot noise, gain, offset and Gaussian read noise, as uint16."""
    signal = rng.poisson(np.maximum(photons, 0)).astype(np.float32) * _CAMERA_GAIN + _CAMERA_OFFSET
    signal += rng.normal(0, read_noise, photons.shape).astype(np.float32)
    return np.clip(np.round(signal), 0, np.iinfo(np.uint16).max).astype(np.uint16)


# ----------------------------------------------------------------------------- public API


def hard_nuclei(
    shape: tuple[int, int] = (512, 512),
    *,
    seed: int = 0,
    channels: int = 1,
    density: float = 0.35,
    size_range: tuple[float, float] = (4.0, 13.0),
    aspect_range: tuple[float, float] = (1.0, 1.8),
    irregularity: float = 0.08,
    dim_fraction: float = 0.2,
    clutter: float = 1.0,
    blur_sigma: float = 1.2,
    photons: float = 150.0,
    read_noise: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a hard synthetic fluorescence image of nuclei with its instance labels.

    Parameters
    ----------
    shape : tuple of int, optional
        Image size (Y, X), any size from 16 up.
    seed : int, optional
        Seed of every random choice; equal arguments give equal outputs.
    channels : int, optional
        1 gives a YX image; more give CYX: channel 0 nuclei, channel 1 a
        cytoplasm-like signal around the nuclei, further channels background
        and noise only.
    density : float, optional
        Share of the image covered by nuclei before occlusion (about 0.3 of
        the image stays covered at the default).
    size_range : tuple of float, optional
        Range of mean nucleus radii in pixels (drawn log-uniform).
    aspect_range : tuple of float, optional
        Range of the long-to-short axis ratio of the ellipses.
    irregularity : float, optional
        Typical amplitude of the low-frequency outline wobble (0 = ellipses).
    dim_fraction : float, optional
        Share of nuclei barely above the background.
    clutter : float, optional
        Amount of unlabelled debris, fibres and out-of-focus ghosts (0 = none).
    blur_sigma : float, optional
        Standard deviation of the Gaussian point spread function in pixels.
    photons : float, optional
        Mean photon count of a typical nucleus pixel; lower is noisier.
    read_noise : float, optional
        Standard deviation of the camera read noise in grey values.

    Returns
    -------
    image : numpy.ndarray of uint16
        YX when ``channels == 1``, else CYX.
    labels : numpy.ndarray of int32, shape (Y, X)
        Instance labels 1..n of exactly the drawn nuclei (0 = background);
        touching nuclei are separate ids, overlaps go to the nucleus on top.

    Raises
    ------
    SynthError
        If an argument is out of range.

    Examples
    --------
    >>> image, labels = hard_nuclei((128, 160), seed=1, channels=3)
    >>> image.shape, image.dtype, labels.shape, labels.dtype
    ((3, 128, 160), dtype('uint16'), (128, 160), dtype('int32'))
    """
    height, width = _check_arguments(shape, channels, density, size_range, aspect_range, dim_fraction)
    shape = (height, width)
    rng = np.random.default_rng(seed)
    labels, rho_map, mean_radius = _object_geometry(shape, rng, density, size_range, aspect_range, irregularity)
    n_kept = int(labels.max())

    # Per-nucleus brightness: log-normal, with a share of dim nuclei close to the background.
    background_photons = 0.15 * photons
    brightness = photons * rng.lognormal(0, 0.35, n_kept + 1).astype(np.float32)
    dim = rng.random(n_kept + 1) < dim_fraction
    brightness[dim] = background_photons * rng.uniform(0.8, 2.0, np.count_nonzero(dim))
    brightness[0] = 0
    texture_strength = rng.uniform(0.15, 0.5, n_kept + 1).astype(np.float32)

    inside = labels > 0
    dome = np.where(inside, 1 - 0.3 * rho_map**2, 0).astype(np.float32)
    texture = _texture(shape, rng)
    nuclei = brightness[labels] * dome * np.maximum(1 + texture_strength[labels] * texture, 0.1)
    # Bright chromocentres: a few point-like spots per nucleus, blurred by the PSF below.
    nucleus_pixels = np.flatnonzero(inside)
    if nucleus_pixels.size:
        spots = rng.choice(nucleus_pixels, size=min(nucleus_pixels.size, 3 * n_kept))
        nuclei.ravel()[spots] += 1.5 * brightness[labels.ravel()[spots]]

    illumination = _illumination(shape, rng)
    haze = _haze(shape, mean_radius, rng, clutter)
    planes = []
    for channel in range(channels):
        if channel == 0:
            signal = nuclei + _clutter(shape, rng, clutter, photons)
            background = background_photons * (0.6 + 0.8 * haze)
        elif channel == 1:
            signal = _cytoplasm(shape, labels, inside, mean_radius, photons, rng)
            background = 0.1 * photons * (0.6 + 0.8 * _haze(shape, mean_radius, rng, clutter))
        else:
            signal = _clutter(shape, rng, 0.3 * clutter, 0.5 * photons)
            background = 0.1 * photons * (0.6 + 0.8 * _haze(shape, mean_radius, rng, clutter))
        blurred = ndi.gaussian_filter(signal, blur_sigma) if blur_sigma > 0 else signal
        planes.append(_to_counts((blurred + background) * illumination, read_noise, rng))
    image = planes[0] if channels == 1 else np.stack(planes)
    return image, labels


def _cytoplasm(
    shape: tuple[int, int],
    labels: np.ndarray,
    inside: np.ndarray,
    mean_radius: float,
    photons: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A cytoplasm-like signal: a textured halo around the nuclei, weak over the nuclei themselves."""
    small = _lowres_shape(shape)
    padded = np.zeros((small[0] * _LOWRES, small[1] * _LOWRES), dtype=np.float32)
    padded[: shape[0], : shape[1]] = inside
    coverage = padded.reshape(small[0], _LOWRES, small[1], _LOWRES).mean(axis=(1, 3))
    halo = ndi.gaussian_filter(coverage, max(1.0, 1.2 * mean_radius / _LOWRES))
    halo = _smooth_field(shape, halo / (halo.max() + 1e-6))
    cell_level = rng.uniform(0.3, 1.0, int(labels.max()) + 1).astype(np.float32)
    grain = 1 + 0.3 * rng.standard_normal(shape, dtype=np.float32)
    signal = 0.6 * photons * np.minimum(halo * 1.5, 1.0) * grain
    return np.where(inside, 0.15 * signal * cell_level[labels], signal)

"""Seeded generator of synthetic 3-D fluorescence nuclei volumes with instance ground truth.

A (Z, Y, X) uint16 volume of dense, touching ellipsoidal nuclei of varied size,
orientation and brightness, with granular texture, an anisotropic optical blur
(the axial point-spread function is longer than the lateral one), background
haze and Poisson + read noise, and the (Z, Y, X) int32 instance labels. Nuclei
are ellipsoids in micrometres sampled on the voxel grid, so a coarse z spacing
gives the flattened-looking stacks of a confocal or light-sheet microscope.

Nuclei are rasterised one small box at a time into the shared volume (a nucleus
takes only voxels no earlier nucleus took, so neighbours touch without
overlapping), so a 128 x 1024 x 1024 volume takes well under a minute and about
6 bytes per voxel besides its outputs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from workbench.errors import WorkbenchError

__all__ = ["nuclei_volume"]

_CAMERA_OFFSET = 100.0
_MIN_VOXELS = 8  # nuclei left with fewer voxels after their neighbours took theirs are dropped


def _check(shape, spacing, density, radius_range) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    if len(shape) != 3 or any(int(n) != n or n < 4 for n in shape):
        raise WorkbenchError(f"`shape` must be three integers (Z, Y, X), each >= 4, got {shape!r}; e.g. (32, 256, 256).")
    if len(spacing) != 3 or not all(float(s) > 0 for s in spacing):
        raise WorkbenchError(f"`spacing` must be three positive voxel sizes (z, y, x) in µm, got {spacing!r}.")
    if not 0 < density <= 1:
        raise WorkbenchError(f"`density` is the share of the volume covered by nuclei, in (0, 1]; got {density!r}.")
    if len(radius_range) != 2 or not 0 < radius_range[0] <= radius_range[1]:
        raise WorkbenchError(f"`radius_range` must be (min, max) nucleus radius in µm, got {radius_range!r}.")
    return tuple(int(n) for n in shape), tuple(float(s) for s in spacing)


def nuclei_volume(
    shape: tuple[int, int, int] = (32, 256, 256),
    *,
    seed: int = 0,
    spacing: tuple[float, float, float] = (2.0, 1.0, 1.0),
    density: float = 0.25,
    radius_range: tuple[float, float] = (4.0, 8.0),
    elongation: float = 1.4,
    blur_sigma_um: tuple[float, float] = (2.0, 1.0),
    photons: float = 120.0,
    read_noise: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a synthetic fluorescence volume of nuclei with its 3-D instance labels.

    Parameters
    ----------
    shape : (int, int, int)
        Volume size (Z, Y, X).
    seed : int
        Seed of every random choice; equal arguments give equal outputs.
    spacing : (float, float, float)
        Voxel size (z, y, x) in µm; a coarser z flattens nuclei in voxels.
    density : float
        Share of the volume covered by nuclei before they crowd each other out.
    radius_range : (float, float)
        Smallest and largest nucleus radius in µm.
    elongation : float
        Largest ratio of a nucleus's longest to its shortest semi-axis (>= 1).
    blur_sigma_um : (float, float)
        Optical blur (axial, lateral) standard deviation in µm.
    photons : float
        Mean photons of a nucleus voxel; fewer means noisier.
    read_noise : float
        Camera read noise, in grey values.

    Returns
    -------
    image : (Z, Y, X) uint16
    labels : (Z, Y, X) int32
        0 = background, nuclei 1..N (every id present).

    Examples
    --------
    >>> image, labels = nuclei_volume((16, 64, 64), seed=1)
    >>> image.shape, image.dtype.name, int(labels.max()) > 5
    ((16, 64, 64), 'uint16', True)
    """
    shape, spacing = _check(shape, spacing, density, radius_range)
    rng = np.random.default_rng(seed)
    physical = np.array(shape) * np.array(spacing)
    mean_radius = float(np.mean(radius_range))
    n_nuclei = max(1, int(round(density * np.prod(physical) / (4 / 3 * np.pi * mean_radius**3 * elongation))))
    labels = np.zeros(shape, np.int32)
    brightness = np.zeros(n_nuclei + 1, np.float32)
    centres = rng.uniform(0, 1, (n_nuclei, 3)) * physical
    radii = rng.uniform(*radius_range, n_nuclei)
    stretch = rng.uniform(1.0, max(float(elongation), 1.0), n_nuclei)
    angles = rng.uniform(0, np.pi, n_nuclei)
    next_id = 1
    for centre, radius, factor, angle in zip(centres, radii, stretch, angles):
        # Semi-axes in µm: stretched in a random in-plane direction, slightly flattened along z.
        semi = np.array([radius * 0.85, radius * factor, radius / np.sqrt(factor)])
        reach = np.ceil(semi.max() / np.array(spacing)).astype(int) + 1
        low = np.maximum(np.floor(centre / np.array(spacing)).astype(int) - reach, 0)
        high = np.minimum(np.floor(centre / np.array(spacing)).astype(int) + reach + 1, shape)
        if np.any(high <= low):
            continue
        box = tuple(slice(a, b) for a, b in zip(low, high))
        zz, yy, xx = np.ogrid[box]
        dz = zz * spacing[0] - centre[0]
        dy = yy * spacing[1] - centre[1]
        dx = xx * spacing[2] - centre[2]
        u = dy * np.cos(angle) + dx * np.sin(angle)
        v = -dy * np.sin(angle) + dx * np.cos(angle)
        inside = (dz / semi[0]) ** 2 + (u / semi[1]) ** 2 + (v / semi[2]) ** 2 <= 1.0
        free = inside & (labels[box] == 0)
        if np.count_nonzero(free) < _MIN_VOXELS:
            continue
        labels[box][free] = next_id
        brightness[next_id] = rng.uniform(0.35, 1.0)
        next_id += 1
    brightness = brightness[:next_id]

    # Signal: each nucleus's brightness with granular chromatin texture, then blur, haze and noise.
    signal = brightness[labels]
    grain = rng.standard_normal(shape, dtype=np.float32)
    ndi.gaussian_filter(grain, sigma=0.8, output=grain)
    signal *= 1.0 + 1.5 * grain
    del grain
    sigma = (blur_sigma_um[0] / spacing[0], blur_sigma_um[1] / spacing[1], blur_sigma_um[1] / spacing[2])
    ndi.gaussian_filter(signal, sigma=sigma, output=signal)
    signal += 0.08 + 0.04 * np.linspace(0, 1, shape[2], dtype=np.float32)[None, None, :]
    np.clip(signal, 0, None, out=signal)
    counts = rng.poisson(signal * photons).astype(np.float32)
    del signal
    counts *= 2.0
    counts += _CAMERA_OFFSET
    counts += rng.normal(0, read_noise, shape).astype(np.float32)
    image = np.clip(np.round(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return image, labels

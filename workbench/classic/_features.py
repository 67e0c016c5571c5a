"""Filter-bank machinery behind `workbench.classic._forest`: settings, registry, cache.

Every feature is computed in float32 with separable scipy.ndimage filters on a
whole plane at once (no per-pixel Python). Gaussian smoothing is computed once
per scale and memoised per channel, and the derivatives (gradient, Laplacian,
Hessian, structure tensor) are small finite differences of that smoothed plane,
so adding a feature at an existing scale costs a few element-wise operations,
not another large convolution.

Every feature has an exact receptive-field radius (`FeatureBank.halo`), so a
tile read with that many extra pixels of context on each side gives the same
features in its core as the whole image does: tiles join without seams.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from workbench.errors import WorkbenchError
from workbench.normalize import PercentileNormalizer
from workbench.predict import predict_tiled
from workbench.store import atomic_write


class ClassicInputError(WorkbenchError, ValueError):
    """An input to the classic (Random Forest) path that the user can fix."""


class ClassicTypeError(WorkbenchError, TypeError):
    """An input of the wrong type given to the classic (Random Forest) path."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class FeatureSettings:
    """Which filters the Random Forest sees, and at which scales.

    The default (the ``"fast"`` preset, 27 features per channel) is the raw
    intensity, then at each of the five scales 1-16 Gaussian smoothing,
    gradient magnitude, Laplacian of Gaussian and two Hessian eigenvalues, plus
    one local-entropy texture feature; scales from 4 up are computed on a 2x or
    4x downsampled copy of the image (their cost drops with the pixel count)
    and interpolated back. The ``"rich"`` preset (`FEATURE_PRESETS`) is the
    former default: 34 features per channel at full resolution, adding
    difference of Gaussians and structure-tensor eigenvalues at scales 1-8.

    Parameters
    ----------
    features : tuple of str
        Names from `FEATURES` (see ``available_features()``), in output order.
    sigmas : tuple of float
        Gaussian scales in pixels for the per-scale features. Pick the largest
        about the radius of the objects.
    entropy_radii : tuple of int
        Half-widths of the square windows of the local-entropy feature.
    entropy_bins : int
        Grey levels the normalised intensity is quantised into for the entropy.
    dog_ratio : float
        Difference of Gaussians at scale s is ``G(s / dog_ratio) - G(s)``; with
        the default 2.0 and doubling sigmas every smoothing is reused.
    structure_inner_ratio : float
        The structure tensor at scale s takes gradients at ``s *
        structure_inner_ratio`` and integrates them over a Gaussian of ``s``
        (ilastik's convention of inner = outer / 2).
    truncate : float
        Gaussian kernels are cut at ``truncate`` standard deviations.
    downsample_from_sigma : float
        Scales >= this are computed on an image downsampled by 2x2 (or 4x4)
        block means and linearly interpolated back: a factor ``2**k`` with
        ``2**k <= sigma / 2``, at most `max_downsample`. 0 computes every
        scale at full resolution.
    max_downsample : int
        Largest downsampling factor (1, 2, 4 or 8). Tiles stay seamless when
        their origins are multiples of it (`FeatureBank.alignment`).

    Example
    -------
    >>> settings = FeatureSettings(sigmas=(1.0, 2.0))
    >>> FeatureSettings.from_dict(settings.to_dict()) == settings
    True
    """

    features: tuple[str, ...] = (
        "intensity",
        "gaussian",
        "gradient_magnitude",
        "laplacian_of_gaussian",
        "hessian_eigenvalues",
        "entropy",
    )
    sigmas: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    entropy_radii: tuple[int, ...] = (4,)
    entropy_bins: int = 8
    dog_ratio: float = 2.0
    structure_inner_ratio: float = 0.5
    truncate: float = 4.0
    downsample_from_sigma: float = 4.0
    max_downsample: int = 4

    def __post_init__(self) -> None:
        # Frozen dataclass: normalise lists from JSON into tuples once, here.
        object.__setattr__(self, "features", tuple(str(name) for name in self.features))
        object.__setattr__(self, "sigmas", tuple(float(s) for s in self.sigmas))
        object.__setattr__(self, "entropy_radii", tuple(int(r) for r in self.entropy_radii))
        unknown = [name for name in self.features if name not in FEATURES]
        if unknown:
            raise ClassicInputError(
                f"FeatureSettings.features: unknown feature name(s) {unknown}; "
                f"choose from {sorted(FEATURES)}."
            )
        if not self.features:
            raise ClassicInputError("FeatureSettings.features is empty; name at least one feature, e.g. ('gaussian',).")
        if len(set(self.features)) != len(self.features):
            raise ClassicInputError(f"FeatureSettings.features lists a name twice: {list(self.features)}.")
        if any(s <= 0 or not np.isfinite(s) for s in self.sigmas):
            raise ClassicInputError(f"FeatureSettings.sigmas must be positive pixel scales, got {self.sigmas}.")
        if any(FEATURES[name].per == "sigma" for name in self.features) and not self.sigmas:
            raise ClassicInputError("FeatureSettings.sigmas is empty but per-scale features are selected; give e.g. (1.0, 2.0, 4.0).")
        if "entropy" in self.features and (not self.entropy_radii or min(self.entropy_radii) < 1):
            raise ClassicInputError(f"FeatureSettings.entropy_radii must be window half-widths >= 1, got {self.entropy_radii}.")
        if not 2 <= int(self.entropy_bins) <= 256:
            raise ClassicInputError(f"FeatureSettings.entropy_bins must be within 2..256, got {self.entropy_bins}.")
        if not self.dog_ratio > 1:
            raise ClassicInputError(f"FeatureSettings.dog_ratio must be > 1, got {self.dog_ratio}.")
        if not 0 < self.structure_inner_ratio <= 1:
            raise ClassicInputError(
                f"FeatureSettings.structure_inner_ratio must be within (0, 1], got {self.structure_inner_ratio}."
            )
        if not (self.downsample_from_sigma == 0 or self.downsample_from_sigma >= 2):
            raise ClassicInputError(
                f"FeatureSettings.downsample_from_sigma must be 0 (never) or >= 2, got {self.downsample_from_sigma}."
            )
        if self.max_downsample not in (1, 2, 4, 8):
            raise ClassicInputError(f"FeatureSettings.max_downsample must be 1, 2, 4 or 8, got {self.max_downsample!r}.")
        if not 1 <= self.truncate <= 8:
            raise ClassicInputError(f"FeatureSettings.truncate must be within 1..8 standard deviations, got {self.truncate}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists for tuples)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSettings:
        """Rebuild settings from `to_dict` output; unknown keys are an error naming the valid ones."""
        return settings_from_dict(cls, data)


def settings_from_dict(cls, data: dict[str, Any]):
    """Build the settings dataclass `cls` from a dict; unknown keys are an error naming the valid ones."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ClassicInputError(f"{cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(known)}.")
    return cls(**data)


# --------------------------------------------------------------------------- per-plane filter context


def _gaussian_radius(sigma: float, truncate: float) -> int:
    """The kernel half-width scipy.ndimage uses for a Gaussian of `sigma`."""
    return int(truncate * float(sigma) + 0.5)


class _PlaneFilters:
    """Memoised Gaussian smoothings and derivatives of one float32 plane.

    Smoothing at a scale costs two large separable passes; derivatives are
    3-tap differences of the smoothed plane, so gradient, Laplacian, Hessian
    and structure tensor at one scale share a single smoothing.

    With ``factor > 1`` the plane is the image downsampled by ``factor``:
    scales are asked for in full-resolution pixels and converted here
    (`coarse_sigma`), and derivatives are rescaled to full-resolution units.
    """

    def __init__(self, plane: np.ndarray, settings: FeatureSettings, factor: int = 1) -> None:
        self.plane = plane
        self.settings = settings
        self.factor = int(factor)
        self._smoothed: dict[float, np.ndarray] = {}
        self._derivatives: dict[float, tuple[np.ndarray, ...]] = {}

    def coarse_sigma(self, sigma: float) -> float:
        """`sigma` (full-resolution pixels) in pixels of this plane."""
        return _coarse_sigma(float(sigma), self.factor)

    def smoothed(self, sigma: float) -> np.ndarray:
        sigma = float(sigma)
        if sigma not in self._smoothed:
            self._smoothed[sigma] = _smooth(self.plane, self.coarse_sigma(sigma), self.settings.truncate)
        return self._smoothed[sigma]

    def derivatives(self, sigma: float) -> tuple[np.ndarray, ...]:
        """(dy, dx, dyy, dxy, dxx) of the plane smoothed at `sigma`, per full-resolution pixel."""
        sigma = float(sigma)
        if sigma not in self._derivatives:
            smooth = self.smoothed(sigma)
            dx = _central_difference(smooth, axis=1)
            derivatives = [
                _central_difference(smooth, axis=0),
                dx,
                _second_difference(smooth, axis=0),
                _central_difference(dx, axis=0),
                _second_difference(smooth, axis=1),
            ]
            if self.factor > 1:
                first, second = np.float32(1 / self.factor), np.float32(1 / self.factor**2)
                for index, scale in enumerate((first, first, second, second, second)):
                    derivatives[index] *= scale
            self._derivatives[sigma] = tuple(derivatives)
        return self._derivatives[sigma]


def _smooth(plane: np.ndarray, sigma: float, truncate: float) -> np.ndarray:
    rows = ndi.gaussian_filter1d(plane, sigma, axis=0, truncate=truncate, mode="reflect")
    return ndi.gaussian_filter1d(rows, sigma, axis=1, truncate=truncate, mode="reflect")


def _coarse_sigma(sigma: float, factor: int) -> float:
    """Gaussian scale on a grid downsampled by `factor` that gives `sigma` at full resolution.

    The block mean (variance (f^2 - 1) / 12) and the linear interpolation back
    (variance (f^2 - 1) / 6) already blur, so the Gaussian supplies the rest.
    """
    if factor == 1:
        return sigma
    remaining = sigma * sigma - (factor * factor - 1) / 4.0
    return max(0.5, float(np.sqrt(max(remaining, 0.0)))) / factor


def _downsample_factor(sigma: float, settings: FeatureSettings) -> int:
    """1, or the power of two <= sigma / 2 (capped by `max_downsample`) for scales >= `downsample_from_sigma`."""
    if not settings.downsample_from_sigma or sigma < settings.downsample_from_sigma:
        return 1
    factor = 1
    while factor * 2 <= min(sigma / 2.0, settings.max_downsample):
        factor *= 2
    return factor


def _block_mean(plane: np.ndarray, factor: int) -> np.ndarray:
    """Mean of `factor` x `factor` blocks; a partial last block is padded by repeating its edge."""
    if factor == 1:
        return plane
    height, width = plane.shape
    pad = ((0, -height % factor), (0, -width % factor))
    if pad[0][1] or pad[1][1]:
        plane = np.pad(plane, pad, mode="edge")
    blocks = plane.reshape(plane.shape[0] // factor, factor, plane.shape[1] // factor, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def _linear_taps(n_out: int, n_in: int, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour indices and weight of linear interpolation from block centres back to pixels."""
    position = np.clip((np.arange(n_out) - (factor - 1) / 2.0) / factor, 0, n_in - 1)
    lower = np.minimum(np.floor(position).astype(np.intp), max(n_in - 2, 0))
    upper = np.minimum(lower + 1, n_in - 1)
    return lower, upper, (position - lower).astype(np.float32)


def _upsample_into(coarse: np.ndarray, factor: int, out: np.ndarray) -> None:
    """Linear interpolation of a plane downsampled by `factor` into `out` (full-resolution Y, X)."""
    lower, upper, weight = _linear_taps(out.shape[1], coarse.shape[1], factor)
    columns = coarse[:, lower]
    columns += (coarse[:, upper] - columns) * weight
    lower, upper, weight = _linear_taps(out.shape[0], coarse.shape[0], factor)
    # Whole-row gathers are contiguous copies, so the full-resolution pass is cheap.
    np.subtract(columns[upper], columns[lower], out=out)
    out *= weight[:, None]
    out += columns[lower]


def _central_difference(plane: np.ndarray, axis: int) -> np.ndarray:
    """(f[i+1] - f[i-1]) / 2 with scipy's "reflect" edges (f[-1] = f[0]), as plain slicing (fast)."""
    moved = np.moveaxis(plane, axis, 0)
    out = np.empty_like(moved)
    np.subtract(moved[2:], moved[:-2], out=out[1:-1])
    np.subtract(moved[1], moved[0], out=out[0])
    np.subtract(moved[-1], moved[-2], out=out[-1])
    out *= np.float32(0.5)
    return np.moveaxis(out, 0, axis)


def _second_difference(plane: np.ndarray, axis: int) -> np.ndarray:
    """f[i+1] - 2 f[i] + f[i-1] with scipy's "reflect" edges, as plain slicing (fast)."""
    moved = np.moveaxis(plane, axis, 0)
    out = np.empty_like(moved)
    np.add(moved[2:], moved[:-2], out=out[1:-1])
    out[1:-1] -= moved[1:-1] * np.float32(2)
    np.subtract(moved[1], moved[0], out=out[0])
    np.subtract(moved[-2], moved[-1], out=out[-1])
    return np.moveaxis(out, 0, axis)


def _symmetric_eigenvalues(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
    """Eigenvalues (larger first) of the 2x2 symmetric matrices [[a, b], [b, c]], element-wise."""
    mean = (a + c) * np.float32(0.5)
    half_difference = (a - c) * np.float32(0.5)
    radius = np.sqrt(half_difference * half_difference + b * b)
    return [mean + radius, mean - radius]


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class _FeatureSpec:
    """One registry entry: how to compute a feature and how far it looks.

    ``per`` is "sigma" (once per `FeatureSettings.sigmas`), "radius" (once per
    entropy radius) or "once". ``compute(filters, parameter)`` returns a list
    of float32 planes named by ``outputs``; ``radius(parameter, settings)`` is
    the exact receptive-field half-width in pixels; ``smoothings`` and
    ``derivatives`` name the shared scales it reads, so they can be computed
    once, in parallel, before the features.
    """

    per: str
    outputs: tuple[str, ...]
    compute: Callable[[_PlaneFilters, Any], list[np.ndarray]]
    radius: Callable[[Any, FeatureSettings], int]
    smoothings: Callable[[Any, FeatureSettings], tuple[float, ...]] = lambda _, __: ()
    derivatives: Callable[[Any, FeatureSettings], tuple[float, ...]] = lambda _, __: ()


def _intensity(filters: _PlaneFilters, _: Any) -> list[np.ndarray]:
    return [filters.plane]


def _gaussian(filters: _PlaneFilters, sigma: float) -> list[np.ndarray]:
    return [filters.smoothed(sigma)]


def _gradient_magnitude(filters: _PlaneFilters, sigma: float) -> list[np.ndarray]:
    dy, dx = filters.derivatives(sigma)[:2]
    return [np.sqrt(dy * dy + dx * dx)]


def _laplacian_of_gaussian(filters: _PlaneFilters, sigma: float) -> list[np.ndarray]:
    _, _, dyy, _, dxx = filters.derivatives(sigma)
    return [dyy + dxx]


def _difference_of_gaussians(filters: _PlaneFilters, sigma: float) -> list[np.ndarray]:
    return [filters.smoothed(sigma / filters.settings.dog_ratio) - filters.smoothed(sigma)]


def _hessian_eigenvalues(filters: _PlaneFilters, sigma: float) -> list[np.ndarray]:
    _, _, dyy, dxy, dxx = filters.derivatives(sigma)
    return _symmetric_eigenvalues(dyy, dxy, dxx)


def _structure_tensor_eigenvalues(filters: _PlaneFilters, sigma: float) -> list[np.ndarray]:
    dy, dx = filters.derivatives(sigma * filters.settings.structure_inner_ratio)[:2]
    truncate, outer = filters.settings.truncate, filters.coarse_sigma(sigma)

    def integrate(product: np.ndarray) -> np.ndarray:
        return _smooth(product, outer, truncate)

    return _symmetric_eigenvalues(integrate(dy * dy), integrate(dy * dx), integrate(dx * dx))


def _entropy_table(bins: int, radius: int) -> tuple[np.ndarray, float]:
    window = (2 * radius + 1) ** 2
    counts = np.arange(window + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        c_log_c = np.where(counts > 0, counts * np.log2(np.maximum(counts, 1)), 0.0)
    return (c_log_c / window).astype(np.float32), float(np.log2(window))


def _entropy(filters: _PlaneFilters, radius: int) -> list[np.ndarray]:
    """Shannon entropy (bits) of the quantised grey levels in a square window.

    Window counts per grey level are box sums of 0/1 indicator planes (scipy's
    running-sum uniform filter, exact for integers, so tiles agree with the
    whole image to the last bit); ``H = log2(n) - sum_b c_b log2(c_b) / n`` is
    then a table lookup per level.
    """
    bins = int(filters.settings.entropy_bins)
    size = 2 * radius + 1
    levels = np.clip(filters.plane * np.float32(bins), 0, bins - 1).astype(np.uint8)
    table, log_window = _entropy_table(bins, radius)
    entropy = np.full(levels.shape, log_window, dtype=np.float32)
    indicator = np.empty(levels.shape, dtype=np.float32)
    for level in np.unique(levels):
        np.equal(levels, level, out=indicator, casting="unsafe")
        mean = ndi.uniform_filter1d(ndi.uniform_filter1d(indicator, size, axis=0, mode="reflect"), size, axis=1, mode="reflect")
        mean *= np.float32(size * size)
        entropy -= table[np.rint(mean, out=mean).astype(np.intp)]
    return [entropy]


def _sigma_radius(sigma: float, settings: FeatureSettings) -> int:
    return _gaussian_radius(sigma, settings.truncate)


def _derivative_radius(sigma: float, settings: FeatureSettings) -> int:
    # The 3-tap differences add one pixel (dxy is a difference of a difference, one per axis).
    return _gaussian_radius(sigma, settings.truncate) + 1


def _dog_radius(sigma: float, settings: FeatureSettings) -> int:
    return max(_gaussian_radius(sigma, settings.truncate), _gaussian_radius(sigma / settings.dog_ratio, settings.truncate))


def _structure_radius(sigma: float, settings: FeatureSettings) -> int:
    inner = _derivative_radius(sigma * settings.structure_inner_ratio, settings)
    return inner + _gaussian_radius(sigma, settings.truncate)


def _at(sigma: float, _: FeatureSettings) -> tuple[float, ...]:
    return (float(sigma),)


def _dog_scales(sigma: float, settings: FeatureSettings) -> tuple[float, ...]:
    return (float(sigma), sigma / settings.dog_ratio)


def _inner_scale(sigma: float, settings: FeatureSettings) -> tuple[float, ...]:
    return (sigma * settings.structure_inner_ratio,)


FEATURES: dict[str, _FeatureSpec] = {
    "intensity": _FeatureSpec("once", ("",), _intensity, lambda _, __: 0),
    "gaussian": _FeatureSpec("sigma", ("",), _gaussian, _sigma_radius, _at),
    "gradient_magnitude": _FeatureSpec("sigma", ("",), _gradient_magnitude, _derivative_radius, _at, _at),
    "laplacian_of_gaussian": _FeatureSpec("sigma", ("",), _laplacian_of_gaussian, _derivative_radius, _at, _at),
    "difference_of_gaussians": _FeatureSpec("sigma", ("",), _difference_of_gaussians, _dog_radius, _dog_scales),
    "hessian_eigenvalues": _FeatureSpec("sigma", ("_1", "_2"), _hessian_eigenvalues, _derivative_radius, _at, _at),
    "structure_tensor_eigenvalues": _FeatureSpec(
        "sigma", ("_1", "_2"), _structure_tensor_eigenvalues, _structure_radius, _inner_scale, _inner_scale
    ),
    "entropy": _FeatureSpec("radius", ("",), _entropy, lambda radius, _: int(radius)),
}
"""Feature name -> registry entry. A new feature is one entry here."""


FEATURE_PRESETS: dict[str, FeatureSettings] = {
    "fast": FeatureSettings(),
    "rich": FeatureSettings(
        features=(
            "intensity",
            "gaussian",
            "gradient_magnitude",
            "laplacian_of_gaussian",
            "difference_of_gaussians",
            "hessian_eigenvalues",
            "structure_tensor_eigenvalues",
            "entropy",
        ),
        sigmas=(1.0, 2.0, 4.0, 8.0),
        downsample_from_sigma=0.0,
    ),
}
"""Named feature banks: "fast" (the default, 27 per channel, large scales downsampled) and "rich"
(34 per channel at full resolution, the earlier default). Pass the name wherever settings are taken."""


def available_features() -> list[str]:
    """Names accepted in `FeatureSettings.features`."""
    return sorted(FEATURES)


def _parameters(spec: _FeatureSpec, settings: FeatureSettings) -> tuple[Any, ...]:
    if spec.per == "sigma":
        return settings.sigmas
    if spec.per == "radius":
        return settings.entropy_radii
    return (None,)


def _parameter_label(spec: _FeatureSpec, parameter: Any) -> str:
    if spec.per == "sigma":
        return f"_s{parameter:g}"
    if spec.per == "radius":
        return f"_r{parameter}"
    return ""


def _receptive_radius(spec: _FeatureSpec, parameter: Any, factor: int, settings: FeatureSettings) -> int:
    """Full-resolution receptive-field radius of one feature computed on a grid downsampled by `factor`."""
    if factor == 1:
        return spec.radius(parameter, settings)
    coarse = spec.radius(_coarse_sigma(float(parameter), factor), settings)
    # One block for the mean, one for the interpolation, one for a partial block at a tile's edge.
    return factor * (coarse + 3)


def aligned_tile_size(tile_size: int, alignment: int) -> int:
    """`tile_size` rounded up to a multiple of `alignment` (tiles start on the downsampling grid)."""
    tile_size = int(tile_size)
    if tile_size < 1:
        raise ClassicInputError(f"tile_size must be a positive number of pixels, got {tile_size}.")
    return -(-tile_size // alignment) * alignment


class FeatureBank:
    """The filter bank built from `FeatureSettings` (use `make_feature_bank`).

    Attributes
    ----------
    settings : FeatureSettings
    halo : int
        Pixels of context a tile needs on every side so that its core has the
        same features as the whole image (the largest receptive-field radius,
        rounded up to a multiple of `alignment`).
    alignment : int
        The largest downsampling factor: tiles whose read origins are
        multiples of it give exactly the whole-image features.
    n_per_channel : int
        Features computed from each channel.
    n_threads : int
        Threads used by `compute` (default: every core).
    """

    def __init__(self, settings: FeatureSettings, *, n_threads: int | None = None) -> None:
        self.settings = settings
        self.n_threads = n_threads or os.cpu_count() or 1
        # (name, spec, parameter, downsampling factor), in output order.
        self._plan = [
            (name, FEATURES[name], parameter, _downsample_factor(parameter, settings) if FEATURES[name].per == "sigma" else 1)
            for name in settings.features
            for parameter in _parameters(FEATURES[name], settings)
        ]
        self.alignment = max(factor for *_, factor in self._plan)
        radius = max(_receptive_radius(spec, parameter, factor, settings) for _, spec, parameter, factor in self._plan)
        self.halo = -(-radius // self.alignment) * self.alignment
        self.n_per_channel = sum(len(spec.outputs) for _, spec, _, _ in self._plan)

    def __repr__(self) -> str:
        return f"FeatureBank(n_per_channel={self.n_per_channel}, halo={self.halo}, settings={self.settings!r})"

    def n_features(self, n_channels: int) -> int:
        """Total number of features for an image of `n_channels` channels."""
        return self.n_per_channel * int(n_channels)

    def names(self, n_channels: int) -> list[str]:
        """Readable names, e.g. ``c0_hessian_eigenvalues_s2_1``, in output order."""
        return [
            f"c{channel}_{name}{_parameter_label(spec, parameter)}{suffix}"
            for channel in range(int(n_channels))
            for name, spec, parameter, _ in self._plan
            for suffix in spec.outputs
        ]

    def compute(self, normalised: np.ndarray) -> np.ndarray:
        """Features of a whole normalised image.

        Parameters
        ----------
        normalised : np.ndarray
            (C, Y, X) float32 image, already normalised (see `workbench.normalize`).

        Returns
        -------
        np.ndarray
            (F, Y, X) float32 with F = ``n_features(C)``, in `names` order.
        """
        image = np.asarray(normalised, dtype=np.float32)
        if image.ndim != 3 or image.shape[1] < 2 or image.shape[2] < 2:
            raise ClassicInputError(f"features need a (C, Y, X) image of at least 2 x 2 pixels, got shape {image.shape}.")
        n_channels = image.shape[0]
        out = np.empty((self.n_features(n_channels),) + image.shape[1:], dtype=np.float32)
        levels = sorted({factor for *_, factor in self._plan})
        planes = [np.ascontiguousarray(image[c]) for c in range(n_channels)]
        filters = {
            (c, factor): _PlaneFilters(_block_mean(planes[c], factor), self.settings, factor)
            for c in range(n_channels)
            for factor in levels
        }
        # Features of a downsampled level go to a small stack first and are interpolated into `out` at the end.
        coarse: dict[tuple[int, int], np.ndarray] = {}
        items, upsamples, start = [], [], 0
        for channel in range(n_channels):
            level_sizes = dict.fromkeys(levels, 0)
            for _, spec, parameter, factor in self._plan:
                if factor == 1:
                    items.append((channel, spec, parameter, factor, out, start))
                else:
                    slot = level_sizes[factor]
                    items.append((channel, spec, parameter, factor, (channel, factor), slot))
                    upsamples.extend(((channel, factor), slot + k, start + k) for k in range(len(spec.outputs)))
                level_sizes[factor] += len(spec.outputs)
                start += len(spec.outputs)
            for factor in levels:
                if factor > 1 and level_sizes[factor]:
                    shape = filters[channel, factor].plane.shape
                    coarse[channel, factor] = np.empty((level_sizes[factor],) + shape, dtype=np.float32)
        shared = [
            (c, factor, kind, scale)
            for c in range(n_channels)
            for kind, scales in (("smoothed", "smoothings"), ("derivatives", "derivatives"))
            for factor in levels
            for scale in sorted({s for _, spec, p, f in self._plan if f == factor for s in getattr(spec, scales)(p, self.settings)})
        ]

        def write(item: tuple) -> None:
            channel, spec, parameter, factor, target, first = item
            stack = target if factor == 1 else coarse[target]
            for offset, plane in enumerate(spec.compute(filters[channel, factor], parameter)):
                stack[first + offset] = plane

        def upsample(job: tuple) -> None:
            key, slot, index = job
            _upsample_into(coarse[key][slot], key[1], out[index])

        # scipy.ndimage and numpy release the GIL, so threads use every core. Shared
        # smoothings and derivatives come first so no two threads compute the same one.
        with ThreadPoolExecutor(max_workers=self.n_threads) as pool:
            smoothings = [job for job in shared if job[2] == "smoothed"]
            list(pool.map(lambda job: filters[job[0], job[1]].smoothed(job[3]), smoothings))
            derivatives = [job for job in shared if job[2] == "derivatives"]
            list(pool.map(lambda job: filters[job[0], job[1]].derivatives(job[3]), derivatives))
            # Slow items first, so the pool does not end waiting on one long task.
            list(pool.map(write, sorted(items, key=lambda item: item[1].per != "radius")))
            list(pool.map(upsample, upsamples))
        return out

    def compute_tiled(self, normalised: np.ndarray, *, tile_size: int = 1024) -> np.ndarray:
        """Same result as `compute`, tile by tile with `halo` pixels of context (bounded memory per tile).

        `tile_size` is rounded up to a multiple of `alignment` so that tiles
        join without seams; the tile loop is `workbench.predict.predict_tiled`
        with the halo clipped at the image edge.
        """
        image = np.asarray(normalised, dtype=np.float32)

        def features(batch: np.ndarray) -> np.ndarray:
            return np.stack([self.compute(tile) for tile in batch])

        return predict_tiled(
            image, features, self.n_features(image.shape[0]), tile_size=aligned_tile_size(tile_size, self.alignment),
            overlap=0, halo=self.halo, batch_size=1, window="constant", edge="clip",
        )


def make_feature_bank(settings: FeatureSettings | dict | str | None = None) -> FeatureBank:
    """The one factory for feature banks: settings, their dict, a preset name or None (default) -> `FeatureBank`."""
    if settings is None:
        settings = FeatureSettings()
    elif isinstance(settings, str):
        if settings not in FEATURE_PRESETS:
            raise ClassicInputError(f"unknown feature preset {settings!r}; choose from {sorted(FEATURE_PRESETS)}.")
        settings = FEATURE_PRESETS[settings]
    elif isinstance(settings, dict):
        settings = FeatureSettings.from_dict(settings)
    elif not isinstance(settings, FeatureSettings):
        raise ClassicTypeError(
            f"feature settings must be a FeatureSettings, a dict from FeatureSettings.to_dict(), a preset name "
            f"({sorted(FEATURE_PRESETS)}) or None, "
            f"got {type(settings).__name__}."
        )
    return FeatureBank(settings)


# --------------------------------------------------------------------------- cache


def image_digest(image: np.ndarray) -> str:
    """Content hash of an array (shape, dtype and bytes): the cache key part for an image."""
    array = np.ascontiguousarray(image)
    digest = hashlib.sha1(f"{array.shape}|{array.dtype.str}|".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


class FeatureCache:
    """Features of training images, kept so retraining after a new stroke does not recompute them.

    Keys combine the image's content hash, the feature settings and the
    normalisation, so any change to those misses instead of returning stale
    features. In memory it keeps the `max_items` most recently used stacks; with
    a `directory` it also writes each stack as ``<key>.npy`` (written to a
    temporary name, then moved into place) and reads it back memory-mapped.

    Attributes
    ----------
    hits, misses : int
        Counters, useful to see that a retrain reused features.
    """

    def __init__(self, directory: str | os.PathLike | None = None, *, max_items: int = 8) -> None:
        self.directory = None if directory is None else Path(directory)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.max_items = int(max_items)
        self.hits = 0
        self.misses = 0
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(image: np.ndarray, settings: FeatureSettings, normalisation: PercentileNormalizer) -> str:
        recipe = json.dumps({"features": settings.to_dict(), "normalisation": normalisation.to_dict()}, sort_keys=True)
        return hashlib.sha1((image_digest(image) + recipe).encode()).hexdigest()

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached stack for `key`, computing and storing it on a miss."""
        with self._lock:
            if key in self._memory:
                self.hits += 1
                self._memory.move_to_end(key)
                return self._memory[key]
        path = None if self.directory is None else self.directory / f"{key}.npy"
        if path is not None and path.is_file():
            stack = np.load(path, mmap_mode="r")
            with self._lock:
                self.hits += 1
        else:
            stack = compute()
            with self._lock:
                self.misses += 1
            if path is not None:
                with atomic_write(path) as temporary, open(temporary, "wb") as handle:
                    np.save(handle, stack)
        with self._lock:
            self._memory[key] = stack
            while len(self._memory) > self.max_items:
                self._memory.popitem(last=False)
        return stack

    def clear(self) -> None:
        """Forget the in-memory stacks (files in `directory` stay)."""
        with self._lock:
            self._memory.clear()


# --------------------------------------------------------------------------- input checks


def as_image(image: Any, name: str = "image", *, n_channels: int | None = None) -> np.ndarray:
    """Validate a (C, Y, X) or (Y, X) array-like; returns a (C, Y, X) numpy array (dtype kept)."""
    if isinstance(image, (str, bytes, os.PathLike)) or image is None:
        raise ClassicTypeError(f"`{name}` must be an array (C, Y, X), got {type(image).__name__}; read the file first.")
    array = np.asarray(image)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ClassicTypeError(f"`{name}` must hold integer or float intensities, got dtype {array.dtype}.")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ClassicInputError(
            f"`{name}` must be (C, Y, X) or (Y, X), got shape {array.shape}; "
            "split z-stacks and time series into planes first."
        )
    if array.shape[1] < 2 or array.shape[2] < 2:
        raise ClassicInputError(f"`{name}` is too small: shape {array.shape}, expected at least 2 x 2 pixels.")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ClassicInputError(
            f"`{name}` contains {bad} NaN or infinite value(s); replace them first, "
            "e.g. np.nan_to_num(image, nan=0.0), or crop them away."
        )
    check_channels(array.shape[0], n_channels, name)
    return array


def check_channels(n_channels: int, expected: int | None, name: str = "image") -> None:
    """Raise a ClassicInputError naming the fix when an image's channel count differs from the model's."""
    if expected is not None and int(n_channels) != int(expected):
        raise ClassicInputError(
            f"`{name}` has {n_channels} channel(s) but the model was trained on {expected}; "
            f"give a (C={expected}, Y, X) image with the same channels in the same order, or train a new model."
        )


def as_targets(targets: Any, shape: tuple[int, int], n_classes: int | None, name: str = "targets") -> np.ndarray:
    """Validate int targets (Y, X) with -1 = ignore and 0..K-1 = class."""
    array = np.asarray(targets)
    if not np.issubdtype(array.dtype, np.integer):
        raise ClassicTypeError(
            f"`{name}` must be integer class indices (-1 = unlabelled, 0..K-1 = class), got dtype {array.dtype}; "
            "convert a painted label layer with workbench.store.training_targets(labels, mode)."
        )
    if array.shape != tuple(shape):
        raise ClassicInputError(f"`{name}` has shape {array.shape} but its image is {tuple(shape)} (Y, X); they must match.")
    if array.size and array.min() < -1:
        raise ClassicInputError(f"`{name}` has value {int(array.min())}; use -1 for unlabelled pixels and 0..K-1 for classes.")
    if n_classes is not None and array.size and array.max() >= n_classes:
        raise ClassicInputError(
            f"`{name}` has class {int(array.max())} but the model has {n_classes} classes (0..{n_classes - 1}); "
            "check the label layer or give the model more classes."
        )
    return array.astype(np.int64, copy=False)


__all__ = [
    "FEATURES",
    "ClassicInputError",
    "ClassicTypeError",
    "FeatureBank",
    "FeatureCache",
    "FeatureSettings",
    "as_image",
    "as_targets",
    "available_features",
    "check_channels",
    "image_digest",
    "FEATURE_PRESETS",
    "aligned_tile_size",
    "make_feature_bank",
]

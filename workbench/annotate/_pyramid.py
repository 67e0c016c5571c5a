"""Downsampled image pyramids in the project store, and viewport rendering from them.

An image's pyramid lives beside it, in its Zarr group::

    images/<name>/pyramid/1     factor 2 (each pixel the mean of a 2 x 2 block of the image)
    images/<name>/pyramid/2     factor 4
    ...                         until the level fits in `MIN_LEVEL_SIZE` pixels a side

Levels keep the image's axes (``YX``, ``CYX``, ``ZYX`` or ``ZCYX``) and are built block by block
from the level below, so the whole image is never in memory. The group's attributes record the
image shape and type it was built from and whether the build finished; an interrupted or outdated
pyramid is rebuilt by `ensure_pyramid`.

`render_image` draws what a `workbench.annotate.Viewport` sees: it picks the coarsest level that
still gives one level pixel per canvas pixel, reads only the visible region of it and maps each
canvas pixel to an image pixel, so a 10 000 x 10 000 image renders as quickly as a small one.
`NearestPyramid` does the same for label and prediction planes, in memory, by taking every
``factor``-th pixel (class values must not be averaged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from workbench.colors import hex_to_rgb
from workbench.errors import WorkbenchError
from workbench.store import ImageSource, iter_blocks
from workbench.annotate._viewport import Viewport

MIN_LEVEL_SIZE = 256  # the coarsest level fits a thumbnail
BUILD_BLOCK = 1024  # output pixels a side per build step
GROUP = "pyramid"
AUTO_CONTRAST_PERCENTILES = (0.5, 99.8)
BACKDROP = (32, 32, 32)  # canvas outside the image
DEFAULT_CHANNEL_COLORS = {
    1: ["#ffffff"],
    2: ["#ff00ff", "#00ff00"],
    3: ["#ff0000", "#00ff00", "#0000ff"],
}
CYCLE_COLORS = ["#ff0000", "#00ff00", "#0000ff", "#00ffff", "#ff00ff", "#ffff00", "#ffffff"]

__all__ = [
    "Pyramid", "ChannelDisplay", "NearestPyramid", "build_pyramid", "ensure_pyramid", "open_pyramid",
    "pyramid_factors", "default_channel_displays", "auto_contrast", "render_image", "hex_to_rgb",
]


def pyramid_factors(shape: Sequence[int], min_size: int = MIN_LEVEL_SIZE) -> list[int]:
    """Downsampling factors 2, 4, 8... until the level's larger side is at most `min_size`."""
    factors: list[int] = []
    factor = 1
    size = max(int(shape[-2]), int(shape[-1]))
    while -(-size // factor) > min_size:
        factor *= 2
        factors.append(factor)
    return factors


@dataclass
class Pyramid:
    """Full-resolution image plus its stored downsampled levels.

    Attributes
    ----------
    levels : list of ImageSource
        Level 0 is the image itself; level ``k`` is downsampled by ``factors[k]``.
    factors : list of int
        ``[1, 2, 4, ...]``.
    """

    levels: list[ImageSource]
    factors: list[int]

    @property
    def image(self) -> ImageSource:
        return self.levels[0]

    @property
    def shape(self) -> tuple[int, int]:
        """Full-resolution ``(Y, X)``."""
        return tuple(self.image.spatial_shape)

    def level(self, factor: int) -> ImageSource:
        try:
            return self.levels[self.factors.index(int(factor))]
        except ValueError:
            raise WorkbenchError(f"no pyramid level with factor {factor}; factors are {self.factors}") from None

    def coarsest_plane(self, z: int = 0) -> np.ndarray:
        """The smallest level's ``CYX`` plane, as a float32 array (for contrast and thumbnails)."""
        return np.asarray(self.levels[-1].plane(z)[:, :, :], dtype=np.float32)


def _level_path(index: int) -> str:
    return f"{GROUP}/{index}"


def _downsample_mean(block: np.ndarray) -> np.ndarray:
    """Mean of 2 x 2 blocks over the last two axes; an odd edge repeats its last row / column."""
    block = np.asarray(block, dtype=np.float32)
    pad = [(0, 0)] * (block.ndim - 2) + [(0, block.shape[-2] % 2), (0, block.shape[-1] % 2)]
    if any(p[1] for p in pad):
        block = np.pad(block, pad, mode="edge")
    return 0.25 * (block[..., 0::2, 0::2] + block[..., 1::2, 0::2] + block[..., 0::2, 1::2] + block[..., 1::2, 1::2])


def _cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return values.astype(np.float32)
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def _signature(image: ImageSource) -> dict:
    return {"shape": [int(s) for s in image.shape], "dtype": str(image.dtype), "axes": image.axes}


def build_pyramid(project, name: str, *, min_size: int = MIN_LEVEL_SIZE,
                  progress: Callable[[float, str], None] | None = None) -> Pyramid:
    """Build (or rebuild) the downsampled levels of one image, block by block, in the store.

    Parameters
    ----------
    project : workbench.store.Project
    name : str
        An image of the project.
    min_size : int
        Stop when a level's larger side is at most this many pixels.
    progress : callable(fraction, message), optional

    Returns
    -------
    Pyramid
    """
    image = project.image(name)
    group = project.zarr_group(name)
    if GROUP in group:
        del group[GROUP]
    pyr_group = group.require_group(GROUP)
    pyr_group.attrs.update({"complete": False, **_signature(image)})
    factors = pyramid_factors(image.spatial_shape, min_size)
    out_dtype = np.dtype(np.float32) if image.dtype.kind == "f" else image.dtype
    n_slices = image.n_slices
    total = max(1, sum(len(list(iter_blocks(_level_shape(image.spatial_shape, f), BUILD_BLOCK)))
                       for f in factors) * n_slices)
    done = 0
    previous = image
    levels = [image]
    for index, factor in enumerate(factors, start=1):
        height, width = _level_shape(image.spatial_shape, factor)
        shape = tuple(height if a == "Y" else width if a == "X" else s for a, s in zip(image.axes, image.shape))
        chunks = tuple(1 if a == "Z" else s if a == "C" else min(512, s) for a, s in zip(image.axes, shape))
        array = pyr_group.create_array(str(index), shape=shape, dtype=out_dtype, chunks=chunks, overwrite=True)
        array.attrs.update({"factor": factor, "axes": image.axes})
        for z in range(n_slices):
            source_plane = previous.plane(z)
            for ys, xs in iter_blocks((height, width), BUILD_BLOCK):
                block = source_plane[:, 2 * ys.start:2 * ys.stop, 2 * xs.start:2 * xs.stop]
                values = _cast_like(_downsample_mean(block), out_dtype)
                array[_level_key(image.axes, z, ys, xs)] = values if "C" in image.axes else values[0]
                done += 1
                if progress:
                    progress(done / total, f"building zoom levels for {name}")
        previous = ImageSource(array, image.axes, name=f"{name}@{factor}")
        levels.append(previous)
    pyr_group.attrs.update({"complete": True, "factors": factors})
    return Pyramid(levels=levels, factors=[1, *factors])


def _level_shape(shape: Sequence[int], factor: int) -> tuple[int, int]:
    return -(-int(shape[-2]) // factor), -(-int(shape[-1]) // factor)


def _level_key(axes: str, z: int, ys: slice, xs: slice) -> tuple:
    key: tuple = ()
    if "Z" in axes:
        key += (z,)
    if "C" in axes:
        key += (slice(None),)
    return key + (ys, xs)


def open_pyramid(project, name: str) -> Pyramid | None:
    """The stored pyramid of an image, or None when it is missing, unfinished or outdated."""
    image = project.image(name)
    group = project.zarr_group(name)
    if GROUP not in group:
        return None
    pyr_group = group[GROUP]
    attrs = dict(pyr_group.attrs)
    if not attrs.get("complete") or any(attrs.get(k) != v for k, v in _signature(image).items()):
        return None
    factors = list(attrs.get("factors", []))
    levels = [image]
    for index, factor in enumerate(factors, start=1):
        try:
            array = pyr_group[str(index)]
        except KeyError:
            return None
        levels.append(ImageSource(array, image.axes, name=f"{name}@{factor}"))
    return Pyramid(levels=levels, factors=[1, *factors])


def ensure_pyramid(project, name: str, *, min_size: int = MIN_LEVEL_SIZE,
                   progress: Callable[[float, str], None] | None = None) -> Pyramid:
    """The image's pyramid, built first when missing, unfinished or built from another image."""
    return open_pyramid(project, name) or build_pyramid(project, name, min_size=min_size, progress=progress)


# ---------------------------------------------------------------------- display settings
@dataclass
class ChannelDisplay:
    """How one channel is drawn: its colour, whether it is shown, and its contrast limits."""

    color: str = "#ffffff"
    visible: bool = True
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        hex_to_rgb(self.color)
        self.low, self.high = float(self.low), float(self.high)


def auto_contrast(plane: np.ndarray, percentiles: tuple[float, float] = AUTO_CONTRAST_PERCENTILES
                  ) -> tuple[float, float]:
    """Contrast limits of one channel from percentiles of its values (a thumbnail is plenty)."""
    values = np.asarray(plane, dtype=np.float32).ravel()
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if high <= low:  # a flat channel: show it mid-grey rather than dividing by zero
        high = low + (1.0 if values.dtype.kind != "f" or low == 0 else abs(low) * 1e-3 + 1e-6)
    return low, high


def default_channel_displays(pyramid: Pyramid, z: int = 0) -> list[ChannelDisplay]:
    """Per-channel colour (white for one channel) and auto-contrast limits from the coarsest level."""
    thumb = pyramid.coarsest_plane(z)
    n = thumb.shape[0]
    colors = DEFAULT_CHANNEL_COLORS.get(n, [CYCLE_COLORS[i % len(CYCLE_COLORS)] for i in range(n)])
    return [ChannelDisplay(color=colors[i], visible=True, low=lo, high=hi)
            for i, (lo, hi) in enumerate(auto_contrast(ch) for ch in thumb)]


def _sample(reader: Callable[[slice, slice], np.ndarray], viewport: Viewport, shape: tuple[int, int],
            factor: int):
    """``(values, inside)``: canvas-sized level pixels (leading axes kept) and the on-image mask.

    None when no image pixel is on the canvas.
    """
    rows, cols, row_ok, col_ok, region = viewport.sample_grid(shape, factor)
    if region is None:
        return None
    block = np.asarray(reader(*region))
    return block[..., rows[:, None], cols[None, :]], row_ok[:, None] & col_ok[None, :]


def render_image(pyramid: Pyramid, viewport: Viewport, channels: Sequence[ChannelDisplay], z: int = 0
                 ) -> np.ndarray:
    """RGB uint8 ``(height, width, 3)`` picture of what the viewport sees.

    Parameters
    ----------
    pyramid : Pyramid
    viewport : Viewport
    channels : list of ChannelDisplay
        One per image channel.
    z : int
        The z-slice.

    Raises
    ------
    WorkbenchError
        When `channels` does not have one entry per image channel.
    """
    n_channels = pyramid.image.n_channels
    if len(channels) != n_channels:
        raise WorkbenchError(
            f"channels has {len(channels)} display settings but the image has {n_channels} channel(s); "
            "pass one ChannelDisplay per channel (default_channel_displays makes them)"
        )
    out = np.empty((viewport.height, viewport.width, 3), np.uint8)
    out[:] = BACKDROP
    factor = viewport.level_for(pyramid.factors)
    visible = [i for i, ch in enumerate(channels) if ch.visible]
    if not visible:
        return out
    level = pyramid.level(factor).plane(z)
    sampled = _sample(lambda ys, xs: np.asarray(level[:, ys, xs])[visible], viewport, pyramid.shape, factor)
    if sampled is None:
        return out
    values, inside = sampled
    rgb = np.zeros((viewport.height, viewport.width, 3), np.float32)
    for plane, index in zip(values, visible):
        display = channels[index]
        scale = 1.0 / max(display.high - display.low, 1e-12)
        norm = np.clip((plane.astype(np.float32) - display.low) * scale, 0.0, 1.0)
        rgb += norm[..., None] * (np.asarray(hex_to_rgb(display.color), np.float32) / 255.0)
    picture = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    out[inside] = picture[inside]
    return out


class NearestPyramid:
    """In-memory nearest-neighbour levels of one 2-D plane (labels, class maps, heat maps).

    Level ``f`` holds ``plane[::f, ::f]``, so class values stay class values. Built block by block
    from `reader`; `update` keeps it current after an edit without re-reading the plane.

    Parameters
    ----------
    reader : callable(ys, xs) -> (h, w) array
        Reads a full-resolution region.
    shape : (int, int)
        Full-resolution ``(Y, X)``.
    factors : list of int
        Factors above 1 to keep (as the image pyramid's, so both switch level together).
    dtype : numpy dtype
    """

    def __init__(self, reader: Callable[[slice, slice], np.ndarray], shape: tuple[int, int],
                 factors: Sequence[int], dtype=np.uint8):
        self.reader = reader
        self.shape = (int(shape[0]), int(shape[1]))
        self.factors = sorted(int(f) for f in factors if int(f) > 1)
        self.levels = {f: np.zeros(_level_shape(self.shape, f), dtype) for f in self.factors}
        if self.factors:
            step = max(self.factors) * max(1, 2048 // max(self.factors))  # blocks aligned to every factor
            for ys, xs in iter_blocks(self.shape, step):
                self.update((ys, xs), reader(ys, xs))

    def update(self, region: tuple[slice, slice], values: np.ndarray) -> None:
        """Copy a full-resolution region's new values into every level."""
        ys, xs = region
        values = np.asarray(values)
        for factor, level in self.levels.items():
            r0, c0 = -(-ys.start // factor), -(-xs.start // factor)  # first level pixel inside the region
            r1, c1 = -(-ys.stop // factor), -(-xs.stop // factor)
            if r1 > r0 and c1 > c0:
                level[r0:r1, c0:c1] = values[r0 * factor - ys.start::factor, c0 * factor - xs.start::factor][
                    : r1 - r0, : c1 - c0]

    def read(self, factor: int, ys: slice, xs: slice) -> np.ndarray:
        """A region of level `factor` (factor 1 reads the full-resolution plane)."""
        if factor == 1:
            return np.asarray(self.reader(ys, xs))
        return self.levels[factor][ys, xs]

    def sample(self, viewport: Viewport, factor: int):
        """``(values, inside)``: canvas-sized values and the mask of canvas pixels over the image."""
        return _sample(lambda ys, xs: self.read(factor, ys, xs), viewport, self.shape, factor)

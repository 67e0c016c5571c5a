"""Pictures for people: an image with its labels or objects drawn over it, as RGB uint8."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

from workbench.colors import hex_to_rgb

__all__ = ["to_display", "overlay_instances", "overlay_classes", "hex_to_rgb"]


def to_display(image, *, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Gray (Y, X) or first three channels (C, Y, X) scaled to uint8 RGB by percentiles."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    channels = image[:3]
    out = np.empty(channels.shape, np.float32)
    for i, ch in enumerate(channels):
        lo, hi = np.percentile(ch, [low, high])
        out[i] = np.clip((ch - lo) / max(hi - lo, 1e-6), 0, 1)
    if len(out) == 1:
        out = np.repeat(out, 3, axis=0)
    elif len(out) == 2:
        out = np.concatenate([out, np.zeros_like(out[:1])])
    return (np.moveaxis(out, 0, -1) * 255).astype(np.uint8)


def _label_colors(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hues = rng.random(n)
    # Bright, saturated colours that stand out on a dark fluorescence image.
    rgb = np.stack([np.abs(hues * 6 - 3) - 1, 2 - np.abs(hues * 6 - 2), 2 - np.abs(hues * 6 - 4)], -1)
    return (np.clip(rgb, 0, 1) * 200 + 55).astype(np.uint8)


def overlay_instances(image, instances, *, fill_alpha: float = 0.25) -> np.ndarray:
    """Each object tinted and outlined in its own colour."""
    rgb = to_display(image).astype(np.float32)
    instances = np.asarray(instances)
    ids, inverse = np.unique(instances, return_inverse=True)
    colors = np.zeros((len(ids), 3), np.float32)
    colors[ids > 0] = _label_colors(int((ids > 0).sum()))
    per_pixel = colors[inverse.reshape(instances.shape)]
    inside = instances > 0
    rgb[inside] = (1 - fill_alpha) * rgb[inside] + fill_alpha * per_pixel[inside]
    edges = find_boundaries(instances, mode="inner")
    rgb[edges] = per_pixel[edges]
    return rgb.astype(np.uint8)


def overlay_classes(image, class_map, colors, *, alpha: float = 0.4, skip_first: bool = True) -> np.ndarray:
    """Class map (0-based class indices) tinted with the project's class colours."""
    rgb = to_display(image).astype(np.float32)
    class_map = np.asarray(class_map)
    for index, color in enumerate(colors):
        if skip_first and index == 0:
            continue
        where = class_map == index
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.array(hex_to_rgb(color), np.float32)
    return rgb.astype(np.uint8)

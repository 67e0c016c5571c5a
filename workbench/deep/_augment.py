"""Training augmentation: one strength setting scales an albumentations pipeline.

Image and targets are transformed together. Geometric transforms (flips, 90°
rotations, rotation, zoom, stretch and shear, elastic warps) move both;
intensity transforms (brightness, contrast, gamma, noise, blur) touch only the
image and work on normalised float32 data with any number of channels, never
clipping to [0, 1]. Pixels that a geometric transform brings in from outside
the image become ``-1`` (ignore) in the targets, never background.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
from scipy import ndimage

from workbench.conventions import IGNORE
from workbench.errors import WorkbenchError

__all__ = ["Augmenter", "build_pipeline", "IntensityJitter", "GaussianNoiseAnyRange", "GaussianBlurAnyChannels"]



class IntensityJitter(A.ImageOnlyTransform):
    """Per-channel brightness shift, contrast scaling and gamma, for float data of any range.

    Gamma is applied on each channel's own [min, max] range, so negative
    normalised values are fine. Nothing is clipped.

    Parameters
    ----------
    brightness : float
        Maximum additive shift (normalised units; 1 = the 1-99.8 % range).
    contrast : float
        Maximum relative contrast change (0.3 = x0.7 … x1.3 around the mean).
    gamma : float
        Maximum ``|log(gamma)|``.
    p : float
        Probability of applying.
    """

    def __init__(self, brightness: float = 0.1, contrast: float = 0.2, gamma: float = 0.2, p: float = 0.5):
        super().__init__(p=p)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.gamma = float(gamma)

    def get_params(self) -> dict[str, Any]:
        return {"seed": int(self.random_generator.integers(0, 2**31 - 1))}

    def apply(self, img: np.ndarray, seed: int = 0, **params) -> np.ndarray:
        rng = np.random.default_rng(seed)
        channels = img.shape[-1] if img.ndim == 3 else 1
        out = np.array(img, dtype=np.float32, copy=True).reshape(img.shape[0], img.shape[1], channels)
        for channel in range(channels):
            values = out[..., channel]
            low, high = float(values.min()), float(values.max())
            if high > low and self.gamma > 0:
                gamma = float(np.exp(rng.uniform(-self.gamma, self.gamma)))
                values = ((values - low) / (high - low)) ** gamma * (high - low) + low
            mean = float(values.mean())
            factor = rng.uniform(1 - self.contrast, 1 + self.contrast)
            shift = rng.uniform(-self.brightness, self.brightness)
            out[..., channel] = (values - mean) * factor + mean + shift
        return out.reshape(img.shape)

    def get_transform_init_args_names(self):
        return ("brightness", "contrast", "gamma")


class GaussianNoiseAnyRange(A.ImageOnlyTransform):
    """Additive Gaussian noise with a random standard deviation up to ``max_std`` (no clipping)."""

    def __init__(self, max_std: float = 0.05, p: float = 0.5):
        super().__init__(p=p)
        self.max_std = float(max_std)

    def get_params(self) -> dict[str, Any]:
        return {"seed": int(self.random_generator.integers(0, 2**31 - 1))}

    def apply(self, img: np.ndarray, seed: int = 0, **params) -> np.ndarray:
        rng = np.random.default_rng(seed)
        std = rng.uniform(0, self.max_std)
        return (img + rng.normal(0.0, std, size=img.shape)).astype(np.float32)

    def get_transform_init_args_names(self):
        return ("max_std",)


class GaussianBlurAnyChannels(A.ImageOnlyTransform):
    """Gaussian blur of each channel with a random sigma up to ``max_sigma`` pixels."""

    def __init__(self, max_sigma: float = 1.0, p: float = 0.5):
        super().__init__(p=p)
        self.max_sigma = float(max_sigma)

    def get_params(self) -> dict[str, Any]:
        return {"sigma": float(self.random_generator.uniform(0.0, self.max_sigma))}

    def apply(self, img: np.ndarray, sigma: float = 0.0, **params) -> np.ndarray:
        if sigma <= 0.05:
            return img
        sigmas = (sigma, sigma, 0.0) if img.ndim == 3 else (sigma, sigma)
        return ndimage.gaussian_filter(img.astype(np.float32), sigmas, mode="reflect")

    def get_transform_init_args_names(self):
        return ("max_sigma",)


def build_pipeline(strength: float, *, seed: int | None = None, square: bool = True) -> A.Compose | None:
    """The albumentations pipeline for a strength between 0 (none) and 1 (strong).

    Parameters
    ----------
    strength : float
        Scales every transform's probability and magnitude. 0 returns None.
    seed : int or None
        Seed of the pipeline's own random generator (reproducible runs).
    square : bool
        Include 90° rotations, which swap height and width (so only for square inputs).

    Returns
    -------
    albumentations.Compose or None
        Expects ``image`` HWC float32 and ``mask`` HW with 0 = ignore, classes
        shifted by +1 (see `Augmenter`, which does this for you).
    """
    strength = _check_strength(strength)
    if strength == 0:
        return None
    s = strength
    constant = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0.0, "fill_mask": 0}
    transforms = [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5 if square else 0.0),
        A.Affine(
            rotate=(-45 * s, 45 * s),
            scale={"x": (1 - 0.25 * s, 1 + 0.25 * s), "y": (1 - 0.25 * s, 1 + 0.25 * s)},
            shear={"x": (-10 * s, 10 * s), "y": (-10 * s, 10 * s)},
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            p=min(1.0, 0.2 + 0.6 * s),
            **constant,
        ),
        A.ElasticTransform(
            alpha=150 * s,
            sigma=10,
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            p=0.3 * s,
            **constant,
        ),
        IntensityJitter(brightness=0.15 * s, contrast=0.3 * s, gamma=0.3 * s, p=min(1.0, 0.2 + 0.6 * s)),
        GaussianNoiseAnyRange(max_std=0.08 * s, p=0.4 * s),
        GaussianBlurAnyChannels(max_sigma=1.5 * s, p=0.3 * s),
    ]
    return A.Compose(transforms, seed=seed)


class Augmenter:
    """Apply a strength-scaled pipeline to a (CYX image, YX targets) pair.

    Parameters
    ----------
    strength : float
        0 = no augmentation … 1 = strong.
    seed : int or None
        Makes the sequence of augmentations reproducible.

    Examples
    --------
    >>> augment = Augmenter(0.5, seed=0)
    >>> image, targets = augment(np.zeros((2, 64, 64), np.float32), np.zeros((64, 64), np.int64))
    >>> image.shape, targets.shape
    ((2, 64, 64), (64, 64))
    """

    def __init__(self, strength: float = 0.5, *, seed: int | None = None):
        self.strength = _check_strength(strength)
        self.pipeline = build_pipeline(self.strength, seed=seed)
        self._seed = seed
        self._non_square_pipeline = None  # built on first use: 90° rotations would swap its sides

    def __call__(self, image: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Augment one pair.

        Parameters
        ----------
        image : np.ndarray
            ``CYX`` float32 (normalised), any channel count.
        targets : np.ndarray
            ``YX`` integers, -1 = ignore, 0..K-1 classes.

        Returns
        -------
        image : np.ndarray
            ``CYX`` float32.
        targets : np.ndarray
            ``YX`` int64; pixels from outside the input are -1.
        """
        image = np.asarray(image)
        targets = np.asarray(targets)
        if image.ndim != 3 or targets.shape != image.shape[1:]:
            raise WorkbenchError(
                f"augmentation needs a CYX image and YX targets of the same size; got image {image.shape} "
                f"and targets {targets.shape}."
            )
        if self.pipeline is None:
            return image.astype(np.float32, copy=False), targets.astype(np.int64, copy=False)
        pipeline = self.pipeline
        if targets.shape[0] != targets.shape[1]:
            if self._non_square_pipeline is None:
                seed = None if self._seed is None else self._seed + 1
                self._non_square_pipeline = build_pipeline(self.strength, seed=seed, square=False)
            pipeline = self._non_square_pipeline
        if targets.min(initial=0) < IGNORE:
            raise WorkbenchError(f"targets must be >= -1 (-1 = ignore); got minimum {targets.min()}.")
        shifted_max = int(targets.max(initial=0)) + 1
        mask_dtype = np.uint8 if shifted_max < 255 else np.uint16
        if shifted_max >= 65535:
            raise WorkbenchError(f"targets hold class {shifted_max - 1}; at most 65533 classes are supported.")
        # Shift so that 0 is "ignore": geometric transforms fill outside pixels with 0.
        mask = (targets + 1).astype(mask_dtype)
        hwc = np.ascontiguousarray(np.moveaxis(image.astype(np.float32, copy=False), 0, -1))
        out = pipeline(image=hwc, mask=mask)
        out_image = out["image"]
        if out_image.ndim == 2:
            out_image = out_image[..., None]
        return (
            np.ascontiguousarray(np.moveaxis(out_image, -1, 0), dtype=np.float32),
            out["mask"].astype(np.int64) - 1,
        )


def _check_strength(strength: Any) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise WorkbenchError(f"augmentation `strength` must be a number from 0 (none) to 1 (strong); got {strength!r}.")
    return float(strength)

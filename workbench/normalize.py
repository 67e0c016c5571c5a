"""The one intensity normalisation of the engine: per-channel percentiles, fitted once, stored with the model.

Both paths use it: the U-Net's card and the Random Forest's card store the same record
(`PercentileNormalizer.to_dict`), and every image a model sees later is scaled by the numbers
fitted on its training images. Intensities are mapped so that the low percentile becomes 0 and
the high percentile becomes 1 (values outside stay outside; nothing is clipped), as
``(x - offset) * (1 / scale)`` in float32 per channel; bioimage.io's ``scale_linear`` describes
the same map. The percentiles are estimated from a bounded, strided subsample of each image, so
fitting on a huge (lazily read) image touches only a few million pixels.

A channel whose percentiles are equal falls back to its minimum and maximum (a sparse channel,
mostly zeros, still carries signal). A channel that is constant in every training image carries
nothing to learn from and has no scale: fitting refuses it with a `WorkbenchError` that says so,
on both paths (the forest used to scale such a channel by 1, which left the model seeing raw
offsets; forests saved that way still load, with scale 1).

This module imports nothing of the engine but its errors, so both paths may import it.

Examples
--------
>>> import numpy as np
>>> norm = PercentileNormalizer().fit([np.arange(100, dtype=np.uint16).reshape(1, 10, 10)])
>>> round(float(norm(np.full((1, 2, 2), 50))[0, 0, 0]), 3)  # percentiles 0.99 and 98.8 map to 0 and 1
0.501
>>> PercentileNormalizer.from_dict(norm.to_dict()) == norm
True
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

import numpy as np

from workbench.errors import WorkbenchError

__all__ = ["PercentileNormalizer", "fit_normalizer"]

_MAX_SAMPLES_PER_IMAGE = 1_000_000
_DEFAULT_LOW, _DEFAULT_HIGH = 1.0, 99.8


class PercentileNormalizer:
    """Map each channel's ``low``/``high`` percentile to 0/1.

    Parameters
    ----------
    low, high : float
        Percentiles in [0, 100] with ``low < high``. Defaults 1 and 99.8.
    offsets, scales : sequence of float or None
        Fitted per-channel values (``out = (x - offset) / scale``); None until
        `fit` ran.

    Examples
    --------
    >>> norm = PercentileNormalizer(offsets=[10.0], scales=[200.0])
    >>> norm(np.array([[[10, 210]]], np.uint16)).tolist()
    [[[0.0, 1.0]]]
    """

    def __init__(self, low: float = _DEFAULT_LOW, high: float = _DEFAULT_HIGH, *, offsets=None, scales=None):
        low, high = float(low), float(high)
        if not (0.0 <= low < high <= 100.0):
            raise WorkbenchError(
                f"percentiles must satisfy 0 <= low < high <= 100; got low={low}, high={high}. "
                "The defaults are low=1, high=99.8."
            )
        self.low = low
        self.high = high
        self.offsets = None if offsets is None else np.asarray(offsets, dtype=np.float64)
        self.scales = None if scales is None else np.asarray(scales, dtype=np.float64)
        if (self.offsets is None) != (self.scales is None) or (
            self.offsets is not None and (self.offsets.ndim != 1 or self.offsets.shape != self.scales.shape)
        ):
            raise WorkbenchError("`offsets` and `scales` must both be given, one value per channel.")

    @property
    def is_fitted(self) -> bool:
        """Whether `fit` (or `from_dict`) set the per-channel values."""
        return self.offsets is not None

    @property
    def n_channels(self) -> int | None:
        """Channel count the normaliser was fitted for (None before fitting)."""
        return None if self.offsets is None else int(self.offsets.shape[0])

    def fit(self, images: Iterable[Any]) -> "PercentileNormalizer":
        """Estimate per-channel percentiles from training images.

        Parameters
        ----------
        images : iterable of array-like
            Channel-first ``CYX`` images (any numeric dtype, numpy, zarr or
            anything with ``shape`` and slicing); all with the same ``C``.

        Returns
        -------
        PercentileNormalizer
            ``self``, fitted.

        Raises
        ------
        WorkbenchError
            If no image is given, channel counts differ, values are NaN or
            infinite, or a channel is constant in all images.
        """
        per_channel: list[list[np.ndarray]] | None = None
        for index, image in enumerate(images):
            shape = tuple(getattr(image, "shape", ()))
            if len(shape) != 3:
                raise WorkbenchError(
                    f"image {index} must be channel-first CYX (3 axes); got shape {shape}. "
                    "Add a channel axis to single-channel images with image[None]."
                )
            sample = _strided_sample(image)
            if not np.all(np.isfinite(sample)):
                raise WorkbenchError(
                    f"image {index} contains NaN or infinite values; replace them (e.g. np.nan_to_num) before training."
                )
            if per_channel is None:
                per_channel = [[] for _ in range(shape[0])]
            elif len(per_channel) != shape[0]:
                raise WorkbenchError(
                    f"all images must have the same channel count; image 0 has {len(per_channel)}, "
                    f"image {index} has {shape[0]}."
                )
            for channel in range(shape[0]):
                per_channel[channel].append(sample[channel].ravel())
        if per_channel is None:
            raise WorkbenchError("cannot fit the normalisation on no images: pass at least one CYX image.")
        offsets, scales = [], []
        for channel, parts in enumerate(per_channel):
            values = np.concatenate(parts)
            low, high = np.percentile(values, [self.low, self.high])
            if not high > low:
                # A sparse channel (mostly zeros) can have equal percentiles while not being constant.
                low, high = float(values.min()), float(values.max())
            if not high > low:
                raise WorkbenchError(
                    f"channel {channel} is constant (all values {low:g}) in the training images, so it "
                    "carries no information to normalise; drop that channel or check the image was read correctly."
                )
            offsets.append(float(low))
            scales.append(float(high - low))
        self.offsets = np.asarray(offsets, dtype=np.float64)
        self.scales = np.asarray(scales, dtype=np.float64)
        return self

    def __call__(self, tile: Any) -> np.ndarray:
        """Normalise a ``CYX`` tile or a ``BCYX`` batch to float32.

        Raises
        ------
        WorkbenchError
            If not fitted, or the channel axis does not match.
        """
        if not self.is_fitted:
            raise WorkbenchError("the normaliser is not fitted: call fit(images) or build it with from_dict().")
        array = np.asarray(tile)
        if array.ndim not in (3, 4):
            raise WorkbenchError(
                f"tile must be CYX or BCYX; got shape {array.shape}. Add a channel axis with tile[None]."
            )
        channel_axis = array.ndim - 3
        if array.shape[channel_axis] != self.n_channels:
            raise WorkbenchError(
                f"tile has {array.shape[channel_axis]} channel(s) but the normalisation was fitted on "
                f"{self.n_channels}; use images with the channels the model was trained on."
            )
        offsets = self.offsets.astype(np.float32).reshape(-1, 1, 1)
        gains = (1.0 / self.scales).astype(np.float32).reshape(-1, 1, 1)
        out = np.asarray(array, dtype=np.float32) - offsets
        out *= gains
        return out

    apply = __call__

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (stored in the model card of either path)."""
        return {
            "kind": "percentile",
            "low": self.low,
            "high": self.high,
            "offsets": None if self.offsets is None else [float(v) for v in self.offsets],
            "scales": None if self.scales is None else [float(v) for v in self.scales],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PercentileNormalizer":
        """Rebuild from `to_dict` output, or from the record older Random Forest cards hold.

        Older forests stored ``{"low": [per-channel low], "high": [per-channel high],
        "percentiles": [1.0, 99.8]}``; it is read as ``offsets = low`` and
        ``scales = high - low``, which normalises exactly as those forests did.

        Raises
        ------
        WorkbenchError
            If ``data`` is not a percentile normalisation description.
        """
        if not isinstance(data, dict) or data.get("kind", "percentile") != "percentile":
            raise WorkbenchError(
                f"normalisation must be a dict with kind='percentile' (from to_dict()); got {data!r}."
            )
        if "percentiles" in data:  # a forest card written before the paths shared this normaliser
            data = _from_forest_record(data)
        scales = data.get("scales")
        if scales is not None and not all(
            isinstance(s, numbers.Real) and not isinstance(s, bool) and math.isfinite(s) and s > 0 for s in scales
        ):
            raise WorkbenchError(f"normalisation scales must be positive finite numbers; got {scales}.")
        return cls(data.get("low", _DEFAULT_LOW), data.get("high", _DEFAULT_HIGH),
                   offsets=data.get("offsets"), scales=scales)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PercentileNormalizer):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable (fit sets the values): equal by value, not hashable

    def __repr__(self):
        state = f"channels={self.n_channels}" if self.is_fitted else "unfitted"
        return f"PercentileNormalizer(low={self.low}, high={self.high}, {state})"


def fit_normalizer(images: Iterable[Any], low: float = _DEFAULT_LOW, high: float = _DEFAULT_HIGH) -> PercentileNormalizer:
    """Fit a `PercentileNormalizer` on ``CYX`` training images (see `PercentileNormalizer.fit`)."""
    return PercentileNormalizer(low, high).fit(images)


def _from_forest_record(data: dict[str, Any]) -> dict[str, Any]:
    """The older forest record ``{"low": [...], "high": [...], "percentiles": [p, q]}`` as `to_dict` output."""
    try:
        low, high = [float(v) for v in data["low"]], [float(v) for v in data["high"]]
        percentiles = [float(p) for p in data["percentiles"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise WorkbenchError(
            f"normalisation record {data!r} is damaged ({exc}); train the model again."
        ) from exc
    if len(low) != len(high) or len(percentiles) != 2:
        raise WorkbenchError(
            f"normalisation record {data!r} is damaged: 'low' and 'high' need one value per channel "
            "and 'percentiles' two; train the model again."
        )
    # float64 subtraction: the older code scaled by 1 / (high - low) computed the same way.
    return {"kind": "percentile", "low": percentiles[0], "high": percentiles[1],
            "offsets": low, "scales": [h - l for l, h in zip(low, high)]}


def _strided_sample(image: Any, max_samples: int = _MAX_SAMPLES_PER_IMAGE) -> np.ndarray:
    """A regular subsample (C, y', x') with at most ``max_samples`` pixels per channel, as float64."""
    _, height, width = image.shape
    stride = max(1, int(math.ceil(math.sqrt(height * width / max_samples))))
    return np.asarray(image[:, ::stride, ::stride], dtype=np.float64)

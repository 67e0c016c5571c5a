"""The classic path: engineered filter features + Random Forest pixel classifier (as in ilastik / ZEN Intellesis).

A `FeatureBank` (Gaussian, gradient, LoG and Hessian eigenvalues at scales
1-16, large scales computed on a downsampled copy, plus local entropy; the
"rich" preset adds DoG and structure-tensor eigenvalues) turns each pixel into
27 (rich: 34) numbers per channel; a scikit-learn Random Forest trained on the annotated
pixels only turns them into class probabilities (K, Y, X). In instance mode K
= 3 (background, interior, boundary), the same input the deep path gives to
`workbench.predict._instances`.

Intensities are normalised first with per-channel percentiles fitted on the
training images and stored with the model (`workbench.normalize`, the same
normaliser the deep path uses), so a forest transfers to new images. Features are computed tile by tile with `FeatureBank.halo` pixels of
context, so large images have no seams; `ForestModel.as_predictor()` plugs
into `workbench.predict.predict_tiled`, and `predict_image` runs that one tile
loop with the halo clipped at the image edge, so it equals whole-image
prediction everywhere.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> image = rng.normal(size=(1, 64, 64)).astype(np.float32)
>>> image[:, 16:48, 16:48] += 4
>>> targets = np.full((64, 64), -1)
>>> targets[20:44, 20:44:6] = 1       # strokes inside the square
>>> targets[2:10, ::5] = 0            # strokes on the background
>>> model = ForestModel(mode="semantic").fit([(image, targets)])
>>> model.predict_proba(image).shape
(2, 64, 64)
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.ensemble import RandomForestClassifier

from workbench.conventions import INSTANCE_CLASSES, MODES
from workbench.errors import WorkbenchError
from workbench.normalize import PercentileNormalizer
from workbench.store import atomic_write
from workbench.classic._forest_format import (
    FOREST_ARRAYS_NAME,
    LEGACY_PICKLE_NAME,
    load_forest_arrays,
    save_forest_arrays,
)
from workbench.validate import whole_number
from workbench.classic._features import (
    FEATURE_PRESETS,
    FEATURES,
    ClassicInputError,
    ClassicTypeError,
    FeatureBank,
    FeatureCache,
    FeatureSettings,
    aligned_tile_size,
    as_image,
    as_targets,
    available_features,
    settings_from_dict,
    check_channels,
    make_feature_bank,
)
from workbench.predict import predict_tiled

__all__ = [
    "FEATURE_PRESETS",
    "FEATURES",
    "INSTANCE_CLASSES",
    "ClassicInputError",
    "ClassicTypeError",
    "FeatureBank",
    "FeatureCache",
    "FeatureSettings",
    "ForestModel",
    "ForestSettings",
    "LivePreview",
    "PercentileNormalizer",
    "available_features",
    "make_feature_bank",
    "predict_image",
]

CARD_NAME = "card.json"
FOREST_NAME = FOREST_ARRAYS_NAME
CARD_FORMAT = "workbench-random-forest"
CARD_VERSION = 4
"""4: normalisation as `PercentileNormalizer.to_dict` (3 and before: ``{"low", "high", "percentiles"}``,
still read); 3: trees as arrays in forest.npz (2 and before: a joblib pickle, never loaded)."""
PREDICT_BLOCK = 32768
"""Pixels walked through all trees at once: their rows (~4 bytes x features each) stay in cache."""


@dataclass(frozen=True)
class ForestSettings:
    """Size and sampling of the Random Forest.

    Parameters
    ----------
    n_estimators : int
        Trees. 16 matched 32 on the nuclei half split (instance AP, Dice);
        prediction time grows linearly with it.
    max_depth : int
        Bounded depth keeps the model a few MB and prediction fast.
    max_pixels_per_class : int
        At most this many annotated pixels per class are drawn (uniformly over
        all images) for training: balanced classes, bounded training time.
    min_samples_leaf : int
        Leaves hold at least this many pixels (smaller, smoother trees).
    max_features : str or int or float
        Features tried per split (scikit-learn's meaning).
    class_weight : str or None
        ``"balanced_subsample"`` re-balances classes that have fewer pixels than
        the cap inside each bootstrap sample.
    n_jobs : int
        Threads for training and prediction (-1: every core).
    random_state : int
        Seed for the pixel sampling and the forest: same inputs, same model.
    """

    n_estimators: int = 16
    max_depth: int = 12
    max_pixels_per_class: int = 20000
    min_samples_leaf: int = 3
    max_features: str | int | float = "sqrt"
    class_weight: str | None = "balanced_subsample"
    n_jobs: int = -1
    random_state: int = 0

    def __post_init__(self) -> None:
        for name in ("n_estimators", "max_depth", "max_pixels_per_class", "min_samples_leaf"):
            whole_number(getattr(self, name), f"ForestSettings.{name}", error=ClassicInputError)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForestSettings:
        return settings_from_dict(cls, data)


PREVIEW_FOREST = ForestSettings(n_estimators=30, max_depth=10, max_pixels_per_class=3000)
"""A small forest that retrains in a fraction of a second, for `LivePreview`."""


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ClassicInputError(f"`mode` must be one of {MODES}, got {mode!r}.")
    return mode


def _as_samples(samples: Any) -> list[tuple[Any, Any]]:
    if isinstance(samples, tuple) and len(samples) == 2 and not isinstance(samples[0], tuple):
        samples = [samples]
    try:
        pairs = list(samples)
    except TypeError:
        raise ClassicTypeError(
            f"`samples` must be a list of (image (C, Y, X), targets (Y, X)) pairs, got {type(samples).__name__}."
        ) from None
    if not pairs:
        raise ClassicInputError("`samples` is empty; give at least one (image, targets) pair with painted labels.")
    for index, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ClassicTypeError(
                f"`samples[{index}]` must be an (image, targets) pair, got {type(pair).__name__}; "
                "targets are int YX arrays with -1 = unlabelled, 0..K-1 = class."
            )
    return pairs


def _check_classes_present(counts: np.ndarray, class_names: Sequence[str]) -> None:
    present = np.flatnonzero(counts)
    if present.size == 0:
        raise ClassicInputError(
            "no annotated pixels: every target is -1 (unlabelled); paint strokes for at least two classes "
            "(e.g. background and object) and train again."
        )
    if present.size == 1:
        only = class_names[present[0]] if present[0] < len(class_names) else str(present[0])
        raise ClassicInputError(
            f"only one class is annotated ({only!r}, {int(counts[present[0]])} pixels); a classifier needs "
            "examples of at least two classes: paint some background (or another class) too."
        )


def _balanced_indices(
    targets_flat: list[np.ndarray], n_classes: int, cap: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per image, sorted flat indices of at most `cap` pixels per class, drawn uniformly over all images."""
    per_image: list[list[np.ndarray]] = [[] for _ in targets_flat]
    for cls in range(n_classes):
        where = [np.flatnonzero(t == cls) for t in targets_flat]
        total = sum(w.size for w in where)
        if total == 0:
            continue
        chosen = np.sort(rng.choice(total, size=min(cap, total), replace=False))
        offsets = np.cumsum([0] + [w.size for w in where])
        for index, w in enumerate(where):
            local = chosen[(chosen >= offsets[index]) & (chosen < offsets[index + 1])] - offsets[index]
            per_image[index].append(w[local])
    return [np.sort(np.concatenate(parts)) if parts else np.empty(0, np.intp) for parts in per_image]


class ForestModel:
    """A Random Forest pixel classifier on a filter bank, with its normalisation and recipe.

    Parameters
    ----------
    mode : {"semantic", "instance"}
        Instance mode predicts 3 classes (background, interior, boundary).
    n_classes : int, optional
        Semantic classes K; inferred from the largest target on `fit` if not given.
    class_names : sequence of str, optional
        Names of the K classes (default "class 0", ...; instance mode: fixed).
    features : FeatureSettings, dict or str, optional
        The filter bank: settings, their dict, or a preset name from
        `FEATURE_PRESETS` ("fast", the default, 27 features per channel;
        "rich", 34 at full resolution).
    forest : ForestSettings or dict, optional
        Forest size and sampling (default `ForestSettings()`).
    cache : FeatureCache, optional
        Where training features are kept between fits (default: a new
        in-memory cache owned by this model).

    Attributes
    ----------
    features : FeatureBank
        ``features.halo`` is the context a tile needs for seamless prediction.
    normalisation : workbench.normalize.PercentileNormalizer or None
        Fitted on the training images by `fit` (the same normaliser as the deep path's).
    n_channels : int or None
    metrics : dict
        Training pixel counts, seconds and accuracy on the training pixels.
    """

    def __init__(
        self,
        *,
        mode: str = "semantic",
        n_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        features: FeatureSettings | dict | None = None,
        forest: ForestSettings | dict | None = None,
        cache: FeatureCache | None = None,
    ) -> None:
        self.mode = _check_mode(mode)
        if self.mode == "instance":
            if n_classes not in (None, 3):
                raise ClassicInputError(f"instance mode predicts 3 classes {INSTANCE_CLASSES}, got n_classes={n_classes}.")
            n_classes, class_names = 3, INSTANCE_CLASSES
        if n_classes is not None and (not isinstance(n_classes, (int, np.integer)) or n_classes < 2):
            raise ClassicInputError(f"`n_classes` must be an integer >= 2, got {n_classes!r}.")
        if class_names is not None:
            class_names = tuple(str(name) for name in class_names)
            if n_classes is None:
                n_classes = len(class_names)
            if len(class_names) != n_classes:
                raise ClassicInputError(f"`class_names` has {len(class_names)} names but n_classes is {n_classes}.")
        self.n_classes: int | None = None if n_classes is None else int(n_classes)
        self.class_names: tuple[str, ...] | None = class_names
        self.features: FeatureBank = make_feature_bank(features)
        if isinstance(forest, dict):
            forest = ForestSettings.from_dict(forest)
        if forest is not None and not isinstance(forest, ForestSettings):
            raise ClassicTypeError(f"`forest` must be ForestSettings, a dict or None, got {type(forest).__name__}.")
        self.forest_settings: ForestSettings = forest or ForestSettings()
        self.cache = cache if cache is not None else FeatureCache()
        self.normalisation: PercentileNormalizer | None = None
        self.n_channels: int | None = None
        self.metrics: dict[str, Any] = {}
        self._forest: RandomForestClassifier | None = None
        self._tables: tuple[RandomForestClassifier, list] | None = None

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else "not fitted"
        return (
            f"ForestModel(mode={self.mode!r}, classes={self.class_names}, n_channels={self.n_channels}, "
            f"n_features={self.n_features}, halo={self.halo}, {state})"
        )

    # ------------------------------------------------------------------ properties

    @property
    def is_fitted(self) -> bool:
        return self._forest is not None

    @property
    def halo(self) -> int:
        """Pixels of context each tile needs (`features.halo`)."""
        return self.features.halo

    @property
    def in_channels(self) -> int | None:
        """Channels of the images the model was trained on (None before `fit`)."""
        return self.n_channels

    @property
    def n_outputs(self) -> int:
        """K, the number of probability planes `predict_proba` returns."""
        self.require_fitted("n_outputs")
        return int(self.n_classes)

    @property
    def n_features(self) -> int | None:
        return None if self.n_channels is None else self.features.n_features(self.n_channels)

    @property
    def forest(self) -> RandomForestClassifier:
        """The fitted scikit-learn forest."""
        self.require_fitted("forest")
        return self._forest

    def require_fitted(self, what: str) -> None:
        """Raise a `ClassicInputError` that names `what` needs a trained model, unless it is trained."""
        if self._forest is None:
            raise ClassicInputError(f"ForestModel.{what}: the model is not trained yet; call fit(samples) or ForestModel.load(directory).")

    # ------------------------------------------------------------------ features

    def training_features(self, image: np.ndarray) -> np.ndarray:
        """(F, Y, X) features of a training image, from the cache when it was seen before with this normalisation."""
        image = as_image(image, "image", n_channels=self.n_channels)
        key = FeatureCache.key(image, self.features.settings, self.normalisation)
        return self.cache.get_or_compute(key, lambda: self.features.compute(self.normalisation.apply(image)))

    def tile_features(self, tile: np.ndarray) -> np.ndarray:
        """(F, Y, X) features of a raw (C, Y, X) tile: the stored normalisation, then the filter bank.

        Features near the tile's edge lack context; read tiles with `halo` pixels to spare.
        """
        return self.features.compute(self.normalisation.apply(tile))


    # ------------------------------------------------------------------ training

    def fit(self, samples, *, progress: Callable[[float, str], None] | None = None) -> ForestModel:
        """Train on the annotated pixels of `samples`.

        Parameters
        ----------
        samples : list of (image, targets)
            image (C, Y, X) (or (Y, X)) any numeric dtype; targets (Y, X) int
            with -1 = unlabelled and 0..K-1 = class (instance mode: 0
            background, 1 interior, 2 boundary, see
            workbench.store.training_targets). A single pair is accepted.
        progress : callable(fraction, message), optional

        Returns
        -------
        ForestModel
            self, fitted; `metrics` filled in.

        Raises
        ------
        ClassicInputError
            No annotated pixels, a single class annotated, NaNs in an image,
            mismatched shapes or channel counts.
        """
        started = time.perf_counter()
        pairs = _as_samples(samples)
        images, targets = [], []
        for index, (image, target) in enumerate(pairs):
            image = as_image(image, f"samples[{index}] image")
            if images and image.shape[0] != images[0].shape[0]:
                raise ClassicInputError(
                    f"samples[{index}] image has {image.shape[0]} channel(s) but samples[0] has {images[0].shape[0]}; "
                    "all training images need the same channels."
                )
            images.append(image)
            targets.append(as_targets(target, image.shape[1:], self.n_classes, f"samples[{index}] targets"))
        n_classes = self.n_classes or max(2, max(int(t.max()) for t in targets) + 1)
        class_names = self.class_names or tuple(f"class {k}" for k in range(n_classes))
        counts = np.zeros(n_classes, dtype=np.int64)
        for target in targets:
            counts += np.bincount(target[target >= 0].ravel(), minlength=n_classes)[:n_classes]
        _check_classes_present(counts, class_names)

        normalisation = PercentileNormalizer().fit(images)
        previous = (self.normalisation, self.n_channels)
        self.normalisation, self.n_channels = normalisation, images[0].shape[0]
        try:
            rng = np.random.default_rng(self.forest_settings.random_state)
            flat_targets = [t.ravel() for t in targets]
            chosen = _balanced_indices(flat_targets, n_classes, self.forest_settings.max_pixels_per_class, rng)
            rows, labels = [], []
            feature_started = time.perf_counter()
            for index, (image, flat, picked) in enumerate(zip(images, flat_targets, chosen)):
                if progress is not None:
                    progress(0.8 * index / len(images), f"features of image {index + 1} of {len(images)}")
                if picked.size == 0:
                    continue
                stack = self.training_features(image)
                rows.append(np.ascontiguousarray(stack.reshape(stack.shape[0], -1)[:, picked].T))
                labels.append(flat[picked])
            feature_seconds = time.perf_counter() - feature_started
            if progress is not None:
                progress(0.8, f"training {self.forest_settings.n_estimators} trees on {sum(len(l) for l in labels)} pixels")
            self.fit_rows(np.concatenate(rows), np.concatenate(labels), n_classes)
        except BaseException:
            self.normalisation, self.n_channels = previous
            raise
        self.n_classes, self.class_names = n_classes, tuple(class_names)
        self.metrics.update(
            {
                "annotated_pixels_per_class": counts.tolist(),
                "training_images": len(images),
                "feature_seconds": round(feature_seconds, 3),
                "seconds": round(time.perf_counter() - started, 3),
                "cache_hits": self.cache.hits,
                "cache_misses": self.cache.misses,
            }
        )
        if progress is not None:
            progress(1.0, "trained")
        return self

    def fit_rows(self, rows: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
        """Fit the forest on (N, F) float32 feature rows and their int labels 0..n_classes-1.

        The step after feature sampling, for callers that keep their own features (`LivePreview`).
        """
        forest = RandomForestClassifier(**_forest_kwargs(self.forest_settings))
        started = time.perf_counter()
        forest.fit(rows, labels)
        fit_seconds = time.perf_counter() - started
        predicted = forest.classes_[np.argmax(forest.predict_proba(rows), axis=1)]
        recalls = [float(np.mean(predicted[labels == k] == k)) for k in np.unique(labels)]
        self._forest = forest
        self.n_classes = n_classes
        self.metrics = {
            "training_pixels": int(labels.size),
            "sampled_pixels_per_class": np.bincount(labels, minlength=n_classes).tolist(),
            "forest_fit_seconds": round(fit_seconds, 3),
            "training_balanced_accuracy": round(float(np.mean(recalls)), 4),
            "n_nodes": int(sum(tree.tree_.node_count for tree in forest.estimators_)),
        }

    # ------------------------------------------------------------------ prediction

    def _leaf_tables(self) -> list[tuple[Any, np.ndarray]]:
        """Per tree: its node structure and a float32 (n_nodes, K) table of class fractions in model classes."""
        if self._tables is None or self._tables[0] is not self._forest:
            tables = []
            for tree in self._forest.estimators_:
                values = tree.tree_.value[:, 0, :]
                table = np.zeros((values.shape[0], self.n_classes), dtype=np.float32)
                table[:, self._forest.classes_] = values / np.maximum(values.sum(axis=1, keepdims=True), 1e-12)
                table *= np.float32(1.0 / len(self._forest.estimators_))
                tables.append((tree.tree_, table))
            self._tables = (self._forest, tables)
        return self._tables[1]

    def predict_features(self, stack: np.ndarray) -> np.ndarray:
        """(F, Y, X) features -> (K, Y, X) float32 probabilities (zero for classes never annotated).

        Same numbers as the forest's ``predict_proba`` (to float32 rounding),
        computed block by block: a block of pixels is turned into rows while
        it is in cache and walked through every tree before the next, with
        blocks spread over `ForestSettings.n_jobs` threads (tree walking
        releases the GIL).
        """
        self.require_fitted("predict_features")
        if stack.shape[0] != self.n_features:
            raise ClassicInputError(f"features have {stack.shape[0]} planes but the model expects {self.n_features}.")
        flat = stack.reshape(stack.shape[0], -1)
        out = np.empty((self.n_classes, flat.shape[1]), dtype=np.float32)
        tables = self._leaf_tables()

        def predict_block(start: int) -> None:
            rows = np.ascontiguousarray(flat[:, start : start + PREDICT_BLOCK].T)
            total = np.zeros((rows.shape[0], self.n_classes), dtype=np.float32)
            for tree, table in tables:
                total += np.take(table, tree.apply(rows), axis=0)
            out[:, start : start + PREDICT_BLOCK] = total.T

        starts = range(0, flat.shape[1], PREDICT_BLOCK)
        n_jobs = self.forest_settings.n_jobs
        workers = min(len(starts), (os.cpu_count() or 1) if n_jobs < 0 else max(1, n_jobs))
        if workers <= 1:
            for start in starts:
                predict_block(start)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(predict_block, starts))
        return out.reshape((self.n_classes,) + stack.shape[1:])

    def predict_proba(self, image) -> np.ndarray:
        """Class probabilities of a whole image.

        Parameters
        ----------
        image : array-like (C, Y, X) or (Y, X)
            Raw intensities; the stored normalisation is applied here. For
            images bigger than ~2 megapixels use `predict_image` (tiles).

        Returns
        -------
        np.ndarray
            (K, Y, X) float32, summing to 1 over K.
        """
        self.require_fitted("predict_proba")
        image = as_image(image, "image", n_channels=self.n_channels)
        return self.predict_features(self.tile_features(image))

    def as_predictor(self) -> Callable[[np.ndarray], np.ndarray]:
        """A callable for workbench.predict.predict_tiled: (B, C, h, w) float32 -> (B, K, h, w) float32.

        Pass ``halo=model.halo`` to the tiler so tiles join without seams.
        """
        self.require_fitted("as_predictor")

        def predictor(batch: np.ndarray) -> np.ndarray:
            batch = np.asarray(batch)
            if batch.ndim != 4:
                raise ClassicInputError(f"predictor batch must be (B, C, h, w), got shape {batch.shape}.")
            return np.stack([self.predict_proba(tile) for tile in batch]).astype(np.float32, copy=False)

        predictor.n_outputs = self.n_classes
        predictor.halo = self.halo
        return predictor

    # ------------------------------------------------------------------ persistence

    def card(self) -> dict[str, Any]:
        """The JSON recipe saved beside the forest."""
        self.require_fitted("card")
        return {
            "format": CARD_FORMAT,
            "version": CARD_VERSION,
            "mode": self.mode,
            "classes": list(self.class_names),
            "n_channels": self.n_channels,
            "n_features": self.n_features,
            "feature_names": self.features.names(self.n_channels),
            "halo": self.halo,
            "features": self.features.settings.to_dict(),
            "forest": self.forest_settings.to_dict(),
            "normalisation": self.normalisation.to_dict(),
            "metrics": self.metrics,
            "sklearn_version": sklearn.__version__,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``forest.npz`` (the trees' arrays, data only) and ``card.json`` into `directory`.

        Each file is written to a temporary name, then moved into place.

        Returns
        -------
        Path
            The directory.
        """
        self.require_fitted("save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_write(directory / FOREST_NAME) as tmp:
            trees = save_forest_arrays(self._forest, tmp)
        card = json.dumps({**self.card(), "trees": trees}, indent=2)
        with atomic_write(directory / CARD_NAME) as tmp:
            tmp.write_text(card, encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, n_channels: int | None = None) -> ForestModel:
        """Rebuild a model saved by `save`, without running anything from the folder.

        Parameters
        ----------
        directory : path
            Holds ``card.json`` and ``forest.npz``: JSON and plain arrays only, checked before
            use (see `workbench.classic._forest_format`). A pickled ``forest.joblib`` from an
            older workbench is refused, never opened: pickles run code when loaded.
        n_channels : int, optional
            Channels of the images you will predict; a different count than the
            model was trained on raises a `ClassicInputError` right away.

        Raises
        ------
        WorkbenchError
            Missing, damaged or pickled model files; a channel count that does not fit.
        """
        directory = Path(directory)
        card_path, forest_path = directory / CARD_NAME, directory / FOREST_NAME
        if not forest_path.is_file() and (directory / LEGACY_PICKLE_NAME).exists():
            raise ClassicInputError(
                f"the Random Forest in {directory} was saved as a pickle ({LEGACY_PICKLE_NAME}) by an older workbench; "
                "pickles can run code when opened, so it is not loaded: train the forest again "
                "(`workbench train PROJECT --method forest`)."
            )
        if not card_path.is_file() or not forest_path.is_file():
            raise ClassicInputError(
                f"no Random Forest model in {directory}: expected {CARD_NAME} and {FOREST_NAME}; "
                "pick the folder ForestModel.save() wrote, or train a model first."
            )
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ClassicInputError(f"the model card {card_path} is damaged ({exc}); train the forest again.") from exc
        if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
            found = card.get("format") if isinstance(card, dict) else type(card).__name__
            raise ClassicInputError(f"{card_path} is not a Random Forest card (format {found!r}); pick a classic model folder.")
        try:
            model = cls._from_card(card)
            trees = card["trees"]
            if not isinstance(trees, dict):
                raise TypeError("'trees' is not an object")
        except (KeyError, TypeError, ValueError, WorkbenchError) as exc:
            raise ClassicInputError(f"the model card {card_path} is damaged ({exc}); train the forest again.") from exc
        if n_channels is not None and int(n_channels) != model.n_channels:
            raise ClassicInputError(
                f"the model in {directory} was trained on {model.n_channels}-channel images but your images have "
                f"{n_channels} channel(s); select the same channels the model was trained on, or train a new model "
                "on these images."
            )
        model._forest = load_forest_arrays(forest_path, trees, _forest_kwargs(model.forest_settings))
        if model._forest.n_features_in_ != model.n_features or model._forest.classes_.max() >= model.n_classes:
            raise ClassicInputError(
                f"the forest in {forest_path} does not fit its card ({model._forest.n_features_in_} features, "
                f"card {model.n_features}); train the forest again."
            )
        return model

    @classmethod
    def _from_card(cls, card: dict[str, Any]) -> ForestModel:
        features = dict(card["features"])
        if card.get("version", 1) < 2:
            # Version 1 cards predate downsampled scales: every scale was computed at full resolution.
            features.setdefault("downsample_from_sigma", 0.0)
        model = cls(
            mode=card["mode"],
            n_classes=len(card["classes"]),
            class_names=card["classes"],
            features=features,
            forest=card["forest"],
        )
        model.normalisation = PercentileNormalizer.from_dict(card["normalisation"])
        model.n_channels = int(card["n_channels"])
        if model.n_channels < 1:
            raise ValueError(f"n_channels {model.n_channels}")
        model.metrics = dict(card.get("metrics") or {})
        return model


def _forest_kwargs(settings: ForestSettings) -> dict[str, Any]:
    """`RandomForestClassifier` arguments of the settings (the sampling cap is ours alone)."""
    return {
        "n_estimators": settings.n_estimators,
        "max_depth": settings.max_depth,
        "min_samples_leaf": settings.min_samples_leaf,
        "max_features": settings.max_features,
        "class_weight": settings.class_weight,
        "n_jobs": settings.n_jobs,
        "random_state": settings.random_state,
    }


def predict_image(
    forest_model: ForestModel,
    image,
    *,
    tile_size: int = 1024,
    progress: Callable[[float, str], None] | None = None,
) -> np.ndarray:
    """Seamless tile-by-tile prediction of a large image (numpy, zarr or any sliceable array).

    The engine's one tile loop, `workbench.predict.predict_tiled`, with
    ``forest_model.halo`` pixels of context clipped at the image edge
    (``edge="clip"``) and tiles on the downsampling grid, so the result equals
    `ForestModel.predict_proba` on the whole image while memory stays bounded
    by the tile size.

    Parameters
    ----------
    forest_model : ForestModel
        A fitted model.
    image : array-like (C, Y, X) or (Y, X)
        Raw intensities, read one tile at a time.
    tile_size : int
        Core tile edge in pixels, rounded up to a multiple of
        ``forest_model.features.alignment`` (the downsampling grid).
    progress : callable(fraction, message), optional

    Returns
    -------
    np.ndarray
        (K, Y, X) float32 probabilities.
    """
    if not isinstance(forest_model, ForestModel):
        raise ClassicTypeError(f"`forest_model` must be a ForestModel, got {type(forest_model).__name__}.")
    forest_model.require_fitted("predict_image")
    if not hasattr(image, "shape"):
        image = np.asarray(image)
    shape = tuple(image.shape)
    if len(shape) == 2:
        image, shape = np.asarray(image)[None], (1,) + shape
    if len(shape) != 3:
        raise ClassicInputError(f"`image` must be (C, Y, X) or (Y, X), got shape {shape}.")
    check_channels(shape[0], forest_model.n_channels, "image")
    # Non-overlapping tiles on the downsampling grid, the halo clipped at the image edge as the
    # whole image is filtered there: each pixel's features, so its prediction, are the whole image's.
    return predict_tiled(
        image, forest_model.as_predictor(), forest_model.n_classes,
        tile_size=aligned_tile_size(tile_size, forest_model.features.alignment), overlap=0,
        halo=forest_model.halo, batch_size=1, window="constant", edge="clip", progress=progress,
    )


class LivePreview:
    """Quick retrain-and-predict loop for the image being annotated (engine side, no UI).

    The image is cut into blocks whose features (with halo) are computed on
    first use and kept, so after the first stroke in a region retraining costs
    only the small forest's fit, and a viewport costs only prediction.

    Parameters
    ----------
    image : array-like (C, Y, X) or (Y, X)
        The image being annotated.
    mode : {"semantic", "instance"}
    n_classes : int, optional
        Semantic classes; inferred from the targets if not given.
    features : FeatureSettings or dict, optional
    forest : ForestSettings, optional
        Default `PREVIEW_FOREST` (30 trees, depth 10, 3000 pixels per class).
    normalisation : workbench.normalize.PercentileNormalizer, optional
        Default: fitted on this image (a constant image is refused: nothing to learn from).
    block_size : int
        Edge of the cached feature blocks.
    max_cached_blocks : int
        Feature blocks kept in memory (each ~``F * block_size**2 * 4`` bytes).

    Example
    -------
    >>> import numpy as np
    >>> image = np.zeros((1, 96, 96), np.float32); image[:, 30:60, 30:60] = 1
    >>> targets = np.full((96, 96), -1); targets[40:50, 40:50] = 1; targets[5:10, 5:90] = 0
    >>> preview = LivePreview(image, n_classes=2)
    >>> preview.update(targets)["training_pixels"] > 0
    True
    >>> preview.predict(0, 48, 0, 96).shape
    (2, 48, 96)
    """

    def __init__(
        self,
        image,
        *,
        mode: str = "semantic",
        n_classes: int | None = None,
        features: FeatureSettings | dict | None = None,
        forest: ForestSettings | None = None,
        normalisation: PercentileNormalizer | None = None,
        block_size: int = 512,
        max_cached_blocks: int = 16,
    ) -> None:
        self.image = as_image(image, "image")
        self.model = ForestModel(mode=mode, n_classes=n_classes, features=features, forest=forest or PREVIEW_FOREST)
        self.model.n_channels = self.image.shape[0]
        self.model.normalisation = normalisation or PercentileNormalizer().fit([self.image])
        self.block_size = aligned_tile_size(block_size, self.model.features.alignment)
        self.max_cached_blocks = int(max_cached_blocks)
        self.timings: dict[str, float] = {}
        self.feature_computations = 0
        self._blocks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[1:]

    def _block(self, block_y: int, block_x: int) -> np.ndarray:
        key = (block_y, block_x)
        if key in self._blocks:
            self._blocks.move_to_end(key)
            return self._blocks[key]
        size, halo = self.block_size, self.model.halo
        height, width = self.shape
        y0, x0 = block_y * size, block_x * size
        y1, x1 = min(y0 + size, height), min(x0 + size, width)
        ry0, rx0 = max(0, y0 - halo), max(0, x0 - halo)
        tile = self.image[:, ry0 : min(height, y1 + halo), rx0 : min(width, x1 + halo)]
        stack = self.model.tile_features(tile)[:, y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0]
        self.feature_computations += 1
        self._blocks[key] = np.ascontiguousarray(stack)
        while len(self._blocks) > self.max_cached_blocks:
            self._blocks.popitem(last=False)
        return self._blocks[key]

    def _region_features(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        size = self.block_size
        out = np.empty((self.model.n_features, y1 - y0, x1 - x0), dtype=np.float32)
        for block_y in range(y0 // size, (y1 - 1) // size + 1):
            for block_x in range(x0 // size, (x1 - 1) // size + 1):
                by0, bx0 = block_y * size, block_x * size
                sy0, sy1 = max(y0, by0), min(y1, by0 + size)
                sx0, sx1 = max(x0, bx0), min(x1, bx0 + size)
                block = self._block(block_y, block_x)
                out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = block[:, sy0 - by0 : sy1 - by0, sx0 - bx0 : sx1 - bx0]
        return out

    def update(self, targets) -> dict[str, Any]:
        """Retrain the preview forest on the current labels.

        Parameters
        ----------
        targets : array-like (Y, X) int
            -1 = unlabelled, 0..K-1 = class, for the whole image.

        Returns
        -------
        dict
            The model's metrics plus "feature_seconds" and "seconds".
        """
        started = time.perf_counter()
        targets = as_targets(targets, self.shape, self.model.n_classes, "targets")
        n_classes = self.model.n_classes or max(2, int(targets.max()) + 1)
        names = self.model.class_names or tuple(f"class {k}" for k in range(n_classes))
        counts = np.bincount(targets[targets >= 0].ravel(), minlength=n_classes)
        _check_classes_present(counts, names)
        rng = np.random.default_rng(self.model.forest_settings.random_state)
        flat = targets.ravel()
        picked = _balanced_indices([flat], n_classes, self.model.forest_settings.max_pixels_per_class, rng)[0]
        ys, xs = np.divmod(picked, self.shape[1])
        size = self.block_size
        block_of = (ys // size) * (self.shape[1] // size + 1) + xs // size
        rows = np.empty((picked.size, self.model.n_features), dtype=np.float32)
        features_started = time.perf_counter()
        for block_id in np.unique(block_of):
            members = np.flatnonzero(block_of == block_id)
            block_y, block_x = ys[members[0]] // size, xs[members[0]] // size
            block = self._block(int(block_y), int(block_x))
            rows[members] = block[:, ys[members] - block_y * size, xs[members] - block_x * size].T
        feature_seconds = time.perf_counter() - features_started
        self.model.fit_rows(rows, flat[picked], n_classes)
        self.model.class_names = names
        self.timings.update(
            {"update_feature_seconds": feature_seconds, "update_seconds": time.perf_counter() - started}
        )
        return dict(self.model.metrics, feature_seconds=round(feature_seconds, 3), seconds=round(self.timings["update_seconds"], 3))

    def predict(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Probabilities (K, y1 - y0, x1 - x0) float32 of the viewport ``[y0:y1, x0:x1]``."""
        self.model.require_fitted("predict (call update(targets) first)")
        height, width = self.shape
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise ClassicInputError(
                f"viewport [{y0}:{y1}, {x0}:{x1}] is not inside the image of {height} x {width} pixels; "
                "give 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width."
            )
        started = time.perf_counter()
        stack = self._region_features(int(y0), int(y1), int(x0), int(x1))
        features_done = time.perf_counter()
        probabilities = self.model.predict_features(stack)
        self.timings.update(
            {"predict_feature_seconds": features_done - started, "predict_seconds": time.perf_counter() - started}
        )
        return probabilities

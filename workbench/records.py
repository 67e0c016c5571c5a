"""The typed records that travel between the pipeline, the command line and the widgets.

A record is a dataclass with one validator, ``from_dict``, that turns what a JSON file holds
into the record or raises a `WorkbenchError` naming the field, what arrived and what was
expected; ``to_dict`` gives the JSON form back unchanged. Readers use attributes
(``record.metrics.val_loss``), so reading a field that nothing writes fails at once with an
AttributeError instead of quietly giving None — the way the training panel once read a
``best_val_loss`` nobody wrote. Records are not dicts: ``record["version"]`` is a TypeError (the
JSON on disk stays plain dicts; ``to_dict`` / ``from_dict`` cross between the two). Only
`ModelMetrics` is also a read-only mapping of what training stored, for the per-method extras.

- `ModelRecord`: one entry of the manifest's ``models`` list (a trained model version).
- `ModelMetrics`: what training measured, inside a `ModelRecord`.
- `ModelCardInfo`: what a model's ``card.json`` says about the outputs, for either method.
- `TrainingChoices`: the few choices a person makes to train (the training panel's controls).
- `TrainingPlan`: the engine settings those choices mean (`workbench.pipeline.plan_training`).

This module sits at the bottom of the engine beside `workbench.conventions`: the store may import it.

Examples
--------
>>> record = ModelRecord.from_dict({"version": 2, "method": "unet", "path": "models/v002-unet",
...                                 "created": "2026-12-01T10:00:00+00:00", "parent": 1, "settings": {},
...                                 "labels": {}, "metrics": {"val_loss": 0.21, "epochs": 7}})
>>> record.version, record.metrics.val_loss, record.metrics.epochs
(2, 0.21, 7)
>>> record.to_dict()["metrics"]
{'val_loss': 0.21, 'epochs': 7}
>>> ModelRecord.from_dict({"version": "two", "method": "unet", "path": "m", "created": ""})
Traceback (most recent call last):
...
workbench.errors.WorkbenchError: model record: `version` must be a whole number >= 1, got 'two'; the entry is damaged: restore project.json from a copy, or remove this model's entry
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from workbench.conventions import INSTANCE_CLASSES, METHODS, MODES
from workbench.errors import WorkbenchError
from workbench.validate import real_number

__all__ = [
    "ModelMetrics", "ModelRecord", "ModelCardInfo", "TrainingChoices", "TrainingPlan",
    "MODEL_SIZES", "START_FROM", "CARD_NAME",
]

CARD_NAME = "card.json"
MODEL_SIZES = ("fast", "small", "mobilenet_v2")
"""Model sizes a person picks from, smallest first: the U-Net presets of `workbench.deep`."""
START_FROM = ("scratch", "starter", "pretrained", "last")
"""Where a training starts: random weights, the starter model shipped with the package (pretrained on
generated microscopy images; instance projects), ImageNet encoder weights, or the last model of the method."""

_DAMAGED = "the entry is damaged: restore project.json from a copy, or remove this model's entry"


def _fail(what: str, problem: str, fix: str = _DAMAGED) -> WorkbenchError:
    return WorkbenchError(f"{what}: {problem}; {fix}")


def _number_or_none(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


@dataclass(frozen=True, eq=False)  # Mapping's equality: a ModelMetrics equals the dict it stores
class ModelMetrics(Mapping):
    """What training measured for a model version.

    Typed fields for what readers use, and a read-only mapping of the stored form
    (``metrics["n_nodes"]``, ``dict(metrics)``) for everything else.

    Attributes
    ----------
    val_loss : float or None
        Validation loss of the kept (best) weights; None when there was no validation (forest,
        or too few labelled pixels to hold some back).
    loss : float or None
        Training loss of the kept weights.
    epoch, epochs : int or None
        The epoch whose weights were kept, and how many epochs ran.
    seconds : float or None
        Training time.
    stop_reason : str or None
        ``"epochs"``, ``"time"`` or ``"stopped"`` (U-Net).
    extra : dict
        Everything else the trainer reported (per-method details), stored as it came.
    """

    val_loss: float | None = None
    loss: float | None = None
    epoch: int | None = None
    epochs: int | None = None
    seconds: float | None = None
    stop_reason: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _TYPED = ("val_loss", "loss", "epoch", "epochs", "seconds", "stop_reason")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ModelMetrics":
        """Read a metrics mapping; known keys are typed, the rest kept in `extra`."""
        data = dict(data or {})
        if not all(isinstance(key, str) for key in data):
            raise _fail("model metrics", f"keys must be names, got {sorted(map(repr, data))}")
        known = {name: data.pop(name) for name in cls._TYPED if name in data}
        values: dict[str, Any] = {}
        for name in ("val_loss", "loss", "seconds"):
            value = known.get(name)
            number = _number_or_none(value)
            if value is not None and number is None:
                raise _fail("model metrics", f"`{name}` must be a number, got {value!r}")
            # A NaN loss (nothing to validate on) reads as "not measured".
            values[name] = None if number is None or math.isnan(number) else number
        for name in ("epoch", "epochs"):
            value = known.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise _fail("model metrics", f"`{name}` must be a whole number, got {value!r}")
            values[name] = None if value is None else int(value)
        reason = known.get("stop_reason")
        if reason is not None and not isinstance(reason, str):
            raise _fail("model metrics", f"`stop_reason` must be text, got {reason!r}")
        return cls(**values, stop_reason=reason, extra=data)

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the set fields and `extra`, flat."""
        data = {name: getattr(self, name) for name in self._TYPED if getattr(self, name) is not None}
        return {**data, **dict(self.extra)}

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass
class ModelRecord:
    """A trained model version, as the project's manifest records it.

    Attributes
    ----------
    version : int
        1, 2, ... within the project.
    method : {"unet", "forest"}
    path : str
        The model's folder, relative to the project folder.
    created : str
        ISO time (UTC) of registration.
    parent : int or None
        The version it continued from (``resume``), else None.
    settings : dict
        The settings it was trained with (method-specific).
    labels : dict
        The project's label statistics when it was trained.
    metrics : ModelMetrics
    """

    version: int
    method: str
    path: str
    created: str
    parent: int | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, Any] = field(default_factory=dict)
    metrics: ModelMetrics = field(default_factory=ModelMetrics)

    def __post_init__(self):
        if not isinstance(self.metrics, ModelMetrics):  # built from a manifest's plain dict
            self.metrics = ModelMetrics.from_dict(self.metrics)

    @classmethod
    def from_dict(cls, data: "Mapping[str, Any] | ModelRecord") -> "ModelRecord":
        """Validate one manifest entry (a record already validated is returned as it is).

        Raises
        ------
        WorkbenchError
            Naming the damaged field and how to repair the project.
        """
        if isinstance(data, ModelRecord):
            return data
        what = "model record"
        if not isinstance(data, Mapping):
            raise _fail(what, f"must be a JSON object, got {type(data).__name__}")
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, numbers.Integral) or version < 1:
            raise _fail(what, f"`version` must be a whole number >= 1, got {version!r}")
        what = f"model record {int(version)}"
        method = data.get("method")
        if method not in METHODS:
            raise _fail(what, f"`method` must be one of {', '.join(METHODS)}, got {method!r}")
        for name in ("path", "created"):
            if not isinstance(data.get(name), str):
                raise _fail(what, f"`{name}` must be text, got {data.get(name)!r}")
        parent = data.get("parent")
        if parent is not None and (isinstance(parent, bool) or not isinstance(parent, numbers.Integral)):
            raise _fail(what, f"`parent` must be a model version or null, got {parent!r}")
        for name in ("settings", "labels", "metrics"):
            if not isinstance(data.get(name) or {}, Mapping):
                raise _fail(what, f"`{name}` must be a JSON object, got {data.get(name)!r}")
        return cls(version=int(version), method=method, path=data["path"], created=data["created"],
                   parent=None if parent is None else int(parent), settings=dict(data.get("settings") or {}),
                   labels=dict(data.get("labels") or {}), metrics=ModelMetrics.from_dict(data.get("metrics")))

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry."""
        return {"version": self.version, "method": self.method, "path": self.path, "created": self.created,
                "parent": self.parent, "settings": dict(self.settings), "labels": dict(self.labels),
                "metrics": self.metrics.to_dict()}

    def directory(self, project_path) -> Path:
        """The model's folder inside the project at `project_path`."""
        return Path(project_path) / self.path


@dataclass(frozen=True)
class ModelCardInfo:
    """What a saved model's ``card.json`` says about its inputs and outputs, whichever method made it.

    Attributes
    ----------
    mode : {"semantic", "instance"}
    classes : tuple of str
        Output class names, index k = output k.
    in_channels : int or None
        Image channels the model reads (None when the card does not say).
    """

    mode: str
    classes: tuple[str, ...]
    in_channels: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = CARD_NAME) -> "ModelCardInfo":
        """Read a U-Net card (`workbench.deep.ModelCard`) or a Random Forest card."""
        what = f"model card {source}"
        if not isinstance(data, Mapping):
            raise _fail(what, f"must be a JSON object, got {type(data).__name__}", "train the model again")
        mode = data.get("mode", "semantic")
        if mode not in MODES:
            raise _fail(what, f"`mode` must be one of {', '.join(MODES)}, got {mode!r}", "train the model again")
        classes = data.get("classes") or (INSTANCE_CLASSES if mode == "instance" else ())
        if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
            raise _fail(what, f"`classes` must be a list of names, got {classes!r}", "train the model again")
        channels = data.get("in_channels", data.get("n_channels"))
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, numbers.Integral)):
            raise _fail(what, f"the channel count must be a whole number, got {channels!r}", "train the model again")
        return cls(mode=mode, classes=tuple(classes), in_channels=None if channels is None else int(channels))

    @classmethod
    def read(cls, directory) -> "ModelCardInfo":
        """Read ``card.json`` in a model folder."""
        path = Path(directory) / CARD_NAME
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise WorkbenchError(f"cannot read the model card {path} ({exc.strerror}); train the model again") from None
        except ValueError:
            raise WorkbenchError(f"the model card {path} is not valid JSON; train the model again") from None
        return cls.from_dict(data, source=str(path))


@dataclass(frozen=True)
class TrainingChoices:
    """The choices a person makes to train a model (the training panel's controls).

    Attributes
    ----------
    method : {"unet", "forest"}
    size : {"fast", "small", "mobilenet_v2"}
        U-Net preset; for a Random Forest, the matching number of trees.
    seconds : float
        Time budget of a U-Net (a forest trains until done).
    augment : float
        Augmentation strength in [0, 1] (U-Net).
    start : {"scratch", "starter", "pretrained", "last"}
        See `START_FROM`; a forest cannot start from pretrained weights or the starter.
        (`workbench.pipeline.default_start` gives the start a project gets unless a person chooses.)
    """

    method: str = "unet"
    size: str = "fast"
    seconds: float = 120.0
    augment: float = 0.5
    start: str = "scratch"

    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainingChoices":
        """Check every field; return self (raises `WorkbenchError` naming the field)."""
        if self.method not in METHODS:
            raise WorkbenchError(f"`method` must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.size not in MODEL_SIZES:
            raise WorkbenchError(f"`size` must be one of {', '.join(MODEL_SIZES)}, got {self.size!r}")
        if self.start not in START_FROM:
            raise WorkbenchError(f"`start` must be one of {', '.join(START_FROM)}, got {self.start!r}")
        if self.method == "forest" and self.start in ("pretrained", "starter"):
            raise WorkbenchError("a Random Forest has no pretrained weights; start from scratch or the last model")
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, numbers.Real) or not self.seconds > 0:
            raise WorkbenchError(f"`seconds` must be a positive number of seconds, got {self.seconds!r}")
        real_number(self.augment, "augment", low=0.0, high=1.0)
        return self


@dataclass(frozen=True)
class TrainingPlan:
    """What `workbench.pipeline.train_model` is called with for a set of `TrainingChoices`.

    Attributes
    ----------
    method : {"unet", "forest"}
    settings : dict
        Method settings (`workbench.deep.TrainSettings` fields, or the forest's).
    resume : bool
        Continue from the project's last model of `method`.
    """

    method: str
    settings: Mapping[str, Any]
    resume: bool = False

    def as_tuple(self) -> tuple[str, dict, bool]:
        """``(method, settings, resume)``."""
        return self.method, dict(self.settings), self.resume

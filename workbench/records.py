"""Typed records passed between the layers (store, pipeline, widgets, command line).

Records are plain frozen-free dataclasses with a ``to_dict`` for JSON. During the move from
dicts to records they also answer ``record["field"]`` and ``record.get("field")`` reads, so
callers not yet moved to attributes keep working; new code uses attributes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["ModelRecord"]


class _ReadsLikeADict:
    """``record["name"]`` / ``record.get("name")`` for callers written against the old dicts."""

    def __getitem__(self, key: str) -> Any:
        if key not in {f.name for f in fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in {f.name for f in fields(self)} else default

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelRecord(_ReadsLikeADict):
    """One trained model version of a project, as the manifest records it.

    Attributes
    ----------
    version : int
        1, 2, ... allocated under the project lock, never reused.
    method : str
        ``"unet"`` or ``"forest"``.
    path : str
        The model folder, relative to the project folder (checked to stay inside it).
    created : str
        ISO 8601 UTC time.
    parent : int or None
        The version training continued from.
    settings, labels, metrics : dict
        Training settings, label counts at training time, validation / training metrics.
    """

    version: int
    method: str
    path: str
    created: str
    parent: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

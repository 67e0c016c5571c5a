"""Every ``WORKBENCH_*`` environment setting, read in one place.

The settings are read when asked for (not at import), so a test or a launcher that sets a
variable sees it take effect. A malformed value is a `WorkbenchError` that names the variable.

=========================  ==========================================================
``WORKBENCH_THREADS``       CPU threads for torch (default: the cores this process may use)
``WORKBENCH_TRAIN_SECONDS`` training time the app preselects (tests, CI, demos)
``WORKBENCH_WEIGHTS_DIR``   folder of downloaded ImageNet encoder weights (offline machines)
``WORKBENCH_PROJECT``       the project the app and the batch notebook open
``WORKBENCH_PROJECTS_DIR``  where the app creates new projects (default ``~/workbench-projects``)
``WORKBENCH_HOME``          the user's workbench folder: the app's recent projects (default ``~/.workbench``)
``WORKBENCH_UNATTENDED``    notebooks press their own buttons (tests, scheduled runs)
=========================  ==========================================================

Examples
--------
>>> import os
>>> os.environ["WORKBENCH_TRAIN_SECONDS"] = "7"
>>> train_seconds()
7.0
>>> del os.environ["WORKBENCH_TRAIN_SECONDS"]
>>> train_seconds(default=120.0)
120.0
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench.errors import WorkbenchError

__all__ = [
    "THREADS", "TRAIN_SECONDS", "WEIGHTS_DIR", "PROJECT", "PROJECTS_DIR", "HOME", "UNATTENDED", "VARIABLES",
    "threads", "train_seconds", "weights_dirs", "project_dir", "projects_dir", "user_dir", "unattended",
]

THREADS = "WORKBENCH_THREADS"
TRAIN_SECONDS = "WORKBENCH_TRAIN_SECONDS"
WEIGHTS_DIR = "WORKBENCH_WEIGHTS_DIR"
PROJECT = "WORKBENCH_PROJECT"
PROJECTS_DIR = "WORKBENCH_PROJECTS_DIR"
UNATTENDED = "WORKBENCH_UNATTENDED"
HOME = "WORKBENCH_HOME"
VARIABLES = (THREADS, TRAIN_SECONDS, WEIGHTS_DIR, PROJECT, PROJECTS_DIR, HOME, UNATTENDED)

# A checkout keeps offline copies of downloaded weights in `shared/weights` beside it.
_CHECKOUT = Path(__file__).resolve().parents[1]


def _get(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def threads() -> int | None:
    """``WORKBENCH_THREADS`` as a positive whole number, or None when unset."""
    value = _get(THREADS)
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise WorkbenchError(f"{THREADS} must be a positive whole number; got {value!r}.")
    return int(value)


def train_seconds(default: float | None = None) -> float | None:
    """The training time set by ``WORKBENCH_TRAIN_SECONDS``, else `default`."""
    value = _get(TRAIN_SECONDS)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise WorkbenchError(f"{TRAIN_SECONDS} must be a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise WorkbenchError(f"{TRAIN_SECONDS} must be positive, got {value!r}")
    return seconds


def weights_dirs() -> list[Path]:
    """Folders searched for offline encoder weights: ``$WORKBENCH_WEIGHTS_DIR``, then ``shared/weights``
    beside the checkout (where the project's CI keeps them)."""
    folders = [Path(value).expanduser()] if (value := _get(WEIGHTS_DIR)) else []
    folders.append(_CHECKOUT.parent / "shared" / "weights")
    return folders


def project_dir() -> Path | None:
    """``WORKBENCH_PROJECT`` as an absolute path, or None when unset."""
    value = _get(PROJECT)
    return Path(value).expanduser().resolve() if value else None


def projects_dir() -> Path:
    """Where new projects go: ``WORKBENCH_PROJECTS_DIR``, else ``workbench-projects`` in the user's home
    folder (never inside the installation)."""
    value = _get(PROJECTS_DIR)
    return Path(value).expanduser() if value else Path.home() / "workbench-projects"


def user_dir() -> Path:
    """The user's own workbench folder (the app's list of recent projects): ``WORKBENCH_HOME``, else
    ``~/.workbench``."""
    value = _get(HOME)
    return Path(value).expanduser() if value else Path.home() / ".workbench"


def unattended() -> bool:
    """Whether ``WORKBENCH_UNATTENDED`` is set to anything but ``0`` / ``false`` / ``no``."""
    value = _get(UNATTENDED)
    return value is not None and value.lower() not in ("0", "false", "no")

"""The projects a person opened lately, newest first: the app's "Recent projects", and the project a
reloaded page opens again.

One small JSON file in the user's workbench folder (`workbench.config.user_dir`, ``~/.workbench``
by default), replaced atomically under a file lock. It is a convenience: a folder that cannot be
written just means no list, never an error; projects that were moved or deleted drop out.

Examples
--------
>>> import os, tempfile
>>> from workbench.store import Project
>>> home = tempfile.mkdtemp()
>>> os.environ["WORKBENCH_HOME"] = home
>>> project = Project.create(f"{home}/liver", mode="instance", classes=["background", "nucleus"])
>>> remember_project(project)
>>> [entry["name"] for entry in recent_projects()], last_project() == project.path.resolve()
(['liver'], True)
>>> del os.environ["WORKBENCH_HOME"]
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import filelock

from workbench import config

__all__ = ["recent_projects", "remember_project", "last_project", "MAX_RECENT"]

RECENT_FILE = "recent-projects.json"
MAX_RECENT = 10


def _file() -> Path:
    return config.user_dir() / RECENT_FILE


def _read() -> list[dict]:
    try:
        entries = json.loads(_file().read_text(encoding="utf-8")).get("projects", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("path"), str)]


def recent_projects() -> list[dict]:
    """The projects opened lately that still exist, newest first: dicts with ``path``, ``name``, ``opened``."""
    return [e for e in _read() if (Path(e["path"]) / "project.json").is_file()][:MAX_RECENT]


def last_project() -> Path | None:
    """The project opened last (if it still exists)."""
    recent = recent_projects()
    return Path(recent[0]["path"]) if recent else None


def remember_project(project) -> None:
    """Put `project` (a Project) first in the list of recent projects; silently nothing when the user's
    folder cannot be written."""
    from workbench.store._io import write_json_atomic

    path = str(Path(project.path).resolve())
    entry = {"path": path, "name": project.name,
             "opened": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        _file().parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(_file()) + ".lock", timeout=5):
            entries = [entry] + [e for e in _read() if e["path"] != path]
            write_json_atomic(_file(), {"projects": entries[:MAX_RECENT * 2]})
    except (OSError, filelock.Timeout):
        return

"""Who may write a project when: the manifest lock, the job slot, and this process's temporary folder.

Locks are OS file locks (`filelock`: ``flock`` on Linux/macOS, ``msvcrt`` on Windows), so the
operating system releases them when a process ends in any way, ``kill -9`` included: a crash
never leaves a project locked. Everything lives in the project's hidden ``.workbench/`` folder::

    .workbench/manifest.lock    held for each read-modify-write of project.json (milliseconds)
    .workbench/job.lock         held for the whole of a long job (training, predicting, removing)
    .workbench/job.json         what the job is, since when, in which process (for "busy" messages)
    .workbench/tmp/<owner>/     this process's staging area, renamed into place when complete
    .workbench/tmp/<owner>.lock held while the owner lives; a free one means the folder is garbage
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import socket
import threading
import uuid
from pathlib import Path
from typing import Iterator

import filelock

from workbench.errors import WorkbenchError

__all__ = ["ProjectBusyError", "manifest_lock", "job_slot", "job_holder", "owner_tmp", "clean_dead_tmp", "OWNER"]

STATE_DIR = ".workbench"
MANIFEST_WAIT_S = 60.0
# One id per process, in every temporary name it makes, so the next start can tell whose they are.
HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname().split(".")[0])[:24] or "host"
OWNER = f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
_owner_locks: dict[Path, filelock.BaseFileLock] = {}
_owner_guard = threading.Lock()


class ProjectBusyError(WorkbenchError):
    """Another process (or the app) is writing the project; the message says who and since when."""


def state_dir(project_path: Path) -> Path:
    directory = Path(project_path) / STATE_DIR
    try:
        directory.mkdir(exist_ok=True)
    except OSError as exc:
        raise WorkbenchError(
            f"cannot write to the project {project_path} ({exc.strerror}); changing it needs write access to its "
            "folder: copy the project somewhere you can write to"
        ) from exc
    return directory


def _holder(project_path: Path) -> str:
    try:
        info = json.loads((Path(project_path) / STATE_DIR / "job.json").read_text(encoding="utf-8"))
        since = _dt.datetime.fromisoformat(info["since"]).astimezone().strftime("%H:%M")
        where = f"process {info['pid']}" + (f" on {info['host']}" if info.get("host") != socket.gethostname() else "")
        return f"{info['what']} since {since} in {where}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process is writing it"


@contextlib.contextmanager
def manifest_lock(project_path: Path, *, timeout: float = MANIFEST_WAIT_S) -> Iterator[None]:
    """Hold the project's manifest lock: waits up to `timeout` seconds for another writer's update."""
    lock = filelock.FileLock(state_dir(project_path) / "manifest.lock")
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout as exc:
        raise ProjectBusyError(
            f"project {project_path} is busy ({_holder(project_path)}) and its manifest stayed locked for "
            f"{timeout:.0f} s; try again when it is done"
        ) from exc
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def job_slot(project_path: Path, what: str) -> Iterator[None]:
    """Run a long job (``what``: "training", "predicting"...) as the project's only one.

    Raises
    ------
    ProjectBusyError
        At once, when another job holds the project: "project is busy (training since 12:03 in
        process 4711)".
    """
    directory = state_dir(project_path)
    lock = filelock.FileLock(directory / "job.lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout as exc:
        raise ProjectBusyError(
            f"project {project_path} is busy ({_holder(project_path)}); wait until it finishes (or stop it) "
            "and run this again"
        ) from exc
    info = directory / "job.json"
    try:
        from workbench.store._io import write_json_atomic

        write_json_atomic(info, {"what": what, "pid": os.getpid(), "host": socket.gethostname(),
                                 "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        yield
    finally:
        info.unlink(missing_ok=True)
        lock.release()


def job_holder(project_path: Path) -> str | None:
    """Who holds the project's job slot ("training since 12:03 in process 4711"), or None when it is free."""
    lock = filelock.FileLock(state_dir(project_path) / "job.lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return _holder(project_path)
    lock.release()
    return None


def owner_tmp(project_path: Path) -> Path:
    """This process's staging folder in the project (made on first use, removed at exit)."""
    root = state_dir(project_path) / "tmp"
    root.mkdir(exist_ok=True)
    folder = root / OWNER
    with _owner_guard:
        if folder not in _owner_locks:
            lock = filelock.FileLock(root / f"{OWNER}.lock", thread_local=False)
            _owner_locks[folder] = lock  # first, so that exit cleans up even if a signal lands right here
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                pass  # held by this very process under the project's earlier path (a project folder moved)
        folder.mkdir(exist_ok=True)
    return folder


def clean_dead_tmp(project_path: Path) -> None:
    """Remove staging folders (and the outside temporaries they list) of processes that ended."""
    root = Path(project_path) / STATE_DIR / "tmp"
    if not root.is_dir():
        return
    for lock_path in root.glob("*.lock"):
        owner = lock_path.name[: -len(".lock")]
        folder = root / owner
        if folder in _owner_locks:
            continue
        lock = filelock.FileLock(lock_path, thread_local=False)
        try:
            lock.acquire(timeout=0)
        except (filelock.Timeout, OSError):
            continue  # its owner is alive (or the folder is read-only): not ours to remove
        try:
            _remove_owner_folder(folder, owner)
        finally:
            lock.release()
            lock_path.unlink(missing_ok=True)
    for folder in root.iterdir():  # a folder whose lock file is gone was left half removed
        if folder.is_dir() and not (root / f"{folder.name}.lock").exists() and folder not in _owner_locks:
            _remove_owner_folder(folder, folder.name)


def _remove_owner_folder(folder: Path, owner: str) -> None:
    from workbench.store._io import recover_outside_temporaries

    recover_outside_temporaries(folder / "outside.json", owner)
    shutil.rmtree(folder, ignore_errors=True)


@atexit.register
def _remove_own_tmp() -> None:
    from workbench.store._io import recover_outside_temporaries

    for folder, lock in list(_owner_locks.items()):
        recover_outside_temporaries(folder / "outside.json", OWNER)
        shutil.rmtree(folder, ignore_errors=True)
        lock.release()
        Path(lock.lock_file).unlink(missing_ok=True)

"""The project's training job record: what trains (or trained) on the project, how far it got, how to stop it.

A training belongs to the project, not to the page or the command that started it: whoever
opens the project later (a reloaded page, another command) reads the record and can ask the
job to stop. Both files live in the project's hidden state folder::

    .workbench/training.json   the record, replaced atomically: id, state, method, the model
                               version it will write, progress, epochs (losses), log, pid
    .workbench/training.stop   a stop request; the running job polls for it and stops
                               within a second, keeping the best model so far

States: ``running`` while it trains, then ``done``, ``stopped`` (on request; a model was
kept) or ``failed`` (with ``error``, one plain sentence). A record that says ``running`` whose
process has ended (``kill -9``, power cut) reads as ``interrupted``.

The record also reserves the model version the job will write: the version is allocated under
the manifest lock when the job starts (`Project.begin_training_record`), and every other
allocation skips it while the job lives, so an older run can never take or overwrite a newer
version.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from workbench.store._lock import STATE_DIR

__all__ = ["JOB_FILE", "STOP_FILE", "LIVE_STATES", "ENDED_STATES", "read_training_job", "request_training_stop",
           "stop_requested", "clear_stop_request", "TrainingJobWriter", "process_alive"]

JOB_FILE = "training.json"
STOP_FILE = "training.stop"
LIVE_STATES = ("running",)
ENDED_STATES = ("done", "stopped", "failed", "interrupted")
MAX_LOG_LINES = 200
WRITE_EVERY_S = 0.5  # progress reports are written at most this often (epoch ends and the end always)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _process_started(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 - gone, or not ours to inspect: unknown
        return None


def process_alive(record: dict) -> bool:
    """Whether the process a record names still runs (a record from another computer counts as alive)."""
    if record.get("host") != socket.gethostname():
        return True  # cannot tell from here (a project on a shared disk): trust the record
    pid = record.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int):
        return False
    try:
        import psutil

        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        started = record.get("pid_started")
        # The same pid with another start time is a new process that reuses the number.
        return started is None or abs(float(process.create_time()) - float(started)) < 1.0
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess and friends
        return False


def read_training_job(project_path) -> dict | None:
    """The project's training record (None when no training ran here, or the record is unreadable).

    A ``running`` record whose process ended reads as ``interrupted``.
    """
    path = Path(project_path) / STATE_DIR / JOB_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return None
    if record.get("state") in LIVE_STATES and not process_alive(record):
        record["state"] = "interrupted"
        record.setdefault("error", None)
        record["error"] = record["error"] or ("the training process ended without finishing (it was killed or "
                                              "the computer stopped); start the training again")
    return record


def live_reserved_version(project_path) -> int | None:
    """The model version a live training job has reserved, if one runs."""
    record = read_training_job(project_path)
    if record and record.get("state") in LIVE_STATES and isinstance(record.get("version"), int):
        return record["version"]
    return None


def request_training_stop(project_path) -> bool:
    """Ask the project's running training to stop; False when none runs."""
    record = read_training_job(project_path)
    if not record or record.get("state") not in LIVE_STATES:
        return False
    from workbench.store._io import atomic_write

    with atomic_write(Path(project_path) / STATE_DIR / STOP_FILE) as tmp:
        tmp.write_text(json.dumps({"id": record["id"], "requested": _now()}), encoding="utf-8")
    return True


def stop_requested(project_path, job_id: str) -> bool:
    path = Path(project_path) / STATE_DIR / STOP_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("id") == job_id
    except (OSError, ValueError, AttributeError):
        return False


def clear_stop_request(project_path) -> None:
    (Path(project_path) / STATE_DIR / STOP_FILE).unlink(missing_ok=True)


class TrainingJobWriter:
    """Keeps the project's training record up to date for one job (used by `workbench.pipeline.train_model`).

    Thread-safe; progress writes are throttled to one every `WRITE_EVERY_S` seconds.
    """

    def __init__(self, project_path, job_id: str, *, method: str, budget_seconds: float | None = None):
        self.path = Path(project_path) / STATE_DIR / JOB_FILE
        self._lock = threading.Lock()
        self._last_write = 0.0
        self._t0 = time.monotonic()
        pid = os.getpid()
        self.record: dict[str, Any] = {
            "id": job_id, "state": "running", "method": method, "version": None,
            "pid": pid, "pid_started": _process_started(pid), "host": socket.gethostname(),
            "started": _now(), "updated": _now(), "budget_seconds": budget_seconds,
            "progress": 0.0, "message": "starting", "step": 0, "elapsed": 0.0,
            "epochs": [], "log": [], "error": None, "stop_reason": None,
        }

    @property
    def job_id(self) -> str:
        return self.record["id"]

    def log(self, line: str, *, write: bool = True) -> None:
        with self._lock:
            stamp = _dt.datetime.now().strftime("%H:%M:%S")
            self.record["log"] = (self.record["log"] + [f"{stamp} {line}"])[-MAX_LOG_LINES:]
        if write:
            self.write()

    def update(self, *, force: bool = True, **fields: Any) -> None:
        with self._lock:
            self.record.update(fields)
        if force or time.monotonic() - self._last_write >= WRITE_EVERY_S:
            self.write()

    def progress(self, fraction: float, message: str) -> None:
        step = self.record["step"]
        if message.startswith("epoch ") and ", step " in message:
            try:
                step = int(message.rsplit("step ", 1)[1])
            except ValueError:
                pass
        self.update(force=False, progress=float(min(max(fraction, 0.0), 1.0)), message=str(message), step=step)

    def epoch(self, logs: dict) -> None:
        keep = {k: logs.get(k) for k in ("epoch", "loss", "val_loss", "val_score", "steps", "seconds")}
        with self._lock:
            self.record["epochs"] = self.record["epochs"] + [keep]
        val = "" if logs.get("val_loss") is None else f", validation loss {float(logs['val_loss']):.3f}"
        self.log(f"epoch {logs.get('epoch')}: training loss {float(logs.get('loss', float('nan'))):.3f}{val}")

    def write(self) -> None:
        from workbench.store._io import write_json_atomic

        with self._lock:  # one writer at a time: the temporary file's name is per process
            self.record["updated"] = _now()
            self.record["elapsed"] = round(time.monotonic() - self._t0, 1)
            write_json_atomic(self.path, json.loads(json.dumps(self.record, default=str)))
            self._last_write = time.monotonic()

"""Training as the project's job, in a process of its own: start it, follow it, stop it, from any page.

The app does not train inside its page's kernel: a reload (or a culled kernel) would take the
training with it or, worse, leave it running unseen. `start_training` starts
``python -m workbench.jobs`` in a new session, detached from the page; that process runs
`workbench.pipeline.train_model`, which keeps the project's training record
(``.workbench/training.json``) up to date. Any page of the project, the one that started it or
one opened later, follows the job through that record (`TrainingJob.poll`) and stops it through
the project (`stop_training`).

Examples
--------
With a project and the person's choices (it trains for real, so not run as a doctest; tests/test_jobs.py
does)::

    job = start_training(project, pipeline.plan_training(project, choices))
    job.poll()["state"], job.poll()["progress"]     # ('running', 0.12)
    stop_training(project)                          # True
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.records import TrainingPlan
from workbench.store import Project, ProjectBusyError

__all__ = ["TrainingJob", "start_training", "current_training", "running_training", "stop_training",
           "LIVE_STATES", "ENDED_STATES", "main"]

from workbench.store._jobs import ENDED_STATES, LIVE_STATES  # noqa: E402 - public names of this module

STARTING = "starting"


class TrainingJob:
    """One training job of a project, followed through the project's training record.

    Parameters
    ----------
    project_path : path-like
        The project folder.
    job_id : str
        The id of the job's record.
    process : subprocess.Popen, optional
        The job's process, when this process started it (then a job that dies before writing its
        record still reports why).
    output : path-like, optional
        Where that process writes its messages.
    """

    def __init__(self, project_path, job_id: str, *, process: subprocess.Popen | None = None, output=None):
        self.project_path = Path(project_path)
        self.job_id = job_id
        self.process = process
        self.output = Path(output) if output else None

    def poll(self) -> dict:
        """The job's record now: ``state`` is ``starting`` (its process is loading), ``running``,
        ``done``, ``stopped``, ``failed`` or ``interrupted``; ``error`` says why it failed."""
        from workbench.store._jobs import read_training_job

        record = read_training_job(self.project_path)
        if record is not None and record.get("id") == self.job_id:
            return record
        if self.process is not None and self.process.poll() is None:
            return {"id": self.job_id, "state": STARTING, "progress": 0.0, "epochs": [], "log": [],
                    "message": "starting"}
        if self.process is not None:
            return {"id": self.job_id, "state": "failed", "progress": 0.0, "epochs": [], "log": [],
                    "error": self._process_error()}
        return {"id": self.job_id, "state": "interrupted", "progress": 0.0, "epochs": [], "log": [],
                "error": "the training's record was replaced by another training of this project"}

    def _process_error(self) -> str:
        text = ""
        if self.output is not None:
            try:
                text = self.output.read_text(encoding="utf-8", errors="replace")
            except OSError:
                pass
        errors = [line[len("error: "):] for line in text.splitlines() if line.startswith("error: ")]
        if errors:
            return errors[-1]
        return (f"the training process ended before it started training (exit code {self.process.returncode}); "
                "try again, and if it happens again, report it with the project's .workbench/ folder")


def current_training(project: Project) -> dict | None:
    """The project's current or last training record (None when nothing trained here yet)."""
    return project.training_job()


def running_training(project: Project) -> TrainingJob | None:
    """The project's running training, to follow (whoever started it), or None."""
    record = project.training_job()
    if record is None or record.get("state") not in LIVE_STATES:
        return None
    return TrainingJob(project.path, record["id"])


def stop_training(project: Project) -> bool:
    """Ask the project's running training to stop (the best model so far is kept); False when none runs."""
    return project.request_training_stop()


def start_training(project: Project, plan: TrainingPlan) -> TrainingJob:
    """Start training `plan` on the project in a process of its own and return at once.

    Raises
    ------
    ProjectBusyError
        When another job (a training, a prediction) holds the project.
    """
    from workbench.store._lock import job_holder, owner_tmp

    if not isinstance(plan, TrainingPlan):
        raise TypeError(f"`plan` must be a TrainingPlan (pipeline.plan_training), got {type(plan).__name__}")
    holder = job_holder(project.path)
    if holder is not None:
        raise ProjectBusyError(f"the project is busy ({holder}); wait until it finishes, or stop it, and start "
                               "again")
    job_id = uuid.uuid4().hex
    output = owner_tmp(project.path) / f"training-{job_id}.out"
    spec = json.dumps({"method": plan.method, "settings": plan.settings, "resume": plan.resume})
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "workbench.jobs", str(project.path), "--job-id", job_id, "--plan", spec],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the page's kernel: culling a kernel kills its process group
            env=_child_environment(),
        )
    return TrainingJob(project.path, job_id, process=process, output=output)


def _child_environment() -> dict[str, str]:
    """This process's environment, with this very engine first on the path (not another installed copy)."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[1])
    paths = [here] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def main(argv: list[str] | None = None) -> int:
    """``python -m workbench.jobs PROJECT --job-id ID --plan JSON``: run one training as the project's job."""
    parser = argparse.ArgumentParser(prog="python -m workbench.jobs", description=main.__doc__)
    parser.add_argument("project")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--plan", required=True, help='{"method": ..., "settings": {...}, "resume": false}')
    args = parser.parse_args(argv)
    from workbench import pipeline

    try:
        plan = json.loads(args.plan)
        project = Project.open(args.project)
        pipeline.train_model(project, method=plan["method"], settings=plan["settings"], resume=bool(plan["resume"]),
                             job_id=args.job_id)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("error: the training was interrupted", file=sys.stderr, flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

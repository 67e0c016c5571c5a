"""Start the guided app: ``python -m workbench_widgets.launch [--project DIR] [--port 8866] [--ip 127.0.0.1]``.

Builds the sample project when the folder holds no project yet, then runs Voila on
``notebooks/app.ipynb`` (no browser opened) and prints the address to open. Ctrl-C (or SIGTERM)
stops Voila and its kernels and exits with 0 (`serve`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from workbench import config
from workbench.errors import WorkbenchError
from workbench.store import remember_project

__all__ = ["main", "serve", "app_notebook", "voila_command", "voila_environment", "free_port"]

CHECKOUT = Path(__file__).resolve().parents[2]


def app_notebook() -> Path:
    """The app notebook of this checkout.

    Raises
    ------
    WorkbenchError
        When the notebooks folder is missing (an installed package without its notebooks).
    """
    path = CHECKOUT / "notebooks" / "app.ipynb"
    if not path.exists():
        raise WorkbenchError(f"the app notebook {path} is missing; run the app from a checkout of the repository")
    return path


def free_port(ip: str = "127.0.0.1") -> int:
    """A TCP port that is free on `ip` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


# A page that is closed or reloaded leaves its kernel (1-2 GB with torch loaded) behind: Voila's
# shutdown-on-unload request is refused without the XSRF cookie. Culling ends kernels that have no
# page connected and have been idle this long; a training lives on (it is the project's job).
CULL_IDLE_SECONDS = 60
CULL_INTERVAL_SECONDS = 15


def voila_command(notebook: Path, *, port: int, ip: str = "127.0.0.1", python: str | None = None,
                  cull_idle_seconds: int = CULL_IDLE_SECONDS,
                  cull_interval_seconds: int = CULL_INTERVAL_SECONDS) -> list[str]:
    """The Voila command line serving `notebook` on `ip`:`port` without opening a browser.

    Kernels of closed pages are culled: no page connected and idle for `cull_idle_seconds`,
    checked every `cull_interval_seconds` (``cull_connected=False``: an open page keeps its kernel).
    """
    return [
        python or sys.executable, "-m", "voila", str(notebook),
        "--no-browser",
        f"--port={int(port)}",
        f"--Voila.ip={ip}",
        "--theme=light",
        "--show_tracebacks=False",
        f"--MappingKernelManager.cull_idle_timeout={int(cull_idle_seconds)}",
        f"--MappingKernelManager.cull_interval={int(cull_interval_seconds)}",
        "--MappingKernelManager.cull_connected=False",
        "--MappingKernelManager.cull_busy=False",
    ]


def voila_environment(project: Path, *, train_seconds: float | None = None) -> dict[str, str]:
    """Environment for the Voila server: the project to open, and this checkout importable by its kernels."""
    env = dict(os.environ)
    env[config.PROJECT] = str(Path(project).resolve())
    # The checkout's engine and views, before any installed copy (an editable install of another checkout).
    paths = [str(CHECKOUT), str(CHECKOUT / "widgets")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if train_seconds is not None:
        env[config.TRAIN_SECONDS] = str(float(train_seconds))
    return env


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workbench_widgets.launch",
                                     description="Start the guided microscopy workbench app (Voila).")
    parser.add_argument("--project", default=None,
                        help="project folder (default: $WORKBENCH_PROJECT or ./sample-project; "
                             "the sample project is built there when the folder holds no project)")
    parser.add_argument("--port", type=int, default=8866, help="port to serve on (default 8866; 0 = any free one)")
    parser.add_argument("--ip", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this computer only; 0.0.0.0 for every network "
                             "interface, i.e. reachable by others on the network)")
    parser.add_argument("--train-seconds", type=float, default=None,
                        help="preselected training time in seconds (default: 2 minutes)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Build the sample project if needed, start Voila and wait for it; return its exit code."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before Voila started (e.g. while the sample project is built)
        print("\nStopped.", file=sys.stderr)
        return 0


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    from workbench.datasets import open_default_project

    project_dir = Path(args.project) if args.project else (config.project_dir() or Path.cwd() / "sample-project")
    if args.port < 0 or args.port > 65535:
        print(f"error: --port must be between 0 and 65535, got {args.port}", file=sys.stderr)
        return 2
    try:
        notebook = app_notebook()
        fresh = not (project_dir / "project.json").exists()
        project = open_default_project(project_dir)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if fresh:
        print(f"Built the sample project in {project.path}")
    remember_project(project)  # the app opens the project it was started on (then the one opened last)
    if shutil.which("voila") is None and subprocess.run([sys.executable, "-c", "import voila"],
                                                        capture_output=True).returncode != 0:
        print("error: Voila is not installed in this environment; run `make setup` (or pip install voila)",
              file=sys.stderr)
        return 2
    port = args.port or free_port(args.ip if args.ip != "0.0.0.0" else "127.0.0.1")
    command = voila_command(notebook, port=port, ip=args.ip)
    env = voila_environment(project.path, train_seconds=args.train_seconds)
    host = "127.0.0.1" if args.ip in ("0.0.0.0", "::") else args.ip
    print(f"Project: {project.path}")
    print(f"Open the workbench in your browser:  http://{host}:{port}/")
    if args.ip not in ("127.0.0.1", "localhost", "::1"):
        print(f"(listening on {args.ip}: other computers on the network can reach it too)")
    print("Press Ctrl-C here to stop it.", flush=True)
    return serve(command, env=env, cwd=notebook.parent)


# After Ctrl-C, Voila has this long to shut its kernels down before it is killed.
STOP_GRACE_SECONDS = 20


def serve(command: list[str], *, env: dict[str, str] | None = None, cwd=None,
          grace_seconds: float = STOP_GRACE_SECONDS) -> int:
    """Run the Voila `command` until it ends or the launcher is asked to stop; return the exit code.

    Voila runs in a process group of its own, so the terminal's Ctrl-C (sent to the whole
    foreground group) reaches the launcher alone, which passes on one SIGTERM: Voila shuts its
    kernels down and ends, and the launcher returns 0, with no traceback from either. SIGTERM (a
    service manager) is handled the same way. A second Ctrl-C, or `grace_seconds` without an end,
    kills Voila (its kernels stop by themselves once their parent is gone).
    """
    asked: list[float] = []
    running: list[subprocess.Popen] = []

    def stop(signum, frame) -> None:
        if running and running[0].poll() is not None:
            return
        if not asked:
            print("\nStopping the workbench ...", flush=True)
        asked.append(time.monotonic())
        if running and len(asked) == 1:
            running[0].terminate()  # Voila shuts its kernels down on SIGTERM
        elif running:
            running[0].kill()  # asked again: do not wait for the kernels

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        running.append(subprocess.Popen(command, env=env, cwd=None if cwd is None else str(cwd),
                                        start_new_session=True))
        process = running[0]
        if asked:  # stopped while Voila was being started
            process.terminate()
        while True:
            try:
                code = process.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if asked and time.monotonic() - asked[0] > grace_seconds:
                    process.kill()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if asked:
        print("The workbench has stopped.", flush=True)
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())

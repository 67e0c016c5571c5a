"""Start the guided app: ``python -m workbench_widgets.launch [--project DIR] [--port 8866] [--ip 127.0.0.1]``.

Builds the sample project when the folder holds no project yet, then runs Voila on
``notebooks/app.ipynb`` (no browser opened) and prints the address to open. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from workbench import config
from workbench.errors import WorkbenchError
from workbench.store import remember_project

__all__ = ["main", "app_notebook", "voila_command", "voila_environment", "free_port"]

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
    process = subprocess.Popen(command, env=env, cwd=str(notebook.parent))
    # A service manager stops the launcher with SIGTERM: pass it on so no Voila is left behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: process.terminate())
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.terminate()
            return process.wait()


if __name__ == "__main__":
    sys.exit(main())

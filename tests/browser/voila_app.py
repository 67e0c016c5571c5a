"""What the app's browser tests share: Voila on the app notebook over a project, Chromium, waiting.

A plain module, not a conftest.py: a second conftest.py beside tests/conftest.py breaks the collection of
both under --doctest-modules (two modules named `conftest`). Test files import the fixtures from here.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import urllib.request

import psutil
import pytest

from workbench_widgets.launch import app_notebook, free_port, voila_command, voila_environment


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


class VoilaApp:
    """A running Voila server on ``notebooks/app.ipynb``: its url, log and process."""

    def __init__(self, url: str, process: subprocess.Popen, log_path: Path):
        self.url, self.process, self.log_path = url, process, log_path

    def log(self, tail: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def kernels(self) -> list[psutil.Process]:
        """The kernel processes this server runs now (one per page load until culled)."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            try:
                if "ipykernel_launcher" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child)
            except psutil.Error:
                continue
        return found


@pytest.fixture()
def start_app(tmp_path):
    """``start_app(project_path, train_seconds=4, env={}, **voila_options)`` starts Voila on the app."""
    started: list[subprocess.Popen] = []

    def start(project_path, *, train_seconds: float = 4, env: dict | None = None, **options) -> VoilaApp:
        port = free_port()
        environment = voila_environment(project_path, train_seconds=train_seconds)
        environment["MPLBACKEND"] = "Agg"
        # This test's own user folders: recent projects and new projects start empty.
        environment["WORKBENCH_HOME"] = str(tmp_path / "home")
        environment["WORKBENCH_PROJECTS_DIR"] = str(tmp_path / "workbench-projects")
        environment.update(env or {})
        log_path = tmp_path / f"voila-{port}.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(voila_command(app_notebook(), port=port, **options), env=environment,
                                       cwd=app_notebook().parent, stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        url = f"http://127.0.0.1:{port}/"
        wait_until_serving(url, process, log_path)
        return VoilaApp(url, process, log_path)

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture()
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def wait_until_serving(url: str, process: subprocess.Popen, log_path: Path, timeout: float = 120) -> None:
    """Wait until the Voila server at `url` answers (any HTTP answer counts); fail with its log if it died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url + "voila/static/favicon.ico", timeout=5).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"Voila did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)


def wait_for(condition, timeout: float, what: str, app: VoilaApp | None = None):
    """Poll `condition` until it gives something true; fail naming `what` (and Voila's log) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\nVoila log:\n{app.log()}" if app else ""))


def open_app(page, app: VoilaApp) -> None:
    """Load the app page and wait until the app is shown."""
    page.goto(app.url, timeout=180_000)
    page.get_by_text("Microscopy segmentation workbench").wait_for(timeout=180_000)

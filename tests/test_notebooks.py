"""Every notebook runs without error (nbval, --nbval-lax), and the batch notebook runs headless with papermill.

The notebooks run in kernels of their own, on a temporary sample project, with a three-second
training (``WORKBENCH_TRAIN_SECONDS``) and ``WORKBENCH_UNATTENDED`` set so that notebooks 03 and 05
press their buttons themselves.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import tifffile

from workbench.store import Project
from workbench.datasets import sample_image_path

CHECKOUT = Path(__file__).resolve().parents[1]
NOTEBOOKS = CHECKOUT / "notebooks"
GUIDED = ["01_project_and_images.ipynb", "02_annotate.ipynb", "03_train.ipynb", "04_review.ipynb",
          "05_segment_and_measure.ipynb", "app.ipynb", "batch_segment.ipynb"]


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory) -> dict:
    """Environment of the notebook kernels: a fresh sample project, short training, this checkout importable."""
    folder = tmp_path_factory.mktemp("notebooks")
    env = dict(os.environ)
    env.update({
        "WORKBENCH_PROJECT": str(folder / "sample-project"),
        "WORKBENCH_TRAIN_SECONDS": "3",
        "WORKBENCH_UNATTENDED": "1",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join([str(CHECKOUT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    })
    env["WORKDIR"] = str(folder)
    return env


def test_the_notebooks_are_a_numbered_sequence_with_a_parameters_cell():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == sorted(GUIDED)
    batch = json.loads((NOTEBOOKS / "batch_segment.ipynb").read_text())
    tagged = [c for c in batch["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    for parameter in ("project", "input_path", "model_version", "output_path", "tile_size"):
        assert f"{parameter} =" in "".join(tagged[0]["source"])
    app = json.loads((NOTEBOOKS / "app.ipynb").read_text())
    assert [c["cell_type"] for c in app["cells"]] == ["code"], "the Voila app is one code cell, no text to hide"
    readme = (NOTEBOOKS / "README.md").read_text()
    assert "papermill notebooks/batch_segment.ipynb" in readme and "-p project" in readme


@pytest.mark.slow
def test_every_notebook_runs_under_nbval(notebook_env):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider", "--nbval-cell-timeout=300",
         *[f"notebooks/{name}" for name in GUIDED]],
        cwd=CHECKOUT, env=notebook_env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
    # Notebook 03 trained on the project the notebooks share; 05 segmented and measured with it.
    project = Project.open(notebook_env["WORKBENCH_PROJECT"])
    assert [m.method for m in project.models] == ["unet"]
    assert (project.path / "results" / "model-v001" / "measurements.csv").exists()


@pytest.mark.slow
def test_batch_notebook_runs_headless_with_papermill(notebook_env, tmp_path, trained_sample_project):
    project = trained_sample_project  # the batch run reads the project's model and writes elsewhere
    images = tmp_path / "plate"
    images.mkdir()
    tifffile.imwrite(images / "well-A1.tif", tifffile.imread(sample_image_path()))
    tifffile.imwrite(images / "well-A2.tif", tifffile.imread(sample_image_path())[:300, :400])
    out = tmp_path / "results"
    executed = tmp_path / "batch-run.ipynb"
    command = [sys.executable, "-m", "papermill", str(NOTEBOOKS / "batch_segment.ipynb"), str(executed),
               "-p", "project", str(project.path), "-p", "input_path", str(images), "-p", "output_path", str(out),
               "-p", "model_version", "1", "-p", "tile_size", "256", "-k", "python3", "--cwd", str(tmp_path)]
    result = subprocess.run(command, env=notebook_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    assert tifffile.imread(out / "labels" / "well-A1_labels.tif").shape == (512, 512)
    assert tifffile.imread(out / "labels" / "well-A2_labels.tif").shape == (300, 400)
    assert (out / "overlays" / "well-A2_overlay.png").exists() and (out / "results.zip").exists()
    table = pd.read_csv(out / "measurements.csv")
    assert {"image", "class"} <= set(table.columns)
    run = json.loads(executed.read_text())
    injected = [c for c in run["cells"] if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert injected and "tile_size = 256" in "".join(injected[0]["source"])
    outputs = "".join("".join(o.get("text", "")) for c in run["cells"] for o in c.get("outputs", []))
    assert "2 image(s) segmented" in outputs


@pytest.mark.slow
def test_launch_builds_the_sample_project_and_serves_the_app(notebook_env, tmp_path):
    from workbench_widgets.launch import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "workbench_widgets.launch", "--project", str(tmp_path / "proj"),
                                "--port", str(port)], cwd=tmp_path, env=notebook_env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Open the workbench in your browser" in line or process.poll() is not None:
                break
        url = re.search(r"(http://127\.0\.0\.1:\d+/)", "".join(lines))
        assert url and url.group(1) == f"http://127.0.0.1:{port}/", "".join(lines)
        assert Project.open(tmp_path / "proj").image_names == ["nuclei"], "the sample project is built"
        page = None
        while time.monotonic() < deadline and page is None:
            try:
                with urllib.request.urlopen(url.group(1), timeout=60) as response:
                    page = response.read().decode()
            except OSError:
                time.sleep(0.5)
        assert page is not None and "voila" in page.lower()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode is not None


@pytest.mark.slow
def test_ctrl_c_stops_the_launcher_and_voila_cleanly(notebook_env, tmp_path):
    """Ctrl-C in the terminal (SIGINT to the launcher's whole process group) ends the launcher,
    Voila and the page's kernel within seconds, exit code 0, no traceback."""
    import psutil

    from workbench_widgets.launch import free_port

    port = free_port()
    env = dict(notebook_env, WORKBENCH_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join([str(CHECKOUT), str(CHECKOUT / "widgets"), notebook_env["PYTHONPATH"]]))
    # A session of its own, as a terminal gives the command it runs: the group is what Ctrl-C reaches.
    process = subprocess.Popen([sys.executable, "-m", "workbench_widgets.launch", "--project", str(tmp_path / "proj"),
                                "--port", str(port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        page = None
        while page is None and time.monotonic() < deadline and process.poll() is None:
            try:  # the page: Voila starts a kernel for it
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60) as response:
                    page = response.read().decode()
            except OSError:
                time.sleep(0.5)
        assert page is not None, "the app was not served"
        children = psutil.Process(process.pid).children(recursive=True)
        assert any("voila" in " ".join(c.cmdline()) for c in children)
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 0, output[-3000:]
    assert took < 15, f"stopping took {took:.1f} s"
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    assert "The workbench has stopped." in output
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {[' '.join(p.cmdline())[:100] for p in alive]}"

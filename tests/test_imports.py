"""The house plan holds: the import-linter contracts of pyproject.toml, views on public names only,
and the headless batch notebook on the engine alone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grimp
from importlinter import cli

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_the_contracts_name_every_part_of_the_engine():
    """A new top-level module or subpackage of the engine gets a layer (else nothing guards it)."""
    text = (ROOT / "pyproject.toml").read_text()
    layered = set(re.findall(r"workbench\.(\w+)", text.split('type = "layers"', 1)[1]))
    parts = {p.stem for p in (ROOT / "workbench").glob("*.py") if p.stem != "__init__"}
    parts |= {p.parent.name for p in (ROOT / "workbench").glob("*/__init__.py")}
    assert parts - layered == set(), f"add {sorted(parts - layered)} to the layers contract in pyproject.toml"


def test_views_import_only_public_engine_names():
    graph = grimp.build_graph("workbench_widgets", "workbench")
    private = sorted(
        (view, used)
        for view in graph.find_children("workbench_widgets") | {"workbench_widgets"}
        for used in graph.find_modules_directly_imported_by(view)
        if used.startswith("workbench.") and any(part.startswith("_") for part in used.split(".")[1:])
    )
    assert private == [], f"views reach into private engine modules: {private}"


def test_the_batch_notebook_imports_only_the_engine():
    notebook = json.loads((ROOT / "notebooks" / "batch_segment.ipynb").read_text())
    code = "".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")
    imported = set(re.findall(r"^\s*(?:from|import)\s+([\w.]+)", code, flags=re.MULTILINE))
    assert any(name.startswith("workbench") for name in imported)
    assert not [name for name in imported if name.startswith("workbench_widgets") or name == "ipywidgets"]

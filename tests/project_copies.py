"""Copies and digests of project folders, for tests that change a project or check it stayed the same.

A plain module (not conftest): test files import it by name, and a second conftest.py (tests/browser/)
would shadow the name `conftest`.
"""

from __future__ import annotations

from pathlib import Path


def copy_project(source: Path, target: Path) -> Path:
    """A copy of a project folder (without its lock and staging state) to change in a test."""
    import shutil

    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".workbench"))
    return target


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (except the lock folder) with a hash of its bytes: "unchanged" means equal digests."""
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and ".workbench" not in p.relative_to(folder).parts}

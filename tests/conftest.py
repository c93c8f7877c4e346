"""Shared fixtures: the repo's paths and a way to load a lab from text."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LABS = ROOT / "labs"


@pytest.fixture
def lab_file(tmp_path: Path):
    """Write YAML text to a lab file and return its path."""

    def write(text: str, name: str = "lab.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write

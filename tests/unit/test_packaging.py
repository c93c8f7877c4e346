"""A non-editable `pip install .` into a fresh venv ships the schema, templates and labs."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_install_works_outside_the_checkout(tmp_path: Path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, install.stderr[-3000:]
    cli = env_dir / "bin" / "labbuilder"
    # Run from elsewhere so nothing can be picked up from the checkout.
    run = subprocess.run([str(cli), "validate", "kthw"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert (run.returncode, run.stdout.strip()) == (0, "ok"), run.stderr
    plan = subprocess.run([str(cli), "plan", "kthw"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert "-A KUBE-SERVICES -d 10.32.0.1/32 -p tcp" in plan.stdout  # kube-proxy rules in the plan
    code = "import labbuilder, pathlib; print(pathlib.Path(labbuilder.__file__).parent)"
    where = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60
    ).stdout.strip()
    package = Path(where)
    assert package.is_relative_to(env_dir)
    for shipped in (
        "schemas/lab.schema.json",
        "templates/graph.html.j2",
        "templates/node/podserver.py",
        "templates/node/pause.x86_64",
        "labs/kthw.yaml",
    ):
        assert (package / shipped).is_file(), shipped

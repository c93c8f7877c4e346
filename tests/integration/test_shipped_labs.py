"""Every shipped lab comes up pristine and its own checks pass on it, as an instructor would hand it out."""

from __future__ import annotations

import pytest

from tests.integration.conftest import ROOT, bring_up, labbuilder

pytestmark = pytest.mark.docker
LABS = sorted(p.stem for p in (ROOT / "labs").glob("*.yaml"))


@pytest.mark.parametrize("name", LABS)
def test_shipped_lab_passes_its_checks(name: str, host_before):
    up = bring_up(str(ROOT / "labs" / f"{name}.yaml"), f"ship-{name}")
    lab = next(up)
    try:
        result = labbuilder("check", lab, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert ", 0 failed" in result.stdout
        # What `up` built in one batch per namespace is exactly what diff/reset expect, op by op.
        pristine = labbuilder("diff", lab, check=False)
        assert pristine.returncode == 0 and pristine.stdout.strip() == f"lab {lab}: pristine", pristine.stdout
    finally:
        next(up, None)

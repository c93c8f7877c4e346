"""The instructor's day on the real engine: checks grade a lab, an exercise breaks and is graded,
reset restores, and two copies of one lab live side by side."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import pytest

from labbuilder.spec.lab_file import resolve_file
from tests.integration.conftest import ROOT, bring_up, dexec, lab_containers, labbuilder, pod_exec

pytestmark = pytest.mark.docker
EXERCISE = str(ROOT / "labs/exercises/kthw-pod-routes.yaml")


@pytest.fixture(scope="module")
def lab(host_before) -> Iterator[str]:
    yield from bring_up(str(ROOT / "labs/kthw.yaml"), "classkthw")


def test_the_shipped_checks_pass_on_a_fresh_lab(lab, tmp_path: Path):
    junit = tmp_path / "grades.xml"
    result = labbuilder("check", lab, "--junit", str(junit))
    assert "11 passed, 0 failed" in result.stdout
    suite = ElementTree.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("11", "0")
    as_json = json.loads(labbuilder("check", lab, "-o", "json").stdout)
    assert len(as_json) == 11 and all(r["passed"] for r in as_json)
    assert {r["kind"] for r in as_json} == {"reach", "nat", "route", "dns", "http"}


def test_an_exercise_breaks_the_lab_is_graded_fixed_and_reset(lab, tmp_path: Path):
    start = labbuilder("exercise", lab, EXERCISE)
    assert "Pods on worker-1 went dark" in start.stdout
    failing = labbuilder("check", lab, "--exercise", EXERCISE, "--junit", str(tmp_path / "j.xml"), check=False)
    assert failing.returncode == 1
    assert "0 passed, 3 failed" in failing.stdout
    assert ElementTree.parse(tmp_path / "j.xml").getroot().get("failures") == "3"
    # The learner's fix: the VPC route back in the router.
    dexec(f"{lab}-router", "ip", "route", "add", "10.200.1.0/24", "via", "10.240.0.21")
    assert "3 passed, 0 failed" in labbuilder("check", lab, "--exercise", EXERCISE).stdout
    # A learner who "fixed" it another way leaves junk behind; reset clears it.
    dexec(f"{lab}-worker-0", "ip", "route", "add", "10.99.0.0/16", "via", "10.240.0.1")
    assert "worker-0: stray route 10.99.0.0/16 via 10.240.0.1 removed" in labbuilder("reset", lab).stdout
    assert "nothing repaired" in labbuilder("reset", lab).stdout


def test_a_failing_check_fails_the_command(lab):
    dexec(f"{lab}-router", "ip", "route", "del", "10.200.1.0/24")
    try:
        result = labbuilder("check", lab, check=False)
        assert result.returncode == 1
        assert "FAIL" in result.stdout and "VPC route to worker-1 pods" in result.stdout
    finally:
        labbuilder("reset", lab)


def test_two_copies_of_one_lab_run_side_by_side(host_before):
    twins = ("twin-a", "twin-b")
    ups = [bring_up(str(ROOT / "labs/kthw.yaml"), name) for name in twins]
    for up in ups:
        next(up)
    try:
        listed = labbuilder("ls").stdout
        assert all(name in listed for name in twins)
        for name in twins:
            model = resolve_file(str(ROOT / "labs/kthw.yaml"), name)[1].lab
            source, target = model.node("worker-0").pods[0], model.node("worker-2").pods[0]
            assert str(target.ip) == "10.200.2.2"  # identical addressing in both copies
            assert "1 received" in pod_exec(
                f"{name}-worker-0", source.netns, "ping", "-c", "1", "-W", "2", str(target.ip)
            )
        labbuilder("down", "twin-a")
        assert lab_containers("twin-a") == []
        assert "11 passed, 0 failed" in labbuilder("check", "twin-b").stdout
    finally:
        for up in ups:
            next(up, None)

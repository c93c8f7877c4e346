"""`check --matrix` on the real engine: the truth table measured with packets from every pod's
namespace, printed as the e2e suite prints it, and compared with the one the policies imply."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator

import pytest

from labbuilder.spec import refs
from labbuilder.spec.lab_file import resolve_file
from tests.integration.conftest import ROOT, bring_up, labbuilder

pytestmark = pytest.mark.docker
LAB = str(ROOT / "tests/integration/labs/netpol-open.yaml")

OPEN = "-\tx/a\tx/b\ty/a\ty/b\nx/a\t.\t.\t.\t.\nx/b\t.\t.\t.\t.\ny/a\t.\t.\t.\t.\ny/b\t.\t.\t.\t.\n"


@pytest.fixture(scope="module")
def open_lab(host_before) -> Iterator[str]:
    yield from bring_up(LAB, "npopen")


def test_without_policies_every_pod_reaches_every_pod(open_lab):
    started = time.monotonic()
    assert labbuilder("check", open_lab, "--matrix").stdout == OPEN
    assert time.monotonic() - started < 10, "probes run in parallel"
    expected = labbuilder("check", open_lab, "--matrix", "--expect")
    assert "measured = expected: all 16 cells agree" in expected.stdout
    udp = labbuilder("check", open_lab, "--matrix", "--port", "81/udp", "--group", "namespaces")
    assert udp.stdout == "-\tx\ty\nx\t.\t.\ny\t.\t.\n"
    assert "1 passed, 0 failed" in labbuilder("check", open_lab).stdout
    as_json = json.loads(labbuilder("check", open_lab, "--matrix", "--expect", "-o", "json").stdout)
    assert as_json["tos"] == ["x/a", "x/b", "y/a", "y/b"] and as_json["differences"] == []
    assert as_json["measured"] == as_json["expected"] == [["."] * 4] * 4


def test_a_port_nobody_serves_is_no_matrix(open_lab):
    none = labbuilder("check", open_lab, "--matrix", "--port", "81/tcp", check=False)
    assert none.returncode == 1 and "no pod serves 81/tcp" in none.stderr


def test_a_blocked_cell_is_measured_and_differs_from_the_expectation(open_lab):
    """No enforcement needed to see the measurement and the comparison fail: a learner's own
    iptables rule in y/b's namespace drops what x/a sends it."""
    x_a = refs.pod(resolve_file(LAB, open_lab)[1].lab, "x/a").ip
    rule = ["-I", "INPUT", "-s", str(x_a), "-p", "tcp", "--dport", "80", "-j", "DROP"]
    labbuilder("exec", open_lab, "y/b", "--", "iptables", *rule)
    try:
        measured = labbuilder("check", open_lab, "--matrix").stdout
        assert measured == OPEN.replace("x/a\t.\t.\t.\t.", "x/a\t.\t.\t.\tX")
        compared = labbuilder("check", open_lab, "--matrix", "--expect", check=False)
        assert compared.returncode == 1
        assert "1 cell(s) differ (*):\n  x/a → y/b: measured X, expected ." in compared.stdout
        assert "X*" in compared.stdout
        graded = labbuilder("check", open_lab, "-o", "json", check=False)
        assert graded.returncode == 1
        assert json.loads(graded.stdout)[0]["detail"] == "1 cell(s) differ: x/a → y/b: X, expected ."
    finally:
        labbuilder("exec", open_lab, "y/b", "--", "iptables", "-D", *rule[1:])


NETPOL = str(ROOT / "labs/netpol.yaml")


@pytest.fixture(scope="module")
def netpol(host_before) -> Iterator[str]:
    yield from bring_up(NETPOL, "npshipped")


def test_the_shipped_netpol_lab_measures_what_its_policies_imply(netpol):
    """kube-router's enforcement (bridge mode; every mode is test_netpol_enforce's) against the
    semantics, through the commands a learner types: both ports, both groupings, every check."""
    for port in ("80/tcp", "81/tcp", "80/udp"):
        result = labbuilder("check", netpol, "--matrix", "--port", port, "--expect", check=False)
        assert result.returncode == 0, result.stdout
        assert "measured = expected: all 81 cells agree" in result.stdout
    measured = labbuilder("check", netpol, "--matrix").stdout
    assert measured.splitlines()[1] == "x/a\t.\tX\tX\t.\t.\t.\t.\t.\tX", "x is default-deny; z/c is closed on 80"
    assert measured.splitlines()[5] == "y/b\t.\tX\tX\t.\t.\t.\t.\t.\tX", "y reaches x/a across nodes too"
    assert measured.splitlines()[8] == "z/b\tX\tX\tX\tX\tX\tX\tX\t.\tX", "z/b may only ask the DNS"
    grouped = labbuilder("check", netpol, "--matrix", "--group", "namespaces", "--expect")
    assert "measured = expected: all 9 cells agree" in grouped.stdout
    assert "8 passed, 0 failed" in labbuilder("check", netpol).stdout


def test_get_networkpolicies_reads_the_running_lab(netpol):
    listed = labbuilder("get", "netpol", netpol, "-A").stdout
    assert listed.splitlines()[0].split() == ["NAMESPACE", "NAME", "POD-SELECTOR"]
    assert "default-deny-ingress   <none>" in listed
    one = labbuilder("get", "networkpolicies", netpol, "-n", "x", "allow-from-team-blue", "-o", "yaml").stdout
    assert "kind: NetworkPolicy" in one and "team: blue" in one
    assert "No resources found in default namespace." in labbuilder("get", "netpol", netpol).stderr


def test_the_exercise_is_graded_by_its_tables(netpol, tmp_path):
    """The learner's way: the exercise fails, their manifest goes into a copy of the lab, `reset
    --file` applies it, the exercise passes; the original file puts the lab back."""
    exercise = str(ROOT / "labs/exercises/netpol-protect-y-b.yaml")
    assert "Only x/a may talk to y/b" in labbuilder("exercise", netpol, exercise).stdout
    before = labbuilder("check", netpol, "--exercise", exercise, check=False)
    assert before.returncode == 1 and "0 passed, 3 failed" in before.stdout
    work = tmp_path / "work"
    shutil.copytree(ROOT / "labs/netpol", work / "netpol")
    solution = (ROOT / "tests/unit/data/netpol-exercise-solution.yaml").read_text()
    (tmp_path / "my-policy.yaml").write_text(solution)
    text = (ROOT / "labs/netpol.yaml").read_text()
    (work / "netpol.yaml").write_text(
        text.replace("networkPolicies:\n", "networkPolicies:\n  - file: ../my-policy.yaml\n")
    )
    try:
        labbuilder("reset", netpol, "--file", str(work / "netpol.yaml"))
        after = labbuilder("check", netpol, "--exercise", exercise, check=False)
        assert after.returncode == 0, after.stdout
        assert "3 passed, 0 failed" in after.stdout
    finally:
        labbuilder("reset", netpol, "--file", NETPOL)
    assert labbuilder("check", netpol, "--exercise", exercise, check=False).returncode == 1

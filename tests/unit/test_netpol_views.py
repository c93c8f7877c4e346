"""What a person sees of NetworkPolicies: `get networkpolicies`, the matrix check kind, the
side-by-side comparison, and the shipped netpol lab and exercise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from labbuilder.compile.netpol.semantics import expected_matrix
from labbuilder.errors import LabError, SpecError
from labbuilder.observe.matrix import judge, parse_probes, probe_script
from labbuilder.present import kubectl as shapes
from labbuilder.present.matrix import differences_text, side_by_side
from labbuilder.spec.checks import check_from_spec, validate_check
from labbuilder.spec.exercise import load_exercise
from labbuilder.spec.lab_file import resolve_file
from labbuilder.spec.load import load_text
from labbuilder.spec.model import MatrixCheck
from labbuilder.spec.resolve import build_model
from labbuilder.spec.truthtable import matrix_pods, parse
from tests.conftest import LABS, ROOT

NETPOL = build_model(load_text((LABS / "netpol.yaml").read_text(), str(LABS / "netpol.yaml"))).lab
EXERCISE = str(LABS / "exercises" / "netpol-protect-y-b.yaml")
SOLUTION = ROOT / "tests" / "unit" / "data" / "netpol-exercise-solution.yaml"


def test_get_networkpolicies_rows_are_kubectls():
    policies = sorted(NETPOL.network_policies, key=lambda p: (p.namespace, p.name))
    headers, rows = shapes.network_policy_rows(policies, all_namespaces=True)
    assert shapes.render_table(headers, rows).splitlines() == [
        "NAMESPACE   NAME                   POD-SELECTOR",
        "x           allow-from-team-blue   pod=a",
        "x           default-deny-ingress   <none>",
        "z           allow-81-only          pod=c",
        "z           egress-dns-only        pod=b",
    ]
    assert shapes.network_policy_rows(policies[:1], all_namespaces=False)[0] == ["NAME", "POD-SELECTOR"]


def test_a_policy_object_is_a_manifest_the_lab_reads_back_unchanged(tmp_path: Path):
    """`get netpol -o yaml` prints what the apiserver stores, defaults filled in; fed back as a
    manifest it makes the same policy."""
    for policy in NETPOL.network_policies:
        obj = shapes.network_policy_object(policy)
        assert (obj["apiVersion"], obj["kind"]) == ("networking.k8s.io/v1", "NetworkPolicy")
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(obj))
        text = (LABS / "netpol.yaml").read_text().split("networkPolicies:")[0] + "networkPolicies: [{file: p.yaml}]\n"
        again = build_model(load_text(text, str(tmp_path / "lab.yaml"))).lab.network_policies
        assert again == (policy,)
    dns = shapes.network_policy_object(next(p for p in NETPOL.network_policies if p.name == "egress-dns-only"))
    assert dns["spec"]["policyTypes"] == ["Egress"]
    assert dns["spec"]["egress"][0]["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    deny = shapes.network_policy_object(next(p for p in NETPOL.network_policies if p.name == "default-deny-ingress"))
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_the_netpol_lab_implies_the_e2e_shaped_tables():
    assert expected_matrix(NETPOL, 80, "TCP").pretty().splitlines()[1:] == [
        "x/a\t.\tX\tX\t.\t.\t.\t.\t.\tX",  # x is default-deny: x/b, x/c closed; z/c only on 81
        "x/b\tX\t.\tX\t.\t.\t.\t.\t.\tX",
        "x/c\tX\tX\t.\t.\t.\t.\t.\t.\tX",
        "y/a\t.\tX\tX\t.\t.\t.\t.\t.\tX",  # team blue may reach x/a
        "y/b\t.\tX\tX\t.\t.\t.\t.\t.\tX",
        "y/c\t.\tX\tX\t.\t.\t.\t.\t.\tX",
        "z/a\tX\tX\tX\t.\t.\t.\t.\t.\tX",
        "z/b\tX\tX\tX\tX\tX\tX\tX\t.\tX",  # z/b may only ask the DNS
        "z/c\tX\tX\tX\t.\t.\t.\t.\t.\t.",
    ]
    assert [line.split("\t")[-1] for line in expected_matrix(NETPOL, 81, "TCP").pretty().splitlines()] == [
        "z/c", ".", ".", ".", ".", ".", ".", ".", "X", "."
    ]  # fmt: skip


def test_the_shipped_checks_cover_every_kind_of_policy():
    kinds = [("matrix" if c.matrix else "dns" if c.dns else c.expect) for c in NETPOL.checks]
    assert kinds == ["matrix", "matrix", "matrix", "reach", "no-reach", "reach", "no-reach", "dns"]
    assert NETPOL.checks[2].matrix == MatrixCheck(80, "UDP", "namespaces")


def test_the_exercise_fails_without_the_policy_and_passes_with_the_solution(tmp_path: Path):
    exercise = load_exercise(EXERCISE, NETPOL)
    tables = [(c.matrix.port, parse(c.matrix.expect)) for c in exercise.checks if c.matrix and c.matrix.expect]
    assert [port for port, _ in tables] == [80, 81]
    text = (LABS / "netpol.yaml").read_text().replace("networkPolicies:\n", f"networkPolicies:\n  - file: {SOLUTION}\n")
    solved = build_model(load_text(text, str(LABS / "netpol.yaml"))).lab
    for port, table in tables:
        assert expected_matrix(solved, port, "TCP").differences(table) == []
        assert expected_matrix(NETPOL, port, "TCP").differences(table) != [], "the checks fail until it is written"
    # The classic mistake: the two selectors as two peers (OR) lets all of x and every pod=a in.
    wrong = SOLUTION.read_text().replace("          podSelector:", "        - podSelector:")
    assert wrong != SOLUTION.read_text()
    (tmp_path / "wrong.yaml").write_text(wrong)
    with_wrong = text.replace(str(SOLUTION), str(tmp_path / "wrong.yaml"))
    mistaken = build_model(load_text(with_wrong, str(LABS / "netpol.yaml"))).lab
    assert ("x/b", "y/b", ".", "X") in expected_matrix(mistaken, 80, "TCP").differences(tables[0][1])


def test_matrix_checks_are_validated_against_the_lab():
    good = check_from_spec({"matrix": {"port": 81}}, 0)
    assert (good.name, good.matrix) == ("matrix 81/tcp", MatrixCheck(81, "TCP", "pods"))
    validate_check(NETPOL, good)
    with pytest.raises(LabError, match="no pod serves 8080/tcp"):
        validate_check(NETPOL, check_from_spec({"matrix": {"port": 8080}}, 0))
    short = "-\tx/a\tx/b\nx/a\t.\t.\nx/b\t.\t.\n"
    with pytest.raises(LabError, match="expect: the rows are x/a x/b, the lab's are x/a x/b x/c y/a"):
        validate_check(NETPOL, check_from_spec({"matrix": {"expect": short}}, 0))
    with pytest.raises(LabError, match="expect: line 2: 'o' is not a mark"):
        validate_check(NETPOL, check_from_spec({"matrix": {"expect": "-\tx/a\nx/a\to\n"}}, 0))
    by_namespace = "-\tx\ty\tz\nx\t~\t.\t~\ny\t~\t.\t~\nz\tX\t~\t~\n"
    validate_check(NETPOL, check_from_spec({"matrix": {"group": "namespaces", "expect": by_namespace}}, 0))


def test_a_bad_matrix_check_is_a_located_error_in_the_lab_file():
    text = (LABS / "netpol.yaml").read_text()
    last = len(text.splitlines()) + 1
    mixed = text + "  - {matrix: {port: 80}, from: x/a}\n"
    with pytest.raises(SpecError) as info:
        build_model(load_text(mixed, "lab.yaml", base=LABS))
    assert [str(p).split(" (")[0] for p in info.value.problems] == [
        f"lab.yaml:{last}:5: checks.8: matches none of the accepted forms"
    ]
    with pytest.raises(SpecError) as info:
        build_model(load_text(text + "  - {name: m, matrix: {port: 82}}\n", "lab.yaml", base=LABS))
    assert [str(p) for p in info.value.problems] == [
        f"lab.yaml:{last}:5: check 'm': no pod serves 82/tcp (a matrix probes the pods whose workloads list that port)"
    ]


def test_the_probe_script_and_its_output():
    pods = dict(list(matrix_pods(NETPOL, 80, "TCP").items())[:2])
    script = probe_script(pods, 80, "TCP")
    assert script.splitlines() == [
        "( nc -z -w 1 10.200.0.2 80 >/dev/null 2>&1 && echo x/a ok || echo x/a no ) &",
        "( nc -z -w 1 10.200.1.2 80 >/dev/null 2>&1 && echo x/b ok || echo x/b no ) &",
        "wait",
    ]
    assert "nc -u -w 1 10.200.0.2 81" in probe_script(pods, 81, "UDP")
    assert parse_probes("x/b no\nnoise\nx/a ok\n") == {"x/a": True, "x/b": False}


def test_side_by_side_marks_the_cells_that_differ():
    expected = expected_matrix(NETPOL, 80, "TCP")
    measured = parse(expected.pretty().replace("y/b\t.", "y/b\tX"))
    text = side_by_side(measured, expected, ("measured (80/tcp)", "expected (NetworkPolicies)"))
    lines = text.splitlines()
    assert lines[0].startswith("measured (80/tcp)") and lines[0].endswith("expected (NetworkPolicies)")
    assert lines[1].split() == ["-", *expected.tos, "-", *expected.tos]
    assert lines[6].split()[:2] == ["y/b", "X*"] and lines[6].split()[11] == ".*"
    assert differences_text(measured, expected) == "1 cell(s) differ (*):\n  y/b → x/a: measured X, expected ."
    assert differences_text(expected, expected) == "measured = expected: all 81 cells agree"
    assert judge(measured, expected) == (False, "1 cell(s) differ: y/b → x/a: X, expected .")
    assert judge(expected, expected) == (True, "all 9 by 9 cells as expected")


def test_the_lab_file_and_its_manifests_resolve_by_name():
    assert resolve_file("netpol")[1].lab.network_policies == NETPOL.network_policies


def test_only_the_bridge_plugins_masquerade_hides_pods_on_other_nodes():
    """What `check --matrix --expect` notes when a policy lab masquerades pod traffic."""
    from dataclasses import replace

    from labbuilder.compile.cni import mode_for

    for mode, hides in (("bridge", True), ("ptp", False), ("vxlan", False)):
        lab = replace(NETPOL, cni=replace(NETPOL.cni, mode=mode, ip_masq=True))
        assert mode_for(lab).hides_pod_sources(lab) is hides, mode
    assert not mode_for(NETPOL).hides_pod_sources(NETPOL), "the shipped lab keeps pod addresses"

"""NetworkPolicy semantics against the Kubernetes network-policy e2e suite's own cases.

The model is the suite's (test/e2e/network/netpol/model.go): namespaces x, y, z with pods a, b, c,
labelled pod=<name>, serving 80 and 81 over TCP and UDP under the names serve-80-tcp… Each case
writes its policies as the suite creates them and its expectation as the suite's Reachability
calls (ExpectPeer, ExpectAllIngress, …, with the loopback cells allowed as AllowLoopback does; an
egress-only policy lists policyTypes [Egress], as the suite's SetSpecEgressRules does);
the matrix the semantics compute must equal it cell for cell.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address

import pytest

from labbuilder.compile.netpol.semantics import allowed, expected_matrix, peer_pods, selected_pods
from labbuilder.spec.load import load_text
from labbuilder.spec.model import Lab, Pod
from labbuilder.spec.resolve import build_model
from labbuilder.spec.truthtable import TruthTable, matrix_pods, parse

PORTS = (
    "["
    + ", ".join(f"{{port: {n}, protocol: {p}, name: serve-{n}-{p.lower()}}}" for n in (80, 81) for p in ("TCP", "UDP"))
    + "]"
)
MODEL = "name: e2e\nnodes: [{name: w0}, {name: w1}]\nworkloads:\n" + "".join(
    f"  - {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}, ports: {PORTS}}}\n" for ns in "xyz" for pod in "abc"
)
PODS = [f"{ns}/{pod}" for ns in "xyz" for pod in "abc"]


def lab_with(policies: str) -> Lab:
    return build_model(load_text(MODEL + "networkPolicies:\n" + policies, "e2e.yaml")).lab


class Reachability:
    """The e2e suite's Reachability: a table of expectations, all true to begin with."""

    def __init__(self, default: bool = True):
        self.values = {(f, t): default for f in PODS for t in PODS}

    def expect(self, source: str, target: str, value: bool) -> None:
        self.values[(source, target)] = value

    def expect_peer(self, source: tuple[str, str], target: tuple[str, str], value: bool) -> None:
        """Peer{Namespace, Pod}: an empty part matches everything."""
        for f in self._matching(source):
            for t in self._matching(target):
                self.values[(f, t)] = value

    def expect_all_ingress(self, pod: str, value: bool) -> None:
        for f in PODS:
            self.values[(f, pod)] = value

    def expect_all_egress(self, pod: str, value: bool) -> None:
        for t in PODS:
            self.values[(pod, t)] = value

    def table(self) -> TruthTable:
        return TruthTable.build(PODS, PODS, lambda f, t: f == t or self.values[(f, t)])  # AllowLoopback

    @staticmethod
    def _matching(peer: tuple[str, str]) -> Iterable[str]:
        ns, pod = peer
        return [p for p in PODS if (not ns or p.startswith(ns + "/")) and (not pod or p.endswith("/" + pod))]


def check(lab: Lab, reachability: Reachability, port: int = 80, protocol: str = "TCP") -> None:
    got = expected_matrix(lab, port, protocol)  # type: ignore[arg-type]
    want = reachability.table()
    assert got.differences(want) == [], f"computed:\n{got.pretty()}\nexpected:\n{want.pretty()}"


def test_no_policy_everything_reaches():
    lab = build_model(load_text(MODEL, "e2e.yaml")).lab
    check(lab, Reachability())


def test_default_deny_ingress():  # should support a 'default-deny-ingress' policy
    lab = lab_with("  - {name: deny-ingress, namespace: x, podSelector: {}}\n")
    r = Reachability()
    r.expect_peer(("", ""), ("x", ""), False)
    check(lab, r)
    check(lab, r, 80, "UDP")  # the UDP context's same case


def test_default_deny_all():  # should support a 'default-deny-all' policy
    lab = lab_with("  - {name: deny-all, namespace: x, podSelector: {}, policyTypes: [Ingress, Egress]}\n")
    r = Reachability()
    r.expect_peer(("", ""), ("x", ""), False)
    r.expect_peer(("x", ""), ("", ""), False)
    check(lab, r)


def test_default_deny_egress():  # should deny egress from all pods in a namespace
    lab = lab_with("  - {name: deny-egress-ns-x, namespace: x, policyTypes: [Egress]}\n")
    r = Reachability()
    r.expect_peer(("x", ""), ("", ""), False)
    check(lab, r)


def test_allow_by_pod_selector():  # should enforce policy to allow traffic from pods within server namespace…
    lab = lab_with(
        "  - name: x-a-allows-x-b\n    namespace: x\n    podSelector: {matchLabels: {pod: a}}\n"
        "    ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]\n"
    )
    r = Reachability()
    r.expect_all_ingress("x/a", False)
    r.expect("x/b", "x/a", True)
    check(lab, r)
    assert [p.ref.split("-")[0] for p in selected_pods(lab, lab.network_policies[0])] == ["x/a"]


def test_allow_by_namespace_selector():  # …only from a different namespace, based on NamespaceSelector
    lab = lab_with(
        "  - name: allow-client-a-via-ns-selector\n    namespace: x\n    podSelector: {matchLabels: {pod: a}}\n"
        "    ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]}]\n"
    )
    r = Reachability()
    r.expect_peer(("x", ""), ("x", "a"), False)
    r.expect_peer(("z", ""), ("x", "a"), False)
    check(lab, r)
    policy = lab.network_policies[0]
    assert len(peer_pods(lab, policy, policy.ingress[0].peers[0])) == 3


NOT_X = "{matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}"


def test_pod_and_namespace_selector_in_one_peer_is_and():  # …based on PodSelector and NamespaceSelector
    lab = lab_with(
        "  - name: allow-ns-y-podselector-and-nsselector\n    namespace: x\n    podSelector: {matchLabels: {pod: a}}\n"
        f"    ingress: [{{from: [{{namespaceSelector: {NOT_X}, podSelector: {{matchLabels: {{pod: b}}}}}}]}}]\n"
    )
    r = Reachability()
    r.expect_all_ingress("x/a", False)
    r.expect("y/b", "x/a", True)
    r.expect("z/b", "x/a", True)
    check(lab, r)


def test_pod_and_namespace_selector_as_two_peers_is_or():  # …based on PodSelector or NamespaceSelector
    lab = lab_with(
        "  - name: allow-ns-y-match-selector\n    namespace: x\n    podSelector: {matchLabels: {pod: a}}\n"
        f"    ingress: [{{from: [{{namespaceSelector: {NOT_X}}}, {{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]\n"
    )
    r = Reachability()
    r.expect("x/a", "x/a", False)
    r.expect("x/c", "x/a", False)
    check(lab, r)


def test_multiple_pod_and_namespace_selectors():  # …based on Multiple PodSelectors and NamespaceSelectors
    lab = lab_with(
        "  - name: allow-ns-y-z-pod-b-c\n    namespace: x\n    podSelector: {matchLabels: {pod: a}}\n"
        f"    ingress: [{{from: [{{namespaceSelector: {NOT_X}, podSelector: "
        "{matchExpressions: [{key: pod, operator: In, values: [b, c]}]}}]}]\n"
    )
    r = Reachability()
    r.expect_peer(("x", ""), ("x", "a"), False)
    r.expect("y/a", "x/a", False)
    r.expect("z/a", "x/a", False)
    check(lab, r)


def test_ip_block_with_except():  # should enforce except clause while egress access to server in CIDR block
    lab = build_model(load_text(MODEL, "e2e.yaml")).lab
    x_b = matrix_pods(lab, 80, "TCP")["x/b"]
    lab = lab_with(
        "  - name: allow-client-a-via-cidr-egress-rule\n    namespace: x\n    podSelector: {matchLabels: {pod: a}}\n"
        "    policyTypes: [Egress]\n"
        f"    egress: [{{to: [{{ipBlock: {{cidr: 10.0.0.0/8, except: ['{x_b.ip}/32']}}}}]}}]\n"
    )
    r = Reachability()
    r.expect("x/a", "x/b", False)
    check(lab, r)


def test_ip_block_of_one_pod():  # should allow egress access to server in CIDR block
    y_b = matrix_pods(build_model(load_text(MODEL, "e2e.yaml")).lab, 80, "TCP")["y/b"]
    lab = lab_with(
        "  - name: allow-client-a-via-cidr-egress-rule\n    namespace: x\n    podSelector: {matchLabels: {pod: a}}\n"
        "    policyTypes: [Egress]\n"
        f"    egress: [{{to: [{{ipBlock: {{cidr: '{y_b.ip}/32'}}}}]}}]\n"
    )
    r = Reachability()
    r.expect_all_egress("x/a", False)
    r.expect("x/a", "y/b", True)
    check(lab, r)


def test_named_port():  # should allow ingress access on one named port
    lab = lab_with("  - {name: allow-all, namespace: x, ingress: [{ports: [{port: serve-81-tcp}]}]}\n")
    check(lab, Reachability(), 81)
    r = Reachability()
    r.expect_peer(("", ""), ("x", ""), False)
    check(lab, r, 80)
    check(lab, r, 81, "UDP")  # the name is serve-81-tcp: UDP 81 is not it


def test_named_port_resolves_per_target_pod():
    """serve-web is 80 on x/a and 81 on x/b: one rule, a different number for each target."""
    text = MODEL.replace(
        "name: a, namespace: x, labels: {pod: a}, ports: [", "name: a, namespace: x, labels: {pod: a}, ports: ["
    )
    text = text.replace("{port: 80, protocol: TCP, name: serve-80-tcp}", "{port: 80, protocol: TCP, name: web}", 1)
    text = text.replace("{port: 81, protocol: TCP, name: serve-81-tcp}", "{port: 81, protocol: TCP}", 1)
    b_line = "name: b, namespace: x"
    lines = text.splitlines(keepends=True)
    lines = [
        line.replace("{port: 81, protocol: TCP, name: serve-81-tcp}", "{port: 81, protocol: TCP, name: web}").replace(
            "{port: 80, protocol: TCP, name: serve-80-tcp}", "{port: 80, protocol: TCP}"
        )
        if b_line in line
        else line
        for line in lines
    ]
    policy = "networkPolicies:\n  - {name: web, namespace: x, podSelector: {}, ingress: [{ports: [{port: web}]}]}\n"
    lab = build_model(load_text("".join(lines) + policy, "e2e.yaml")).lab
    for port, open_to in ((80, "x/a"), (81, "x/b")):
        r = Reachability()
        r.expect_peer(("", ""), ("x", ""), False)
        r.expect_all_ingress(open_to, True)
        check(lab, r, port)


def test_end_port():  # "should enforce policy based on Ports", with a range: 81..90 from namespace y
    lab = lab_with(
        "  - name: allow-range\n    namespace: x\n    podSelector: {matchLabels: {pod: a}}\n"
        "    ingress:\n      - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]\n"
        "        ports: [{port: 81, endPort: 90}]\n"
    )
    r = Reachability()
    r.expect_peer(("x", ""), ("x", "a"), False)
    r.expect_peer(("z", ""), ("x", "a"), False)
    check(lab, r, 81)
    r80 = Reachability()
    r80.expect_all_ingress("x/a", False)
    check(lab, r80, 80)


def test_stacked_policies_are_a_union():  # should enforce multiple, stacked policies with overlapping podSelectors
    allow = (
        "  - name: allow-{n}\n    namespace: x\n    podSelector: {{matchLabels: {{pod: a}}}}\n"
        "    ingress:\n      - from: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: y}}}}}}]\n"
        "        ports: [{{port: {n}}}]\n"
    )
    only81 = lab_with(allow.format(n=81))
    allow_y = Reachability()
    allow_y.expect_peer(("x", ""), ("x", "a"), False)
    allow_y.expect_peer(("z", ""), ("x", "a"), False)
    check(only81, allow_y, 81)
    deny = Reachability()
    deny.expect_all_ingress("x/a", False)
    check(only81, deny, 80)
    check(lab_with(allow.format(n=81) + allow.format(n=80)), allow_y, 80)


def test_egress_is_denied_on_the_client_even_if_the_server_allows():  # should support denying of egress…
    lab = lab_with(
        "  - name: allow-to-ns-y-pod-a\n    namespace: x\n    podSelector: {matchLabels: {pod: a}}\n"
        "    policyTypes: [Egress]\n"
        "    egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}},"
        " podSelector: {matchLabels: {pod: a}}}]}]\n"
        "  - name: allow-from-xa-on-ya\n    namespace: y\n    podSelector: {matchLabels: {pod: a}}\n"
        "    ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}},"
        " podSelector: {matchLabels: {pod: a}}}]}]\n"
        "  - name: allow-from-xa-on-yb\n    namespace: y\n    podSelector: {matchLabels: {pod: b}}\n"
        "    ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}},"
        " podSelector: {matchLabels: {pod: a}}}]}]\n"
    )
    r = Reachability()
    r.expect_peer(("x", "a"), ("", ""), False)
    r.expect_peer(("", ""), ("y", "a"), False)
    r.expect_peer(("x", "a"), ("y", "a"), True)
    r.expect_peer(("", ""), ("y", "b"), False)
    check(lab, r)


def test_ingress_and_egress_together():  # should work with Ingress, Egress specified together
    lab = lab_with(
        "  - name: allow-client-a-via-pod-selector\n    namespace: x\n    podSelector: {matchLabels: {pod: a}}\n"
        "    policyTypes: [Egress, Ingress]\n"
        "    ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]\n"
        "    egress: [{ports: [{port: 80}, {protocol: UDP, port: 53}]}]\n"
    )
    r80 = Reachability()
    r80.expect_all_ingress("x/a", False)
    r80.expect("x/b", "x/a", True)
    check(lab, r80, 80)
    r81 = Reachability()
    r81.expect_all_ingress("x/a", False)
    r81.expect_all_egress("x/a", False)
    r81.expect("x/b", "x/a", True)
    check(lab, r81, 81)


def test_a_udp_only_rule_does_not_allow_tcp():  # should not allow access by TCP when a policy specifies only UDP
    lab = lab_with(
        "  - {name: allow-only-udp-ingress-on-port-81, namespace: x, podSelector: {matchLabels: {pod: a}},"
        " ingress: [{ports: [{protocol: UDP, port: 81}]}]}\n"
    )
    r = Reachability()
    r.expect_all_ingress("x/a", False)
    check(lab, r, 81)
    check(lab, Reachability(), 81, "UDP")


def test_an_sctp_rule_is_not_a_tcp_rule():  # should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'
    lab = lab_with(
        "  - {name: deny-ingress, namespace: x, podSelector: {}}\n"
        "  - {name: allow-only-sctp-ingress-on-port-81, namespace: x, podSelector: {matchLabels: {pod: a}},"
        " ingress: [{ports: [{protocol: SCTP, port: 81}]}]}\n"
    )
    r = Reachability()
    r.expect_peer(("", ""), ("x", ""), False)
    check(lab, r, 81)
    assert allowed(lab, matrix_pods(lab, 81, "TCP")["y/a"], matrix_pods(lab, 81, "TCP")["x/a"], 81, "SCTP")


def dns_pod(lab: Lab) -> Pod:
    return next(p for p in lab.pods if p.namespace == "kube-system")


def test_egress_to_dns_is_allowed_by_its_own_rule():
    """The e2e egress cases add UDP 53 so names still resolve: deny all egress of x/a but DNS."""
    lab = lab_with(
        "  - name: allow-dns-only\n    namespace: x\n    podSelector: {matchLabels: {pod: a}}\n"
        "    policyTypes: [Egress]\n"
        "    egress:\n      - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}},"
        " podSelector: {matchLabels: {k8s-app: kube-dns}}}]\n"
        "        ports: [{protocol: UDP, port: 53}]\n"
    )
    x_a, dns = matrix_pods(lab, 80, "TCP")["x/a"], dns_pod(lab)
    assert allowed(lab, x_a, dns, 53, "UDP")
    assert not allowed(lab, x_a, dns, 53, "TCP")
    assert not allowed(lab, matrix_pods(lab, 80, "TCP")["x/a"], IPv4Address("8.8.8.8"), 53, "UDP")
    r = Reachability()
    r.expect_all_egress("x/a", False)
    check(lab, r)


def test_traffic_from_the_pods_own_node_is_always_allowed():
    lab = lab_with("  - {name: deny-all, namespace: x, podSelector: {}, policyTypes: [Ingress, Egress]}\n")
    x_a = matrix_pods(lab, 80, "TCP")["x/a"]
    own, other = lab.node(x_a.node), next(n for n in lab.nodes if n.name != x_a.node)
    assert allowed(lab, own.ip, x_a, 80, "TCP")
    assert allowed(lab, own.pod_gateway, x_a, 80, "TCP"), "the bridge's address is the node's"
    assert not allowed(lab, other.ip, x_a, 80, "TCP")
    assert not allowed(lab, x_a, own.ip, 80, "TCP"), "egress to the node is policy like any other"
    assert allowed(lab, other.ip, matrix_pods(lab, 80, "TCP")["y/a"], 80, "TCP")


def test_an_ip_block_allows_external_addresses():
    lab = lab_with(
        "  - name: from-outside\n    namespace: x\n"
        "    ingress: [{from: [{ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}}]}]\n"
    )
    x_a = matrix_pods(lab, 80, "TCP")["x/a"]
    assert allowed(lab, IPv4Address("192.168.2.7"), x_a, 80, "TCP")
    assert not allowed(lab, IPv4Address("192.168.1.7"), x_a, 80, "TCP")
    assert not allowed(lab, matrix_pods(lab, 80, "TCP")["y/a"], x_a, 80, "TCP")


E2E_PRINT = (
    "-\tx/a\tx/b\tx/c\ty/a\ty/b\ty/c\tz/a\tz/b\tz/c\n"
    "x/a\t.\t.\t.\t.\t.\t.\t.\t.\t.\n"
    "x/b\tX\t.\t.\t.\t.\t.\t.\t.\t.\n"
    "x/c\tX\t.\t.\t.\t.\t.\t.\t.\t.\n"
    "y/a\t.\t.\t.\t.\t.\t.\t.\t.\t.\n"
    "y/b\t.\t.\t.\t.\t.\t.\t.\t.\t.\n"
    "y/c\t.\t.\t.\t.\t.\t.\t.\t.\t.\n"
    "z/a\tX\t.\t.\t.\t.\t.\t.\t.\t.\n"
    "z/b\tX\t.\t.\t.\t.\t.\t.\t.\t.\n"
    "z/c\tX\t.\t.\t.\t.\t.\t.\t.\t."
)


def test_the_matrix_prints_as_the_e2e_suite_prints_a_truth_table():
    lab = lab_with(
        "  - name: allow-client-a-via-ns-selector\n    namespace: x\n    podSelector: {matchLabels: {pod: a}}\n"
        "    ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]}]\n"
    )
    table = expected_matrix(lab, 80, "TCP")
    assert table.pretty() == E2E_PRINT
    assert parse(E2E_PRINT) == table
    assert parse(E2E_PRINT.expandtabs(6)) == table, "spaces work as well as tabs"
    grouped = expected_matrix(lab, 80, "TCP", "namespaces")
    assert grouped.pretty() == "-\tx\ty\tz\nx\t~\t.\t.\ny\t.\t.\t.\nz\t~\t.\t."


def test_comparison_marks_the_cells_that_differ():
    expected = parse(E2E_PRINT)
    measured = parse(E2E_PRINT.replace("z/c\tX", "z/c\t."))
    assert measured.differences(expected) == [("z/c", "x/a", ".", "X")]
    assert measured.compare(expected).mark("z/c", "x/a") == "X"
    assert measured.compare(expected).mark("x/b", "x/a") == "."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x/a\t.\n", "line 1: a truth table starts with `-`"),
        ("-\tx/a\tx/b\nx/a\t.\n", "line 2: 1 cells for 2 columns"),
        ("-\tx/a\nx/a\tO\n", "line 2: 'O' is not a mark"),
    ],
)
def test_a_table_that_is_not_one_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse(text)


def test_matrix_names_are_namespace_and_workload_for_single_pods():
    text = MODEL.replace(
        "name: c, namespace: z, labels: {pod: c}", "name: c, namespace: z, replicas: 2, labels: {pod: c}"
    )
    lab = build_model(load_text(text, "e2e.yaml")).lab
    names = list(matrix_pods(lab, 80, "TCP"))
    assert names[:8] == PODS[:8]
    assert [n.startswith("z/c-") for n in names[8:]] == [True, True]
    assert "kube-system" not in " ".join(names), "the DNS pod serves no port 80"

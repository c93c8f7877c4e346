"""NetworkPolicies and namespaces in a lab file: the model they make, manifests read from files,
and the located errors for what the API server would reject."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from labbuilder.errors import SpecError
from labbuilder.spec.load import load, load_text, spec_text
from labbuilder.spec.model import (
    NAMESPACE_NAME_LABEL,
    IPBlock,
    LabelSelector,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    SelectorRequirement,
)
from labbuilder.spec.resolve import build_model

BASE = """name: t
nodes: [{name: w}]
workloads:
  - {name: a, namespace: x, labels: {pod: a}, ports: [{port: 80, name: serve-80}, {port: 81, name: serve-81}]}
  - {name: b, namespace: y, labels: {pod: b}, ports: [{port: 80}]}
"""


def resolve(text: str, base: Path | None = None):
    return build_model(load_text(text, "lab.yaml", base=base))


def problems_of(text: str, base: Path | None = None, warnings: bool = False) -> list[str]:
    try:
        resolved = resolve(text, base)
    except SpecError as err:
        return [str(p) for p in err.problems if warnings or not p.warning]
    return [str(p) for p in resolved.warnings] if warnings else []


def test_an_inline_policy_becomes_the_model_with_the_api_servers_defaults():
    lab = resolve(
        BASE
        + """namespaces: [{name: x, labels: {team: red}}]
networkPolicies:
  - name: allow
    namespace: x
    podSelector: {matchLabels: {pod: a}}
    ingress:
      - from:
          - namespaceSelector: {matchLabels: {team: red}}
            podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}
          - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
        ports: [{port: serve-80}, {protocol: UDP, port: 53}, {port: 8000, endPort: 8080}]
  - name: out
    egress: [{}]
"""
    ).lab
    allow, out = lab.network_policies
    assert (allow.ref, allow.policy_types) == ("x/allow", ("Ingress",))
    assert allow.pod_selector == LabelSelector((("pod", "a"),))
    assert allow.ingress == (
        PolicyRule(
            (
                PolicyPeer(
                    LabelSelector((), (SelectorRequirement("pod", "In", ("b", "c")),)),
                    LabelSelector((("team", "red"),)),
                ),
                PolicyPeer(ip_block=IPBlock(IPv4Network("10.0.0.0/8"), (IPv4Network("10.1.0.0/16"),))),
            ),
            (PolicyPort("TCP", "serve-80"), PolicyPort("UDP", 53), PolicyPort("TCP", 8000, 8080)),
        ),
    )
    # Egress rules given and no policyTypes: Ingress and Egress, in the default namespace.
    assert (out.ref, out.policy_types, out.egress) == ("default/out", ("Ingress", "Egress"), (PolicyRule(),))
    assert lab.pods[0].ports[0].name == "serve-80"


def test_namespaces_exist_implicitly_and_carry_their_name_label():
    lab = resolve(BASE + "namespaces: [{name: x, labels: {team: red}}, {name: lonely}]\n").lab
    names = [n.name for n in lab.namespaces]
    assert names == ["default", "kube-system", "lonely", "x", "y"]
    assert lab.namespace("x").label_map == {"team": "red", NAMESPACE_NAME_LABEL: "x"}
    assert lab.namespace("y").label_map == {NAMESPACE_NAME_LABEL: "y"}


def test_policy_types_given_are_kept_even_without_rules():
    lab = resolve(BASE + "networkPolicies: [{name: deny, namespace: x, policyTypes: [Egress]}]\n").lab
    assert lab.network_policies[0].policy_types == ("Egress",)
    assert lab.network_policies[0].pod_selector.empty


def test_label_selectors_match_as_kubernetes_does():
    labels = {"pod": "a", "tier": "web"}
    assert LabelSelector().matches(labels) and LabelSelector().matches({})
    assert LabelSelector((("pod", "a"),)).matches(labels)
    assert not LabelSelector((("pod", "a"), ("tier", "db"))).matches(labels)

    def one(op: str, *values: str) -> LabelSelector:
        return LabelSelector((), (SelectorRequirement("tier", op, values),))  # type: ignore[arg-type]

    assert one("In", "web", "db").matches(labels) and not one("In", "db").matches(labels)
    assert one("NotIn", "db").matches(labels) and not one("NotIn", "web").matches(labels)
    assert one("NotIn", "db").matches({}), "a missing key is in no set"
    assert one("Exists").matches(labels) and not one("Exists").matches({})
    assert one("DoesNotExist").matches({}) and not one("DoesNotExist").matches(labels)
    assert str(LabelSelector((("pod", "a"),), (SelectorRequirement("tier", "NotIn", ("x", "y")),))) == (
        "pod=a,tier notin (x,y)"
    )
    assert str(LabelSelector()) == "<none>"


DENY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
  namespace: x
  labels: {course: netpol}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-y
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]
---
"""


def test_a_manifest_file_stands_for_its_policies_in_place(tmp_path):
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "deny.yaml").write_text(DENY)
    text = BASE + "networkPolicies:\n  - {name: first, namespace: y}\n  - file: policies/deny.yaml\n  - {name: last}\n"
    (tmp_path / "lab.yaml").write_text(text)
    spec = load(str(tmp_path / "lab.yaml"))
    lab = build_model(spec).lab
    assert [p.ref for p in lab.network_policies] == ["y/first", "x/default-deny", "default/allow-y", "default/last"]
    assert lab.network_policies[2].ingress[0].peers[0].namespace_selector == LabelSelector(
        ((NAMESPACE_NAME_LABEL, "y"),)
    )
    # The copy a lab keeps in its router holds the policies themselves: it needs no other file.
    again = build_model(load_text(spec_text(spec), "copy.yaml", base=Path("/nonexistent"))).lab
    assert again.network_policies == lab.network_policies


def test_problems_in_a_manifest_are_located_in_the_manifest(tmp_path):
    (tmp_path / "bad.yaml").write_text(DENY.replace("{pod: a}", "{pod: 'a b'}"))  # the schema's
    (tmp_path / "worse.yaml").write_text(  # the resolver's
        DENY.replace("podSelector: {}", "podSelector: {}\n  ingress:\n    - ports: [{port: 90, endPort: 80}]")
    )
    lab = BASE + "networkPolicies:\n  - {name: inline, podSelector: {matchLabels: {pod: a}}}\n  - file: %s\n"
    bad, worse = str(tmp_path / "bad.yaml"), str(tmp_path / "worse.yaml")
    assert problems_of(lab % "bad.yaml", tmp_path) == [
        f"{bad}:17:19: spec.podSelector.matchLabels.pod: 'a b' does not match"
        " '^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$'"
    ]
    assert problems_of(lab % "worse.yaml", tmp_path) == [
        f"{worse}:10:26: endPort 80 must be greater than or equal to `port` 90"
    ]


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("kind: Deployment\napiVersion: apps/v1\nmetadata: {name: d}\n", "m.yaml:1:1: kind 'Deployment' is not Net"),
        ("kind: NetworkPolicy\napiVersion: extensions/v1beta1\n", "m.yaml:2:1: NetworkPolicy has apiVersion"),
        ("kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {}\n", "m.yaml:1:1: metadata.name is"),
        (
            "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: n}\nspec: {podSelecter: {}}\n",
            "m.yaml:4:8: spec: unknown field 'podSelecter'",
        ),
        (
            "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: n}\n"
            "spec:\n  policyTypes: [Ingres]\n",
            "m.yaml:5:17: spec.policyTypes.0: 'Ingres' is not one of",
        ),
        ("a: [b\n", "m.yaml:2:1: YAML syntax"),
        ("", "holds no NetworkPolicy (a manifest of kind: NetworkPolicy)"),
    ],
)
def test_manifest_problems(tmp_path, manifest, expected):
    (tmp_path / "m.yaml").write_text(manifest)
    found = problems_of(BASE + "networkPolicies:\n  - file: m.yaml\n", tmp_path)
    assert any(expected in p for p in found), found


def test_a_missing_manifest_or_file_beside_a_policy_is_located_at_the_lab_file(tmp_path):
    assert problems_of(BASE + "networkPolicies:\n  - file: nope.yaml\n", tmp_path) == [
        f"lab.yaml:7:5: networkPolicies.0: {tmp_path / 'nope.yaml'}: no such file"
        " (the path is relative to the lab file)"
    ]
    (tmp_path / "m.yaml").write_text(DENY)
    found = problems_of(BASE + "networkPolicies:\n  - {file: m.yaml, name: x}\n", tmp_path)
    assert found == [
        "lab.yaml:7:6: networkPolicies.0: `file:` stands alone, not with name"
        " (a policy is written here or read from a manifest, not both)"
    ]
    assert "not a regular file" in problems_of(BASE + "networkPolicies:\n  - file: .\n", tmp_path)[0]


POLICY = BASE + "networkPolicies:\n  - name: p\n    namespace: x\n"


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        (
            "    ingress: [{ports: [{endPort: 90}]}]\n",
            "lab.yaml:9:25: endPort may not be specified when `port` is not specified",
        ),
        (
            "    ingress: [{ports: [{port: serve-80, endPort: 90}]}]\n",
            "lab.yaml:9:41: endPort may not be specified when `port` is non-numeric",
        ),
        (
            "    egress: [{ports: [{port: 90, endPort: 80}]}]\n",
            "lab.yaml:9:34: endPort 80 must be greater than or equal to `port` 90",
        ),
        (
            "    ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]\n",
            "lab.yaml:9:62: except 10.1.0.0/24: must be a strict subset of `cidr` 10.0.0.0/16",
        ),
        (
            "    ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/16]}}]}]\n",
            "must be a strict subset of `cidr`",
        ),
        (
            "    ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16}, podSelector: {}}]}]\n",
            "lab.yaml:9:23: may not specify both ipBlock and another peer",
        ),
        ("    ingress: [{from: [{}]}]\n", "lab.yaml:9:23: must specify a peer"),
        (
            "    podSelector: {matchExpressions: [{key: pod, operator: In}]}\n",
            "lab.yaml:9:38: values must be specified when `operator` is 'In'",
        ),
        (
            "    podSelector: {matchExpressions: [{key: pod, operator: Exists, values: [a]}]}\n",
            "lab.yaml:9:67: values may not be specified when `operator` is 'Exists'",
        ),
        (
            "    podSelector: {matchExpressions: [{key: pod, operator: Is, values: [a]}]}\n",
            "lab.yaml:9:49: networkPolicies.0.podSelector.matchExpressions.0.operator: 'Is' is not one of",
        ),
        (
            "    podSelector: {matchExpressions: [{key: pod, operator: In, values: ['a b']}]}\n",
            "lab.yaml:9:72: networkPolicies.0.podSelector.matchExpressions.0.values.0: 'a b' does not match",
        ),
        ("    podSelector: {matchLabels: {pod: -a}}\n", "'-a' does not match"),
        ("    policyTypes: [Ingress, Egress, Ingress]\n", "is too long"),
        (
            "    ingress: [{ports: [{port: 0}]}]\n",
            "lab.yaml:9:25: networkPolicies.0.ingress.0.ports.0.port: matches none",
        ),
        (
            "    ingress: [{ports: [{port: Serve_80}]}]\n",
            "matches none of the accepted forms (a port number, or the name",
        ),
        ("    ingress: [{ports: [{protocol: ICMP}]}]\n", "'ICMP' is not one of ['TCP', 'UDP', 'SCTP']"),
        ("  - {name: p, namespace: x}\n", "lab.yaml:9:6: NetworkPolicy x/p is defined twice"),
    ],
)
def test_what_the_api_server_rejects_is_a_located_error(rest, expected):
    found = problems_of(POLICY + rest)
    assert any(expected in p for p in found), found


def test_a_host_bit_cidr_and_an_unknown_port_name_are_warnings():
    found = problems_of(
        POLICY + "    ingress: [{from: [{ipBlock: {cidr: 10.0.0.1/8}}], ports: [{port: serve-8o}]}]\n", warnings=True
    )
    assert any("10.0.0.1/8 has host bits set: it means 10.0.0.0/8" in p for p in found), found
    assert any("no pod has a TCP port named 'serve-8o'" in p for p in found), found


def test_pod_port_names_are_unique_and_iana_names():
    found = problems_of(BASE.replace("name: serve-81", "name: serve-80"))
    assert any("lab.yaml:4:94: port name 'serve-80' is used twice" in p for p in found), found
    assert problems_of(BASE.replace("name: serve-81", "name: a-very-long-port-name"))

"""NetworkPolicies and namespaces from a lab file: defaulted and checked as the API server does.

The schema has checked shapes and patterns already; what is left is what the API server's
validation (pkg/apis/networking/validation) says across fields — a peer names something, an
ipBlock stands alone, `except` is a strict subset of `cidr`, `endPort` needs a numeric `port` not
above it, In/NotIn have values and Exists/DoesNotExist none — and its defaulting: policyTypes
Ingress, plus Egress when egress rules are given; protocol TCP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from ipaddress import IPv4Network, ip_network
from typing import Any, cast

from labbuilder.spec import defaults
from labbuilder.spec.load import Path_
from labbuilder.spec.model import (
    NAMESPACE_NAME_LABEL,
    IPBlock,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    Pod,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    PolicyType,
    SelectorRequirement,
)

Report = Callable[[Path_, str, str], None]  # (path, message, hint)
POLICIES = "networkPolicies"


class PolicyReader:
    """Turns the file's `networkPolicies:` and `namespaces:` into the model, reporting what is wrong."""

    def __init__(self, error: Report, warn: Report):
        self.error = error
        self.warn = warn

    # -- namespaces ----------------------------------------------------------------------------
    def namespaces(self, given: list[dict[str, Any]], used: Iterable[str]) -> tuple[Namespace, ...]:
        """Declared namespaces with their labels, and every namespace in use, each labelled with its
        name (kubernetes.io/metadata.name), as the apiserver labels every namespace."""
        labels: dict[str, dict[str, str]] = {}
        for i, item in enumerate(given):
            name = item["name"]
            if name in labels:
                self.error(("namespaces", i, "name"), f"namespace {name} is declared twice", "declare it once")
                continue
            own = dict(item.get("labels", {}))
            if own.get(NAMESPACE_NAME_LABEL, name) != name:
                self.warn(
                    ("namespaces", i, "labels", NAMESPACE_NAME_LABEL),
                    f"label {NAMESPACE_NAME_LABEL} of namespace {name} is always {name!r}",
                    "the apiserver sets it to the namespace's name; leave it out",
                )
            labels[name] = {**own, NAMESPACE_NAME_LABEL: name}
        for name in used:
            labels.setdefault(name, {NAMESPACE_NAME_LABEL: name})
        return tuple(Namespace(name, tuple(sorted(labels[name].items()))) for name in sorted(labels))

    # -- policies --------------------------------------------------------------------------------
    def policies(self, given: list[dict[str, Any]], pods: Iterable[Pod] = ()) -> tuple[NetworkPolicy, ...]:
        """The policies in file order; a named port no pod has is a warning (legal, but almost
        surely a typo: it selects nothing)."""
        names: set[tuple[str, str]] = {(p.name, p.protocol) for pod in pods for p in pod.ports if p.name}
        result: list[NetworkPolicy] = []
        seen: set[tuple[str, str]] = set()
        for i, item in enumerate(given):
            path: Path_ = (POLICIES, i)
            namespace = defaults.of(f"{POLICIES}.*", item)["namespace"]
            if (namespace, item["name"]) in seen:
                self.error(
                    (*path, "name"),
                    f"NetworkPolicy {namespace}/{item['name']} is defined twice",
                    "names are unique in a namespace",
                )
                continue
            seen.add((namespace, item["name"]))
            result.append(self.policy(path, item, namespace))
            self.check_named_ports(path, result[-1], names)
        return tuple(result)

    def check_named_ports(self, path: Path_, policy: NetworkPolicy, names: set[tuple[str, str]]) -> None:
        for direction, rules in (("ingress", policy.ingress), ("egress", policy.egress)):
            for j, rule in enumerate(rules):
                for k, port in enumerate(rule.ports):
                    if isinstance(port.port, str) and (port.port, port.protocol) not in names:
                        self.warn(
                            (*path, direction, j, "ports", k, "port"),
                            f"no pod has a {port.protocol} port named {port.port!r}: this port selects nothing",
                            "name a workload port: ports: [{port: 80, name: " + port.port + "}]",
                        )

    def policy(self, path: Path_, item: dict[str, Any], namespace: str) -> NetworkPolicy:
        ingress = tuple(
            self.rule((*path, "ingress", j), rule, "from") for j, rule in enumerate(item.get("ingress", []))
        )
        egress = tuple(self.rule((*path, "egress", j), rule, "to") for j, rule in enumerate(item.get("egress", [])))
        return NetworkPolicy(
            item["name"],
            namespace,
            self.selector((*path, "podSelector"), item.get("podSelector", {})),
            policy_types(item.get("policyTypes", []), bool(egress)),
            ingress,
            egress,
        )

    def rule(self, path: Path_, rule: dict[str, Any], peers_key: str) -> PolicyRule:
        peers = tuple(self.peer((*path, peers_key, k), peer) for k, peer in enumerate(rule.get(peers_key, [])))
        ports = tuple(
            self.port((*path, "ports", k), defaults.of(f"{POLICIES}.*.{path[-2]}.*.ports.*", port))
            for k, port in enumerate(rule.get("ports", []))
        )
        return PolicyRule(tuple(p for p in peers if p is not None), ports)

    def peer(self, path: Path_, peer: dict[str, Any]) -> PolicyPeer | None:
        if not peer:
            self.error(path, "must specify a peer", "podSelector, namespaceSelector (or both), or ipBlock")
            return None
        if "ipBlock" in peer and len(peer) > 1:
            self.error(
                path,
                "may not specify both ipBlock and another peer",
                "make the ipBlock a peer of its own: a separate `- ipBlock:` item",
            )
            return None
        if "ipBlock" in peer:
            block = self.ip_block((*path, "ipBlock"), peer["ipBlock"])
            return PolicyPeer(ip_block=block) if block is not None else None
        pods = self.selector((*path, "podSelector"), peer["podSelector"]) if "podSelector" in peer else None
        namespaces = (
            self.selector((*path, "namespaceSelector"), peer["namespaceSelector"])
            if "namespaceSelector" in peer
            else None
        )
        return PolicyPeer(pods, namespaces)

    def ip_block(self, path: Path_, block: dict[str, Any]) -> IPBlock | None:
        cidr = self.cidr((*path, "cidr"), block["cidr"])
        if cidr is None:
            return None
        excepts = []
        for k, text in enumerate(block.get("except", [])):
            where = (*path, "except", k)
            inner = self.cidr(where, text)
            if inner is None:
                continue
            if not (inner.subnet_of(cidr) and inner.prefixlen > cidr.prefixlen):
                self.error(where, f"except {text}: must be a strict subset of `cidr` {cidr}", f"a range inside {cidr}")
                continue
            excepts.append(inner)
        return IPBlock(cidr, tuple(excepts))

    def cidr(self, path: Path_, text: str) -> IPv4Network | None:
        try:
            network = ip_network(text, strict=False)
        except ValueError:
            self.error(path, f"{text} is not a valid IPv4 CIDR", "such as 10.200.0.0/16")
            return None
        assert isinstance(network, IPv4Network)  # the schema's pattern is IPv4
        if str(network) != text:
            self.warn(path, f"{text} has host bits set: it means {network}", f"write {network}")
        return network

    def port(self, path: Path_, port: dict[str, Any]) -> PolicyPort:
        number = port.get("port")
        end = port.get("endPort")
        if end is not None:
            if number is None:
                self.error((*path, "endPort"), "endPort may not be specified when `port` is not specified", "add port:")
                end = None
            elif isinstance(number, str):
                self.error(
                    (*path, "endPort"),
                    "endPort may not be specified when `port` is non-numeric",
                    f"a range needs a port number; {number!r} is a port name",
                )
                end = None
            elif end < number:
                self.error((*path, "endPort"), f"endPort {end} must be greater than or equal to `port` {number}", "")
                end = None
        return PolicyPort(port["protocol"], number, end)

    def selector(self, path: Path_, given: dict[str, Any]) -> LabelSelector:
        requirements = []
        for k, expression in enumerate(given.get("matchExpressions", [])):
            where = (*path, "matchExpressions", k)
            operator, values = expression["operator"], tuple(expression.get("values", []))
            if operator in ("In", "NotIn") and not values:
                self.error(
                    (*where, "values"), f"values must be specified when `operator` is {operator!r}", "values: [a, b]"
                )
            elif operator in ("Exists", "DoesNotExist") and values:
                self.error(
                    (*where, "values"),
                    f"values may not be specified when `operator` is {operator!r}",
                    "leave values out",
                )
            requirements.append(SelectorRequirement(expression["key"], operator, values))
        return LabelSelector(tuple(sorted(given.get("matchLabels", {}).items())), tuple(requirements))


def policy_types(given: list[str], has_egress: bool) -> tuple[PolicyType, ...]:
    """As the API server defaults them: Ingress always, and Egress when egress rules are given."""
    if given:
        listed: list[PolicyType] = []
        for name in given:
            if name in ("Ingress", "Egress") and name not in listed:
                listed.append(cast(PolicyType, name))  # the schema's enum
        return tuple(listed)
    return ("Ingress", "Egress") if has_egress else ("Ingress",)

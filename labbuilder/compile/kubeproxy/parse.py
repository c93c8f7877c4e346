"""kube-proxy's rules read back: the service ports a node's `iptables-save` programs.

The reverse of `rules`, following the chains it writes: nat KUBE-SERVICES → KUBE-SVC → KUBE-SEP's
DNAT; KUBE-NODEPORTS → KUBE-EXT → KUBE-SVC (2018: straight to KUBE-SVC) for node ports; filter
KUBE-SERVICES' REJECT for a port with no endpoints. Chain names and comments come from `names`,
which `rules` writes with; a round-trip test (every shipped lab, both styles) holds the two together.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

from labbuilder.compile.kubeproxy.names import (
    CLUSTER_IP,
    EXT,
    NO_ENDPOINTS,
    NODEPORTS,
    SEP,
    SERVICES,
    SVC,
    SpnComment,
    split_service_port_name,
)
from labbuilder.compile.netfilter import Table

Chains = Mapping[str, list[str]]


@dataclass(frozen=True)
class ServicePortRules:
    """One service port as kube-proxy programmed it on a node."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # TCP, UDP
    cluster_ip: IPv4Address
    port: int
    node_port: int | None
    endpoints: tuple[str, ...]  # "ip:port", in the SVC chain's order
    chain: str  # KUBE-SVC-..., or "" for a port with no endpoints (a REJECT rule in filter)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def rule_options(rule: str) -> dict[str, str]:
    """The options of an iptables-save rule that matter here; negated ones are keyed `!opt`."""
    tokens = shlex.split(rule)
    out: dict[str, str] = {}
    negate = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "!":
            negate = True
        elif token.startswith("-"):
            value = tokens[i + 1] if i + 1 < len(tokens) and not tokens[i + 1].startswith("-") else ""
            if value:
                i += 1
            key = ("!" if negate else "") + token
            if key not in out:  # first occurrence wins (-m repeats; the options read here don't)
                out[key] = value
            negate = False
        i += 1
    return out


def _jumps(chains: Chains, chain: str, prefix: str) -> list[str]:
    """The chains `chain` jumps to whose names start with `prefix`, each once, in rule order
    (with session affinity every SEP is jumped to twice: recent check, then statistic)."""
    out: list[str] = []
    for rule in chains.get(chain, []):
        target = rule_options(rule).get("-j", "")
        if target.startswith(prefix) and target not in out:
            out.append(target)
    return out


def _node_ports(nat: Chains) -> dict[str, int]:
    """KUBE-SVC chain → its node port, from KUBE-NODEPORTS (through KUBE-EXT, or direct in 2018)."""
    found: dict[str, int] = {}
    for rule in nat.get(NODEPORTS, []):
        options = rule_options(rule)
        target, dport = options.get("-j", ""), options.get("--dport", "")
        if not dport.isdigit():
            continue
        services = _jumps(nat, target, SVC) if target.startswith(EXT) else [target]
        found.update({svc: int(dport) for svc in services if svc.startswith(SVC)})
    return found


def _endpoints(nat: Chains, svc: str) -> tuple[str, ...]:
    """The DNAT targets of the SEP chains `svc` balances over, in its order."""
    found = []
    for sep in _jumps(nat, svc, SEP):
        for rule in nat.get(sep, []):
            options = rule_options(rule)
            if options.get("-j") == "DNAT" and options.get("--to-destination"):
                found.append(options["--to-destination"])
    return tuple(found)


def _service_port(
    options: Mapping[str, str], kind: SpnComment, chain: str, endpoints: tuple[str, ...], node_port: int | None
) -> ServicePortRules | None:
    """The service port a cluster-IP rule (`-d IP/32 -p PROTO ... --dport PORT`) names, if it is one."""
    spn = kind.read(options.get("--comment", ""))
    try:
        ip = IPv4Address(options.get("-d", "").removesuffix("/32"))
    except ValueError:
        return None
    port = options.get("--dport", "")
    if spn is None or not port.isdigit():
        return None
    namespace, name, port_name = split_service_port_name(spn)
    protocol = options.get("-p", "tcp").upper()
    return ServicePortRules(namespace, name, port_name, protocol, ip, int(port), node_port, endpoints, chain)


def parse_service_rules(tables: Mapping[str, Table]) -> list[ServicePortRules]:
    """Service ports from `iptables-save` tables (see netfilter.parse_save): those with endpoints
    in KUBE-SERVICES' order, then those without. Both kube-proxy styles (current and 2018)."""
    nat = tables.get("nat", Table("nat")).chains
    node_ports = _node_ports(nat)
    found: list[ServicePortRules | None] = []
    for rule in nat.get(SERVICES, []):
        options = rule_options(rule)
        svc = options.get("-j", "")
        if svc.startswith(SVC):  # 2018's SNAT mark before the jump carries the same comment: skipped
            found.append(_service_port(options, CLUSTER_IP, svc, _endpoints(nat, svc), node_ports.get(svc)))
    for rule in tables.get("filter", Table("filter")).chains.get(SERVICES, []):
        options = rule_options(rule)
        if options.get("-j") == "REJECT":  # no endpoints: no SVC chain, and no node-port rule either
            found.append(_service_port(options, NO_ENDPOINTS, "", (), None))
    return [port for port in found if port is not None]

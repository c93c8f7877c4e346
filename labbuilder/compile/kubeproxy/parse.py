"""kube-proxy's rules read back: the service ports a node's `iptables-save` programs.

The reverse of `rules`, following the chains it writes: nat KUBE-SERVICES → KUBE-SVC (or KUBE-SVL)
→ KUBE-SEP's DNAT; KUBE-NODEPORTS' jumps for node ports; KUBE-SERVICES' "external IP" and
"loadbalancer IP" jumps; filter KUBE-SERVICES' REJECT (no endpoints) or DROP (no local ones) and
KUBE-EXTERNAL-SERVICES for a port with nowhere to go. Chain names and comments come from `names`,
which `rules` writes with; a round-trip test (every shipped lab, both styles) holds the two together.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from labbuilder.compile.kubeproxy.names import (
    CLUSTER_IP,
    EXTERNAL_IP,
    EXTERNAL_SERVICES,
    LOAD_BALANCER_IP,
    NO_ENDPOINTS,
    NO_LOCAL_ENDPOINTS,
    NODEPORTS,
    SEP,
    SERVICES,
    SVC,
    SVL,
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
    endpoints: tuple[str, ...]  # "ip:port", in the SVC (or SVL) chain's order
    chain: str  # KUBE-SVC-... (KUBE-SVL-... under internalTrafficPolicy Local), "" when refused in filter
    external_ips: tuple[IPv4Address, ...] = ()  # KUBE-SERVICES' "external IP" jumps
    load_balancer_ips: tuple[IPv4Address, ...] = ()  # KUBE-SERVICES' "loadbalancer IP" jumps
    refused_ips: tuple[IPv4Address, ...] = ()  # external or LB IPs KUBE-EXTERNAL-SERVICES refuses

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


def _node_ports(nat: Chains, filt: Chains) -> dict[tuple[str, str], int]:
    """(service port name, protocol) → node port: from KUBE-NODEPORTS' jumps (their comment is the
    name, in both styles) and, for a port with nowhere to go, filter KUBE-EXTERNAL-SERVICES' rule."""
    found: dict[tuple[str, str], int] = {}
    for rule in nat.get(NODEPORTS, []):
        options = rule_options(rule)
        spn, dport = options.get("--comment", ""), options.get("--dport", "")
        if "/" in spn and dport.isdigit():
            found[(spn, options.get("-p", "tcp").upper())] = int(dport)
    for rule in filt.get(EXTERNAL_SERVICES, []):
        options = rule_options(rule)
        refused = _refused_spn(options.get("--comment", ""))
        if refused and options.get("--dst-type") == "LOCAL" and options.get("--dport", "").isdigit():
            found.setdefault((refused, options.get("-p", "tcp").upper()), int(options["--dport"]))
    return found


def _refused_spn(text: str) -> str | None:
    return NO_ENDPOINTS.read(text) or NO_LOCAL_ENDPOINTS.read(text)


PortKey = tuple[str, str, int]  # (service port name, protocol, port)


@dataclass
class _Addresses:
    external: list[IPv4Address] = field(default_factory=list)
    load_balancer: list[IPv4Address] = field(default_factory=list)
    refused: list[IPv4Address] = field(default_factory=list)


def _addresses(nat: Chains, filt: Chains) -> dict[PortKey, _Addresses]:
    """External and load-balancer IPs per service port: KUBE-SERVICES' jumps name each kind; the
    filter rules of a port with nowhere to go name an address without saying which kind."""
    found: dict[PortKey, _Addresses] = {}

    def key(options: Mapping[str, str], spn: str | None) -> tuple[PortKey, IPv4Address] | None:
        dport, dest = options.get("--dport", ""), options.get("-d", "").removesuffix("/32")
        if spn is None or not dport.isdigit() or not dest:
            return None
        try:
            return (spn, options.get("-p", "tcp").upper(), int(dport)), IPv4Address(dest)
        except ValueError:
            return None

    for rule in nat.get(SERVICES, []):
        options = rule_options(rule)
        for kind, field_ in ((EXTERNAL_IP, "external"), (LOAD_BALANCER_IP, "load_balancer")):
            if (hit := key(options, kind.read(options.get("--comment", "")))) is not None:
                getattr(found.setdefault(hit[0], _Addresses()), field_).append(hit[1])
    for rule in filt.get(EXTERNAL_SERVICES, []):
        options = rule_options(rule)
        if (hit := key(options, _refused_spn(options.get("--comment", "")))) is not None:
            found.setdefault(hit[0], _Addresses()).refused.append(hit[1])
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
    options: Mapping[str, str],
    spn: str | None,
    chain: str,
    endpoints: tuple[str, ...],
    node_ports: Mapping[tuple[str, str], int],
    addresses: Mapping[PortKey, _Addresses],
) -> ServicePortRules | None:
    """The service port a cluster-IP rule (`-d IP/32 -p PROTO ... --dport PORT`) names, if it is one."""
    try:
        ip = IPv4Address(options.get("-d", "").removesuffix("/32"))
    except ValueError:
        return None
    port = options.get("--dport", "")
    if spn is None or not port.isdigit():
        return None
    namespace, name, port_name = split_service_port_name(spn)
    protocol = options.get("-p", "tcp").upper()
    extra = addresses.get((spn, protocol, int(port)), _Addresses())
    return ServicePortRules(
        namespace,
        name,
        port_name,
        protocol,
        ip,
        int(port),
        node_ports.get((spn, protocol)),
        endpoints,
        chain,
        tuple(extra.external),
        tuple(extra.load_balancer),
        tuple(extra.refused),
    )


def parse_service_rules(tables: Mapping[str, Table]) -> list[ServicePortRules]:
    """Service ports from `iptables-save` tables (see netfilter.parse_save): those whose cluster IP
    leads somewhere in KUBE-SERVICES' order, then those refused (no endpoints: REJECT; none on this
    node under internalTrafficPolicy Local: DROP). Both kube-proxy styles (current and 2018)."""
    nat = tables.get("nat", Table("nat")).chains
    filt = tables.get("filter", Table("filter")).chains
    node_ports, addresses = _node_ports(nat, filt), _addresses(nat, filt)
    found: list[ServicePortRules | None] = []
    for rule in nat.get(SERVICES, []):
        options = rule_options(rule)
        target = options.get("-j", "")
        if target.startswith((SVC, SVL)):  # 2018's SNAT mark before the jump carries the same comment: skipped
            spn = CLUSTER_IP.read(options.get("--comment", ""))
            found.append(_service_port(options, spn, target, _endpoints(nat, target), node_ports, addresses))
    for rule in filt.get(SERVICES, []):
        options = rule_options(rule)
        if options.get("-j") in ("REJECT", "DROP"):
            spn = _refused_spn(options.get("--comment", ""))
            found.append(_service_port(options, spn, "", (), node_ports, addresses))
    return [port for port in found if port is not None]

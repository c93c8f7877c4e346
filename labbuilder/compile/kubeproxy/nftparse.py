"""kube-proxy's nftables table read back: the service ports a node's `nft list table ip kube-proxy`
programs. The reverse of `nftables`, following the maps and chains it writes: `service-ips`
(a ClusterIP's element) → the service chain's `numgen … vmap` → each endpoint chain's `dnat to`;
`service-nodeports` → the external chain of the same service port; `no-endpoint-services` (and
`no-endpoint-nodeports`) for a port without endpoints, by the service port name in their
comments. The chain names carry the service port (`service-HASH-ns/svc/proto/port`), read with
`names.split_nft_chain`, which the generator's names come from. External and load-balancer
addresses both lead to the external chain: the table does not say which is which.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address

from labbuilder.compile.kubeproxy.names import NFT_EXTERNAL, nft_port_base, split_nft_chain
from labbuilder.compile.kubeproxy.nftables import (
    CLUSTER_IPS,
    NO_ENDPOINT_NODEPORTS,
    NO_ENDPOINT_SERVICES,
    SERVICE_IPS,
    SERVICE_NODEPORTS,
)
from labbuilder.compile.kubeproxy.parse import ServicePortRules
from labbuilder.compile.nft import Listed

_GOTO = re.compile(r"goto ([^\s,}]+)")
_DNAT = re.compile(r"\bdnat to (\S+)")


def _elements(table: Listed, name: str) -> frozenset[str]:
    found = table.containers.get(name)
    return found[5] if found else frozenset()


def _split(element: str) -> tuple[list[str], str, str]:
    """`10.32.0.2 . tcp . 80 comment "x" : goto c` → (["10.32.0.2", "tcp", "80"], "x", "goto c")."""
    key, _, verdict = element.rpartition(" : ")
    comment = ""
    if ' comment "' in key:
        key, _, rest = key.partition(' comment "')
        comment = rest.rstrip('"')
    return [part.strip() for part in key.split(" . ")], comment, verdict.strip()


def _endpoints(table: Listed, chain: str) -> tuple[str, ...]:
    """The DNAT targets of the endpoint chains `chain`'s numgen vmap picks from, in its order."""
    found: list[str] = []
    for rule in table.chains.get(chain, ("", "", ()))[2]:
        if "numgen" not in rule:
            continue
        for endpoint in _GOTO.findall(rule):
            for target in table.chains.get(endpoint, ("", "", ()))[2]:
                dnat = _DNAT.search(target)
                if dnat:
                    found.append(dnat[1])
    return tuple(found)


def _base(comment: str, proto: str) -> str:
    """A no-endpoint element's comment (`ns/name:port`) and protocol → the service port's chain base."""
    ref, _, port_name = comment.partition(":")
    return nft_port_base(ref, proto, port_name)


def _node_ports(table: Listed) -> dict[str, int]:
    """Service port base (`HASH-ns/svc/proto/port`) → its node port: `service-nodeports` for ports
    with endpoints, `no-endpoint-nodeports` (by its comment) for those refused or dropped."""
    found = {}
    for element in _elements(table, SERVICE_NODEPORTS):
        (_, port, *_), _, verdict = _split(element)
        target = verdict.removeprefix("goto ")
        if target.startswith(NFT_EXTERNAL) and port.isdigit():
            found[target.removeprefix(NFT_EXTERNAL)] = int(port)
    for element in _elements(table, NO_ENDPOINT_NODEPORTS):
        (proto, port, *_), comment, _ = _split(element)
        if "/" in comment and port.isdigit():
            found[_base(comment, proto)] = int(port)
    return found


def _outside(
    table: Listed, cluster_ips: frozenset[str]
) -> tuple[dict[str, list[IPv4Address]], dict[str, list[IPv4Address]]]:
    """Per service port base: the external and load-balancer addresses it is reached at (nft does
    not say which is which: both lead to the external chain), and those refused or dropped."""
    reached: dict[str, list[IPv4Address]] = {}
    refused: dict[str, list[IPv4Address]] = {}
    for element in _elements(table, SERVICE_IPS):
        (ip, *_), _, verdict = _split(element)
        target = verdict.removeprefix("goto ")
        if ip not in cluster_ips and target.startswith(NFT_EXTERNAL):
            reached.setdefault(target.removeprefix(NFT_EXTERNAL), []).append(IPv4Address(ip))
    for element in _elements(table, NO_ENDPOINT_SERVICES):
        (ip, proto, *_), comment, _ = _split(element)
        if ip not in cluster_ips and "/" in comment:
            refused.setdefault(_base(comment, proto), []).append(IPv4Address(ip))
    return reached, refused


def parse_nft_services(table: Listed | None) -> list[ServicePortRules]:
    """Service ports from a listed `ip kube-proxy` table (nft.parse_listing), sorted by service."""
    if table is None:
        return []
    cluster_ips = _elements(table, CLUSTER_IPS)
    node_ports = _node_ports(table)
    reached, refused = _outside(table, cluster_ips)
    found: list[ServicePortRules] = []

    def port_rules(ref: str, port_name: str, proto: str, ip: str, port: str, chain: str, base: str) -> None:
        namespace, _, svc = ref.partition("/")
        found.append(
            ServicePortRules(
                namespace,
                svc,
                port_name,
                proto.upper(),
                IPv4Address(ip),
                int(port),
                node_ports.get(base),
                _endpoints(table, chain) if chain else (),
                chain,
                outside_ips=tuple(sorted(reached.get(base, []))),
                refused_ips=tuple(sorted(refused.get(base, []))),
            )
        )

    for element in _elements(table, SERVICE_IPS):
        (ip, proto, port), _, verdict = _split(element)
        chain = verdict.removeprefix("goto ")
        name = split_nft_chain(chain)
        if ip in cluster_ips and name is not None and port.isdigit():  # other addresses: see _outside
            _, ref, _, port_name, _ = name
            port_rules(ref, port_name, proto, ip, port, chain, chain.partition("-")[2])
    for element in _elements(table, NO_ENDPOINT_SERVICES):
        (ip, proto, port), comment, _ = _split(element)
        if ip in cluster_ips and port.isdigit() and "/" in comment:
            ref, _, port_name = comment.partition(":")
            port_rules(ref, port_name, proto, ip, port, "", _base(comment, proto))
    return sorted(found, key=lambda r: (r.ref, r.port_name, r.protocol, r.port))

"""kube-proxy's nftables table read back: the service ports a node's `nft list table ip kube-proxy`
programs. The reverse of `nftables`, following the maps and chains it writes: `service-ips`
(a ClusterIP's element) → the service chain's `numgen … vmap` → each endpoint chain's `dnat to`;
`service-nodeports` → the external chain of the same service port; `no-endpoint-services` for a
port without endpoints. The chain names carry the service port (`service-HASH-ns/svc/proto/port`),
read with `names.split_nft_chain`, which the generator's names come from.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address

from labbuilder.compile.kubeproxy.names import NFT_EXTERNAL, split_nft_chain
from labbuilder.compile.kubeproxy.nftables import CLUSTER_IPS, NO_ENDPOINT_SERVICES, SERVICE_IPS, SERVICE_NODEPORTS
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


def _node_ports(table: Listed) -> dict[str, int]:
    """Service port base (`HASH-ns/svc/proto/port`) → its node port, from `service-nodeports`."""
    found = {}
    for element in _elements(table, SERVICE_NODEPORTS):
        (_, port, *_), _, verdict = _split(element)
        target = verdict.removeprefix("goto ")
        if target.startswith(NFT_EXTERNAL) and port.isdigit():
            found[target.removeprefix(NFT_EXTERNAL)] = int(port)
    return found


def parse_nft_services(table: Listed | None) -> list[ServicePortRules]:
    """Service ports from a listed `ip kube-proxy` table (nft.parse_listing), sorted by service."""
    if table is None:
        return []
    cluster_ips = _elements(table, CLUSTER_IPS)
    node_ports = _node_ports(table)
    found: list[ServicePortRules] = []
    for element in _elements(table, SERVICE_IPS):
        (ip, proto, port), _, verdict = _split(element)
        chain = verdict.removeprefix("goto ")
        name = split_nft_chain(chain)
        if ip not in cluster_ips or name is None or not port.isdigit():
            continue  # an external or load-balancer address: the ClusterIP's element says it all
        _, ref, _, port_name, _ = name
        namespace, _, svc = ref.partition("/")
        base = chain.partition("-")[2]
        endpoints = _endpoints(table, chain)
        found.append(
            ServicePortRules(
                namespace,
                svc,
                port_name,
                proto.upper(),
                IPv4Address(ip),
                int(port),
                node_ports.get(base),
                endpoints,
                chain,
            )
        )
    for element in _elements(table, NO_ENDPOINT_SERVICES):
        (ip, proto, port), comment, _ = _split(element)
        if ip not in cluster_ips or not port.isdigit() or "/" not in comment:
            continue
        ref, _, port_name = comment.partition(":")
        namespace, _, svc = ref.partition("/")
        found.append(
            ServicePortRules(namespace, svc, port_name, proto.upper(), IPv4Address(ip), int(port), None, (), "")
        )
    return sorted(found, key=lambda r: (r.ref, r.port_name, r.protocol, r.port))

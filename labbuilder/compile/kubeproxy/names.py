"""kube-proxy's vocabulary: chain names, service port names, endpoint addresses, the comments on
its rules. Both directions use it: `rules` writes with it and `parse` reads with it, so the two
agree by construction instead of by matching string literals.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address

from labbuilder.spec.model import ProxyStyle, Service, ServicePort

MASQ_MARK = "0x4000/0x4000"
SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ, FORWARD = (
    "KUBE-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
    "KUBE-MARK-MASQ",
    "KUBE-FORWARD",
)
# filter: what may not enter from outside (node ports, external and LB IPs), and the LB source ranges.
EXTERNAL_SERVICES, PROXY_FIREWALL = "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL"
# Per service port: KUBE-SVC (load balancing over every endpoint, "Cluster" policy), KUBE-SVL (over
# the node's own endpoints, "Local" policy), KUBE-EXT (node ports, external and LB IPs), KUBE-FW
# (loadBalancerSourceRanges), KUBE-SEP (one endpoint).
SVC, SVL, EXT, FW, SEP = "KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"


def service_port_name(svc: Service, port: ServicePort, style: ProxyStyle = "current") -> str:
    """`ns/name:port`; an unnamed port drops the colon, except in 2018 (`default/nginx:`)."""
    if port.name or style == "2018":
        return f"{svc.ref}:{port.name}"
    return svc.ref


def split_service_port_name(spn: str) -> tuple[str, str, str]:
    """`ns/name:port` (or `ns/name`, or 2018's `ns/name:`) → (ns, name, port name)."""
    ref, _, port_name = spn.partition(":")
    namespace, _, name = ref.partition("/")
    return namespace, name, port_name


def endpoint_address(ip: IPv4Address, port: int) -> str:
    """`ip:port`, as DNAT's --to-destination, SEP hashes and current comments write it."""
    return f"{ip}:{port}"


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc_chain(spn: str, proto: str) -> str:
    return SVC + _hash(spn + proto.lower())


def ext_chain(spn: str, proto: str) -> str:
    return EXT + _hash(spn + proto.lower())


def svl_chain(spn: str, proto: str) -> str:
    return SVL + _hash(spn + proto.lower())


def fw_chain(spn: str, proto: str) -> str:
    return FW + _hash(spn + proto.lower())


def sep_chain(spn: str, proto: str, endpoint: str) -> str:
    """`endpoint` is "ip:port"."""
    return SEP + _hash(spn + proto.lower() + endpoint)


@dataclass(frozen=True)
class SpnComment:
    """A comment kube-proxy writes around a service port name: written and read back here."""

    prefix: str = ""
    suffix: str = ""

    def write(self, spn: str) -> str:
        return f"{self.prefix}{spn}{self.suffix}"

    def read(self, text: str) -> str | None:
        """The service port name in `text`, None when `text` is not this comment."""
        if len(text) <= len(self.prefix) + len(self.suffix):
            return None
        if not (text.startswith(self.prefix) and text.endswith(self.suffix)):
            return None
        spn = text[len(self.prefix) : len(text) - len(self.suffix)]
        return spn if "/" in spn else None  # every service port name is `ns/name...`


CLUSTER_IP = SpnComment(suffix=" cluster IP")  # KUBE-SERVICES → KUBE-SVC, and the SNAT mark before it
NO_ENDPOINTS = SpnComment(suffix=" has no endpoints")  # filter KUBE-SERVICES' REJECT
EXTERNAL = SpnComment("masquerade traffic for ", " external destinations")  # KUBE-EXT's SNAT mark
NO_LOCAL_ENDPOINTS = SpnComment(suffix=" has no local endpoints")  # filter DROP under a Local policy
EXTERNAL_IP = SpnComment(suffix=" external IP")  # KUBE-SERVICES → KUBE-EXT for an externalIP
LOAD_BALANCER_IP = SpnComment(suffix=" loadbalancer IP")  # KUBE-SERVICES → KUBE-FW/EXT; KUBE-FW's allow rules
HEALTH_CHECK = SpnComment(suffix=" health check node port")  # filter KUBE-NODEPORTS' ACCEPT
POD_EXTERNAL = SpnComment("pod traffic for ", " external destinations")  # Local: pods short-circuit to SVC
LOCAL_MASQ = SpnComment("masquerade LOCAL traffic for ", " external destinations")  # Local: the node itself
LOCAL_ROUTE = SpnComment("route LOCAL traffic for ", " external destinations")
FW_OTHER = SpnComment("other traffic to ", " will be dropped by KUBE-PROXY-FIREWALL")  # KUBE-FW's last rule


def fw_drop_comment(spn: str, fw: str) -> str:
    """filter KUBE-PROXY-FIREWALL's DROP for an LB IP the source ranges did not let through."""
    return f"{spn} traffic not accepted by {fw}"

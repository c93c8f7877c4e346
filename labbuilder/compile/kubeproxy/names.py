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
# Per service port: KUBE-SVC (load balancing), KUBE-EXT (node ports, current style), KUBE-SEP (one endpoint).
SVC, EXT, SEP = "KUBE-SVC-", "KUBE-EXT-", "KUBE-SEP-"


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

"""Every default of a lab file, in one place.

resolve.py fills in what a file leaves out from here; the JSON Schema repeats the fixed values
as `default` keys for editors (tests/unit/test_resolve.py keeps the two equal). Addresses that
depend on other values are derived the way kubeadm and the cloud do it.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType
from typing import Any

# Where each group of keys sits in a lab file ("*" is every item of a list) → its defaults.
# The addressing is Kubernetes The Hard Way's.
DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "network": {"cidr": "10.240.0.0/24"},
        "cluster": {
            "podCIDR": "10.200.0.0/16",
            "nodeMaskSize": 24,
            "serviceCIDR": "10.32.0.0/24",
            "domain": "cluster.local",
            "dns": True,
            "version": "v1.33.0",  # what the apiservers' /version answers
        },
        "cni": {
            "mode": "bridge",
            "bridge": "cnio0",
            "ipMasq": True,
            "routes": "router",
            "mtu": 1500,
            "hairpinMode": True,
        },
        "kubeProxy": {"style": "current"},
        "nodes.*": {"role": "worker"},
        "workloads.*": {"namespace": "default", "replicas": 1},
        "workloads.*.ports.*": {"protocol": "TCP"},
        "services.*": {
            "namespace": "default",
            "type": "ClusterIP",
            "sessionAffinity": "None",
            "sessionAffinityTimeout": 10800,  # kube-proxy's ClientIP affinity: 3 hours
            "externalTrafficPolicy": "Cluster",
            "internalTrafficPolicy": "Cluster",
        },
        "services.*.ports.*": {"protocol": "TCP"},
        "checks.*": {"expect": "reach"},
        "checks.*.http": {"path": "/", "status": 200},
    }
)

KUBERNETES_INDEX = 1  # kubeadm: default/kubernetes takes the first address of the service range
DNS_INDEX = 10  # kubeadm: kube-dns takes the tenth


def of(where: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of `where` ("cluster", "services.*", …) as given, the rest from the defaults."""
    return {**DEFAULTS[where], **given}


def gateway(node_network: IPv4Network) -> IPv4Address:
    """The router takes the first usable address of the node network, as a VPC router does."""
    return node_network.network_address + 1


def kubernetes_ip(service_cidr: IPv4Network) -> IPv4Address:
    return service_cidr.network_address + KUBERNETES_INDEX


def dns_ip(service_cidr: IPv4Network) -> IPv4Address:
    return service_cidr.network_address + DNS_INDEX


def labels(workload: str) -> dict[str, str]:
    """A workload without labels gets `app: NAME`, as `kubectl create deployment` gives."""
    return {"app": workload}

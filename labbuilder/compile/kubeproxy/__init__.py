"""kube-proxy's iptables mode, both ways: `rules` generates a node's tables from the model, `parse`
reads service ports back from a node's `iptables-save`, and `names` is the vocabulary they share."""

from labbuilder.compile.kubeproxy.names import (
    FORWARD,
    MARK_MASQ,
    MASQ_MARK,
    NODEPORTS,
    POSTROUTING,
    SERVICES,
    ext_chain,
    sep_chain,
    service_port_name,
    split_service_port_name,
    svc_chain,
)
from labbuilder.compile.kubeproxy.parse import ServicePortRules, parse_service_rules, rule_options
from labbuilder.compile.kubeproxy.rules import kube_proxy_tables, per_node, probability

__all__ = [
    "FORWARD",
    "MARK_MASQ",
    "MASQ_MARK",
    "NODEPORTS",
    "POSTROUTING",
    "SERVICES",
    "ServicePortRules",
    "ext_chain",
    "kube_proxy_tables",
    "parse_service_rules",
    "per_node",
    "probability",
    "rule_options",
    "sep_chain",
    "service_port_name",
    "split_service_port_name",
    "svc_chain",
]

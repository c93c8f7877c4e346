"""What NetworkPolicies mean, as Kubernetes defines it — computed from the model alone.

- A pod is isolated for a direction only when some policy of its namespace selects it and lists
  that policy type; a pod no policy isolates may send or receive anything.
- What is allowed is the union of the rules of every policy that isolates the pod; a rule with
  no peers allows every peer, with no ports every port.
- A peer with podSelector and namespaceSelector is one peer (both must match: AND); two peers
  are two (either: OR). A podSelector alone means the policy's own namespace; ipBlock is matched
  against the address, `except` carved out.
- A named port is resolved on the target pod (its containerPort of that name and protocol); a
  port with endPort is the range port..endPort.
- A connection needs the egress of its source AND the ingress of its destination.
- The node a pod runs on always reaches it (docs: pods cannot block access from their resident
  node); replies of allowed connections are not new connections and always pass.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from labbuilder.spec.model import (
    Lab,
    NetworkPolicy,
    Pod,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
    PolicyType,
    Protocol,
)
from labbuilder.spec.truthtable import Group, TruthTable, matrix_pods, namespace_of

Endpoint = Pod | IPv4Address


def selected_pods(lab: Lab, policy: NetworkPolicy) -> tuple[Pod, ...]:
    """The pods a policy applies to: those of its namespace its podSelector matches."""
    return tuple(p for p in lab.pods if p.namespace == policy.namespace and policy.pod_selector.matches(p.labels))


def peer_pods(lab: Lab, policy: NetworkPolicy, peer: PolicyPeer) -> tuple[Pod, ...]:
    """The pods a selector peer stands for (none for an ipBlock peer: it is addresses, not pods)."""
    return tuple(p for p in lab.pods if _peer_has_pod(lab, policy, peer, p))


def _peer_has_pod(lab: Lab, policy: NetworkPolicy, peer: PolicyPeer, pod: Pod) -> bool:
    if peer.ip_block is not None:
        return False
    if peer.namespace_selector is None:
        in_namespace = pod.namespace == policy.namespace
    else:
        in_namespace = peer.namespace_selector.matches(lab.namespace(pod.namespace).label_map)
    return in_namespace and (peer.pod_selector is None or peer.pod_selector.matches(pod.labels))


def _peer_matches(lab: Lab, policy: NetworkPolicy, peer: PolicyPeer, other: Endpoint) -> bool:
    if peer.ip_block is not None:
        return address(other) in peer.ip_block
    return isinstance(other, Pod) and _peer_has_pod(lab, policy, peer, other)


def port_matches(port: PolicyPort, target: Pod | None, number: int, protocol: Protocol) -> bool:
    """Whether one `ports:` item allows `number/protocol` on `target` (named ports need a pod)."""
    if port.protocol != protocol:
        return False
    if port.port is None:
        return True
    if isinstance(port.port, str):
        return target is not None and any(
            p.name == port.port and p.protocol == protocol and p.port == number for p in target.ports
        )
    return port.port <= number <= (port.end_port if port.end_port is not None else port.port)


def rule_allows(
    lab: Lab, policy: NetworkPolicy, rule: PolicyRule, peer: Endpoint, target: Pod | None, port: int, protocol: Protocol
) -> bool:
    """Whether one rule lets `peer` in (or out to it) on `port/protocol` of `target`."""
    peers_ok = not rule.peers or any(_peer_matches(lab, policy, p, peer) for p in rule.peers)
    ports_ok = not rule.ports or any(port_matches(p, target, port, protocol) for p in rule.ports)
    return peers_ok and ports_ok


def isolating(lab: Lab, pod: Pod, direction: PolicyType) -> tuple[NetworkPolicy, ...]:
    """The policies that isolate `pod` for `direction`: of its namespace, selecting it, of that type."""
    return tuple(
        p
        for p in lab.network_policies
        if p.namespace == pod.namespace and direction in p.policy_types and p.pod_selector.matches(pod.labels)
    )


def ingress_allows(lab: Lab, source: Endpoint, target: Pod, port: int, protocol: Protocol) -> bool:
    if _from_own_node(lab, source, target):
        return True
    policies = isolating(lab, target, "Ingress")
    return not policies or any(
        rule_allows(lab, policy, rule, source, target, port, protocol) for policy in policies for rule in policy.ingress
    )


def egress_allows(lab: Lab, source: Pod, target: Endpoint, port: int, protocol: Protocol) -> bool:
    policies = isolating(lab, source, "Egress")
    pod = target if isinstance(target, Pod) else None
    return not policies or any(
        rule_allows(lab, policy, rule, target, pod, port, protocol) for policy in policies for rule in policy.egress
    )


def allowed(lab: Lab, src: Endpoint, dst: Endpoint, port: int, protocol: Protocol) -> bool:
    """Whether a new connection from `src` to `dst:port/protocol` is allowed by the lab's policies.
    An address of one of the lab's pods stands for that pod. A ClusterIP is not resolved here:
    policies apply after kube-proxy's DNAT, to the endpoint pod — pass that pod."""
    source, target = as_pod(lab, src), as_pod(lab, dst)
    out = not isinstance(source, Pod) or egress_allows(lab, source, target, port, protocol)
    into = not isinstance(target, Pod) or ingress_allows(lab, source, target, port, protocol)
    return out and into


def as_pod(lab: Lab, endpoint: Endpoint) -> Endpoint:
    if isinstance(endpoint, Pod):
        return endpoint
    return next((p for p in lab.pods if p.ip == endpoint), endpoint)


def address(endpoint: Endpoint) -> IPv4Address:
    return endpoint.ip if isinstance(endpoint, Pod) else endpoint


def _from_own_node(lab: Lab, source: Endpoint, target: Pod) -> bool:
    """An address of the target's node: its own, or one it holds in its podCIDR (the bridge's
    gateway, flannel.1) — a node always reaches its pods."""
    if isinstance(source, Pod):
        return False
    node = lab.node(target.node)
    return source == node.ip or (
        node.pod_cidr is not None and source in node.pod_cidr and as_pod(lab, source) == source
    )


def expected_matrix(lab: Lab, port: int, protocol: Protocol, groups: Group = "pods") -> TruthTable:
    """The truth table the policies imply for every serving pod to every other on `port/protocol`.

    A pod to itself is always reached: the packet never leaves the pod's namespace (the e2e
    suite's AllowLoopback; it ignores these cells, as Kubernetes leaves them undefined)."""
    pods = matrix_pods(lab, port, protocol)
    names = list(pods)
    table = TruthTable.build(names, names, lambda f, t: f == t or allowed(lab, pods[f], pods[t], port, protocol))
    return table.grouped(namespace_of(names)) if groups == "namespaces" else table

"""SCRATCH until i14-policy's semantics land (the contract's `selected_pods` and `peer_pods`):
which pods a policy selects and which pods a peer names. Replaced by i14-policy's module on merge."""

from __future__ import annotations

from labbuilder.spec.model import Lab, NetworkPolicy, Pod, PolicyPeer


def selected_pods(lab: Lab, policy: NetworkPolicy) -> tuple[Pod, ...]:
    return tuple(p for p in lab.pods if p.namespace == policy.namespace and policy.pod_selector.matches(p.labels))


def peer_pods(lab: Lab, policy: NetworkPolicy, peer: PolicyPeer) -> tuple[Pod, ...]:
    if peer.ip_block is not None:
        return ()
    out = []
    for pod in lab.pods:
        if peer.namespace_selector is None:
            in_ns = pod.namespace == policy.namespace
        else:
            in_ns = peer.namespace_selector.matches(dict(lab.namespace(pod.namespace).labels))
        if in_ns and (peer.pod_selector is None or peer.pod_selector.matches(pod.labels)):
            out.append(pod)
    return tuple(out)

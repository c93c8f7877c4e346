"""kube-router's network-policy vocabulary: chain and ipset names, marks, comments, computed as
kube-router v2 computes them (pkg/controllers/netpol: network_policy_controller.go, pod.go,
policy.go).

Every hashed name is a prefix + the first 16 characters of base32(StdEncoding, sha256(text)).
The chains of pods and policies mix in the controller's *syncVersion*, the wall-clock time of the
sync in Unix nanoseconds (`strconv.FormatInt(time.Now().UnixNano(), 10)`), so a real node renames
them at every sync. A lab must give the same names on every build, diff and reset, so labbuilder
syncs once, at one fixed instant: `SYNC_VERSION`. The ipsets do not depend on it.
"""

from __future__ import annotations

import base64
import hashlib

# The one sync labbuilder performs: 2026-11-25T00:00:00Z in Unix nanoseconds, as kube-router
# formats its syncVersion. Fixed so that chain names never change between builds.
SYNC_VERSION = "1795564800000000000"
IPV4 = "IPv4"  # v1.IPFamily: v2 (dual-stack) mixes it into policy chains and ipsets

POD_FW = "KUBE-POD-FW-"
NWPLCY = "KUBE-NWPLCY-"
SRC = "KUBE-SRC-"
DST = "KUBE-DST-"
TMP = "TMP-"  # the scratch sets of `ipset restore` (utils.tmpIPSetPrefix)
INPUT, FORWARD, OUTPUT = "KUBE-ROUTER-INPUT", "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT"
DEFAULT = "KUBE-NWPLCY-DEFAULT"
# Builtin filter chain → kube-router's top-level chain, in the order iptables-save prints them.
TOP_LEVEL = {"INPUT": INPUT, "FORWARD": FORWARD, "OUTPUT": OUTPUT}

# A policy rule matched: 0x10000 ("ok so far", reset at the end of each pod chain); the pod chain
# passed: 0x20000 (accepted at the end of the top-level chains).
MARK_MATCHED = "0x10000/0x10000"
MARK_ACCEPT = "0x20000/0x20000"
NFLOG_GROUP = 100


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def pod_chain(namespace: str, pod: str, version: str = SYNC_VERSION) -> str:
    """podFirewallChainName: one chain per local pod."""
    return POD_FW + _hash(namespace + pod + version)


def policy_chain(namespace: str, policy: str, version: str = SYNC_VERSION, family: str = IPV4) -> str:
    """networkPolicyChainName; `family=""` gives the pre-dual-stack (v1) name."""
    return NWPLCY + _hash(namespace + policy + version + family)


def target_src_set(namespace: str, policy: str, family: str = IPV4) -> str:
    """policySourcePodIPSetName: the policy's selected pods, matched as sources (egress)."""
    return SRC + _hash(namespace + policy + family)


def target_dst_set(namespace: str, policy: str, family: str = IPV4) -> str:
    """policyDestinationPodIPSetName: the policy's selected pods, matched as destinations (ingress)."""
    return DST + _hash(namespace + policy + family)


def ingress_pod_set(namespace: str, policy: str, rule: int, family: str = IPV4) -> str:
    """policyIndexedSourcePodIPSetName: the peers of ingress rule `rule`."""
    return SRC + _hash(f"{namespace}{policy}ingressrule{rule}{family}pod")


def egress_pod_set(namespace: str, policy: str, rule: int, family: str = IPV4) -> str:
    """policyIndexedDestinationPodIPSetName: the peers of egress rule `rule`."""
    return DST + _hash(f"{namespace}{policy}egressrule{rule}{family}pod")


def ingress_block_set(namespace: str, policy: str, rule: int, family: str = IPV4) -> str:
    """policyIndexedSourceIPBlockIPSetName: the ipBlocks of ingress rule `rule` (hash:net)."""
    return SRC + _hash(f"{namespace}{policy}ingressrule{rule}{family}ipblock")


def egress_block_set(namespace: str, policy: str, rule: int, family: str = IPV4) -> str:
    """policyIndexedDestinationIPBlockIPSetName: the ipBlocks of egress rule `rule` (hash:net)."""
    return DST + _hash(f"{namespace}{policy}egressrule{rule}{family}ipblock")


def ingress_named_port_set(namespace: str, policy: str, rule: int, port: int, family: str = IPV4) -> str:
    """policyIndexedIngressNamedPortIPSetName: the selected pods whose named port resolves to one number."""
    return DST + _hash(f"{namespace}{policy}ingressrule{rule}{port}{family}namedport")


def egress_named_port_set(namespace: str, policy: str, rule: int, port: int, family: str = IPV4) -> str:
    """policyIndexedEgressNamedPortIPSetName: the peers whose named port resolves to one number."""
    return DST + _hash(f"{namespace}{policy}egressrule{rule}{port}{family}namedport")


def tmp_set(options: str) -> str:
    """The scratch set `ipset restore` fills before swapping it in (utils.buildIPSetRestore):
    one per distinct set of create options."""
    return TMP + base64.b32encode(hashlib.sha1(("tmp:" + options).encode()).digest()[:10]).decode()


def rule_uuid(chain: str, spec: list[str]) -> str:
    """ensureTopLevelChains' addUUIDForRuleSpec: the hash appended to a top-level rule's comment
    (`kube-router netpol - 4IA2OSFRMVNDXBVV`), over the chain and the rule's arguments joined."""
    return _hash(chain + "".join(spec))


def with_uuid(chain: str, spec: list[str]) -> list[str]:
    """The rule with ` - <uuid>` appended to its comment, as kube-router writes it."""
    uuid = rule_uuid(chain, spec)
    at = spec.index("--comment") + 1
    return [*spec[:at], f"{spec[at]} - {uuid}", *spec[at + 1 :]]

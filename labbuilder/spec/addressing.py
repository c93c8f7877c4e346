"""Deterministic address and name allocation, shaped like the real allocators.

- node IPs: in order from the node network, skipping the router and given addresses;
- podCIDRs: kube-controller-manager `--allocate-node-cidrs` style, the next free /nodeMaskSize;
- pod IPs: host-local style, gateway .1 then .2 upward;
- names: pod names, netns names, container ids and veth names derived from a hash of the lab
  and the pod, so the same spec always gives the same lab.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator, Sequence
from ipaddress import IPv4Address, IPv4Network


class Exhausted(ValueError):
    """A range has no room left for what was asked of it."""


def free_hosts(network: IPv4Network, taken: Iterable[IPv4Address]) -> Iterator[IPv4Address]:
    used = set(taken)
    return (ip for ip in network.hosts() if ip not in used)


def allocate_hosts(network: IPv4Network, taken: Iterable[IPv4Address], count: int) -> list[IPv4Address]:
    hosts = free_hosts(network, taken)
    result = [ip for _, ip in zip(range(count), hosts, strict=False)]
    if len(result) < count:
        raise Exhausted(f"{network} has room for {len(result)} more address(es), {count} needed")
    return result


def allocate_subnets(parent: IPv4Network, prefix: int, taken: Iterable[IPv4Network], count: int) -> list[IPv4Network]:
    """The first `count` /prefix subnets of `parent` that overlap nothing taken, in address order.

    One pass over the taken ranges sorted by start: a candidate that hits one jumps past it, so
    thousands of nodes cost O(n log n), not a comparison of every candidate with every range.
    """
    size = 1 << (32 - prefix)
    spans = sorted((int(t.network_address), int(t.broadcast_address)) for t in taken)
    start, end = int(parent.network_address), int(parent.broadcast_address)
    result: list[IPv4Network] = []
    candidate, i = start, 0
    while len(result) < count and candidate + size - 1 <= end:
        while i < len(spans) and spans[i][1] < candidate:
            i += 1
        if i < len(spans) and spans[i][0] <= candidate + size - 1:
            past = spans[i][1] + 1  # the first aligned candidate after the taken range
            candidate = start + -(-(past - start) // size) * size
            continue
        result.append(IPv4Network((candidate, prefix)))
        candidate += size
    if len(result) < count:
        raise Exhausted(f"{parent} has room for {len(result)} more /{prefix} subnet(s), {count} needed")
    return result


def overlapping(ranges: Sequence[IPv4Network]) -> list[tuple[int, int]]:
    """(i, j) for each range i that overlaps an earlier one, j the first such: O(n log n).

    Network ranges nest or are disjoint, so in address order the ranges still open form one
    chain of containers: a range overlaps exactly its containers and what it contains.
    """
    first = list(range(len(ranges)))  # per range, the earliest index of a range it overlaps
    subtree = list(range(len(ranges)))  # per range, the earliest index among it and what it contains
    chain: list[int] = []  # the open containers, outermost first
    chain_first: list[int] = []  # per chain level, the earliest index at or above it

    def close() -> None:
        done = chain.pop()
        chain_first.pop()
        if chain:
            subtree[chain[-1]] = min(subtree[chain[-1]], subtree[done])

    for k in sorted(range(len(ranges)), key=lambda k: (ranges[k].network_address, ranges[k].prefixlen, k)):
        while chain and ranges[chain[-1]].broadcast_address < ranges[k].network_address:
            close()
        if chain:
            first[k] = chain_first[-1]
        chain.append(k)
        chain_first.append(min(k, chain_first[-1]) if chain_first else k)
    while chain:
        close()
    return [(k, min(first[k], subtree[k])) for k in range(len(ranges)) if min(first[k], subtree[k]) < k]


def pod_ips(pod_cidr: IPv4Network, count: int) -> list[IPv4Address]:
    """host-local: the gateway holds .1; pods get .2, .3, … in order."""
    gateway = pod_cidr.network_address + 1
    return allocate_hosts(pod_cidr, [gateway], count)


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode()).digest()


# Kubernetes' rand.String alphabet: no vowels, no ambiguous characters.
_K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _k8s_chars(data: bytes, length: int) -> str:
    return "".join(_K8S_ALPHABET[b % len(_K8S_ALPHABET)] for b in data[:length])


def pod_name(lab: str, namespace: str, workload: str, index: int) -> str:
    """Deployment-style `<workload>-<template hash>-<5 chars>`, stable for a given lab."""
    template_hash = _k8s_chars(_digest(lab, namespace, workload), 10)
    suffix = _k8s_chars(_digest(lab, namespace, workload, str(index)), 5)
    return f"{workload}-{template_hash}-{suffix}"


def netns_name(lab: str, pod_ref: str) -> str:
    """containerd names a pod's netns `cni-<uuid v4>`."""
    return f"cni-{uuid.UUID(bytes=_digest(lab, 'netns', pod_ref)[:16], version=4)}"


def container_id(lab: str, pod_ref: str) -> str:
    """The 64-hex sandbox id the CNI plugin is called with (it names the ipMasq chain)."""
    return _digest(lab, "sandbox", pod_ref).hex()


def host_veth(lab: str, pod_ref: str) -> str:
    """The bridge plugin names the node side `veth` + 8 hex characters."""
    return "veth" + _digest(lab, "veth", pod_ref).hex()[:8]


def ip_mac(ip: IPv4Address) -> str:
    """The 2018 bridge plugin's MAC: 0a:58 followed by the four IP bytes (seed 004)."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in ip.packed)


def node_mac(ip: IPv4Address) -> str:
    """A node's eth0 MAC the way Docker derives a container's: 02:42 followed by the IP bytes."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


def hashed_mac(*parts: str) -> str:
    """A stable locally administered unicast MAC for links with no address to derive one from."""
    return "02:" + ":".join(f"{b:02x}" for b in _digest("mac", *parts)[:5])

"""Allocation: property tests (no overlaps, inside their ranges, deterministic) and known values."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labbuilder.errors import SpecError
from labbuilder.spec import addressing
from labbuilder.spec.load import load_text
from labbuilder.spec.resolve import build_model

networks = st.builds(
    lambda addr, prefix: IPv4Network((addr, prefix), strict=False), st.integers(0, 2**32 - 1), st.integers(8, 28)
)


@given(networks, st.integers(16, 30), st.integers(0, 40), st.data())
def test_subnets_are_inside_the_parent_disjoint_and_skip_taken(parent, prefix, count, data):
    prefix = max(prefix, parent.prefixlen)
    candidates = list(itertools.islice(parent.subnets(new_prefix=prefix), 64))
    taken = data.draw(st.lists(st.sampled_from(candidates), max_size=5, unique=True))
    try:
        got = addressing.allocate_subnets(parent, prefix, taken, count)
    except addressing.Exhausted:
        assert len(candidates) < 64 and len(candidates) - len(taken) < count
        return
    assert len(got) == count
    assert all(s.subnet_of(parent) for s in got)
    everything = got + taken
    assert all(not a.overlaps(b) for i, a in enumerate(everything) for b in everything[i + 1 :])
    assert got == sorted(got)
    assert got == addressing.allocate_subnets(parent, prefix, taken, count)


@given(networks, st.integers(0, 30))
def test_pod_ips_start_after_the_gateway_and_stay_inside(pod_cidr, count):
    hosts = pod_cidr.num_addresses - 2
    if count > hosts - 1:
        with pytest.raises(addressing.Exhausted):
            addressing.pod_ips(pod_cidr, count)
        return
    ips = addressing.pod_ips(pod_cidr, count)
    assert ips == [pod_cidr.network_address + 2 + i for i in range(count)]
    assert all(ip in pod_cidr and ip != pod_cidr.broadcast_address for ip in ips)


@given(
    st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), min_size=1, max_size=6, unique=True), st.integers(0, 12)
)
def test_resolved_labs_never_overlap_and_are_deterministic(names, replicas):
    text = "name: prop\ncluster: {dns: false}\nnodes: [" + ", ".join(f"{{name: {n}}}" for n in names) + "]\n"
    text += f"workloads: [{{name: web, replicas: {replicas}, port: 80}}]\n"
    try:
        lab = build_model(load_text(text, "p.yaml")).lab
    except SpecError:
        raise AssertionError("a small lab must resolve") from None
    ips = [n.ip for n in lab.nodes] + [lab.network.gateway]
    assert len(set(ips)) == len(ips)
    cidrs = [n.pod_cidr for n in lab.nodes if n.pod_cidr]
    assert all(not a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1 :])
    pod_ips = [p.ip for p in lab.pods]
    assert len(set(pod_ips)) == len(pod_ips) == replicas
    assert all(p.ip in lab.node(p.node).pod_cidr for p in lab.pods)  # type: ignore[operator]
    assert len({p.name for p in lab.pods}) == replicas
    assert lab == build_model(load_text(text, "p.yaml")).lab


def test_bridge_plugin_mac_from_ip_as_in_seed_004():
    assert addressing.ip_mac(IPv4Address("10.200.0.4")) == "0a:58:0a:c8:00:04"
    assert addressing.ip_mac(IPv4Address("10.200.0.1")) == "0a:58:0a:c8:00:01"


def test_names_look_like_the_real_ones():
    netns = addressing.netns_name("kthw", "default/nginx-x")
    assert netns.startswith("cni-") and len(netns) == 40 and netns[4 + 14] == "4"  # uuid v4
    assert len(addressing.container_id("kthw", "default/nginx-x")) == 64
    assert addressing.netns_name("kthw", "default/nginx-x") != addressing.netns_name("kthw2", "default/nginx-x")


def _first_fit(parent: IPv4Network, prefix: int, taken: list[IPv4Network], count: int) -> list[IPv4Network]:
    """The allocation by definition: every candidate against every taken range."""
    free = (s for s in parent.subnets(new_prefix=prefix) if not any(s.overlaps(t) for t in taken))
    return list(itertools.islice(free, count))


small_networks = st.builds(  # all inside 10.0.0.0/20, so they overlap often
    lambda offset, prefix: IPv4Network((0x0A000000 + offset, prefix), strict=False),
    st.integers(0, 0xFFF),
    st.integers(20, 30),
)


@given(st.integers(20, 26), st.integers(22, 30), st.lists(small_networks, max_size=8), st.integers(0, 20))
def test_sorted_allocation_equals_first_fit(parent_prefix, prefix, taken, count):
    parent = IPv4Network(("10.0.0.0", parent_prefix))
    prefix = max(prefix, parent_prefix)
    expected = _first_fit(parent, prefix, taken, count)
    if len(expected) < count:
        with pytest.raises(addressing.Exhausted, match=f"room for {len(expected)} more"):
            addressing.allocate_subnets(parent, prefix, taken, count)
    else:
        assert addressing.allocate_subnets(parent, prefix, taken, count) == expected


@given(st.lists(small_networks, max_size=12))
def test_overlapping_names_each_range_that_overlaps_an_earlier_one_with_the_first(ranges):
    expected = {}
    for i, a in enumerate(ranges):
        earlier = [j for j, b in enumerate(ranges[:i]) if a.overlaps(b)]
        if earlier:
            expected[i] = earlier[0]
    assert dict(addressing.overlapping(ranges)) == expected

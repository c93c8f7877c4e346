"""Checks resolved against the model (pure) and judged on captured outputs."""

from __future__ import annotations

import pytest

from labbuilder.errors import SpecError
from labbuilder.observe.checks import Result, judge_nat, junit_xml, probe_for
from labbuilder.spec import refs
from labbuilder.spec.load import load, load_text
from labbuilder.spec.model import Check
from labbuilder.spec.resolve import build_model

KTHW = build_model(load("kthw")).lab


def test_reach_probe_commands():
    icmp = probe_for(KTHW, Check("c", "pod/busybox@worker-0", "pod/nginx@worker-2", protocol="icmp"))
    assert icmp.place.key == "worker-0" and icmp.place.netns == refs.pod(KTHW, "busybox@worker-0").netns
    assert icmp.argv == ("ping", "-c", "1", "-W", "3", "10.200.2.2")
    tcp = probe_for(KTHW, Check("c", "router", "service/nginx"))
    assert tcp.place.key == "router" and tcp.argv == ("nc", "-z", "-w", "3", "10.32.0.2", "80")
    dns = probe_for(KTHW, Check("c", "pod/busybox@worker-0", dns="kube-dns.kube-system.svc.cluster.local"))
    assert dns.argv == ("getent", "hosts", "kube-dns.kube-system.svc.cluster.local")
    assert dns.judge(0, "10.32.0.10      kube-dns.kube-system.svc.cluster.local\n") == (
        True,
        "answered 10.32.0.10, expected 10.32.0.10",
    )
    assert dns.judge(2, "")[0] is False


def test_expectations_are_judged_both_ways():
    reach = probe_for(KTHW, Check("c", "router", "10.240.0.20:31088"))
    no_reach = probe_for(KTHW, Check("c", "router", "10.240.0.20:31088", expect="no-reach"))
    assert reach.judge(0, "")[0] and not reach.judge(1, "")[0]
    assert no_reach.judge(1, "")[0] and not no_reach.judge(0, "")[0]


def test_route_check_matches_the_start_of_a_route_line():
    probe = probe_for(KTHW, Check("c", on="router", route="10.200.1.0/24 via 10.240.0.21"))
    table = "10.200.0.0/24 via 10.240.0.20 dev lab0 \n10.200.1.0/24 via 10.240.0.21 dev lab0 \n"
    assert probe.judge(0, table) == (True, "10.200.1.0/24 via 10.240.0.21 dev lab0")
    assert probe.judge(0, table.replace("10.200.1.0", "10.200.9.0"))[0] is False


def test_nat_is_read_from_conntrack_lines():
    # seed 004: the reply goes to the node address, so the source was translated.
    snat = (
        "icmp     1 29 src=10.200.0.21 dst=10.200.1.15 type=8 code=0 id=1280 src=10.200.1.15 "
        "dst=10.240.0.20 type=0 code=0 id=1280 mark=0 use=1"
    )
    plain = snat.replace("dst=10.240.0.20 type=0", "dst=10.200.0.21 type=0")
    assert judge_nat("snat", snat, "10.200.0.21") == (True, "10.200.0.21 → 10.240.0.20 (SNAT)")
    assert judge_nat("none", plain, "10.200.0.21") == (True, "no translation")
    assert judge_nat("snat", plain, "10.200.0.21")[0] is False
    dnat = (
        "tcp 6 117 TIME_WAIT src=10.200.0.3 dst=10.32.0.2 sport=40000 dport=80 src=10.200.2.2 "
        "dst=10.200.0.3 sport=80 dport=40000 [ASSURED] mark=0 use=1"
    )
    assert judge_nat("dnat", dnat, "10.200.0.3") == (True, "10.32.0.2 → 10.200.2.2 (DNAT)")
    assert judge_nat("dnat", "", "10.200.0.3") == (False, "no conntrack entry for the probe")


def test_unknown_names_in_a_lab_file_are_located_errors():
    text = "name: t\nnodes: [{name: a}]\nchecks:\n  - {from: pod/ghost, to: node/a}\n"
    with pytest.raises(SpecError) as info:
        build_model(load_text(text, "lab.yaml"))
    assert [str(p) for p in info.value.problems] == [
        "lab.yaml:4:5: check 'pod/ghost → node/a': no pod 'ghost' in lab t (pods: coredns-pswscvxlp9-7754w@a)"
    ]


def test_junit_report_counts_failures():
    results = [Result("a", "reach", "x → y", True, "reached"), Result("b", "route", "r", False, "route missing")]
    xml = junit_xml("kthw", results)
    assert 'tests="2" failures="1"' in xml and '<failure message="route missing">r</failure>' in xml

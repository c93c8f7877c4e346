"""trace's pure parts: xtables-monitor output into hops, FROM/TO into places and targets."""

from __future__ import annotations

import pytest

from labbuilder.spec.lab_file import resolve_file

LAB = resolve_file("kthw", "seekthw")[1].lab


def client(lab, node: str):
    return next(p for p in lab.node(node).pods if p.workload == "busybox")


# A pod on worker-0 pings a ClusterIP (seed 003): what xtables-monitor printed in each namespace.
MONITOR = {
    "pod": """PACKET: 2 331ca45d OUT=eth0 SRC=10.200.0.3 DST=10.32.0.2 LEN=84 TOS=0xa8 TTL=64 ID=42860 DF
 TRACE: 2 331ca45d raw:OUTPUT:rule:0x4:CONTINUE  -4 -t raw -A OUTPUT -m comment --comment labbuilder-trace-1 -j TRACE
 TRACE: 2 331ca45d raw:OUTPUT:policy:ACCEPT
PACKET: 2 331ca45d OUT=eth0 SRC=10.200.0.3 DST=10.32.0.2 LEN=84 TOS=0xa8 TTL=64 ID=42860 DF
 TRACE: 2 331ca45d mangle:POSTROUTING:policy:ACCEPT
""",
    "node": """PACKET: 2 e3896f30 IN=cnio0 SRC=10.200.0.3 DST=10.32.0.2 LEN=84 TOS=0xa8 TTL=64 ID=42860 DF
 TRACE: 2 e3896f30 raw:PREROUTING:policy:ACCEPT
PACKET: 2 e3896f30 IN=cnio0 SRC=10.200.0.3 DST=10.32.0.2 LEN=84 TOS=0xa8 TTL=64 ID=42860 DF
 TRACE: 2 e3896f30 nat:PREROUTING:rule:0x1b:JUMP:KUBE-SERVICES  -4 -t nat -A PREROUTING -j KUBE-SERVICES
 TRACE: 2 e3896f30 nat:PREROUTING:policy:ACCEPT
PACKET: 2 9fb2c225 IN=cnio0 OUT=eth0 SRC=10.200.0.3 DST=10.32.0.2 LEN=84 TOS=0xa8 TTL=63 ID=42860 DF
 TRACE: 2 9fb2c225 filter:FORWARD:policy:ACCEPT
PACKET: 2 9fb2c225 IN=cnio0 OUT=eth0 SRC=10.200.0.3 DST=10.32.0.2 LEN=84 TOS=0xa8 TTL=63 ID=42860 DF
 TRACE: 2 9fb2c225 nat:POSTROUTING:rule:0x1d:JUMP:KUBE-POSTROUTING  -4 -t nat -A POSTROUTING -j KUBE-POSTROUTING
 TRACE: 2 9fb2c225 nat:KUBE-POSTROUTING:rule:0x28:0xfffffffb  -4 -t nat -A KUBE-POSTROUTING -j RETURN
 TRACE: 2 9fb2c225 nat:CNI-f93c:rule:0x51:ACCEPT  -4 -t nat -A CNI-f93c ! -d 224.0.0.0/4 -j MASQUERADE
PACKET: 2 d9cf1e09 IN=cnio0 SRC=10.200.0.3 DST=10.32.0.2 LEN=84 TOS=0xa8 TTL=64 ID=777 DF
 TRACE: 2 d9cf1e09 raw:PREROUTING:policy:ACCEPT
""",
    "router": """PACKET: 2 f971aa54 IN=lab0 SRC=10.240.0.20 DST=10.32.0.2 LEN=84 TOS=0xa8 TTL=63 ID=42860 DF
 TRACE: 2 f971aa54 raw:PREROUTING:policy:ACCEPT
""",
}


def test_monitor_output_becomes_hops_in_the_order_the_packet_took():
    from labbuilder.observe.tracer import Hop, Place, follow, order, parse_monitor

    hops = [
        Hop(Place(key, None, key, key, ""), segment)
        for key in ("router", "node", "pod")  # deliberately out of order
        for segment in follow(parse_monitor(MONITOR[key]), "42860")
    ]
    hops = order(hops)
    assert [(h.place.key, h.kind) for h in hops] == [("pod", "sends"), ("node", "forwards"), ("router", "drops")]
    node = hops[1]
    assert [v.hook for v in node.visits] == ["PREROUTING", "FORWARD", "POSTROUTING"]  # ID 777 is another packet
    assert [h.verdict for h in node.rules("nat")][2:4] == ["JUMP:KUBE-POSTROUTING", "RETURN"]
    assert node.dnat() == ""
    hops[1].after = hops[2].visits[0].packet
    assert node.snat() == "10.240.0.20" and node.destination() == "10.32.0.2"
    assert [h.verdict for h in hops[0].rules("raw")] == ["policy ACCEPT"]  # the probe's own rule is left out


def test_from_and_to_accept_pods_by_prefix_nodes_services_and_ips():
    lab = LAB
    from labbuilder.errors import LabError
    from labbuilder.observe.tracer import source_place, target

    pod = client(lab, "worker-0")
    assert source_place(lab, f"pod/{pod.name[:-2]}").netns == pod.netns
    assert source_place(lab, str(lab.node("worker-1").ip)).label == "node worker-1"
    assert source_place(lab, "node/router").key == "router"
    assert str(target(lab, "service/kube-dns")) == f"{lab.cluster.dns_ip}:53/udp"
    assert str(target(lab, "service/kube-dns:53/tcp")) == f"{lab.cluster.dns_ip}:53/tcp"
    assert target(lab, "service/nginx:icmp").protocol == "icmp"
    assert str(target(lab, "node/worker-0:31088")) == f"{lab.node('worker-0').ip}:31088/tcp"
    assert str(target(lab, "10.200.1.2")) == "10.200.1.2 (ICMP echo)"
    assert source_place(lab, "pod/busybox@worker-2").netns == client(lab, "worker-2").netns
    with pytest.raises(LabError, match="matches 3 pods"):
        source_place(lab, "pod/busybox")
    with pytest.raises(LabError, match="a service is not a place"):
        source_place(lab, "service/nginx")


def test_policy_notes_name_the_policy_rule_and_the_reject():
    from dataclasses import replace

    from labbuilder.compile.netpol import names
    from labbuilder.observe.tracer import Hit, Hop, Visit, policy_notes
    from labbuilder.spec.lab_file import resolve_file
    from labbuilder.spec.refs import place
    from tests.conftest import ROOT

    lab = resolve_file(str(ROOT / "tests/integration/labs/kr-bridge.yaml"))[1].lab
    xb = next(p for p in lab.pods if p.ref.startswith("x/b"))
    fw, policy = names.pod_chain("x", xb.name), names.policy_chain("x", "allow-y-to-b")
    mark = f"-A {policy} -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x10000/0x10000"
    hits = [
        Hit("filter", "KUBE-ROUTER-FORWARD", f"JUMP:{fw}", f"-A KUBE-ROUTER-FORWARD -d {xb.ip}/32 -j {fw}"),
        Hit("filter", fw, f"JUMP:{policy}", f"-A {fw} -j {policy}"),
        Hit("filter", policy, "CONTINUE", mark),
    ]
    hop = Hop(place(lab, "node/worker-1"), [Visit("FORWARD", {}, hits)])
    assert policy_notes(lab, [hop]) == [
        f"node worker-1: policy x/allow-y-to-b allows it ({policy}, pod firewall {fw} of {xb.ref}): {mark}"
    ]
    reject = Hit("filter", fw, "REJECT", f"-A {fw} -m mark ! --mark 0x10000/0x10000 -j REJECT")
    hop.visits[0].hits[1:] = [reject]
    assert "kube-router REJECTs it" in policy_notes(lab, [hop])[0]
    assert policy_notes(replace(lab, network_policies=()), [hop]) == []
    # With kube-proxy in nftables mode, `nft monitor trace` shows the same iptables-nft rules in nft's words.
    nft_mark = "meta l4proto tcp  xt match set xt match set tcp dport 80 counter packets 0 bytes 0"
    nft_mark += " meta mark set mark or 0x10000"
    nft_reject = "meta mark & 0x00010000 != 0x00010000 counter packets 0 bytes 0 reject"
    hop.visits[0].hits[1:] = [
        Hit("filter", fw, "jump", f"ip daddr {xb.ip} jump {policy}"),
        Hit("filter", policy, "", nft_mark),
    ]
    assert policy_notes(lab, [hop])[0].startswith(
        f"node worker-1: policy x/allow-y-to-b allows it ({policy}, pod firewall {fw}"
    )
    hop.visits[0].hits[1:] = [Hit("filter", fw, "drop", nft_reject)]
    assert "kube-router REJECTs it in " + fw in policy_notes(lab, [hop])[0]


# A pod on worker-0 curls a ClusterIP in kube-proxy's nftables mode: what `nft monitor trace`
# printed in the node (kthw-nftables, abridged), our table `labbuilder-trace-1` opening each hook.
NFT_MONITOR = """\
trace id ee712161 ip labbuilder-trace-1 trace-prerouting packet: iif "cnio0" ether saddr 0a:58:0a:c8:00:04 \
ip saddr 10.200.0.4 ip daddr 10.32.0.2 ip dscp 0x2a ip ecn not-ect ip ttl 64 ip id 36545 ip length 60 \
tcp sport 43570 tcp dport 80 tcp flags == syn tcp window 64240
trace id ee712161 ip labbuilder-trace-1 trace-prerouting rule ip dscp 0x2a meta nftrace set 1 (verdict continue)
trace id ee712161 ip kube-proxy nat-prerouting rule jump services (verdict jump services)
trace id ee712161 ip kube-proxy services rule ip daddr . meta l4proto . th dport vmap @service-ips \
(verdict goto service-ECO34HEO-default/nginx/tcp/)
trace id ee712161 ip kube-proxy service-ECO34HEO-default/nginx/tcp/ rule numgen random mod 2 vmap \
{ 0 : goto endpoint-DQK7XMFD-default/nginx/tcp/__10.200.0.2/80, \
1 : goto endpoint-XRDAQQ4B-default/nginx/tcp/__10.200.1.2/80 } \
(verdict goto endpoint-XRDAQQ4B-default/nginx/tcp/__10.200.1.2/80)
trace id ee712161 ip kube-proxy endpoint-XRDAQQ4B-default/nginx/tcp/__10.200.1.2/80 rule \
meta l4proto tcp dnat to 10.200.1.2:80 \
(verdict accept)
trace id ee712161 ip labbuilder-trace-1 trace-forward packet: iif "cnio0" oif "eth0" ip saddr 10.200.0.4 \
ip daddr 10.200.1.2 ip ttl 63 ip id 36545 tcp sport 43570 tcp dport 80
trace id ee712161 ip kube-proxy filter-forward policy accept
trace id ee712161 ip labbuilder-trace-1 trace-postrouting packet: oif "eth0" ip saddr 10.200.0.4 \
ip daddr 10.200.1.2 ip ttl 63 ip id 36545 tcp sport 43570 tcp dport 80
trace id ee712161 ip nat CNI-eb06 rule ip daddr != 224.0.0.0/4  counter packets 0 bytes 0 masquerade (verdict accept)
"""


def test_nft_monitor_output_names_the_service_and_endpoint_chains_and_the_dnat():
    from labbuilder.observe.tracer import Hop, Place, _rule_lines, parse_nft_monitor

    visits = parse_nft_monitor(NFT_MONITOR, "labbuilder-trace-1")
    assert [v.hook for v in visits] == ["PREROUTING", "FORWARD", "POSTROUTING"]
    assert visits[0].packet == {
        "IN": "cnio0",
        "SRC": "10.200.0.4",
        "DST": "10.32.0.2",
        "TTL": "64",
        "ID": "36545",
        "SPORT": "43570",
        "DPORT": "80",
    }
    hop = Hop(
        Place("worker-0", None, "node worker-0", "node worker-0", "10.240.0.20"), visits, after={"SRC": "10.240.0.20"}
    )
    assert hop.kind == "forwards"
    assert hop.dnat() == "10.200.1.2:80"
    assert hop.snat() == "10.240.0.20"
    assert hop.destination() == "10.200.1.2"
    lines = _rule_lines(hop, visits[0])
    assert lines[0] == "kube-proxy nat-prerouting: jump services  ⇒ jump services"  # our own table is left out
    assert lines[1] == (
        "kube-proxy services: ip daddr . meta l4proto . th dport vmap @service-ips"
        "  ⇒ goto service-ECO34HEO-default/nginx/tcp/"
    )
    assert lines[2].endswith("⇒ goto endpoint-XRDAQQ4B-default/nginx/tcp/__10.200.1.2/80")
    assert lines[-1] == "⇒ DNAT: destination becomes 10.200.1.2:80"

"""kube-proxy's nftables mode: names and the table, pinned against upstream's expected dumps."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from labbuilder.compile.kubeproxy.names import hash_and_truncate, nft_endpoint_base, nft_port_base, split_nft_chain
from labbuilder.compile.kubeproxy.nftables import NftProxy, kube_proxy_nftables, nodeport_element
from labbuilder.compile.kubeproxy.nftparse import parse_nft_services
from labbuilder.compile.nft import canonical, differences, listed, parse_listing, parse_transaction, transaction
from labbuilder.compile.ops import Iptables, Nftables
from labbuilder.compile.plan import compile_plan
from labbuilder.errors import SpecError
from labbuilder.spec.lab_file import resolve_file
from labbuilder.spec.load import load_text
from labbuilder.spec.model import Cluster, Cni, Endpoint, HostKernel, Lab, Node, NodeNetwork, Service, ServicePort
from labbuilder.spec.resolve import build_model
from tests.conftest import LABS
from tests.unit.test_kubeproxy_parse import SHIPPED, ordered, planned, shipped, without_endpoints

UPSTREAM = Path(__file__).parent / "data" / "nftables_upstream.txt"
NODE = Node("test-node", "worker", IPv4Address("192.168.0.2"), IPv4Network("10.0.1.0/24"))


def ep(ip: str, port: int = 80) -> Endpoint:
    return Endpoint(IPv4Address(ip), port, None, ip)


def svc(ns: str, name: str, ip: str, port: ServicePort, eps: tuple[Endpoint, ...] = (), **kw: object) -> Service:
    kind = "NodePort" if port.node_port else "ClusterIP"
    return Service(name, ns, kind, IPv4Address(ip), (port,), {}, {port.name: eps}, **kw)  # type: ignore[arg-type]


def fake_lab(*services: Service) -> Lab:
    """upstream's NewFakeProxier: pods 10.0.0.0/8, services 172.30.0.0/16, node 192.168.0.2."""
    return Lab(
        "t",
        NodeNetwork(IPv4Network("192.168.0.0/24"), IPv4Address("192.168.0.1")),
        Cluster(IPv4Network("10.0.0.0/8"), 24, IPv4Network("172.30.0.0/16"), IPv4Address("172.30.0.10")),
        Cni(),
        (NODE,),
        services,
        proxy_mode="nftables",
    )


P80 = ServicePort(80, 80, "TCP", "p80")


def ip(text: str) -> IPv4Address:
    return IPv4Address(text)


OVERALL = fake_lab(  # TestOverallNFTablesRules' six services
    svc("ns1", "svc1", "172.30.0.41", P80, (ep("10.180.0.1"),)),
    Service(  # LoadBalancer, externalTrafficPolicy Local, its one endpoint on another node
        "svc2",
        "ns2",
        "LoadBalancer",
        ip("172.30.0.42"),
        (ServicePort(80, 80, "TCP", "p80", 3001),),
        {},
        {"p80": (ep("10.180.0.2"),)},
        external_traffic_policy="Local",
        external_ips=(ip("192.168.99.22"),),
        load_balancer_ips=(ip("1.2.3.4"),),
        health_check_node_port=30000,
    ),
    svc("ns3", "svc3", "172.30.0.43", ServicePort(80, 80, "TCP", "p80", 3003), (ep("10.180.0.3"),)),
    Service(  # an external IP; one endpoint on this node
        "svc4",
        "ns4",
        "NodePort",
        ip("172.30.0.44"),
        (P80,),
        {},
        {"p80": (ep("10.180.0.4"), Endpoint(ip("10.180.0.5"), 80, "test-node", "p"))},
        external_ips=(ip("192.168.99.33"),),
    ),
    Service(  # LoadBalancer, Cluster policy, source ranges, ClientIP affinity
        "svc5",
        "ns5",
        "LoadBalancer",
        ip("172.30.0.45"),
        (ServicePort(80, 80, "TCP", "p80", 3002),),
        {},
        {"p80": (ep("10.180.0.3"),)},
        session_affinity=True,
        load_balancer_ips=(ip("5.6.7.8"),),
        load_balancer_source_ranges=(IPv4Network("203.0.113.0/25"),),
        health_check_node_port=30000,
    ),
    svc("ns6", "svc6", "172.30.0.46", P80),
)


def sort_transaction(text: str) -> list[str]:
    """upstream's sortNFTablesTransaction: objects by type then name, rules kept in their order."""
    order = {"table": 1, "chain": 2, "rule": 3, "element": 4, "set": 5, "map": 6}
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    rules = [line for line in lines if line.split()[1] == "rule"]
    others = sorted((line for line in lines if line.split()[1] != "rule"), key=lambda li: (order[li.split()[1]], li))
    by_chain: dict[str, list[str]] = {}
    for rule in rules:
        by_chain.setdefault(rule.split()[4], []).append(rule)
    return others + [rule for chain in sorted(by_chain) for rule in by_chain[chain]]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ns1/svc1/tcp/p80", "ULMVA6XW-ns1/svc1/tcp/p80"),  # upstream's example
        ("ns1/svc1/tcp/p80__10.180.0.1/80", "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"),
        ("default/kubernetes/tcp/https", "2QRHZV4L-default/kubernetes/tcp/https"),
        ("default/kubernetes/tcp/https__10.240.0.10/6443", "MUFNAFNY-default/kubernetes/tcp/https__10.240.0.10/6443"),
    ],
)
def test_hash_and_truncate_gives_upstreams_names(name: str, expected: str) -> None:
    assert hash_and_truncate(name) == expected


def test_chain_bases_and_their_reverse() -> None:
    assert nft_port_base("ns2/svc2", "TCP", "p80") == "42NFTM6N-ns2/svc2/tcp/p80"
    assert nft_port_base("default/nginx", "TCP", "").endswith("-default/nginx/tcp/")  # unnamed: empty last part
    base = nft_endpoint_base("ns5/svc5", "TCP", "p80", IPv4Address("10.180.0.3"), 80)
    assert base == "GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"
    assert split_nft_chain("endpoint-" + base) == ("endpoint-", "ns5/svc5", "tcp", "p80", "10.180.0.3/80")
    assert split_nft_chain("services") is None
    long = hash_and_truncate("n" * 300)
    assert len(long) == 240 and long.endswith("...")


def test_table_is_upstreams_transaction() -> None:
    """TestOverallNFTablesRules' dump, compared as upstream compares (sortNFTablesTransaction)."""
    ours = "\n".join(transaction(kube_proxy_nftables(OVERALL, NODE, mark="0x4000"))) + "\n" + nodeport_element(NODE)
    assert sort_transaction(ours) == sort_transaction(UPSTREAM.read_text())


def test_session_affinity_sets_and_rules() -> None:
    """TestOverallNFTablesRules' svc5 (its LoadBalancer parts aside): a timeout set per endpoint,
    checked before the numgen rule and updated in the endpoint chain."""
    port = ServicePort(80, 80, "TCP", "p80", 3002)
    table = kube_proxy_nftables(
        fake_lab(svc("ns5", "svc5", "172.30.0.45", port, (ep("10.180.0.3"),), session_affinity=True))
    )
    lines = transaction(table)
    affinity = "affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"
    endpoint = "endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"
    assert f"add set ip kube-proxy {affinity} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }}" in lines
    assert table.chains["service-HVFWP5L3-ns5/svc5/tcp/p80"].rules[1:] == [
        f"ip saddr @{affinity} goto {endpoint}",
        f"numgen random mod 1 vmap {{ 0 : goto {endpoint} }}",
    ]
    assert table.chains[endpoint].rules == [
        "ip saddr 10.180.0.3 jump mark-for-masquerade",
        f"update @{affinity} {{ ip saddr }}",
        "meta l4proto tcp dnat to 10.180.0.3:80",
    ]


def test_several_endpoints_share_one_numgen_vmap() -> None:
    table = kube_proxy_nftables(fake_lab(svc("ns4", "svc4", "172.30.0.44", P80, (ep("10.180.0.4"), ep("10.180.0.5")))))
    assert table.chains["service-LAUZTJTB-ns4/svc4/tcp/p80"].rules[-1] == (
        "numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 , "
        "1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }"
    )


def test_headless_services_get_nothing() -> None:
    headless = Service("h", "default", "ClusterIP", None, (P80,), {}, {"p80": (ep("10.0.0.5"),)})
    assert transaction(kube_proxy_nftables(fake_lab(headless))) == transaction(kube_proxy_nftables(fake_lab()))


def test_payload_reads_back_as_the_table() -> None:
    proxy = NftProxy(OVERALL)
    text = proxy.payload(NODE)
    assert text.startswith("add table ip kube-proxy\ndelete table ip kube-proxy\n")
    table = parse_transaction(text)
    assert table is not None
    assert sorted(transaction(table)) == sorted([*transaction(proxy.table), nodeport_element(NODE)])
    assert listed(table) != listed(proxy.table)  # the node's own address is the difference


LISTING = """\
table ip kube-proxy {
	comment "rules for kube-proxy"
	set cluster-ips {
		type ipv4_addr
		comment "Active ClusterIPs"
		elements = { 172.30.0.41, 172.30.0.46 }
	}

	map no-endpoint-services {
		type ipv4_addr . inet_proto . inet_service : verdict
		comment "vmap to drop or reject packets to services with no endpoints"
		elements = { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain,
			\x20    172.30.0.47 . tcp . 80 comment "ns6/svc7:p80" : goto reject-chain }
	}

	set affinity-X {
		type ipv4_addr
		size 65535
		flags dynamic,timeout
		timeout 3h
		elements = { 10.0.0.9 expires 2h59m }
	}

	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		jump services
	}

	chain reject-chain {
		comment "helper for @no-endpoint-services / @no-endpoint-nodeports"
		reject
	}
}
"""


def test_listing_parses_to_comparable_form() -> None:
    found = parse_listing(LISTING)
    assert found is not None and found.comment == "rules for kube-proxy"
    assert found.chains["nat-prerouting"] == (
        "type nat hook prerouting priority dstnat; policy accept;",
        "",
        ("jump services",),
    )
    assert found.chains["reject-chain"][1:] == (
        "helper for @no-endpoint-services / @no-endpoint-nodeports",
        ("reject",),
    )
    assert found.containers["no-endpoint-services"][5] == {
        '172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain',
        '172.30.0.47 . tcp . 80 comment "ns6/svc7:p80" : goto reject-chain',
    }
    assert found.containers["affinity-X"][1:5] == ("ipv4_addr", "dynamic,timeout", "3h", "")
    assert found.containers["affinity-X"][5] == frozenset()  # what packets put there is not the plan's
    assert parse_listing("") is None


@pytest.mark.parametrize(
    ("written", "printed"),
    [
        ("mark set mark or 0x004000", "meta mark set meta mark | 0x00004000"),
        ("mark and 0x004000 == 0 return", "meta mark & 0x00004000 == 0x00000000 return"),
        ("mark set mark xor 0x4000", "meta mark set meta mark ^ 0x00004000"),
        ('ip daddr { 10.32.0.0/24 } drop comment "x"', 'ip daddr 10.32.0.0/24 drop comment "x"'),
        ("ip saddr != { 203.0.113.0/25 , 5.6.7.8 } drop", "ip saddr != { 5.6.7.8, 203.0.113.0/25 } drop"),
        ("ip saddr != { 10.240.0.0/24 , 10.240.0.202 } drop", "ip saddr != { 10.240.0.0/24 } drop"),  # merged
        (
            "ip saddr != { 10.250.0.202 , 10.240.0.0/24 , 10.240.0.7 , 10.240.1.0/24 } drop",
            "ip saddr != { 10.240.0.0/23, 10.250.0.202 } drop",
        ),
        ("ip saddr != { 10.0.0.0/24 , 10.0.1.0/25 } drop", "ip saddr != { 10.0.0.0-10.0.1.127 } drop"),
        ("numgen random mod 2 vmap { 0 : goto a , 1 : goto b }", "numgen random mod 2 vmap { 0 : goto a, 1 : goto b }"),
        ("update @affinity-x { ip saddr }", "update @affinity-x { ip saddr }"),
        ("meta l4proto tcp dnat to 10.0.0.1:80", "meta l4proto tcp dnat to 10.0.0.1:80"),
    ],
)
def test_canonical_is_how_nft_lists_a_rule(written: str, printed: str) -> None:
    """Each pair as nft 1.0.6 (the node image's) printed it back on these machines."""
    assert canonical(written) == printed


# -- the reverse: service ports read back from a listed table ---------------------------------------
@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("endpoints", [True, False])
def test_round_trip_recovers_the_model_s_services(name: str, endpoints: bool) -> None:
    lab = replace(shipped(name, "current"), proxy_mode="nftables")
    lab = lab if endpoints else without_endpoints(lab)
    proxy = NftProxy(lab)
    for node in lab.nodes:
        table = parse_transaction(proxy.payload(node))
        assert table is not None
        ports = [
            (r.namespace, r.name, r.port_name, r.protocol, r.cluster_ip, r.port, r.node_port, r.endpoints)
            for r in parse_nft_services(listed(table))
        ]
        assert ordered(ports) == ordered(planned(lab, node.name)), node.name


def test_reverse_reads_a_real_listing() -> None:
    """Element order and line breaks as nft prints them (captured from a kthw-nftables node)."""
    listing = parse_listing(LISTING)
    assert [(r.ref, r.port_name, r.chain, r.endpoints) for r in parse_nft_services(listing)] == [
        ("ns6/svc6", "p80", "", ()),
    ]  # 172.30.0.47 is not in cluster-ips: no ClusterIP of a service


# -- the mode in a lab file -------------------------------------------------------------------------
def mode_lab(mode: str, ipvs: bool = False, style: str = "current") -> Lab:
    text = f"name: t\nkubeProxy: {{mode: {mode}, style: {style}}}\nnodes: [{{name: a}}]\n"
    return build_model(load_text(text, "lab.yaml"), HostKernel(ipvs=ipvs)).lab


def problems(mode: str, ipvs: bool = False, style: str = "current") -> list[str]:
    with pytest.raises(SpecError) as info:
        mode_lab(mode, ipvs, style)
    return [str(p) for p in info.value.problems]


def test_mode_defaults_to_iptables_and_takes_nftables() -> None:
    assert build_model(load_text("name: t\nnodes: [{name: a}]\n", "lab.yaml")).lab.proxy_mode == "iptables"
    assert mode_lab("nftables").proxy_mode == "nftables"


def test_ipvs_is_refused_at_its_line_with_the_reason() -> None:
    assert problems("ipvs") == [
        "lab.yaml:2:13: kube-proxy's ipvs mode needs IPVS in the kernel, and this host's kernel has none"
        " (no /proc/net/ip_vs) (use mode: nftables (kube-proxy's newest mode) or iptables)"
    ]
    assert "does not build kube-proxy's ipvs mode" in problems("ipvs", ipvs=True)[0]


def test_nftables_has_no_2018_style() -> None:
    assert "no nftables mode in 2018" in problems("nftables", style="'2018'")[0]


def test_plan_writes_no_kube_proxy_iptables_rules_in_nftables_mode() -> None:
    plan = compile_plan(resolve_file(str(LABS / "kthw-nftables.yaml"))[1].lab)
    ops = [op for _, op in plan.ops()]
    assert not any("KUBE-" in op.payload for op in ops if isinstance(op, Iptables))
    assert any("CNI-" in op.payload for op in ops if isinstance(op, Iptables))  # the bridge plugin's ipMasq stays
    tables = [op for op in ops if isinstance(op, Nftables)]
    assert len(tables) == len(plan.nodes) and all(op.describe().startswith("nft -f - <<'EOF'") for op in tables)


def test_external_and_load_balancer_addresses_read_back() -> None:
    """labs/services.yaml in nftables mode: the addresses outside the cluster a service is reached at
    (or refused at), per node, as `get services` shows them."""
    lab = replace(shipped("services", "current"), proxy_mode="nftables")
    proxy = NftProxy(lab)
    for node in lab.nodes:
        rules = {r.ref: r for r in parse_nft_services(listed(parse_transaction(proxy.payload(node))))}  # type: ignore[arg-type]
        for svc in lab.services:
            if svc.headless:
                continue
            want = sorted({*svc.external_ips, *svc.load_balancer_ips})
            got = sorted({*rules[svc.ref].outside_ips, *rules[svc.ref].refused_ips})
            assert got == want, (node.name, svc.ref)


def test_differences_name_each_chain_and_element_a_learner_changed() -> None:
    table = kube_proxy_nftables(OVERALL, NODE)
    want = listed(table)
    table.containers["service-ips"].elements.pop(0)  # an element deleted
    table.element("service-ips", "10.9.9.9 . tcp . 80", "drop")  # one added
    table.chains["services"].rules.pop()  # a chain changed
    del table.chains["reject-chain"]  # one deleted
    assert differences(want, listed(table)) == [
        ("chain reject-chain", "missing"),
        ("chain services", "changed"),
        ("map service-ips element 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80", "missing"),
        ("map service-ips element 10.9.9.9 . tcp . 80 : drop", "added"),
    ]
    assert differences(want, want) == [] and differences(want, None) == [("table", "missing")]

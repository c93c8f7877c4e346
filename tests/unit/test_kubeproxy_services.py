"""kube-proxy's iptables shapes for the rest of the Service API: LoadBalancer (KUBE-FW, source
ranges), externalIPs, traffic policies (KUBE-EXT, KUBE-SVL), no endpoints (REJECT, DROP), health
check node ports — pinned against kube-proxy's own proxier_test.go expectations."""

from __future__ import annotations

import math
import shlex
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from labbuilder.compile.kubeproxy import kube_proxy_tables, per_node, svc_chain
from labbuilder.compile.kubeproxy.names import ext_chain, fw_chain, sep_chain, svl_chain
from labbuilder.compile.netfilter import BUILTIN_CHAINS, normalise, parse_save, quote, render_restore
from labbuilder.spec.model import Cluster, Cni, Endpoint, Lab, Node, NodeNetwork, Service, ServicePort

DATA = Path(__file__).parent / "data"
HERE = Node("test-node", "worker", IPv4Address("192.168.0.2"), IPv4Network("10.0.1.0/24"))
OTHER = Node("other-node", "worker", IPv4Address("192.168.0.3"), IPv4Network("10.0.2.0/24"))


def ep(ip: str, node: Node | None = None, port: int = 80) -> Endpoint:
    return Endpoint(IPv4Address(ip), port, node.name if node else None, ip)


def svc(ns: str, name: str, ip: str, *eps: Endpoint, node_port: int | None = None, **kw) -> Service:
    stype = kw.pop("type", "ClusterIP")
    port = ServicePort(80, 80, "TCP", "p80", node_port)
    return Service(name, ns, stype, IPv4Address(ip), (port,), {}, {"p80": eps}, **kw)


def lab(*services: Service, pod_cidr: str = "10.0.0.0/8") -> Lab:
    return Lab(
        name="t",
        network=NodeNetwork(IPv4Network("192.168.0.0/24"), IPv4Address("192.168.0.1")),
        cluster=Cluster(IPv4Network(pod_cidr), 24, IPv4Network("172.30.0.0/16"), IPv4Address("172.30.0.10")),
        cni=Cni(),
        nodes=(HERE, OTHER),
        services=services,
    )


def as_saved(rule: str) -> str:
    """A rule as kube-proxy writes it, as iptables-save prints it back: addresses (with /32) and
    -p first, comments quoted as xtables does, --or/--xor-mark as --set-xmark, REJECT's default
    --reject-with, the probability quantised (and MASQUERADE --random-fully, which this iptables has)."""
    tokens = shlex.split(rule)
    head: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(tokens):
        negated = tokens[i] == "!" and tokens[i + 1] in ("-s", "-d")
        flag = tokens[i + 1] if negated else tokens[i]
        if flag in ("-s", "-d", "-p") and (negated or tokens[i] == flag):
            value = tokens[i + 2 if negated else i + 1]
            value = value if flag == "-p" or "/" in value else f"{value}/32"
            head[flag] = f"{'! ' if negated else ''}{flag} {value}"
            i += 3 if negated else 2
            continue
        token = tokens[i]
        if tokens[i - 1 : i] == ["--comment"]:
            token = quote(token)
        elif tokens[i - 1 : i] == ["--probability"]:
            token = f"{math.floor(float(token) * 0x80000000 + 0.5) / 0x80000000:.11f}"
        rest.append(token)
        i += 1
    text = " ".join([*(head[f] for f in ("-s", "-d", "-p") if f in head), *rest])
    text = text.replace("--or-mark 0x4000", "--set-xmark 0x4000/0x4000").replace(
        "--xor-mark 0x4000", "--set-xmark 0x4000/0x0"
    )
    if text.endswith("-j REJECT"):
        text += " --reject-with icmp-port-unreachable"
    if text.endswith("-j MASQUERADE"):
        text += " --random-fully"
    return text


def upstream(name: str) -> dict[str, dict[str, list[str]]]:
    """kube-proxy's expected tables from its tests: chain → rules, as iptables-save would print them."""
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in (DATA / name).read_text().splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            current.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            _, chain, rule = line.split(" ", 2)
            current.setdefault(chain, []).append(as_saved(rule))
    return tables


# TestOverallIPTablesRulesWithMultipleServices' services, on its node "test-node".
OVERALL = lab(
    svc("ns1", "svc1", "172.30.0.41", ep("10.180.0.1")),
    svc(
        "ns2",
        "svc2",
        "172.30.0.42",
        ep("10.180.0.2"),  # on no node: not local, so this node has no local endpoint
        node_port=3001,
        type="LoadBalancer",
        external_traffic_policy="Local",
        load_balancer_ips=(IPv4Address("1.2.3.4"),),
        external_ips=(IPv4Address("192.168.99.22"),),
        health_check_node_port=30000,
    ),
    svc("ns3", "svc3", "172.30.0.43", ep("10.180.0.3"), node_port=3003, type="NodePort"),
    svc(
        "ns4",
        "svc4",
        "172.30.0.44",
        ep("10.180.0.4"),
        ep("10.180.0.5", HERE),
        external_ips=(IPv4Address("192.168.99.33"),),
    ),
    svc(
        "ns5",
        "svc5",
        "172.30.0.45",
        ep("10.180.0.3"),
        node_port=3002,
        type="LoadBalancer",
        load_balancer_ips=(IPv4Address("5.6.7.8"),),
        load_balancer_source_ranges=(IPv4Network("203.0.113.0/25"),),
    ),
    svc("ns6", "svc6", "172.30.0.46"),
)


def test_overall_rules_match_kube_proxys_own_test():
    expected = upstream("kube_proxy_overall.txt")
    ours = {t.name: t.chains for t in kube_proxy_tables(OVERALL, HERE)}
    for table, chains in expected.items():
        for chain, rules in chains.items():
            assert ours[table][chain] == rules, f"{table} {chain}"
        user_chains = {c for c in ours[table] if c not in BUILTIN_CHAINS[table]}
        assert user_chains == set(chains), table


def test_the_upstream_chain_names():
    assert fw_chain("ns5/svc5:p80", "tcp") == "KUBE-FW-NUKIZ6OKUXPJNT4C"
    assert ext_chain("ns2/svc2:p80", "tcp") == "KUBE-EXT-GNZBNJ2PO5MGZ6GT"
    assert svl_chain("ns2/svc2:p80", "tcp") == "KUBE-SVL-GNZBNJ2PO5MGZ6GT"
    assert sep_chain("ns4/svc4:p80", "tcp", "10.180.0.5:80") == "KUBE-SEP-C6EBXVWJJZMIWKLZ"


def test_external_local_with_a_local_endpoint_jumps_to_svl():
    """On a node that runs an endpoint, KUBE-EXT ends in KUBE-SVL over the local ones only, and
    nothing is dropped; the client's address is kept (no KUBE-MARK-MASQ for outside sources)."""
    service = svc(
        "ns2",
        "svc2",
        "172.30.0.42",
        ep("10.0.1.5", HERE),
        ep("10.0.2.5", OTHER),
        node_port=3001,
        type="NodePort",
        external_traffic_policy="Local",
    )
    spn = "ns2/svc2:p80"
    svl, svc_, ext = svl_chain(spn, "tcp"), svc_chain(spn, "tcp"), ext_chain(spn, "tcp")
    nat, filt = kube_proxy_tables(lab(service), HERE)
    assert nat.chains[ext][-1] == f"-j {svl}"
    assert nat.chains[svl] == [f'-m comment --comment "{spn} -> 10.0.1.5:80" -j {sep_chain(spn, "tcp", "10.0.1.5:80")}']
    assert len(nat.chains[svc_]) == 3  # the cluster IP still balances over both, after its SNAT mark
    assert filt.chains["KUBE-EXTERNAL-SERVICES"] == []
    # the other node has no endpoint of its own... until it runs one; here it does
    nat_other, _ = kube_proxy_tables(lab(service), OTHER)
    assert nat_other.chains[svl][0].endswith(f"-j {sep_chain(spn, 'tcp', '10.0.2.5:80')}")
    lonely = Node("third", "worker", IPv4Address("192.168.0.4"), None)
    nat_none, filt_none = kube_proxy_tables(lab(service), lonely)
    assert svl not in nat_none.chains and nat_none.chains[ext][-1].endswith(f"-j {svc_}")
    assert filt_none.chains["KUBE-EXTERNAL-SERVICES"] == [
        f'-p tcp -m comment --comment "{spn} has no local endpoints" -m addrtype --dst-type LOCAL'
        " -m tcp --dport 3001 -j DROP"
    ]


def test_internal_local_sends_the_cluster_ip_to_svl_or_drops_it():
    service = svc("ns", "itp", "172.30.0.50", ep("10.0.1.5", HERE), internal_traffic_policy="Local")
    spn = "ns/itp:p80"
    svl, svc_ = svl_chain(spn, "tcp"), svc_chain(spn, "tcp")
    cluster_ip = f'-d 172.30.0.50/32 -p tcp -m comment --comment "{spn} cluster IP" -m tcp --dport 80'
    nat, _ = kube_proxy_tables(lab(service), HERE)
    assert nat.chains["KUBE-SERVICES"][0] == f"{cluster_ip} -j {svl}"
    assert nat.chains[svl][0] == f"! -s 10.0.0.0/8 {cluster_ip} -j KUBE-MARK-MASQ"
    assert svc_ not in nat.chains  # not externally accessible: no Cluster-policy chain at all
    nat, filt = kube_proxy_tables(lab(service), OTHER)
    assert svl not in nat.chains and len(nat.chains["KUBE-SERVICES"]) == 1
    assert filt.chains["KUBE-SERVICES"] == [
        f'-d 172.30.0.50/32 -p tcp -m comment --comment "{spn} has no local endpoints" -m tcp --dport 80 -j DROP'
    ]


def test_no_endpoints_reject_every_way_in():
    """TestNoEndpointsReject's service: cluster IP, external IP, node port and LB IP all REJECT."""
    service = svc(
        "ns1",
        "svc1",
        "172.30.0.41",
        node_port=3001,
        type="LoadBalancer",
        external_ips=(IPv4Address("192.168.99.11"),),
        load_balancer_ips=(IPv4Address("1.2.3.4"),),
    )
    nat, filt = kube_proxy_tables(lab(service))
    reject = "-j REJECT --reject-with icmp-port-unreachable"
    c = '-m comment --comment "ns1/svc1:p80 has no endpoints"'
    assert filt.chains["KUBE-SERVICES"] == [f"-d 172.30.0.41/32 -p tcp {c} -m tcp --dport 80 {reject}"]
    assert filt.chains["KUBE-EXTERNAL-SERVICES"] == [
        f"-d 192.168.99.11/32 -p tcp {c} -m tcp --dport 80 {reject}",
        f"-d 1.2.3.4/32 -p tcp {c} -m tcp --dport 80 {reject}",
        f"-p tcp {c} -m addrtype --dst-type LOCAL -m tcp --dport 3001 {reject}",
    ]
    assert nat.chains["KUBE-NODEPORTS"] == [] and len(nat.chains["KUBE-SERVICES"]) == 1


def test_a_source_range_holding_the_node_lets_its_own_lb_traffic_in():
    service = svc(
        "ns5",
        "svc5",
        "172.30.0.45",
        ep("10.180.0.3"),
        node_port=3002,
        type="LoadBalancer",
        load_balancer_ips=(IPv4Address("5.6.7.8"),),
        load_balancer_source_ranges=(IPv4Network("192.168.0.0/24"),),
    )
    nat, _ = kube_proxy_tables(lab(service), HERE)
    fw, ext = fw_chain("ns5/svc5:p80", "tcp"), ext_chain("ns5/svc5:p80", "tcp")
    lb = '-m comment --comment "ns5/svc5:p80 loadbalancer IP"'
    assert nat.chains[fw][:2] == [f"-s 192.168.0.0/24 {lb} -j {ext}", f"-s 5.6.7.8/32 {lb} -j {ext}"]


def test_which_labs_need_tables_per_node():
    assert not per_node(lab(svc("a", "b", "172.30.0.9", ep("10.0.1.1"))))
    assert per_node(OVERALL)  # ns2 is Local, ns5 has source ranges


def test_the_overall_tables_round_trip_through_iptables_save_text():
    tables = kube_proxy_tables(OVERALL, HERE)
    assert normalise(parse_save(render_restore(tables))) == normalise({t.name: t for t in tables})


def test_the_parser_reads_every_way_in_back():
    from labbuilder.compile.kubeproxy import parse_service_rules

    found = {r.ref: r for r in parse_service_rules(parse_save(render_restore(kube_proxy_tables(OVERALL, HERE))))}
    assert set(found) == {f"ns{i}/svc{i}" for i in range(1, 7)}
    svc2, svc4, svc5, svc6 = found["ns2/svc2"], found["ns4/svc4"], found["ns5/svc5"], found["ns6/svc6"]
    assert (svc2.external_ips, svc2.load_balancer_ips, svc2.node_port) == (
        (IPv4Address("192.168.99.22"),),
        (IPv4Address("1.2.3.4"),),
        3001,
    )
    # no local endpoint for the Local svc2 here: its external addresses are also DROPped in filter
    assert svc2.refused_ips == (IPv4Address("192.168.99.22"), IPv4Address("1.2.3.4"))
    assert svc4.endpoints == ("10.180.0.4:80", "10.180.0.5:80") and svc4.external_ips == (IPv4Address("192.168.99.33"),)
    assert (svc5.load_balancer_ips, svc5.chain) == ((IPv4Address("5.6.7.8"),), svc_chain("ns5/svc5:p80", "tcp"))
    assert (svc6.chain, svc6.endpoints, svc6.cluster_ip) == ("", (), IPv4Address("172.30.0.46"))

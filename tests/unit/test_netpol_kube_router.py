"""kube-router's datapath rendered for small policies: ipsets, policy chains, pod chains, in
kube-router's order and in the form iptables-save prints."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Network

from labbuilder.compile.netpol import names
from labbuilder.compile.netpol.ipset import parse_save, restore
from labbuilder.compile.netpol.kube_router import kube_router, resolve_ports
from labbuilder.spec.load import load
from labbuilder.spec.model import (
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    PodPort,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
)
from labbuilder.spec.resolve import build_model

KIND = build_model(load("kind")).lab  # webserver 10.244.0.2, my-shell 10.244.1.2, nginx 10.244.2.2
NGINX = LabelSelector((("app", "nginx"),))
SHELL = LabelSelector((("run", "my-shell"),))
ALLOW = NetworkPolicy(
    "allow-shell", "default", NGINX, ("Ingress",), ingress=(PolicyRule((PolicyPeer(SHELL),), (PolicyPort("TCP", 80),)),)
)
DENY_EGRESS = NetworkPolicy("deny-egress", "default", LabelSelector(), ("Egress",))


def lab(*policies):
    return replace(KIND, network_policies=policies)


def test_no_policies_no_kube_router():
    assert kube_router(KIND) is None


def test_allow_policy_chain_and_sets():
    kr = kube_router(lab(ALLOW))
    chain = names.policy_chain("default", "allow-shell")
    src, dst = names.ingress_pod_set("default", "allow-shell", 0), names.target_dst_set("default", "allow-shell")
    (table,) = kr.shared
    match = (
        '-p tcp -m comment --comment "rule to ACCEPT traffic from source pods to dest pods selected by policy name '
        f'allow-shell namespace default" -m set --match-set {src} src -m set --match-set {dst} dst -m tcp --dport 80'
    )
    assert table.chains[chain] == [
        f"{match} -j MARK --set-xmark 0x10000/0x10000",
        f"{match} -m mark --mark 0x10000/0x10000 -j RETURN",
    ]
    assert {s.name: s.entries for s in kr.ipsets} == {dst: ("10.244.2.2 timeout 0",), src: ("10.244.1.2 timeout 0",)}
    assert table.chains["FORWARD"] == [
        '-m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD'
    ]
    assert table.chains["KUBE-ROUTER-INPUT"][0].startswith("-d 10.96.0.0/16 -m comment --comment ")
    assert table.chains["KUBE-NWPLCY-DEFAULT"][-1].endswith("-j MARK --set-xmark 0x10000/0x10000")


def test_pod_chain_of_an_ingress_isolated_pod():
    lab_kr = kube_router(lab(ALLOW))
    (table,) = lab_kr.node_tables(KIND.node("worker2"))
    nginx = KIND.node("worker2").pods[0]
    chain = names.pod_chain("default", nginx.name)
    who = f"POD name:{nginx.name} namespace: default"
    assert table.chains[chain] == [
        '-m comment --comment "rule for stateful firewall for pod" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',  # noqa: E501
        '-m comment --comment "rule to drop invalid state for pod" -m conntrack --ctstate INVALID -j DROP',
        "-d 10.244.2.2/32 -m comment --comment \"rule to permit the traffic traffic to pods when source is the pod\\'s "
        'local node" -m addrtype --src-type LOCAL -j ACCEPT',
        '-s 10.244.2.2/32 -m comment --comment "run through default egress network policy chain" -j KUBE-NWPLCY-DEFAULT',  # noqa: E501
        f'-d 10.244.2.2/32 -m comment --comment "run through nw policy allow-shell" -j {names.policy_chain("default", "allow-shell")}',  # noqa: E501
        f'-m comment --comment "rule to log dropped traffic {who}" -m mark ! --mark 0x10000/0x10000 '
        "-m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group 100",
        f'-m comment --comment "rule to REJECT traffic destined for {who}" -m mark ! --mark 0x10000/0x10000 '
        "-j REJECT --reject-with icmp-port-unreachable",
        "-j MARK --set-xmark 0x0/0x10000",
        '-m comment --comment "set mark to ACCEPT traffic that comply to network policies" -j MARK --set-xmark 0x20000/0x20000',  # noqa: E501
    ]
    forward = table.chains["KUBE-ROUTER-FORWARD"]
    assert [r.split("-m comment")[0].strip() for r in forward] == [
        "-d 10.244.2.2/32",
        "-d 10.244.2.2/32 -m physdev --physdev-is-bridged",
        "-s 10.244.2.2/32",
        "-s 10.244.2.2/32 -m physdev --physdev-is-bridged",
        "",
    ]
    assert forward[-1].endswith("-m mark --mark 0x20000/0x20000 -j ACCEPT")
    assert [r.split("-m comment")[0].strip() for r in table.chains["KUBE-ROUTER-INPUT"]] == ["-s 10.244.2.2/32", ""]


def test_pods_without_policies_pass_the_default_chain_both_ways():
    kr = kube_router(lab(ALLOW))
    shell = KIND.node("worker").pods[0]
    rules = kr.node_tables(KIND.node("worker"))[0].chains[names.pod_chain("default", shell.name)]
    assert [r for r in rules if "KUBE-NWPLCY-" in r] == [
        '-s 10.244.1.2/32 -m comment --comment "run through default egress network policy chain" -j KUBE-NWPLCY-DEFAULT',  # noqa: E501
        '-d 10.244.1.2/32 -m comment --comment "run through default ingress network policy chain" -j KUBE-NWPLCY-DEFAULT',  # noqa: E501
    ]


def test_egress_policy_without_rules_writes_an_empty_chain_and_the_source_set():
    kr = kube_router(lab(DENY_EGRESS))
    chain = names.policy_chain("default", "deny-egress")
    assert kr.shared[0].chains[chain] == []
    (src,) = kr.ipsets
    assert src.name == names.target_src_set("default", "deny-egress")
    assert set(src.entries) == {"10.244.0.2 timeout 0", "10.244.1.2 timeout 0", "10.244.2.2 timeout 0"}
    shell = KIND.node("worker").pods[0]
    rules = kr.node_tables(KIND.node("worker"))[0].chains[names.pod_chain("default", shell.name)]
    assert f'-s 10.244.1.2/32 -m comment --comment "run through nw policy deny-egress" -j {chain}' in rules


def test_ip_block_with_except_is_a_hash_net_with_nomatch():
    block = PolicyPeer(ip_block=IPBlock(IPv4Network("0.0.0.0/0"), (IPv4Network("10.244.1.0/24"),)))
    policy = NetworkPolicy("blocks", "default", NGINX, ("Ingress",), ingress=(PolicyRule((block,)),))
    kr = kube_router(lab(policy))
    sets = {s.name: s for s in kr.ipsets}
    s = sets[names.ingress_block_set("default", "blocks", 0)]
    assert s.kind == "hash:net"
    assert s.entries == (
        "0.0.0.0/1 timeout 0",
        "128.0.0.0/1 timeout 0",
        "10.244.1.0/24 timeout 0 nomatch",
    )


def test_named_ports_resolve_per_target_and_end_port_is_a_range():
    pods = [replace(p, ports=(PodPort(8080, "TCP", "web"),)) for p in KIND.node("worker2").pods]
    nodes = tuple(replace(n, pods=tuple(pods)) if n.name == "worker2" else n for n in KIND.nodes)
    ports = resolve_ports((PolicyPort("TCP", "web"), PolicyPort("UDP", 5000, 5010)), pods)
    assert ports.numeric == (("UDP", "5000", "5010"),)
    assert [(proto, port, [p.ip for p in owners]) for proto, port, owners in ports.named] == [
        ("TCP", "8080", [pods[0].ip])
    ]
    policy = NetworkPolicy(
        "named", "default", NGINX, ("Ingress",), ingress=(PolicyRule(ports=(PolicyPort("TCP", "web"),)),)
    )
    kr = kube_router(replace(KIND, nodes=nodes, network_policies=(policy,)))
    named = names.ingress_named_port_set("default", "named", 0, 0)
    assert (
        f"-m set --match-set {named} dst -m tcp --dport 8080 -j MARK"
        in kr.shared[0].chains[names.policy_chain("default", "named")][0]
    )


def test_ipset_restore_is_kube_routers_tmp_and_swap():
    kr = kube_router(lab(ALLOW))
    tmp = names.tmp_set("hash:ip timeout 0")
    src, dst = names.ingress_pod_set("default", "allow-shell", 0), names.target_dst_set("default", "allow-shell")
    first, second = sorted([(src, "10.244.1.2"), (dst, "10.244.2.2")])
    assert kr.restore == (
        f"create {tmp} hash:ip timeout 0\nflush {tmp}\n"
        f"add {tmp} {first[1]} timeout 0\ncreate {first[0]} hash:ip timeout 0\nswap {tmp} {first[0]}\nflush {tmp}\n"
        f"add {tmp} {second[1]} timeout 0\ncreate {second[0]} hash:ip timeout 0\nswap {tmp} {second[0]}\nflush {tmp}\n"
        f"destroy {tmp}\n"
    )
    assert restore(()) == ""


def test_ipset_save_reads_back_as_members():
    # `ipset save` of a node (ipset 7.17): initval and bucketsize printed, hash order, /32 dropped.
    opts = "family inet hashsize 1024 maxelem 65536 timeout 0 bucketsize 12"
    saved = "\n".join(
        [
            f"create KUBE-DST-TEST hash:ip {opts} initval 0x19e3b9cc",
            "add KUBE-DST-TEST 10.0.0.2 timeout 0",
            f"create KUBE-SRC-NET hash:net {opts} initval 0xa392b878",
            "add KUBE-SRC-NET 10.1.0.0/16 timeout 0 nomatch",
            "add KUBE-SRC-NET 10.0.0.5 timeout 0",
            "add KUBE-SRC-NET 10.0.0.0/8 timeout 0",
            f"create TMP-XD7BSSQZELS7TP35 hash:ip {opts} initval 0x1",
        ]
    )
    assert parse_save(saved) == {
        "KUBE-DST-TEST": ("hash:ip", frozenset({"10.0.0.2"})),
        "KUBE-SRC-NET": ("hash:net", frozenset({"!10.1.0.0/16", "10.0.0.5", "10.0.0.0/8"})),
    }


def test_egress_to_every_destination_on_a_port_and_to_pods():
    dns = PolicyRule(ports=(PolicyPort("UDP", 53),))
    to_nginx = PolicyRule((PolicyPeer(NGINX),))
    policy = NetworkPolicy("egress", "default", SHELL, ("Egress",), egress=(dns, to_nginx))
    kr = kube_router(lab(policy))
    src, peers = names.target_src_set("default", "egress"), names.egress_pod_set("default", "egress", 1)
    chain = kr.shared[0].chains[names.policy_chain("default", "egress")]
    by = "selected by policy name"
    to_all = f"rule to ACCEPT traffic from source pods to all destinations {by}: egress namespace default"
    to_pods = f"rule to ACCEPT traffic from source pods to dest pods {by} egress namespace default"
    mark = "-j MARK --set-xmark 0x10000/0x10000"
    assert chain[0] == f'-p udp -m comment --comment "{to_all}" -m set --match-set {src} src -m udp --dport 53 {mark}'
    assert (
        chain[2]
        == f'-m comment --comment "{to_pods}" -m set --match-set {src} src -m set --match-set {peers} dst {mark}'
    )
    assert len(chain) == 4
    assert {s.name: s.entries for s in kr.ipsets} == {src: ("10.244.1.2 timeout 0",), peers: ("10.244.2.2 timeout 0",)}
    # An egress policy never writes the target's destination set.
    assert names.target_dst_set("default", "egress") not in {s.name for s in kr.ipsets}

from __future__ import annotations

import base64
import hashlib
from ipaddress import IPv4Address, IPv4Network

import pytest

from labbuilder.compile.kubeproxy import (
    ext_chain,
    kube_proxy_tables,
    probability,
    sep_chain,
    service_port_name,
    svc_chain,
)
from labbuilder.compile.netfilter import normalise, parse_save, render_restore
from labbuilder.spec.model import (
    Cluster,
    Cni,
    Endpoint,
    Lab,
    Node,
    NodeNetwork,
    ProxyStyle,
    Service,
    ServicePort,
)

NODE = Node("worker-0", "worker", IPv4Address("10.240.0.20"), IPv4Network("10.200.0.0/24"))


def lab(style: ProxyStyle, *services: Service) -> Lab:
    return Lab(
        name="t",
        network=NodeNetwork(IPv4Network("10.240.0.0/24"), IPv4Address("10.240.0.1")),
        cluster=Cluster(IPv4Network("10.200.0.0/16"), 24, IPv4Network("10.32.0.0/24"), IPv4Address("10.32.0.10")),
        cni=Cni(),
        nodes=(NODE,),
        services=services,
        proxy_style=style,
    )


def ep(ip: str, port: int) -> Endpoint:
    return Endpoint(IPv4Address(ip), port, None, ip)


def service(name: str, ns: str, ip: str, *ports: ServicePort, eps: dict | None = None, **kw: object) -> Service:
    svc_type = "NodePort" if any(p.node_port for p in ports) else "ClusterIP"
    return Service(name, ns, svc_type, IPv4Address(ip), ports, {}, eps or {}, **kw)  # type: ignore[arg-type]


APISERVERS = tuple(ep(f"172.16.0.{i}", 6443) for i in (11, 12, 13))
KUBERNETES = service(
    "kubernetes",
    "default",
    "192.168.255.1",
    ServicePort(443, 6443, "TCP", "https"),
    eps={"https": APISERVERS},
    session_affinity=True,
)
KUBE_DNS = service(
    "kube-dns",
    "kube-system",
    "10.32.0.10",
    ServicePort(53, 53, "UDP", "dns"),
    ServicePort(53, 53, "TCP", "dns-tcp"),
    eps={"dns": (ep("10.200.0.27", 53),), "dns-tcp": (ep("10.200.0.27", 53),)},
)
NGINX = service(
    "nginx",
    "default",
    "10.32.0.53",
    ServicePort(80, 80, node_port=31088),
    eps={"80": (ep("10.200.1.18", 80),)},
)
EMPTY = service("empty", "default", "10.32.0.99", ServicePort(8080, 80, name="http"))


# -- names and hashes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spn", "proto", "chain"),
    [
        ("default/kubernetes:https", "tcp", "KUBE-SVC-NPX46M4PTMTKRN6Y"),
        ("kube-system/kube-dns:dns", "udp", "KUBE-SVC-TCOU7JCQXEZGVUNU"),
        ("kube-system/kube-dns:dns-tcp", "tcp", "KUBE-SVC-ERIFXISQEP7F7OF4"),
        ("kube-system/kube-dns:metrics", "tcp", "KUBE-SVC-JD5MR3NA4I4DYORP"),
        ("default/webserver", "tcp", "KUBE-SVC-UMJOY2TYQGVV2BKY"),
        ("default/nginx:", "TCP", "KUBE-SVC-4N57TFCL4MD7ZTDA"),
    ],
)
def test_svc_chain_seeds(spn: str, proto: str, chain: str) -> None:
    assert svc_chain(spn, proto) == chain


@pytest.mark.parametrize(
    ("spn", "proto", "endpoint", "chain"),
    [
        ("default/kubernetes:https", "tcp", "172.16.0.11:6443", "KUBE-SEP-23Y66C2VAJ3WDEMI"),
        ("default/kubernetes:https", "tcp", "172.16.0.12:6443", "KUBE-SEP-47TYMEKETDMXSVAN"),
        ("default/kubernetes:https", "tcp", "172.16.0.13:6443", "KUBE-SEP-CZKGMRCAIW3ENCXY"),
        ("default/nginx:", "tcp", "10.200.1.18:80", "KUBE-SEP-UGTFMET44DQG7H7H"),
        ("kube-system/kube-dns:dns", "udp", "10.200.0.27:53", "KUBE-SEP-LRUTK6XRXU43VLIG"),
        ("kube-system/kube-dns:dns-tcp", "tcp", "10.200.0.27:53", "KUBE-SEP-32LPCMGYG6ODGN3H"),
    ],
)
def test_sep_chain_seeds(spn: str, proto: str, endpoint: str, chain: str) -> None:
    assert sep_chain(spn, proto, endpoint) == chain


def test_hash_computed_independently() -> None:
    def b32(text: str) -> str:
        return base64.b32encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")[:16]

    assert svc_chain("shop/cart:grpc", "UDP") == "KUBE-SVC-" + b32("shop/cart:grpcudp")
    assert ext_chain("shop/cart:grpc", "udp") == "KUBE-EXT-" + b32("shop/cart:grpcudp")
    assert sep_chain("shop/cart:grpc", "udp", "10.1.2.3:9000") == "KUBE-SEP-" + b32("shop/cart:grpcudp10.1.2.3:9000")


def test_service_port_name() -> None:
    unnamed = NGINX.ports[0]
    assert service_port_name(NGINX, unnamed, "current") == "default/nginx"
    assert service_port_name(NGINX, unnamed, "2018") == "default/nginx:"
    assert service_port_name(KUBERNETES, KUBERNETES.ports[0], "current") == "default/kubernetes:https"
    assert service_port_name(KUBERNETES, KUBERNETES.ports[0], "2018") == "default/kubernetes:https"


# -- probabilities ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("i", "n", "style", "printed"),
    [
        (0, 3, "current", "0.33333333349"),
        (1, 3, "current", "0.50000000000"),
        (0, 3, "2018", "0.33332999982"),
        (1, 3, "2018", "0.50000000000"),
        (0, 2, "current", "0.50000000000"),
        (0, 1, "current", "1.00000000000"),
    ],
)
def test_probability(i: int, n: int, style: ProxyStyle, printed: str) -> None:
    assert probability(i, n, style) == printed


def test_probability_range() -> None:
    with pytest.raises(ValueError):
        probability(3, 3)


# -- tables ----------------------------------------------------------------------------------


def rules(tables: list, table: str, chain: str) -> list[str]:
    by_name = {t.name: t for t in tables}
    return by_name[table].chains[chain]


SEP = ("KUBE-SEP-23Y66C2VAJ3WDEMI", "KUBE-SEP-47TYMEKETDMXSVAN", "KUBE-SEP-CZKGMRCAIW3ENCXY")
K8S = "KUBE-SVC-NPX46M4PTMTKRN6Y"
CLUSTER_IP_443 = (
    '-d 192.168.255.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443'
)


def test_current_common_chains() -> None:
    nat, filt = kube_proxy_tables(lab("current"), NODE)
    assert (nat.name, filt.name) == ("nat", "filter")
    portals = '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    assert nat.chains["PREROUTING"] == [portals]
    assert nat.chains["OUTPUT"] == [portals]
    assert nat.chains["POSTROUTING"] == ['-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING']
    assert nat.chains["KUBE-MARK-MASQ"] == ["-j MARK --set-xmark 0x4000/0x4000"]
    assert nat.chains["KUBE-POSTROUTING"] == [
        "-m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-j MARK --set-xmark 0x4000/0x0",
        '-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    ]
    assert nat.chains["KUBE-SERVICES"] == [
        '-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain"'
        " -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    ]
    assert nat.chains["KUBE-NODEPORTS"] == []
    firewall = (
        '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL'
    )
    external = (
        "-m conntrack --ctstate NEW"
        ' -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES'
    )
    services = '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    # kube-proxy's iptablesJumpChains, each prepended: iptables-save lists them in reverse
    assert filt.chains == {
        "INPUT": [
            firewall,
            '-m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
            external,
        ],
        "KUBE-SERVICES": [],
        "KUBE-EXTERNAL-SERVICES": [],
        "KUBE-NODEPORTS": [],
        "KUBE-PROXY-FIREWALL": [],
        "KUBE-FORWARD": [
            "-m conntrack --ctstate INVALID -j DROP",
            '-m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
            '-m comment --comment "kubernetes forwarding conntrack rule"'
            " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        ],
        "FORWARD": [firewall, '-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD', services, external],
        "OUTPUT": [firewall, services],
    }


def test_current_three_endpoints_with_affinity() -> None:
    tables = kube_proxy_tables(lab("current", KUBERNETES), NODE)
    c = '"default/kubernetes:https"'
    cip = CLUSTER_IP_443
    assert rules(tables, "nat", "KUBE-SERVICES")[0] == f"{cip} -j {K8S}"
    arrow = [f'-m comment --comment "default/kubernetes:https -> 172.16.0.{i}:6443"' for i in (11, 12, 13)]
    recent = "--mask 255.255.255.255 --rsource"
    assert rules(tables, "nat", K8S) == [
        f"! -s 10.200.0.0/16 {cip} -j KUBE-MARK-MASQ",
        f"{arrow[0]} -m recent --rcheck --seconds 10800 --reap --name {SEP[0]} {recent} -j {SEP[0]}",
        f"{arrow[1]} -m recent --rcheck --seconds 10800 --reap --name {SEP[1]} {recent} -j {SEP[1]}",
        f"{arrow[2]} -m recent --rcheck --seconds 10800 --reap --name {SEP[2]} {recent} -j {SEP[2]}",
        f"{arrow[0]} -m statistic --mode random --probability 0.33333333349 -j {SEP[0]}",
        f"{arrow[1]} -m statistic --mode random --probability 0.50000000000 -j {SEP[1]}",
        f"{arrow[2]} -j {SEP[2]}",
    ]
    assert rules(tables, "nat", SEP[0]) == [
        f"-s 172.16.0.11/32 -m comment --comment {c} -j KUBE-MARK-MASQ",
        f"-p tcp -m comment --comment {c} -m recent --set --name {SEP[0]} {recent}"
        " -m tcp -j DNAT --to-destination 172.16.0.11:6443",
    ]


def test_2018_seed_003_shape() -> None:
    tables = kube_proxy_tables(lab("2018", KUBERNETES), NODE)
    c = '-m comment --comment "default/kubernetes:https"'
    cip = CLUSTER_IP_443
    assert rules(tables, "nat", "KUBE-SERVICES")[:2] == [
        f"! -s 10.200.0.0/16 {cip} -j KUBE-MARK-MASQ",
        f"{cip} -j {K8S}",
    ]
    recent = "--mask 255.255.255.255 --rsource"
    assert rules(tables, "nat", K8S) == [
        *(f"{c} -m recent --rcheck --seconds 10800 --reap --name {s} {recent} -j {s}" for s in SEP),
        f"{c} -m statistic --mode random --probability 0.33332999982 -j {SEP[0]}",
        f"{c} -m statistic --mode random --probability 0.50000000000 -j {SEP[1]}",
        f"{c} -j {SEP[2]}",
    ]
    assert rules(tables, "nat", SEP[2])[1] == (
        f"-p tcp {c} -m recent --set --name {SEP[2]} {recent} -m tcp -j DNAT --to-destination 172.16.0.13:6443"
    )
    assert rules(tables, "nat", "KUBE-POSTROUTING") == [
        '-m comment --comment "kubernetes service traffic requiring SNAT" -m mark --mark 0x4000/0x4000 -j MASQUERADE'
    ]


def test_2018_seed_004_lines_verbatim() -> None:
    nat, filt = kube_proxy_tables(lab("2018", KUBE_DNS, NGINX), NODE)
    saved = {f"-A {chain} {rule}" for chain, rs in nat.chains.items() for rule in rs}
    seed = """\
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.32.0.10/32 -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp cluster IP" -m tcp --dport 53 -j KUBE-SVC-ERIFXISQEP7F7OF4
-A KUBE-SVC-ERIFXISQEP7F7OF4 -m comment --comment "kube-system/kube-dns:dns-tcp" -j KUBE-SEP-32LPCMGYG6ODGN3H
-A KUBE-SEP-32LPCMGYG6ODGN3H -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp" -m tcp -j DNAT --to-destination 10.200.0.27:53
-A KUBE-SERVICES -d 10.32.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU
-A KUBE-SVC-TCOU7JCQXEZGVUNU -m comment --comment "kube-system/kube-dns:dns" -j KUBE-SEP-LRUTK6XRXU43VLIG
-A KUBE-SEP-LRUTK6XRXU43VLIG -p udp -m comment --comment "kube-system/kube-dns:dns" -m udp -j DNAT --to-destination 10.200.0.27:53
-A KUBE-NODEPORTS -p tcp -m comment --comment "default/nginx:" -m tcp --dport 31088 -j KUBE-SVC-4N57TFCL4MD7ZTDA
-A KUBE-SVC-4N57TFCL4MD7ZTDA -m comment --comment "default/nginx:" -j KUBE-SEP-UGTFMET44DQG7H7H
-A KUBE-SEP-UGTFMET44DQG7H7H -p tcp -m comment --comment "default/nginx:" -m tcp -j DNAT --to-destination 10.200.1.18:80
"""  # noqa: E501  (seed 004, as printed there)
    assert set(seed.splitlines()) <= saved
    # 2018: node ports are marked for SNAT in KUBE-NODEPORTS itself, no KUBE-EXT chain
    assert nat.chains["KUBE-NODEPORTS"][0].endswith("--dport 31088 -j KUBE-MARK-MASQ")
    assert not any(chain.startswith("KUBE-EXT-") for chain in nat.chains)
    assert filt.chains["FORWARD"] == ['-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD']


def test_current_nodeport_goes_through_ext() -> None:
    nat, _ = kube_proxy_tables(lab("current", NGINX), NODE)
    svc, ext = svc_chain("default/nginx", "tcp"), ext_chain("default/nginx", "tcp")
    assert nat.chains["KUBE-NODEPORTS"] == [
        f'-p tcp -m comment --comment "default/nginx" -m tcp --dport 31088 -j {ext}'
    ]
    assert nat.chains[ext] == [
        '-m comment --comment "masquerade traffic for default/nginx external destinations" -j KUBE-MARK-MASQ',
        f"-j {svc}",
    ]
    # single endpoint: no statistic match
    sep = sep_chain("default/nginx", "tcp", "10.200.1.18:80")
    assert nat.chains[svc][-1] == f'-m comment --comment "default/nginx -> 10.200.1.18:80" -j {sep}'


def test_udp_port() -> None:
    nat, _ = kube_proxy_tables(lab("current", KUBE_DNS), NODE)
    sep = sep_chain("kube-system/kube-dns:dns", "udp", "10.200.0.27:53")
    assert nat.chains[sep][1] == (
        '-p udp -m comment --comment "kube-system/kube-dns:dns" -m udp -j DNAT --to-destination 10.200.0.27:53'
    )
    assert nat.chains["KUBE-SERVICES"][0].startswith("-d 10.32.0.10/32 -p udp ")


@pytest.mark.parametrize("style", ["current", "2018"])
def test_no_endpoints_reject(style: ProxyStyle) -> None:
    nat, filt = kube_proxy_tables(lab(style, EMPTY), NODE)
    assert filt.chains["KUBE-SERVICES"] == [
        '-d 10.32.0.99/32 -p tcp -m comment --comment "default/empty:http has no endpoints"'
        " -m tcp --dport 8080 -j REJECT --reject-with icmp-port-unreachable"
    ]
    assert svc_chain("default/empty:http", "tcp") not in nat.chains
    assert len(nat.chains["KUBE-SERVICES"]) == 1  # only the nodeports tail


def test_nodeports_rule_is_last() -> None:
    nat, _ = kube_proxy_tables(lab("current", KUBERNETES, KUBE_DNS, NGINX), NODE)
    assert nat.chains["KUBE-SERVICES"][-1].endswith("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
    assert len(nat.chains["KUBE-SERVICES"]) == 5


@pytest.mark.parametrize("style", ["current", "2018"])
def test_rendered_round_trip(style: ProxyStyle) -> None:
    tables = kube_proxy_tables(lab(style, KUBERNETES, KUBE_DNS, NGINX, EMPTY), NODE)
    assert normalise(parse_save(render_restore(tables))) == normalise({t.name: t for t in tables})

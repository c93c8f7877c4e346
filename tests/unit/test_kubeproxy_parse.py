"""kube-proxy's rules read back (compile.kubeproxy.parse): on real iptables-save output, and as the
exact reverse of the generator for every shipped lab in both styles."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from labbuilder.compile.kubeproxy import ServicePortRules, kube_proxy_tables, parse_service_rules, rule_options
from labbuilder.compile.kubeproxy.names import CLUSTER_IP, EXTERNAL, NO_ENDPOINTS, split_service_port_name
from labbuilder.compile.netfilter import parse_save, render_restore
from labbuilder.spec.lab_file import resolve_file
from labbuilder.spec.model import Lab, ProxyStyle
from tests.conftest import LABS
from tests.unit.captured import IPTABLES_2018_NAT, IPTABLES_CURRENT

SHIPPED = sorted(p.stem for p in LABS.glob("*.yaml"))


def by_spn(rules: list[ServicePortRules]) -> dict[str, ServicePortRules]:
    return {f"{r.ref}:{r.port_name}/{r.protocol}": r for r in rules}


# -- the shared vocabulary ------------------------------------------------------------------------
def test_comments_read_back_what_they_write():
    for kind in (CLUSTER_IP, NO_ENDPOINTS, EXTERNAL):
        assert kind.read(kind.write("default/nginx:")) == "default/nginx:"
    assert CLUSTER_IP.write("default/nginx") == "default/nginx cluster IP"
    assert EXTERNAL.write("default/nginx") == "masquerade traffic for default/nginx external destinations"
    assert CLUSTER_IP.read("default/nginx has no endpoints") is None
    assert CLUSTER_IP.read("kubernetes service portals") is None
    assert CLUSTER_IP.read(" cluster IP") is None  # no service port name at all
    assert NO_ENDPOINTS.read("a has no endpoints") is None  # no namespace: not a service port name


def test_service_port_names_split():
    assert split_service_port_name("default/kubernetes:https") == ("default", "kubernetes", "https")
    assert split_service_port_name("default/nginx") == ("default", "nginx", "")
    assert split_service_port_name("default/nginx:") == ("default", "nginx", "")  # 2018


# -- iptables-save options -------------------------------------------------------------------------
def test_rule_options_quoting_and_negation():
    rule = (
        '! -s 10.200.0.0/16 -d 10.32.0.2/32 -p tcp -m comment --comment "default/nginx cluster IP" '
        "-m tcp --dport 80 -j KUBE-MARK-MASQ"
    )
    options = rule_options(rule)
    assert options["!-s"] == "10.200.0.0/16" and "-s" not in options
    assert (options["-d"], options["--comment"], options["--dport"]) == (
        "10.32.0.2/32",
        "default/nginx cluster IP",
        "80",
    )
    cni = rule_options('-s 10.200.0.2/32 -m comment --comment "name: \\"bridge\\" id: \\"2a3b\\"" -j CNI-48db')
    assert cni["--comment"] == 'name: "bridge" id: "2a3b"'
    assert rule_options("-j MASQUERADE --random-fully") == {"-j": "MASQUERADE", "--random-fully": ""}


# -- real iptables-save output ----------------------------------------------------------------------
def test_services_from_a_current_kube_proxy():
    rules = by_spn(parse_service_rules(parse_save(IPTABLES_CURRENT)))
    assert set(rules) == {
        "default/kubernetes:https/TCP",
        "kube-system/kube-dns:dns/UDP",
        "kube-system/kube-dns:dns-tcp/TCP",
        "kube-system/kube-dns:metrics/TCP",
        "default/nginx:/TCP",
    }
    nginx = rules["default/nginx:/TCP"]
    assert (nginx.cluster_ip, nginx.port, nginx.node_port) == (IPv4Address("10.32.0.2"), 80, 31088)
    assert nginx.endpoints == ("10.200.0.2:80", "10.200.1.2:80", "10.200.2.2:80")
    assert nginx.chain == "KUBE-SVC-2CMXP7HKUVJN7L6M"
    kubernetes = rules["default/kubernetes:https/TCP"]
    assert (kubernetes.port, kubernetes.node_port) == (443, None)
    assert kubernetes.endpoints == ("10.240.0.10:6443", "10.240.0.11:6443", "10.240.0.12:6443")
    assert rules["kube-system/kube-dns:dns/UDP"].endpoints == ("10.200.0.4:53",)


def test_services_from_a_2018_kube_proxy_with_client_ip_affinity():
    rules = by_spn(parse_service_rules(parse_save(IPTABLES_2018_NAT)))
    assert len(rules) == 4  # the KUBE-MARK-MASQ rules of KUBE-SERVICES are no services
    kubernetes = rules["default/kubernetes:https/TCP"]
    # Each endpoint is jumped to twice (recent, then statistic): listed once.
    assert kubernetes.endpoints == ("172.16.0.11:6443", "172.16.0.12:6443", "172.16.0.13:6443")
    assert kubernetes.cluster_ip == IPv4Address("192.168.255.1")


def test_rules_that_are_no_service_ports_are_skipped():
    text = (
        "*nat\n"
        '-A KUBE-SERVICES -d 10.32.0.9/32 -p tcp -m comment --comment "some note" -m tcp --dport 80 -j KUBE-SVC-X\n'
        '-A KUBE-SERVICES -p tcp -m comment --comment "default/a cluster IP" -m tcp --dport 80 -j KUBE-SVC-Y\n'
        '-A KUBE-SERVICES -d 10.32.0.9/32 -p tcp -m comment --comment "default/a cluster IP" -j KUBE-SVC-Z\n'
        "COMMIT\n"
    )
    assert parse_service_rules(parse_save(text)) == []  # no service port name, no IP, no port


# -- the round trip: generate, render, parse back ----------------------------------------------------
def shipped(name: str, style: ProxyStyle) -> Lab:
    return replace(resolve_file(str(LABS / f"{name}.yaml"))[1].lab, proxy_style=style)


def without_endpoints(lab: Lab) -> Lab:
    return replace(lab, services=tuple(replace(svc, endpoints={}) for svc in lab.services))


def planned(lab: Lab, node: str) -> list[tuple[object, ...]]:
    """The model's service ports on `node`, in the shape the parser recovers. A port with no endpoints
    has its node port in filter KUBE-EXTERNAL-SERVICES' REJECT (current), or nowhere (2018: rejected
    by cluster IP alone); under internalTrafficPolicy Local the cluster IP leads to the node's own."""
    current = lab.proxy_style == "current"
    ports = []
    for svc in lab.services:
        if svc.headless:
            continue
        for port in svc.ports:
            endpoints = svc.endpoints.get(port.name or str(port.port), ())
            if current and svc.internal_local:
                endpoints = tuple(e for e in endpoints if e.node == node)
            node_port = port.node_port if endpoints or current else None
            addresses = tuple(f"{e.ip}:{e.port}" for e in endpoints)
            ports.append(
                (svc.namespace, svc.name, port.name, port.protocol, svc.cluster_ip, port.port, node_port, addresses)
            )
    return ports


def recovered(lab: Lab) -> dict[str, list[tuple[object, ...]]]:
    """Per node: the service ports parsed back from its rendered kube-proxy tables."""
    out = {}
    for node in lab.nodes:
        saved = render_restore(kube_proxy_tables(lab, node))
        out[node.name] = [
            (r.namespace, r.name, r.port_name, r.protocol, r.cluster_ip, r.port, r.node_port, r.endpoints)
            for r in parse_service_rules(parse_save(saved))
        ]
    return out


def ordered(ports: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return sorted(ports, key=lambda p: p[:4])  # (namespace, name, port name, protocol) is unique


@pytest.mark.parametrize("style", ["current", "2018"])
@pytest.mark.parametrize("name", SHIPPED)
def test_round_trip_recovers_the_model_s_services(name: str, style: ProxyStyle):
    lab = shipped(name, style)
    assert lab.services, name
    for node, ports in recovered(lab).items():
        assert ordered(ports) == ordered(planned(lab, node)), node


@pytest.mark.parametrize("style", ["current", "2018"])
@pytest.mark.parametrize("name", SHIPPED)
def test_round_trip_of_ports_without_endpoints(name: str, style: ProxyStyle):
    lab = without_endpoints(shipped(name, style))
    for node, ports in recovered(lab).items():
        assert ordered(ports) == ordered(planned(lab, node)), node
        assert all(p[-1] == () for p in ports)


def test_the_round_trip_covers_node_ports_affinity_and_both_protocols():
    """What the shipped labs exercise, so the round trip above means something."""
    labs = [shipped(name, "current") for name in SHIPPED]
    ports = [(svc, port) for lab in labs for svc in lab.services for port in svc.ports]
    assert any(port.node_port for _, port in ports)
    assert any(svc.session_affinity for svc, _ in ports)
    assert {port.protocol for _, port in ports} == {"TCP", "UDP"}
    assert any(not port.name for _, port in ports) and any(port.name for _, port in ports)
    assert any(len(svc.endpoints.get(port.name or str(port.port), ())) > 1 for svc, port in ports)

"""The rest of the Service API in the model: traffic policies, externalIPs, LoadBalancer addresses,
named target ports, SCTP against the host kernel — resolved and checked with located messages."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from labbuilder.engine.kernel import host_kernel
from labbuilder.errors import SpecError
from labbuilder.spec.load import load_text
from labbuilder.spec.model import HostKernel, PodPort
from labbuilder.spec.resolve import build_model

BASE = """name: t
nodes: [{name: c, role: controller}, {name: w0}, {name: w1}]
loadBalancer: {range: 10.240.0.200/29}
workloads:
  - {name: web, replicas: 2, ports: [{name: http, port: 8080}, {name: admin, port: 9090}]}
  - {name: old, labels: {app: web}, ports: [{name: http, port: 8000}]}
"""


def resolve(text: str, kernel: HostKernel | None = None):
    return build_model(load_text(text, "lab.yaml"), kernel)


def errors_of(text: str, kernel: HostKernel | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        resolve(text, kernel)
    return [str(p) for p in info.value.problems if not p.warning]


def services(text: str) -> dict:
    return {s.name: s for s in resolve(text).lab.services}


def test_load_balancer_ips_come_from_the_range_in_order_or_as_given():
    found = services(
        BASE
        + """services:
  - {name: a, type: LoadBalancer, selector: {app: web}, ports: [{port: 80, targetPort: http}]}
  - {name: b, type: LoadBalancer, loadBalancerIP: 10.240.0.201, selector: {app: web}, ports: [{port: 80}]}
  - {name: c, type: LoadBalancer, selector: {app: web}, ports: [{port: 80}],
     loadBalancerSourceRanges: [192.0.2.0/24]}
"""
    )
    # b asked for .201 first; a and c take the next free hosts of 10.240.0.200/29 in file order
    assert [found[n].load_balancer_ips for n in "abc"] == [
        (IPv4Address("10.240.0.202"),),
        (IPv4Address("10.240.0.201"),),
        (IPv4Address("10.240.0.203"),),
    ]
    assert found["c"].load_balancer_source_ranges == (IPv4Network("192.0.2.0/24"),)
    # a LoadBalancer has node ports, allocated from the bottom of 30000-32767 when not given
    assert [p.node_port for n in "abc" for p in found[n].ports] == [30000, 30001, 30002]
    assert resolve(BASE).lab.load_balancer.range == IPv4Network("10.240.0.200/29")


def test_a_load_balancer_without_a_range_stays_pending_with_a_warning():
    text = BASE.replace("loadBalancer: {range: 10.240.0.200/29}\n", "") + (
        "services: [{name: a, type: LoadBalancer, selector: {app: web}, ports: [{port: 80}]}]\n"
    )
    resolved = resolve(text)
    [svc] = [s for s in resolved.lab.services if s.name == "a"]
    assert svc.load_balancer_ips == ()
    assert [str(w) for w in resolved.warnings] == [
        "lab.yaml:6:22: warning: no loadBalancer.range: default/a keeps EXTERNAL-IP <pending> (add addresses)"
    ]


def test_local_policies_and_health_check_node_port():
    found = services(
        BASE
        + """services:
  - {name: np, type: NodePort, externalTrafficPolicy: Local, selector: {app: web},
     ports: [{port: 80, targetPort: http, nodePort: 30000}]}
  - {name: lb, type: LoadBalancer, externalTrafficPolicy: Local, internalTrafficPolicy: Local,
     selector: {app: web}, ports: [{port: 80, targetPort: http}]}
"""
    )
    assert (found["np"].external_local, found["np"].health_check_node_port) == (True, None)
    assert found["lb"].external_local and found["lb"].internal_local
    assert [p.node_port for p in found["lb"].ports] == [30001]  # 30000 is taken by np
    assert found["lb"].health_check_node_port == 30002


def test_named_target_ports_resolve_per_pod():
    found = services(
        BASE
        + """services:
  - {name: web, selector: {app: web}, ports: [{name: http, port: 80, targetPort: http},
                                          {name: admin, port: 81, targetPort: admin}]}
"""
    )
    web = found["web"]
    assert web.ports[0].target_port == "http"
    # the web pods name 8080 "http", the old pod names 8000 so; only the web pods have "admin"
    by_port = {name: sorted(e.port for e in eps) for name, eps in web.endpoints.items()}
    assert by_port == {"http": [8000, 8080, 8080], "admin": [9090, 9090]}
    pod_ports = {p.workload: p.ports for p in resolve(BASE).lab.pods}
    assert pod_ports["web"] == (PodPort(8080, "TCP", "http"), PodPort(9090, "TCP", "admin"))


def test_a_target_port_name_no_pod_has_is_a_warning():
    text = BASE + "services: [{name: s, selector: {app: web}, ports: [{port: 80, targetPort: grpc}]}]\n"
    resolved = resolve(text)
    assert [str(w) for w in resolved.warnings] == [
        "lab.yaml:7:63: warning: no selected pod has a TCP port named 'grpc' "
        "(name the port in the workload's ports: [{name: ..., port: ...}])"
    ]
    assert next(s for s in resolved.lab.services if s.name == "s").endpoints == {"80": ()}


def test_sctp_is_refused_where_the_host_kernel_lacks_it():
    text = BASE + "services: [{name: s, selector: {app: web}, ports: [{port: 80, protocol: SCTP}]}]\n"
    assert errors_of(text, HostKernel(sctp=False)) == [
        "lab.yaml:7:63: protocol SCTP needs the host kernel's sctp module, and this host has none "
        "(/proc/net/sctp is absent) (load it on the host (modprobe sctp) or use TCP or UDP)"
    ]
    svc = next(s for s in resolve(text, HostKernel(sctp=True)).lab.services if s.name == "s")
    assert svc.ports[0].protocol == "SCTP"


def test_host_kernel_reads_proc(tmp_path: Path):
    assert host_kernel(tmp_path) == HostKernel(sctp=False)
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "sctp").mkdir()
    assert host_kernel(tmp_path) == HostKernel(sctp=True)


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        (
            "{name: s, externalTrafficPolicy: Local, selector: {app: web}, ports: [{port: 80}]}",
            "lab.yaml:7:22: externalTrafficPolicy may only be set for externally-accessible services "
            "(use type: NodePort or LoadBalancer, or give externalIPs)",
        ),
        (
            "{name: s, clusterIP: None, type: LoadBalancer, ports: [{port: 80}]}",
            "lab.yaml:7:22: clusterIP may not be None for a LoadBalancer service",
        ),
        (
            "{name: s, loadBalancerSourceRanges: [10.0.0.0/8], ports: [{port: 80}]}",
            "lab.yaml:7:22: loadBalancerSourceRanges given on a ClusterIP service (set type: LoadBalancer)",
        ),
        (
            "{name: s, type: LoadBalancer, loadBalancerIP: 10.240.0.10, ports: [{port: 80}]}",
            "lab.yaml:7:42: loadBalancerIP 10.240.0.10 is outside loadBalancer.range 10.240.0.200/29",
        ),
        (
            "{name: s, externalIPs: [10.200.0.7], ports: [{port: 80}]}",
            "lab.yaml:7:36: externalIP 10.200.0.7 is inside cluster.podCIDR",
        ),
        (
            "{name: s, externalIPs: [10.240.0.3], ports: [{port: 80}]}",
            "lab.yaml:7:36: externalIP 10.240.0.3 is the address of node w0",
        ),
    ],
)
def test_service_api_mistakes_are_located(service: str, expected: str):
    [error] = errors_of(BASE + f"services: [{service}]\n")
    assert error.startswith(expected)


@pytest.mark.parametrize(
    ("range_", "expected"),
    [
        ("10.200.0.0/24", "lab.yaml:3:16: 10.200.0.0/24 overlaps 10.200.0.0/16 (cluster.podCIDR)"),
        ("10.240.0.0/30", "lab.yaml:3:16: 10.240.0.0/30 holds 10.240.0.1, the address of the router"),
        ("10.240.0.201/29", "lab.yaml:3:16: 10.240.0.201/29 has host bits set (did you mean 10.240.0.200/29?)"),
    ],
)
def test_a_bad_load_balancer_range(range_: str, expected: str):
    [error] = errors_of(BASE.replace("10.240.0.200/29", range_))
    assert error.startswith(expected)


def test_the_2018_style_refuses_what_it_cannot_render():
    text = BASE.replace("nodes:", "kubeProxy: {style: '2018'}\nnodes:") + (
        "services: [{name: s, type: LoadBalancer, externalIPs: [192.0.2.1], ports: [{port: 80}]}]\n"
    )
    errors = errors_of(text)
    assert errors == [
        "lab.yaml:8:42: externalIPs is rendered in current kube-proxy's shapes only (use kubeProxy.style: current)",
        "lab.yaml:8:22: type: LoadBalancer is rendered in current kube-proxy's shapes only "
        "(use kubeProxy.style: current)",
    ]


# -- the router's routes and kubectl's views ---------------------------------------------------------
def test_the_router_routes_each_address_to_the_node_metallb_would_elect():
    import hashlib

    from labbuilder.compile import announce
    from labbuilder.compile.ops import Route
    from labbuilder.compile.plan import compile_plan
    from labbuilder.spec.load import load

    lab = build_model(load("services")).lab
    routes = {ip: node.name for ip, node in announce.routes(lab)}
    # Local: only worker-0 runs a solo pod, whatever the hash says
    assert routes[IPv4Address("10.240.0.203")] == routes[IPv4Address("192.0.2.10")] == "worker-0"
    # Cluster: the worker first by sha256(node#ip), as MetalLB's layer-2 speakers sort themselves
    ip = IPv4Address("10.240.0.201")
    elected = min(("worker-0", "worker-1"), key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).digest())
    assert routes[ip] == elected
    steps = compile_plan(lab).steps["router"]
    assert Route(steps[0].ns, "10.240.0.201/32", via=str(lab.node(elected).ip)) in steps


def test_kubectl_shows_external_ips_as_kubectl_does():
    from labbuilder.observe.readback import ServiceView
    from labbuilder.present.kubectl import external_ip, service_object

    def view(kind: str, external=(), balanced=()) -> ServiceView:
        return ServiceView("default", "s", kind, "10.32.0.5", (), {}, True, external, balanced)

    assert external_ip(view("ClusterIP")) == "<none>"
    assert external_ip(view("NodePort", ("192.0.2.10",))) == "192.0.2.10"
    assert external_ip(view("LoadBalancer")) == "<pending>"
    assert external_ip(view("LoadBalancer", ("192.0.2.10",), ("10.240.0.201",))) == "10.240.0.201,192.0.2.10"
    many = view("LoadBalancer", (), ("10.240.0.201", "10.240.0.202"))
    assert external_ip(many) == "10.240.0.201,..."  # loadBalancerStatusStringer: 16 characters unless wide
    assert external_ip(many, wide=True) == "10.240.0.201,10.240.0.202"
    obj = service_object(view("LoadBalancer", (), ("10.240.0.201",)), None)
    assert obj["status"] == {"loadBalancer": {"ingress": [{"ip": "10.240.0.201", "ipMode": "VIP"}]}}

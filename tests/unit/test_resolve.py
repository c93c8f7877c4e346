"""Semantic validation and address resolution: what the schema cannot say."""

from __future__ import annotations

import dataclasses
import time
from ipaddress import IPv4Address, IPv4Network

import pytest

from labbuilder.errors import SpecError
from labbuilder.spec import defaults
from labbuilder.spec.load import lab_schema, load, load_text
from labbuilder.spec.model import Check, Cluster, Cni, PodPort, Service, ServicePort
from labbuilder.spec.resolve import build_model


def resolve(text: str):
    return build_model(load_text(text, "lab.yaml"))


def errors_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        resolve(text)
    return [str(p) for p in info.value.problems if not p.warning]


def test_kthw_addressing_matches_the_hard_way():
    lab = build_model(load("kthw")).lab
    assert lab.network.gateway == IPv4Address("10.240.0.1")
    workers = [n for n in lab.nodes if n.role == "worker"]
    assert [(n.name, str(n.ip), str(n.pod_cidr)) for n in workers] == [
        ("worker-0", "10.240.0.20", "10.200.0.0/24"),
        ("worker-1", "10.240.0.21", "10.200.1.0/24"),
        ("worker-2", "10.240.0.22", "10.200.2.0/24"),
    ]
    assert all(not n.runs_pods for n in lab.nodes if n.role == "controller")
    for worker in workers:
        assert len(worker.pods) >= 2
        assert [p.ip for p in worker.pods] == [worker.pod_gateway + 1 + i for i in range(len(worker.pods))]
    kubernetes = lab.services[0]
    assert (kubernetes.ref, str(kubernetes.cluster_ip)) == ("default/kubernetes", "10.32.0.1")
    assert [f"{e.ip}:{e.port}" for e in kubernetes.endpoints["https"]] == [
        "10.240.0.10:6443",
        "10.240.0.11:6443",
        "10.240.0.12:6443",
    ]


def test_missing_addresses_are_allocated_in_order_after_the_router():
    lab = resolve("name: t\nnodes: [{name: a}, {name: b, ip: 10.240.0.3}, {name: c}]\n").lab
    assert [str(n.ip) for n in lab.nodes] == ["10.240.0.2", "10.240.0.3", "10.240.0.4"]
    assert [str(n.pod_cidr) for n in lab.nodes] == ["10.200.0.0/24", "10.200.1.0/24", "10.200.2.0/24"]


def test_given_pod_cidrs_are_skipped_by_allocation():
    lab = resolve("name: t\nnodes: [{name: a}, {name: b, podCIDR: 10.200.0.0/24}]\n").lab
    assert [str(n.pod_cidr) for n in lab.nodes] == ["10.200.1.0/24", "10.200.0.0/24"]


def test_overlapping_ranges_are_located_errors():
    text = "name: t\ncluster: {serviceCIDR: 10.200.5.0/24, dnsIP: 10.200.5.10}\nnodes: [{name: a}]\n"
    assert errors_of(text) == [
        "lab.yaml:2:11: 10.200.5.0/24 overlaps 10.200.0.0/16 (cluster.podCIDR) "
        "(node, pod and service ranges must be disjoint)"
    ]


def test_host_bits_get_a_did_you_mean_hint():
    assert errors_of("name: t\nnetwork: {cidr: 10.240.0.5/24}\nnodes: [{name: a}]\n") == [
        "lab.yaml:2:11: 10.240.0.5/24 has host bits set (did you mean 10.240.0.0/24?)"
    ]


def test_pod_cidr_outside_cluster_and_shared_pod_cidrs():
    text = (
        "name: t\nnodes:\n  - {name: a, podCIDR: 10.100.0.0/24}\n"
        "  - {name: b, podCIDR: 10.200.0.0/24}\n  - {name: c, podCIDR: 10.200.0.0/25}\n"
    )
    errors = errors_of(text)
    assert errors[0].startswith("lab.yaml:3:15: podCIDR 10.100.0.0/24 is outside the cluster podCIDR")
    assert errors[1] == (
        "lab.yaml:5:15: podCIDR 10.200.0.0/25 overlaps 10.200.0.0/24 of b (each node needs its own podCIDR)"
    )


def test_duplicate_names_and_addresses():
    text = "name: t\nnodes:\n  - {name: a, ip: 10.240.0.9}\n  - {name: a, ip: 10.240.0.9}\n"
    errors = errors_of(text)
    assert "lab.yaml:4:6: node name 'a' is used 2 times (node names must be unique)" in errors
    assert "lab.yaml:4:15: 10.240.0.9 is already the address of a (node addresses must be unique)" in errors


def test_node_on_the_router_address_or_outside_the_network():
    errors = errors_of("name: t\nnodes: [{name: a, ip: 10.240.0.1}, {name: b, ip: 10.9.0.1}]\n")
    assert errors == [
        "lab.yaml:2:19: 10.240.0.1 is the router's address (the router holds 10.240.0.1)",
        "lab.yaml:2:46: 10.9.0.1 is not a host address of the node network 10.240.0.0/24",
    ]


def test_pod_range_too_small_for_its_pods():
    text = "name: t\nnodes: [{name: a, podCIDR: 10.200.0.0/29}]\nworkloads: [{name: web, replicas: 5}]\n"
    [error] = errors_of(text)  # 5 pods and the cluster DNS pod
    assert error.startswith("lab.yaml:2:9: node a: podCIDR 10.200.0.0/29 has room for 5 more address(es), 6 needed")


def test_node_network_exhaustion():
    text = "name: t\nnetwork: {cidr: 10.240.0.0/29}\nnodes: [" + ", ".join(f"{{name: n{i}}}" for i in range(7)) + "]\n"
    [error] = errors_of(text)
    assert "node network: 10.240.0.0/29 has room for 5 more address(es), 7 needed" in error


def test_service_validation_and_selector_warning():
    text = """name: t
nodes: [{name: a}]
workloads: [{name: web, replicas: 2, labels: {app: web}, port: 80}]
services:
  - {name: web, clusterIP: 10.99.0.1, selector: {app: web}, ports: [{port: 80}]}
  - {name: ghost, selector: {app: nobody}, ports: [{port: 80, nodePort: 31000}]}
"""
    errors = errors_of(text)
    assert errors[0].startswith("lab.yaml:5:17: clusterIP 10.99.0.1 is outside serviceCIDR 10.32.0.0/24")
    assert errors[1] == "lab.yaml:6:63: nodePort given on a ClusterIP service (set type: NodePort)"
    fixed = text.replace("clusterIP: 10.99.0.1", "clusterIP: 10.32.0.50").replace(
        "ports: [{port: 80, node", "type: NodePort, ports: [{port: 80, node"
    )
    resolved = resolve(fixed)
    assert [str(w) for w in resolved.warnings] == [
        "lab.yaml:6:19: warning: selector {'app': 'nobody'} matches no pod "
        "(the service will have no endpoints and will reject connections)"
    ]
    services = {s.name: s for s in resolved.lab.services}
    assert str(services["web"].cluster_ip) == "10.32.0.50"
    assert [str(e.ip) for e in services["web"].endpoints["80"]] == ["10.200.0.2", "10.200.0.3"]
    assert str(services["ghost"].cluster_ip) == "10.32.0.2"  # .1 is kubernetes


def test_the_same_spec_resolves_to_the_same_lab():
    assert build_model(load("kthw")).lab == build_model(load("kthw")).lab


def test_workload_pods_spread_in_node_order_and_named_like_deployments():
    lab = resolve(
        "name: t\ncluster: {dns: false}\nnodes: [{name: a}, {name: b}]\nworkloads: [{name: web, replicas: 3}]\n"
    ).lab
    pods = lab.pods
    assert [p.node for p in pods] == ["a", "a", "b"]
    template = {p.name.rsplit("-", 1)[0] for p in pods}
    assert len(template) == 1 and template.pop().startswith("web-")
    assert all(len(p.name.split("-")[1]) == 10 and len(p.name.split("-")[2]) == 5 for p in pods)
    assert len({p.netns for p in pods}) == 3 and all(p.netns.startswith("cni-") for p in pods)
    assert all(p.host_veth.startswith("veth") and len(p.host_veth) == 12 for p in pods)
    assert IPv4Network("10.200.0.0/24") == lab.nodes[0].pod_cidr


def test_cluster_dns_pod_and_kube_dns_service():
    lab = resolve("name: t\nnodes: [{name: a}, {name: b}]\nworkloads: [{name: web, replicas: 2}]\n").lab
    [dns_pod] = [p for p in lab.pods if p.app == "dns"]
    assert (dns_pod.namespace, dns_pod.node, dns_pod.app, str(dns_pod.ip)) == ("kube-system", "a", "dns", "10.200.0.3")
    assert dns_pod.name.startswith("coredns-")
    kube_dns = next(s for s in lab.services if s.ref == "kube-system/kube-dns")
    assert str(kube_dns.cluster_ip) == "10.32.0.10"
    assert [(p.name, p.protocol, p.port) for p in kube_dns.ports] == [
        ("dns", "UDP", 53),
        ("dns-tcp", "TCP", 53),
        ("metrics", "TCP", 9153),
    ]
    assert [str(e.ip) for e in kube_dns.endpoints["dns"]] == ["10.200.0.3"]


def test_a_file_entry_adjusts_the_kubernetes_service():
    text = (
        "name: t\nnodes: [{name: c0, role: controller}, {name: w}]\n"
        "services: [{name: kubernetes, sessionAffinity: ClientIP,\n"
        "            ports: [{name: https, port: 443, targetPort: 6443}]}]\n"
    )
    kubernetes = resolve(text).lab.services[0]
    assert (kubernetes.ref, str(kubernetes.cluster_ip), kubernetes.session_affinity) == (
        "default/kubernetes",
        "10.32.0.1",
        True,
    )
    assert [f"{e.ip}:{e.port}" for e in kubernetes.endpoints["https"]] == ["10.240.0.2:6443"]
    errors = errors_of(text.replace("sessionAffinity: ClientIP", "clusterIP: 10.32.0.7"))
    assert errors == [
        "lab.yaml:3:31: default/kubernetes always has clusterIP 10.32.0.1 (leave clusterIP out for this service)"
    ]


# -- defaults: one place, derived like kubeadm -----------------------------------------------------


def test_dns_and_kubernetes_addresses_follow_the_service_range():
    lab = resolve("name: t\ncluster: {serviceCIDR: 100.64.0.0/20}\nnodes: [{name: a}]\n").lab
    assert str(lab.cluster.dns_ip) == "100.64.0.10"
    services = {s.ref: str(s.cluster_ip) for s in lab.services}
    assert services == {"default/kubernetes": "100.64.0.1", "kube-system/kube-dns": "100.64.0.10"}


def _schema_defaults(schema: dict, node: dict, where: str, found: dict) -> None:
    """Every `default` in the schema, keyed like defaults.DEFAULTS ("services.*.ports.*")."""
    if "$ref" in node:
        node = {**schema["$defs"][node["$ref"].rsplit("/", 1)[1]], **node}
    for key, sub in node.get("properties", {}).items():
        target = schema["$defs"][sub["$ref"].rsplit("/", 1)[1]] if "$ref" in sub else sub
        if "default" in sub or "default" in target:
            found.setdefault(where, {})[key] = sub.get("default", target.get("default"))
        inner = f"{where}.{key}" if where else key
        if target.get("type") == "array":
            _schema_defaults(schema, target["items"], f"{inner}.*", found)
        elif target.get("type") == "object":
            _schema_defaults(schema, target, inner, found)


def test_the_schema_defaults_are_the_resolver_defaults():
    schema = lab_schema()
    found: dict[str, dict] = {}
    _schema_defaults(schema, schema, "", found)
    assert found == {where: dict(values) for where, values in defaults.DEFAULTS.items()}


def test_the_model_dataclass_defaults_agree():
    """model.py keeps dataclass defaults for code that builds models by hand; they must not drift."""
    cni, cluster = defaults.DEFAULTS["cni"], defaults.DEFAULTS["cluster"]
    model_cni = Cni()
    assert (
        model_cni.mode,
        model_cni.bridge,
        model_cni.ip_masq,
        model_cni.routes,
        model_cni.mtu,
        model_cni.hairpin,
    ) == (
        cni["mode"],
        cni["bridge"],
        cni["ipMasq"],
        cni["routes"],
        cni["mtu"],
        cni["hairpinMode"],
    )
    fields = {f.name: f.default for f in dataclasses.fields(Cluster)}
    assert (fields["domain"], fields["dns"]) == (cluster["domain"], cluster["dns"])
    service = {f.name: f.default for f in dataclasses.fields(Service)}
    assert service["affinity_timeout"] == defaults.DEFAULTS["services.*"]["sessionAffinityTimeout"]
    assert PodPort(80).protocol == ServicePort(80, 80).protocol == defaults.DEFAULTS["services.*.ports.*"]["protocol"]
    assert Check("c").expect == defaults.DEFAULTS["checks.*"]["expect"]


# -- resolver corners: one located message each, never a crash ------------------------------------


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        (
            "{serviceCIDR: 10.32.0.0/29}",
            "lab.yaml:2:11: serviceCIDR 10.32.0.0/29 has no tenth address for the cluster DNS "
            "(use a /28 or larger, or set cluster.dnsIP)",
        ),
        (
            "{serviceCIDR: 255.255.255.255/32}",
            "lab.yaml:2:11: serviceCIDR 255.255.255.255/32 has no tenth address for the cluster DNS "
            "(use a /28 or larger, or set cluster.dnsIP)",
        ),
        (
            "{serviceCIDR: 10.32.0.0/32, dnsIP: 10.32.0.0}",
            "lab.yaml:2:11: serviceCIDR 10.32.0.0/32 has no room for the kubernetes and DNS services "
            "(use a /30 or larger)",
        ),
        (
            "{serviceCIDR: 100.64.0.0/20, dnsIP: 10.32.0.10}",
            "lab.yaml:2:39: dnsIP 10.32.0.10 is not a host address of serviceCIDR 100.64.0.0/20 (such as 100.64.0.10)",
        ),
        (
            "{serviceCIDR: 10.32.0.0/30, dnsIP: 10.32.0.1}",
            "lab.yaml:2:38: dnsIP 10.32.0.1 is the address of the kubernetes service (such as 10.32.0.2)",
        ),
        ("{serviceCIDR: 10.32.0.0/30, dnsIP: 10.32.0.3}", "lab.yaml:2:38: dnsIP 10.32.0.3 is not a host address"),
    ],
)
def test_service_range_corners(cluster, expected):
    [error] = errors_of(f"name: t\ncluster: {cluster}\nnodes: [{{name: a}}]\n")
    assert error.startswith(expected)


def test_a_small_service_range_with_a_dns_address_works():
    lab = resolve("name: t\ncluster: {serviceCIDR: 10.32.0.0/30, dnsIP: 10.32.0.2}\nnodes: [{name: a}]\n").lab
    assert [str(s.cluster_ip) for s in lab.services] == ["10.32.0.1", "10.32.0.2"]


def test_a_node_cannot_be_named_router():
    assert errors_of("name: t\nnodes: [{name: router}]\n") == [
        "lab.yaml:2:10: node name 'router' is reserved (the lab's router is named <lab>-router already)"
    ]


def test_a_node_range_without_room_for_pods_is_an_error_not_a_crash():
    [error] = errors_of(
        "name: t\nnetwork: {cidr: 10.0.0.0/24}\ncluster: {podCIDR: 255.255.255.0/24, nodeMaskSize: 30}\n"
        "nodes: [{name: a, podCIDR: 255.255.255.255/32}]\n"
    )
    assert error.startswith("lab.yaml:4:19: podCIDR 255.255.255.255/32 has no room for pods")


def test_names_given_twice():
    text = (
        "name: t\nnodes: [{name: a}]\nworkloads: [{name: w}, {name: w}]\n"
        "services: [{name: s, ports: [{port: 80}]}, {name: s, ports: [{port: 81}]}]\n"
    )
    assert errors_of(text) == [
        "lab.yaml:3:25: workload default/w is defined twice (rename one)",
        "lab.yaml:4:45: service default/s is defined twice (rename one)",
    ]


def test_service_ports_are_unique_like_the_api_server_wants():
    text = "name: t\nnodes: [{name: a}]\nservices: [{name: s, ports: [{name: a, port: 80}, {name: a, port: 81}]}]\n"
    assert errors_of(text) == ["lab.yaml:3:52: port name 'a' is used twice (port names are unique)"]


def test_a_name_from_the_command_line_is_checked():
    spec = load_text("name: t\nnodes: [{name: a}]\n", "lab.yaml")
    spec.data["name"] = "Not A Name"
    with pytest.raises(SpecError) as info:
        build_model(spec)
    assert str(info.value.problems[0]).startswith("lab.yaml:1:1: lab name 'Not A Name' is not valid")


def test_ten_thousand_nodes_resolve_in_well_under_a_second_each_stage():
    text = "name: big\nnetwork: {cidr: 10.0.0.0/16}\ncluster: {podCIDR: 10.128.0.0/9, nodeMaskSize: 26}\nnodes:\n"
    text += "".join(f"  - {{name: n{i}, podCIDR: 10.128.{i // 4 % 256}.{i % 4 * 64}/26}}\n" for i in range(0, 1000))
    text += "".join(f"  - {{name: n{i}}}\n" for i in range(1000, 10_000))
    start = time.perf_counter()
    lab = resolve(text).lab
    assert time.perf_counter() - start < 5  # it was 60 s with pairwise overlap checks
    cidrs = [n.pod_cidr for n in lab.nodes]
    assert len(set(cidrs)) == 10_000 and str(cidrs[1000]) == "10.128.250.0/26"


def test_a_service_selects_pods_of_its_own_namespace_only(tmp_path):
    """x/a and y/a both carry pod=a: the Service a in namespace x has x/a alone behind it."""
    from labbuilder.spec.lab_file import resolve_file
    from tests.conftest import ROOT

    text = (
        (ROOT / "tests/integration/labs/kr-bridge.yaml")
        .read_text()
        .replace("selector: {svc: xa}", "selector: {pod: a}")
    )
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    lab = resolve_file(str(path))[1].lab
    xa = next(p for p in lab.pods if p.namespace == "x" and p.labels["pod"] == "a")
    service = next(s for s in lab.services if s.ref == "x/a")
    assert [e.ip for eps in service.endpoints.values() for e in eps] == [xa.ip]

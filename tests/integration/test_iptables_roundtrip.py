"""Render kube-proxy tables, load them with the real iptables-restore in a node container and
check that iptables-save prints back exactly what was planned (no fuzzy matching)."""

from __future__ import annotations

import io
import secrets
import tarfile
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import docker
import pytest
from docker.models.containers import Container

from labbuilder.compile.kubeproxy import kube_proxy_tables, probability
from labbuilder.compile.netfilter import Table, normalise, parse_save, render_restore
from labbuilder.engine.image import ensure_image
from labbuilder.spec.model import Cluster, Cni, Endpoint, Lab, Node, NodeNetwork, ProxyStyle, Service, ServicePort

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def node() -> Iterator[Container]:
    """A node container from the real node image (built when missing), torn down afterwards."""
    client = docker.from_env()
    container = client.containers.run(
        ensure_image(client),
        ["sleep", "infinity"],
        name=f"kp-roundtrip-{secrets.token_hex(4)}",
        labels={"labbuilder.lab": "kp-roundtrip-test"},
        network_mode="none",
        cap_add=["NET_ADMIN", "NET_RAW", "SYS_ADMIN"],
        detach=True,
    )
    try:
        yield container
    finally:
        container.remove(force=True)


def run(container: Container, *cmd: str) -> str:
    code, out = container.exec_run(list(cmd), demux=True)
    stdout, stderr = (part.decode() if part else "" for part in out)
    assert code == 0, f"{cmd}: exit {code}: {stderr}"
    return stdout


def restore(container: Container, payload: str) -> None:
    data = payload.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("rules.v4")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert container.put_archive("/tmp", buf.getvalue())
    run(container, "iptables-restore", "/tmp/rules.v4")


def saved(container: Container) -> dict[str, dict[str, list[str]]]:
    text = run(container, "iptables-save", "-t", "nat") + run(container, "iptables-save", "-t", "filter")
    return normalise(parse_save(text))


def ep(ip: str, port: int) -> Endpoint:
    return Endpoint(IPv4Address(ip), port, None, ip)


def lab(style: ProxyStyle) -> Lab:
    three = tuple(ep(f"10.200.{i}.7", 8080) for i in range(3))
    services = (
        Service(
            "kubernetes",
            "default",
            "ClusterIP",
            IPv4Address("10.32.0.1"),
            (ServicePort(443, 6443, "TCP", "https"),),
            {},
            {"https": tuple(ep(f"10.240.0.1{i}", 6443) for i in range(3))},
            session_affinity=True,
        ),
        Service(
            "kube-dns",
            "kube-system",
            "ClusterIP",
            IPv4Address("10.32.0.10"),
            (ServicePort(53, 53, "UDP", "dns"), ServicePort(53, 53, "TCP", "dns-tcp")),
            {},
            {"dns": (ep("10.200.0.2", 53),), "dns-tcp": (ep("10.200.0.2", 53),)},
        ),
        Service(
            "web",
            "default",
            "NodePort",
            IPv4Address("10.32.0.80"),
            (ServicePort(80, 8080, node_port=30080),),
            {},
            {"80": three},
        ),
        Service("empty", "default", "ClusterIP", IPv4Address("10.32.0.99"), (ServicePort(81, 81, "UDP", "x"),), {}),
    )
    worker = Node("worker-0", "worker", IPv4Address("10.240.0.20"), IPv4Network("10.200.0.0/24"))
    return Lab(
        name="kp",
        network=NodeNetwork(IPv4Network("10.240.0.0/24"), IPv4Address("10.240.0.1")),
        cluster=Cluster(IPv4Network("10.200.0.0/16"), 24, IPv4Network("10.32.0.0/24"), IPv4Address("10.32.0.10")),
        cni=Cni(),
        nodes=(worker,),
        services=services,
        proxy_style=style,
    )


@pytest.mark.docker
@pytest.mark.parametrize("style", ["current", "2018"])
def test_kube_proxy_tables_round_trip(node: Container, style: ProxyStyle) -> None:
    model = lab(style)
    tables = kube_proxy_tables(model, model.nodes[0])
    payload = render_restore(tables)
    planned = normalise(parse_save(payload))
    assert planned == normalise({t.name: t for t in tables})
    restore(node, payload)
    first = saved(node)
    assert first == planned
    restore(node, payload)  # a full-table restore replaces, so applying again changes nothing
    assert saved(node) == first


@pytest.mark.docker
@pytest.mark.parametrize("style", ["current", "2018"])
def test_probabilities_as_the_kernel_stores_them(node: Container, style: ProxyStyle) -> None:
    # kube-proxy writes 1/(n-i) with %0.10f or %0.5f; what comes back is the u32-quantised value.
    nat = Table("nat")
    expected = []
    for n in range(2, 12):
        for i in range(n - 1):
            written = f"{1.0 / (n - i):0.{5 if style == '2018' else 10}f}"
            nat.add("KUBE-P", f"-m statistic --mode random --probability {written} -j RETURN")
            expected.append(f"-m statistic --mode random --probability {probability(i, n, style)} -j RETURN")
    restore(node, render_restore([nat, Table("filter")]))
    assert saved(node)["nat"]["KUBE-P"] == expected


@pytest.mark.docker
def test_service_api_tables_round_trip(node: Container) -> None:
    """LoadBalancer, externalIPs, Local policies, source ranges, REJECT and DROP: kube-proxy's
    upstream example (tests/unit/test_kubeproxy_services.py) as the real iptables-save prints it."""
    from tests.unit.test_kubeproxy_services import HERE, OVERALL

    tables = kube_proxy_tables(OVERALL, HERE)
    payload = render_restore(tables)
    restore(node, payload)
    assert saved(node) == normalise({t.name: t for t in tables})

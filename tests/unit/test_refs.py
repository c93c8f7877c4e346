"""The one grammar for places: every form resolves to the same namespace everywhere, and a
reference that names nothing, or several things, is an error that lists the candidates."""

from __future__ import annotations

import pytest

from labbuilder.spec import refs
from labbuilder.spec.lab_file import resolve_file
from labbuilder.spec.refs import RefError
from tests.conftest import LABS

LAB = resolve_file(str(LABS / "kthw.yaml"), "refs")[1].lab
NGINX1 = next(p for p in LAB.node("worker-1").pods if p.workload == "nginx")
BUSY0 = next(p for p in LAB.node("worker-0").pods if p.workload == "busybox")


@pytest.mark.parametrize(
    "ref",
    [
        NGINX1.name,  # a bare pod name
        f"pod/{NGINX1.name}",
        f"po/{NGINX1.name}",
        NGINX1.name[:-3],  # a unique prefix
        f"pod/{NGINX1.name[:-3]}",
        "nginx@worker-1",  # NAME@NODE
        "pod/nginx@worker-1",
        f"default/{NGINX1.name}",  # ns/name
        f"pod/default/{NGINX1.name}",
        f"worker-1/{NGINX1.name}",  # NODE/POD, as exec takes it
        "worker-1/nginx",
        str(NGINX1.ip),  # the address it holds
    ],
)
def test_every_form_of_a_pod_names_the_same_namespace(ref):
    place = refs.place(LAB, ref)
    assert (place.key, place.netns, place.pod) == ("worker-1", NGINX1.netns, NGINX1)
    assert place.ref == f"pod/{NGINX1.name}" and place.label == f"pod default/{NGINX1.name} on worker-1"


@pytest.mark.parametrize("ref", ["worker-2", "node/worker-2", "no/worker-2", "10.240.0.22"])
def test_nodes(ref):
    place = refs.place(LAB, ref)
    assert (place.key, place.netns, place.ip, place.label) == ("worker-2", None, "10.240.0.22", "node worker-2")


@pytest.mark.parametrize("ref", ["router", "node/router", "10.240.0.1"])
def test_the_router(ref):
    assert refs.place(LAB, ref) == refs.Place("router", None, "router", "router", "10.240.0.1")


def test_ambiguity_is_an_error_that_lists_the_candidates():
    with pytest.raises(RefError) as err:
        refs.place(LAB, "nginx")
    text = str(err.value)
    assert "'nginx' matches 3 pods" in text and f"{NGINX1.name}@worker-1" in text and "NAME@NODE" in text
    for pod in (p for p in LAB.pods if p.workload == "nginx"):
        assert pod.name in text


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("redis", "no node, pod or address 'redis'"),
        ("pod/redis", "no pod 'redis'"),
        ("redis@worker-0", "no pod 'redis' on worker-0"),
        ("nginx@worker-9", "has no node 'worker-9'"),
        ("node/worker-9", "has no node 'worker-9'"),
        ("worker-0/redis", "no pod 'redis' on worker-0"),
        ("10.9.9.9", "no namespace of lab refs holds 10.9.9.9"),
        ("service/nginx", "a service is not a place"),
        ("", "an empty reference"),
    ],
)
def test_unknown_places_say_what_exists(ref, message):
    with pytest.raises(RefError, match=message) as err:
        refs.place(LAB, ref)
    assert err.value.hint  # always a hint: the pods, the nodes, or the grammar


def test_targets_with_ports_and_protocols():
    dns = refs.target(LAB, "service/kube-dns")
    assert (dns.ip, dns.port, dns.protocol, dns.label) == ("10.32.0.10", 53, "udp", "service kube-system/kube-dns")
    assert str(refs.target(LAB, "svc/kube-dns.kube-system:53/tcp")) == "10.32.0.10:53/tcp"
    assert refs.target(LAB, "service/default/nginx").port == 80
    assert refs.target(LAB, "service/nginx:icmp").protocol == "icmp"
    assert str(refs.target(LAB, "node/worker-0:31088")) == "10.240.0.20:31088/tcp"
    assert refs.target(LAB, "node/controller-0").port == 6443  # a controller's apiserver
    assert refs.target(LAB, "nginx@worker-1").port == 80 and refs.target(LAB, "nginx@worker-1").place.pod == NGINX1
    assert refs.target(LAB, f"{BUSY0.name}").port is None  # a pod without ports
    assert str(refs.target(LAB, "10.32.0.2")) == "10.32.0.2 (ICMP echo)"  # a ClusterIP is an address too
    assert str(refs.target(LAB, "10.240.0.20:31088")) == "10.240.0.20:31088/tcp"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("10.0.0.1:8a", "cannot read the port"),
        ("10.0.0.1:70000", "out of range"),
        ("service/redis", "no service 'redis'"),
    ],
)
def test_bad_targets(ref, message):
    with pytest.raises(RefError, match=message):
        refs.target(LAB, ref)

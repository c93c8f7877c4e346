"""The node image on a real Docker engine: built (or found) once, then checked from a container."""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator

import docker
import pytest
from docker.models.containers import Container

from labbuilder.engine import image

pytestmark = pytest.mark.docker

TOOLS = [
    "ip", "iptables-save", "conntrack", "tcpdump", "ethtool", "brctl", "ping", "curl", "ps", "lsns",
    "nsenter", "busybox", "python3", "dnsmasq", "nc", "podserver",
]  # fmt: skip
LAB_LABEL = {"labbuilder.lab": "image-test"}


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    return docker.from_env()  # conftest fails the session early when there is no engine


@pytest.fixture(scope="module")
def tag(client: docker.DockerClient) -> str:
    progress: list[str] = []
    tag = image.ensure_image(client, on_progress=progress.append)  # builds only when missing
    assert tag == image.image_tag()
    assert image.image_exists(client, tag)
    return tag


@pytest.fixture(scope="module")
def node(client: docker.DockerClient, tag: str) -> Iterator[Container]:
    container = client.containers.run(
        tag,
        detach=True,
        network_mode="none",
        cap_add=["NET_ADMIN", "SYS_ADMIN", "NET_RAW"],
        labels=LAB_LABEL,
        name=f"labbuilder-image-test-{int(time.time() * 1000) % 10**8}",
    )
    try:
        yield container
    finally:
        container.remove(force=True)


def sh(container: Container, script: str, timeout: int = 20) -> tuple[int, str]:
    """Run a shell script in the container, bounded by `timeout` seconds."""
    code, out = container.exec_run(["timeout", str(timeout), "sh", "-c", script])
    return code, out.decode(errors="replace")


def test_image_is_labelled(client: docker.DockerClient, tag: str) -> None:
    attrs = client.images.get(tag).attrs
    assert attrs["Config"]["Labels"]["labbuilder.image"] == "node"
    assert attrs["Config"]["Labels"]["labbuilder.recipe"].startswith(tag.split(":")[1])
    assert attrs["Config"]["Cmd"] == ["/pause", "infinity"]


def test_tools_on_path(node: Container) -> None:
    code, out = sh(node, " ; ".join(f"command -v {t} >/dev/null || echo missing: {t}" for t in TOOLS))
    assert code == 0 and "missing" not in out, out


def test_pause_is_pid_1(node: Container) -> None:
    code, out = sh(node, "test -x /pause && ps -o pid=,args= -p 1")
    assert code == 0, out
    assert out.split() == ["1", "/pause", "infinity"]


def test_iptables_works_in_the_node(node: Container) -> None:
    code, out = sh(node, "iptables -t nat -N LB-TEST && iptables-save -t nat && iptables -t nat -X LB-TEST")
    assert code == 0, out
    assert ":LB-TEST" in out


def test_podserver_in_a_pod_netns(node: Container) -> None:
    script = """
        ip netns add pod1 && ip -n pod1 link set lo up
        ip netns exec pod1 podserver --name web-0 --ip 127.0.0.1 --tcp 8080 --udp 5353 >/tmp/pod1.log 2>&1 &
        for i in $(seq 50); do ip netns exec pod1 curl -s http://127.0.0.1:8080/ && break; sleep 0.1; done
        echo hello | ip netns exec pod1 nc -N 127.0.0.1 8080
        echo hello | ip netns exec pod1 nc -u -w1 127.0.0.1 5353
    """
    code, out = sh(node, script)
    assert code == 0, out
    lines = out.splitlines()
    assert len(lines) == 3, out
    for line in lines:
        assert re.fullmatch(r"pod=web-0 ip=127\.0\.0\.1 client=127\.0\.0\.1:\d+", line), out
    code, out = sh(node, "ip netns pids pod1 | xargs -r kill; ip netns del pod1; cat /tmp/pod1.log")
    assert "Traceback" not in out, out
    assert shlex.split(out)[:4] == ["podserver", "web-0:", "listening", "tcp"]

"""The KTHW lab, brought up for real and inspected from inside the containers as a learner would (seed 004)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from labbuilder.spec.load import load
from labbuilder.spec.resolve import build_model
from tests.integration.conftest import (
    LABBUILDER,
    ROOT,
    bring_up,
    dexec,
    dump,
    host_state,
    lab_containers,
    labbuilder,
    pod_exec,
    sh,
)

pytestmark = pytest.mark.docker
KTHW = build_model(load(str(ROOT / "labs/kthw.yaml"))).lab


@pytest.fixture(scope="module")
def kthw(host_before) -> Iterator[str]:
    yield from bring_up(str(ROOT / "labs/kthw.yaml"), "kthw")


@pytest.fixture(scope="module")
def nomasq(host_before) -> Iterator[str]:
    yield from bring_up(str(ROOT / "labs/kthw-nomasq.yaml"), "kthw-nomasq")


def pods_on(node: str):
    return KTHW.node(node).pods


def test_containers_are_sealed_nodes_with_explicit_caps(kthw):
    names = lab_containers("kthw")
    assert names == sorted(["kthw-router"] + [f"kthw-{n.name}" for n in KTHW.nodes])
    info = json.loads(sh("docker", "inspect", *names).stdout)
    for c in info:
        host = c["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["Privileged"] is False
        assert sorted(host["CapAdd"]) == ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]
        assert c["Config"]["Labels"]["labbuilder.lab"] == "kthw"
    assert dexec("kthw-worker-1", "hostname").strip() == "worker-1"


def test_worker_routes_match_seed_004(kthw):
    routes = dexec("kthw-worker-0", "ip", "route").splitlines()
    assert "default via 10.240.0.1 dev eth0 " in routes
    assert "10.200.0.0/24 dev cnio0 proto kernel scope link src 10.200.0.1 " in routes
    assert "10.240.0.0/24 dev eth0 proto kernel scope link src 10.240.0.20 " in routes


def test_router_holds_the_pod_routes(kthw):
    routes = dexec("kthw-router", "ip", "route").splitlines()
    for i in range(3):
        assert f"10.200.{i}.0/24 via 10.240.0.2{i} dev lab0 " in routes


def test_every_pod_has_a_cni_netns_with_its_address_and_default_route(kthw):
    listed = [line.split()[0] for line in dexec("kthw-worker-0", "ip", "netns").splitlines()]
    assert sorted(listed) == sorted(p.netns for p in pods_on("worker-0"))
    assert all(re.fullmatch(r"cni-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", n) for n in listed)
    for pod in pods_on("worker-0"):
        assert pod_exec("kthw-worker-0", pod.netns, "ip", "route").splitlines() == [
            "default via 10.200.0.1 dev eth0 ",
            f"10.200.0.0/24 dev eth0 proto kernel scope link src {pod.ip} ",
        ]
        addr = pod_exec("kthw-worker-0", pod.netns, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
        assert f"inet {pod.ip}/24" in addr


def test_bridge_lists_the_pod_veths_and_peers_match(kthw):
    shown = dexec("kthw-worker-0", "brctl", "show", "cnio0")
    assert "8000.0a580ac80001" in shown  # bridge MAC from the gateway IP, as the 2018 plugin did
    for pod in pods_on("worker-0"):
        assert pod.host_veth in shown
        stats = pod_exec("kthw-worker-0", pod.netns, "ethtool", "-S", "eth0")
        peer = re.search(r"peer_ifindex: (\d+)", stats)
        assert peer, stats
        index = dexec("kthw-worker-0", "cat", f"/sys/class/net/{pod.host_veth}/ifindex").strip()
        assert peer.group(1) == index


def test_pause_processes_hold_the_pod_namespaces(kthw):
    lsns = dexec("kthw-worker-0", "lsns", "-t", "net", "-o", "COMMAND", "--noheadings")
    assert lsns.count("/pause infinity") == len(pods_on("worker-0"))
    if os.uname().machine != "x86_64":
        return  # elsewhere /pause is a copy of sleep (templates/node/pause.py)
    # Each costs a few pages of its own (a copy of `sleep` costs ≈140 KB, read the same way).
    costs = dexec(
        "kthw-worker-0",
        "sh",
        "-c",
        "for p in $(pgrep -x pause); do echo $(awk '/^Private_Dirty/ {print $2}' /proc/$p/smaps_rollup)"
        " $(awk '/^VmPTE/ {print $2}' /proc/$p/status); done",
    )
    pairs = [tuple(int(kb) for kb in line.split()) for line in costs.splitlines()]
    assert len(pairs) == len(pods_on("worker-0")) and all(private + tables <= 48 for private, tables in pairs), pairs


def test_pod_on_worker_0_pings_pod_on_worker_2_and_is_snated(kthw):
    source, target = pods_on("worker-0")[-1], pods_on("worker-2")[0]
    out = pod_exec("kthw-worker-0", source.netns, "ping", "-c", "2", "-W", "2", str(target.ip))
    assert "2 received" in out
    conntrack = dexec("kthw-worker-0", "conntrack", "-L", "-p", "icmp", "-d", str(target.ip))
    # The reply is addressed to the node: the bridge plugin's MASQUERADE translated the source.
    assert f"src={source.ip} dst={target.ip}" in conntrack
    assert f"src={target.ip} dst=10.240.0.20" in conntrack


def test_without_ipmasq_the_source_is_kept(nomasq):
    lab = build_model(load(str(ROOT / "labs/kthw-nomasq.yaml"))).lab
    source, target = lab.node("worker-0").pods[-1], lab.node("worker-2").pods[0]
    out = pod_exec("kthw-nomasq-worker-0", source.netns, "ping", "-c", "2", "-W", "2", str(target.ip))
    assert "2 received" in out
    conntrack = dexec("kthw-nomasq-worker-0", "conntrack", "-L", "-p", "icmp", "-d", str(target.ip))
    assert f"src={target.ip} dst={source.ip}" in conntrack
    assert "dst=10.240.0.20" not in conntrack
    assert "CNI-" not in dexec("kthw-nomasq-worker-0", "iptables-save", "-t", "nat")


def test_cni_files_inside_the_worker(kthw):
    conf = json.loads(dexec("kthw-worker-2", "cat", "/etc/cni/net.d/10-bridge.conf"))
    assert conf["bridge"] == "cnio0" and conf["ipam"]["ranges"] == [[{"subnet": "10.200.2.0/24"}]]
    state = dexec("kthw-worker-2", "ls", "/var/lib/cni/networks/bridge").split()
    assert sorted(state) == sorted([str(p.ip) for p in pods_on("worker-2")] + ["last_reserved_ip.0"])


def test_second_up_converges_without_a_second_copy(kthw):
    before = dump("kthw")
    result = labbuilder("up", str(ROOT / "labs/kthw.yaml"))
    assert "already up and has converged" in result.stdout
    assert lab_containers("kthw") == sorted(["kthw-router"] + [f"kthw-{n.name}" for n in KTHW.nodes])
    assert dump("kthw") == before


def test_a_different_spec_under_a_running_name_is_refused(kthw):
    result = labbuilder("up", str(ROOT / "labs/kthw-nomasq.yaml"), "--name", "kthw", check=False)
    assert result.returncode == 1
    assert "lab kthw is already up" in result.stderr and "Traceback" not in result.stderr


def test_a_broken_spec_gets_a_located_error_and_creates_nothing(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text(
        (ROOT / "labs/kthw.yaml")
        .read_text()
        .replace("name: kthw", "name: broken")
        .replace("podCIDR: 10.200.2.0/24", "podCIDR: 10.200.1.0/24")
    )
    result = labbuilder("up", str(bad), check=False)
    assert result.returncode == 1
    assert re.search(rf"{bad}:\d+:\d+: podCIDR 10.200.1.0/24 overlaps 10.200.1.0/24 of worker-1", result.stderr)
    assert "Traceback" not in result.stderr
    assert lab_containers("broken") == []


def test_down_after_an_interrupted_up_removes_everything(host_before):
    proc = subprocess.Popen(
        [*LABBUILDER, "up", str(ROOT / "labs/kthw.yaml"), "--name", "crashy", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(lab_containers("crashy")) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # a crash: no chance to clean up
    proc.wait()
    assert lab_containers("crashy"), "the up was killed before it created anything"
    labbuilder("down", "crashy")
    assert lab_containers("crashy") == []


def test_down_leaves_no_trace_and_the_host_untouched(host_before):
    # Runs last in this module (pytest keeps file order): the module's labs are torn down first.
    for lab in ("kthw", "kthw-nomasq"):
        labbuilder("down", lab)
        assert lab_containers(lab) == []
    assert host_state() == host_before
    assert "veth" not in sh("ip", "-o", "link").stdout

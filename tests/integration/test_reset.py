"""reset: a learner breaks the lab in many ways; reset puts back exactly the freshly built state."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from labbuilder.spec.lab_file import resolve_file
from tests.integration.conftest import ROOT, bring_up, dexec, dump, labbuilder, pod_exec, sh

pytestmark = pytest.mark.docker
KTHW = resolve_file(str(ROOT / "labs/kthw.yaml"), "resetkthw")[1].lab  # names derive from the lab name


@pytest.fixture(scope="module")
def lab(host_before) -> Iterator[str]:
    yield from bring_up(str(ROOT / "labs/kthw.yaml"), "resetkthw")


def sabotage(lab: str) -> None:
    w0, w1, w2 = (f"{lab}-worker-{i}" for i in range(3))
    pod0, pod2 = KTHW.node("worker-0").pods[1], KTHW.node("worker-2").pods[0]
    dexec(w0, "ip", "route", "flush", "table", "main")  # flush routes on a node
    dexec(w0, "ip", "link", "del", pod0.host_veth)  # delete a pod's veth
    dexec(w1, "iptables", "-t", "nat", "-F")  # flush the nat table
    pid = dexec(w1, "cat", "/run/labbuilder/pids/worker-1.podserver.pid").strip()
    dexec(w1, "kill", pid)  # kill the node's workloads (one podserver answers for its pods), by its pid
    dexec(w2, "ip", "netns", "add", "stray")  # add a stray netns
    dexec(w1, "ip", "link", "add", "stray0", "type", "veth", "peer", "name", "stray1")  # a stray veth pair
    pod_exec(w2, pod2.netns, "ip", "addr", "flush", "dev", "eth0")  # change an address
    pod_exec(w2, pod2.netns, "ip", "addr", "add", "10.200.2.99/24", "dev", "eth0")
    dexec(w2, "sh", "-c", "echo broken > /etc/cni/net.d/10-bridge.conf")  # a file labbuilder wrote
    dexec(f"{lab}-router", "ip", "route", "del", "10.200.1.0/24")
    dexec(f"{lab}-router", "ip", "addr", "add", "10.240.0.250/24", "dev", "lab0")


SABOTAGE_SEEN = (  # what `diff` says of the sabotage above, one line per change a learner made
    "worker-0: route default via 10.240.0.1 missing",
    "worker-0: link {veth0} missing",
    "worker-1: iptables nat changed",
    "worker-1: process worker-1.podserver stopped",
    "worker-1: link stray0 added",
    "worker-1: link stray1 added",
    "worker-2: netns stray added",
    "worker-2: address 10.200.2.99/24 on eth0 in {netns2} added",
    "worker-2: address 10.200.2.2/24 on eth0 in {netns2} missing",
    "worker-2: file /etc/cni/net.d/10-bridge.conf changed",
    "router: route 10.200.1.0/24 via 10.240.0.21 missing",
    "router: address 10.240.0.250/24 on lab0 added",
)


def seen(line: str) -> str:
    return line.format(
        veth0=KTHW.node("worker-0").pods[1].host_veth,
        netns2=KTHW.node("worker-2").pods[0].netns,
    )


def test_diff_and_dry_run_name_every_change_and_touch_nothing(lab):
    assert labbuilder("diff", lab).stdout.strip() == f"lab {lab}: pristine"
    fresh = dump(lab)
    sabotage(lab)
    broken = dump(lab)
    diff = labbuilder("diff", lab, check=False)
    assert diff.returncode == 1
    for line in SABOTAGE_SEEN:
        assert seen(line) in diff.stdout, diff.stdout
    dry = labbuilder("reset", lab, "--dry-run")
    assert "would repair  worker-0: route default via 10.240.0.1 restored" in dry.stdout
    assert "would repair  router: stray address 10.240.0.250/24 on lab0 removed" in dry.stdout
    assert f"lab {lab}:" in dry.stdout and "to repair" in dry.stdout
    assert dump(lab) == broken  # a dry run changes nothing
    labbuilder("reset", lab)
    assert dump(lab) == fresh
    assert labbuilder("diff", lab).returncode == 0


def test_reset_restores_the_freshly_built_state(lab):
    fresh = dump(lab)
    sabotage(lab)
    assert dump(lab) != fresh
    result = labbuilder("reset", lab)
    for expected in (
        "worker-0: route default via 10.240.0.1 restored",
        f"worker-0: link {KTHW.node('worker-0').pods[1].host_veth} restored",
        "worker-1: iptables nat restored",
        "worker-1: process worker-1.podserver restarted",
        "worker-2: netns stray removed",
        "stray address 10.200.2.99/24 on eth0",
        "worker-2: file /etc/cni/net.d/10-bridge.conf restored",
        "router: route 10.200.1.0/24 via 10.240.0.21 restored",
        "router: stray address 10.240.0.250/24 on lab0 removed",
    ):
        assert expected in result.stdout, result.stdout
    assert dump(lab) == fresh
    # and it works again: the repaired pod reaches a pod across the lab
    pod0, target = KTHW.node("worker-0").pods[1], KTHW.node("worker-1").pods[0]
    assert "1 received" in pod_exec(f"{lab}-worker-0", pod0.netns, "ping", "-c", "1", "-W", "2", str(target.ip))
    assert "pod=" in pod_exec(f"{lab}-worker-0", pod0.netns, "curl", "-s", "-m", "3", f"http://{target.ip}/")


def confinement(container: str, pid: str) -> tuple[str, str, str, str]:
    """What `docker exec` would have given a process: (parent pid, cgroup, CapEff, Seccomp)."""
    status = dict(
        line.split(":", 1) for line in dexec(container, "cat", f"/proc/{pid}/status").splitlines() if ":" in line
    )
    cgroup = dexec(container, "cat", f"/proc/{pid}/cgroup")
    return status["PPid"].strip(), cgroup, status["CapEff"].strip(), status["Seccomp"].strip()


def as_an_older_labbuilder_made_it(container: str) -> None:
    """The same container made again with `sleep infinity` as its main process (no agent)."""
    client = docker.from_env()
    attrs = client.containers.get(container).attrs
    client.containers.get(container).remove(force=True)
    client.containers.run(
        attrs["Config"]["Image"],
        ["sleep", "infinity"],
        name=container,
        hostname=attrs["Config"]["Hostname"],
        labels=attrs["Config"]["Labels"],
        network_mode="none",
        cap_add=attrs["HostConfig"]["CapAdd"],
        sysctls=attrs["HostConfig"]["Sysctls"],
        init=True,
        detach=True,
        stop_signal="SIGKILL",
    )


def test_the_agent_starts_processes_confined_as_the_node(lab):
    """Each node's main process is labbuilder-agent; what it starts (at up, and again at reset)
    lives in the node's cgroup with the node's capabilities and seccomp filter, an orphan of the
    node's init — and a node without an agent still gets its processes, by `docker exec`."""
    for node in ("worker-0", "worker-2"):
        container = f"{lab}-{node}"
        assert "labbuilder-agent" in dexec(container, "cat", "/proc/1/cmdline")
        _, cgroup, caps, seccomp = confinement(container, "1")
        assert seccomp == "2"  # Docker's default profile, filtering
        pid = dexec(container, "cat", f"/run/labbuilder/pids/{node}.podserver.pid").strip()
        assert confinement(container, pid) == ("1", cgroup, caps, seccomp)
    # A node without an agent, as an older labbuilder made it (`sleep infinity`): reset converges
    # it, and its processes are started by `docker exec` instead.
    w2 = f"{lab}-worker-2"
    as_an_older_labbuilder_made_it(w2)
    assert "worker-2: process worker-2.podserver restarted" in labbuilder("reset", lab).stdout
    pid = dexec(w2, "cat", "/run/labbuilder/pids/worker-2.podserver.pid").strip()
    assert confinement(w2, pid)[1:] == confinement(w2, "1")[1:]
    pod = KTHW.node("worker-2").pods[0]
    assert "pod=" in pod_exec(
        f"{lab}-worker-0", KTHW.node("worker-0").pods[0].netns, "curl", "-s", "-m", "3", f"http://{pod.ip}/"
    )


def test_reset_of_an_intact_lab_changes_nothing(lab):
    before = dump(lab)
    result = labbuilder("reset", lab)
    assert "nothing repaired" in result.stdout
    assert dump(lab) == before


def test_reset_brings_back_a_removed_node_container(lab):
    sh("docker", "rm", "-f", f"{lab}-worker-1")
    result = labbuilder("reset", lab)
    assert "worker-1: container recreated" in result.stdout
    pod = KTHW.node("worker-1").pods[0]
    assert "pod=" in pod_exec(
        f"{lab}-worker-0", KTHW.node("worker-0").pods[0].netns, "curl", "-s", "-m", "3", f"http://{pod.ip}/"
    )


def test_reset_of_an_unknown_lab_is_a_clear_error():
    result = labbuilder("reset", "no-such-lab", check=False)
    assert result.returncode == 1
    assert "no lab named no-such-lab" in result.stderr and "Traceback" not in result.stderr

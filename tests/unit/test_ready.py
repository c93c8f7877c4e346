"""`up` and `reset` return a lab that answers: what each container must be listening on, and the
script that waits for it, from the plan alone."""

from __future__ import annotations

from labbuilder.compile.plan import compile_plan
from labbuilder.lifecycle.ready import listeners, podserver, wait_script
from labbuilder.spec.lab_file import resolve_file
from tests.conftest import LABS

PLAN = compile_plan(resolve_file(str(LABS / "kthw.yaml"), "ready")[1].lab)


def test_what_each_container_serves():
    assert listeners(PLAN, "router") == [] and podserver(PLAN, "router") is None
    assert listeners(PLAN, "controller-0") == [] and podserver(PLAN, "controller-0") == "controller-0.podserver"
    coredns = next(p for p in PLAN.lab.node("worker-0").pods if p.workload == "coredns")
    # dnsmasq is the DNS pod's own process: its sockets are polled; the rest is the podserver's.
    assert set(listeners(PLAN, "worker-0")) == {(coredns.netns, "udp", 53), (coredns.netns, "tcp", 53)}
    assert podserver(PLAN, "worker-1") == "worker-1.podserver" and listeners(PLAN, "worker-1") == []


def test_the_wait_polls_each_socket_in_its_namespace_and_gives_up_quietly():
    script = wait_script([("cni-1", "udp", 53), (None, "tcp", 6443)], "worker-0.podserver")
    assert "nsenter --net=/run/netns/cni-1 ss -Hln -u 'sport = :53' | grep -q ." in script
    assert "until ss -Hln -t 'sport = :6443' | grep -q .;" in script
    pids = "/run/labbuilder/pids/worker-0.podserver"
    ready = f'{{ read -r a < {pids}.ready && read -r b < {pids}.pid && [ "$a" = "$b" ]; }}'
    assert f"until {ready};" in script
    assert script.rstrip().endswith("true")  # a server that never comes is for `check` to report

"""`up` and `reset` return a lab that answers: what each container must be listening on, and the
script that waits for it, from the plan alone."""

from __future__ import annotations

from labbuilder.compile.plan import compile_plan
from labbuilder.lifecycle.ready import listeners, wait_script
from labbuilder.spec.lab_file import resolve_file
from tests.conftest import LABS

PLAN = compile_plan(resolve_file(str(LABS / "kthw.yaml"), "ready")[1].lab)


def test_what_each_container_serves():
    assert listeners(PLAN, "router") == []
    assert listeners(PLAN, "controller-0") == [(None, "tcp", 6443)]
    worker = PLAN.lab.node("worker-0")
    by_pod = {p.workload: p.netns for p in worker.pods}
    served = set(listeners(PLAN, "worker-0"))
    assert (by_pod["nginx"], "tcp", 80) in served
    assert {(by_pod["coredns"], proto, port) for proto, port in (("udp", 53), ("tcp", 53), ("tcp", 9153))} <= served
    assert not [s for s in served if s[0] == by_pod["busybox"]]  # busybox only sleeps


def test_the_wait_polls_each_socket_in_its_namespace_and_gives_up_quietly():
    script = wait_script([("cni-1", "udp", 53), (None, "tcp", 6443)])
    assert "ip netns exec cni-1 ss -Hln -u 'sport = :53' | grep -q ." in script
    assert "until ss -Hln -t 'sport = :6443' | grep -q .;" in script
    assert script.rstrip().endswith("true")  # a server that never comes is for `check` to report

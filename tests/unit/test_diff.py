"""diff(plan, observed), pure: a lab read back exactly as planned has no difference, and each
change a learner can make is named once, with the container whose operations restore it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from labbuilder.compile.ops import Iptables, Ns, Process, WriteFile
from labbuilder.compile.plan import Plan, compile_plan
from labbuilder.lifecycle.diff import desired_state, diff
from labbuilder.observe.state import ContainerObserved, LinkState, NsObserved, sha256
from labbuilder.spec.lab_file import resolve_file
from tests.conftest import LABS

SHIPPED = sorted(p.stem for p in LABS.glob("*.yaml"))


def plan_of(name: str) -> Plan:
    return compile_plan(resolve_file(str(LABS / f"{name}.yaml"))[1].lab)


def pristine(plan: Plan) -> dict[str, ContainerObserved]:
    """What a freshly built lab reads back as, derived independently from the plan's operations."""
    desired = desired_state(plan)
    seen: dict[str, ContainerObserved] = {}
    for spec in plan.containers:
        ops = [op for op in plan.steps[spec.key] if op.ns.container == spec.key]
        box = ContainerObserved(spec.key, "running")
        box.netns = frozenset(ns.netns for ns in desired if ns.container == spec.key and ns.netns)
        box.files = {op.path: sha256(op.content) for op in ops if isinstance(op, WriteFile)}
        rules = [op.payload for op in ops if isinstance(op, Iptables)]
        box.iptables = rules[-1] if rules else None
        box.processes = {op.name: True for op in ops if isinstance(op, Process)}
        for ns, want in desired.items():
            if ns.container == spec.key:
                links = {name: LinkState("veth", True, want.masters.get(name)) for name in want.links}
                box.namespaces[ns] = NsObserved(links, frozenset(want.addresses), {key: {} for key in want.routes})
        seen[spec.key] = box
    return seen


@pytest.mark.parametrize("name", SHIPPED)
def test_a_lab_as_planned_has_no_difference(name):
    plan = plan_of(name)
    assert diff(plan, pristine(plan)) == []


def test_ptp_replaces_the_connected_route_inside_the_pod():
    """kindnet's `podCIDR via gateway` takes the kernel route's place: only one route is expected."""
    plan = plan_of("kind")
    pod = plan.lab.node("worker").pods[0]
    routes = desired_state(plan)[Ns("worker", pod.netns)].routes
    assert ("10.244.1.0/24", "10.244.1.1") in routes and ("10.244.1.0/24", None) not in routes


def test_each_change_is_named_with_its_owner():
    plan = plan_of("kthw")
    seen = pristine(plan)
    w0 = seen["worker-0"].namespaces[Ns("worker-0")]
    routes = {k: v for k, v in w0.routes.items() if k != ("0.0.0.0/0", "10.240.0.1")}
    links = dict(w0.links)
    links["eth0"] = LinkState("veth", False, None)  # set down by a learner
    links["dummy9"] = LinkState("bridge", True, None)  # added by a learner
    seen["worker-0"].namespaces[Ns("worker-0")] = replace(w0, routes=routes, links=links)
    seen["worker-1"].processes = dict.fromkeys(seen["worker-1"].processes, False)
    seen["worker-2"].state = "exited"
    router = seen["router"].namespaces[Ns("router")]
    seen["router"].namespaces[Ns("router")] = replace(
        router, links={k: v for k, v in router.links.items() if k != "worker-0"}
    )
    found = {str(d): d for d in diff(plan, seen)}
    assert "worker-0: route default via 10.240.0.1 missing" in found
    assert "worker-0: link eth0 down" in found and "worker-0: link dummy9 added" in found
    assert found["router: link worker-0 missing"].owner == "worker-0"  # the node's steps make its uplink
    assert "worker-2: container kthw-worker-2 stopped" in found
    assert not [d for d in found.values() if d.key == "worker-2" and d.kind != "container"]
    stopped = [d for d in found.values() if d.kind == "process"]
    assert stopped and all(d.key == "worker-1" and d.change == "stopped" for d in stopped)
    assert found["worker-0: link dummy9 added"].repair == "worker-0: stray link dummy9 removed"


def test_what_a_node_prints_reads_back_as_the_differences_a_learner_made():
    """The state script's real output (worker-1 of `up labs/kthw.yaml --name statecap`, after
    `ip route del default; ip link add stray0 type bridge; ip -6 addr flush dev eth0 scope link`)."""
    from pathlib import Path

    from labbuilder.observe.state import namespaces_of, parse_state

    plan = compile_plan(resolve_file(str(LABS / "kthw.yaml"), "statecap")[1].lab)
    ops = [op for op in plan.steps["worker-1"] if op.ns.container == "worker-1"]
    text = (Path(__file__).parent / "data" / "state_worker1.txt").read_text()
    seen = pristine(plan)
    seen["worker-1"] = parse_state("worker-1", text, ops, namespaces_of(plan, "worker-1"))
    node = seen["worker-1"].namespaces[Ns("worker-1")]
    assert node.links["cnio0"] == LinkState("bridge", True, None) and node.links["eth0"].kind == "veth"
    assert ("eth0", "10.240.0.21/24") in node.addresses
    assert ("10.200.1.0/24", None) in node.routes and ("0.0.0.0/0", "10.240.0.1") not in node.routes
    assert seen["worker-1"].processes and all(seen["worker-1"].processes.values())
    assert set(map(str, diff(plan, seen))) == {
        "worker-1: route default via 10.240.0.1 missing",
        "worker-1: link stray0 added",
    }  # and no link-local complaint: Docker turns IPv6 off in the node's own namespace

"""kube-router in the plan: an ipset phase before the rules, one iptables-restore shared with
kube-proxy, and diff naming what a learner did to the policy state."""

from __future__ import annotations

from labbuilder.compile.netpol import names
from labbuilder.compile.netpol.kube_router import kube_router
from labbuilder.compile.ops import Ipsets, Iptables, Phase
from labbuilder.compile.plan import compile_plan
from labbuilder.compile.script import build_script
from labbuilder.lifecycle.diff import diff
from labbuilder.spec.lab_file import resolve_file
from tests.conftest import ROOT
from tests.unit.test_diff import pristine

LAB = str(ROOT / "tests/integration/labs/kr-bridge.yaml")


def plan():
    return compile_plan(resolve_file(LAB)[1].lab)


def test_ipsets_come_before_the_rules_that_match_on_them():
    assert Phase.FILES < Phase.IPSETS < Phase.RULES
    p = plan()
    ops = p.steps["worker-0"]
    kinds = [type(op) for op in ops if isinstance(op, Ipsets | Iptables)]
    assert kinds == [Ipsets, Iptables]
    script = build_script("worker-0", ops, rules=True, ipsets=True)
    assert script.index("ipset restore -exist -file") < script.index("iptables-restore")


def test_kube_router_and_kube_proxy_share_one_filter_table():
    payload = next(op.payload for op in plan().steps["worker-1"] if isinstance(op, Iptables))
    forward = [line for line in payload.splitlines() if line.startswith("-A FORWARD ")]
    # kube-router's jump first (it inserts at position 1), then kube-proxy's.
    assert (
        forward[0] == '-A FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD'
    )
    assert any("KUBE-FORWARD" in line for line in forward[1:])
    assert payload.count("*filter") == 1


def test_labs_without_policies_keep_their_tables():
    kthw = compile_plan(resolve_file(str(ROOT / "labs/kthw.yaml"))[1].lab)
    assert not any(isinstance(op, Ipsets) for _, op in kthw.ops())
    assert "KUBE-ROUTER" not in next(op.payload for _, op in kthw.ops() if isinstance(op, Iptables))


def test_diff_names_a_sabotaged_ipset_and_a_flushed_policy_chain():
    p = plan()
    seen = pristine(p)
    assert diff(p, seen) == []  # pristine() reads no ipsets: nothing to compare
    netpol = kube_router(p.lab)
    target = next(s for s in netpol.ipsets if s.name == names.target_dst_set("x", "allow-y-to-b"))
    allowed = next(s for s in netpol.ipsets if s.name == names.ingress_pod_set("x", "allow-y-to-b", 0))
    lines = [f"create {s.name} {s.kind} family inet hashsize 1024 maxelem 65536 timeout 0" for s in netpol.ipsets]
    lines += [f"add {s.name} {e}" for s in netpol.ipsets if s is not allowed for e in s.entries]
    lines += [f"add {allowed.name} 10.200.0.2 timeout 0"]  # a learner let x/a in, and lost y's pods
    seen["worker-1"].ipsets = "\n".join(lines) + "\n"
    chain = names.policy_chain("x", "allow-y-to-b")
    seen["worker-1"].iptables = "\n".join(
        line for line in seen["worker-1"].iptables.splitlines() if not line.startswith(f"-A {chain} ")
    )
    found = [str(d) for d in diff(p, seen)]
    assert f"worker-1: ipset {allowed.name} member 10.200.0.2 added" in found
    assert f"worker-1: ipset {allowed.name} member 10.200.0.3 missing" in found
    assert f"worker-1: iptables filter ({chain}) changed" in found
    assert target.entries == ("10.200.1.2 timeout 0",)


def test_with_kube_proxy_in_nftables_mode_the_filter_table_is_kube_routers():
    nft = compile_plan(resolve_file(str(ROOT / "tests/integration/labs/kr-nft.yaml"))[1].lab)
    ops = nft.steps["worker-0"]
    payload = next(op.payload for op in ops if isinstance(op, Iptables))
    chains = {line.split()[0][1:] for line in payload.splitlines() if line.startswith(":")}
    assert {
        c
        for c in chains
        if c.startswith("KUBE-") and not c.startswith(("KUBE-ROUTER-", "KUBE-NWPLCY-", "KUBE-POD-FW-"))
    } == set()
    assert [type(op).__name__ for op in ops if op.phase in (Phase.IPSETS, Phase.RULES)] == [
        "Ipsets",
        "Iptables",
        "Nftables",
    ]

"""reset = diff(plan, observed) → repairs → apply: a running lab back to its pristine state.

Only differences are touched, and each is reported: a lab that is intact is left as it is. Stray
things (namespaces, links, addresses, routes) are deleted; for what is missing or changed the
owning containers' operations are applied again, phase by phase — the same operations `up`
applies, all idempotent. A container that had to be recreated takes a second round, because a
new container brings none of the links other containers made into it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from labbuilder.compile.ops import Ns, Op, Phase, Process, Route, WriteFile, by_phase
from labbuilder.compile.paths import IPSETS_FILE, NFT_FILE, RULES_FILE, SPEC_COPY
from labbuilder.compile.plan import Plan, compile_plan
from labbuilder.engine.apply import Applier, rule_files
from labbuilder.engine.netlink import NetlinkOp, RestoreLinkLocal, Step
from labbuilder.engine.runtime import Engine, LabHandle, in_threads
from labbuilder.errors import LabError
from labbuilder.lifecycle.diff import Difference, NsDesired, desired_state, diff
from labbuilder.lifecycle.lock import lab_lock
from labbuilder.lifecycle.ready import wait_until_serving
from labbuilder.lifecycle.up import ensure_containers
from labbuilder.observe.state import observe
from labbuilder.spec.lab_file import resolve_file
from labbuilder.spec.load import spec_text
from labbuilder.spec.model import ROUTER

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class ResetResult:
    differences: list[Difference]  # what was found (and, unless a dry run, repaired)
    rounds: int

    @property
    def repairs(self) -> list[str]:
        return [d.repair for d in self.differences]


def reset(handle: LabHandle, plan: Plan, dry_run: bool = False, progress: Progress = _quiet) -> ResetResult:
    """Bring the lab of `handle` back to `plan`; with dry_run, only say what would be repaired."""
    found: list[Difference] = []
    for rounds in (1, 2):
        differences = diff(plan, observe(handle, plan))
        seen = {f.repair for f in found}
        found += [d for d in differences if d.repair not in seen]
        if dry_run or not differences:
            return ResetResult(found, rounds)
        if any(d.kind == "container" for d in differences):
            ensure_containers(handle, plan, progress)
            handle.refresh()
            continue  # a new or restarted container holds nothing yet: see all it lacks in a second round
        repair(handle, plan, differences)
        return ResetResult(found, rounds)
    return ResetResult(found, 2)


def repair(handle: LabHandle, plan: Plan, differences: list[Difference]) -> None:
    """Delete what was added, then apply again the operations of every container that owns a loss."""
    by_key: dict[str, list[Difference]] = {}
    for d in differences:
        by_key.setdefault(d.owner or d.key, []).append(d)
    for d in differences:  # strays first: a stray address can shadow a planned one
        if d.change == "added" and d.kind != "nftables":  # a table's strays go with the table's reload
            _remove(handle, d)
    desired = desired_state(plan)  # once for every container's restore
    # The router's bridge holds the other ends of the nodes' uplinks: when its links are what
    # was lost, it is mended first, as in `up`; routes or rules alone mend beside the nodes'.
    if ROUTER in by_key and {d.kind for d in by_key[ROUTER]} & {"link", "address", "netns", "link-local"}:
        _restore(handle, plan, desired, ROUTER, by_key.pop(ROUTER))
    in_threads(lambda key: _restore(handle, plan, desired, key, by_key[key]), list(by_key))
    restarted = [key for key, found in by_key.items() if {d.kind for d in found} & {"process", "netns"}]
    wait_until_serving(handle, plan, restarted)


def _remove(handle: LabHandle, d: Difference) -> None:
    """Delete one stray thing with the `ip` command a person would type in that namespace."""
    if d.kind == "netns":
        handle.run(d.key, ["ip", "netns", "del", str(d.remove[0])])
        return
    if d.kind == "ipset":  # a member a learner added to one of kube-router's sets
        name, member = (str(x) for x in d.remove)
        handle.run(d.key, ["ipset", "del", name, member.removeprefix("!")])
        return
    assert d.ns is not None
    where = ["-n", d.ns.netns] if d.ns.netns else []
    if d.kind == "link":
        # Deleting one end of a stray veth pair takes its peer along: a link already gone is done.
        result = handle.enter(Ns(d.key), ["ip", *where, "link", "del", str(d.remove[0])])
        if result.code != 0 and "Cannot find device" not in result.output:
            raise LabError(f"{d.key}: `ip link del {d.remove[0]}` failed: {result.output.strip()}")
        return
    if d.kind == "address":
        argv = ["addr", "del", str(d.remove[1]), "dev", str(d.remove[0])]
    else:
        route: dict[str, str] = d.remove[0]  # type: ignore[assignment]
        argv = ["route", "del", route["dst"], *(["via", route["via"]] if "via" in route else [])]
        argv += ["dev", route["dev"]] if "dev" in route else []
    handle.run(d.key, ["ip", *where, *argv])


def _restore(
    handle: LabHandle, plan: Plan, desired: dict[Ns, NsDesired], key: str, differences: list[Difference]
) -> None:
    kinds = {d.kind for d in differences if d.change != "added" or d.kind == "nftables"}
    phases = by_phase(plan.steps[key])
    applier = Applier(handle)
    if "netns" in kinds:
        applier.add_netns(key, phases[Phase.NETNS])
    if kinds & {"netns", "link", "address", "route", "link-local"}:
        _restore_links(handle, plan, desired, key, phases)
    if "file" in kinds:
        handle.put_files(key, {op.path: op.content for op in phases[Phase.FILES] if isinstance(op, WriteFile)})
    # The payloads `apply` writes, written again in one archive: the sets first (the rules match on
    # them), then the rules, then kube-proxy's nftables table (one nft -f: the whole table, atomically).
    sets, rules, nft = rule_files(phases)
    wanted = (sets if kinds & {"ipset", "iptables"} else {}) | (rules if "iptables" in kinds else {})
    wanted |= nft if "nftables" in kinds else {}
    if wanted:
        handle.put_files(key, wanted)
    if IPSETS_FILE in wanted:
        applier.restore_ipsets(key)
    if RULES_FILE in wanted:
        applier.restore_rules(key)
    if NFT_FILE in wanted:
        applier.load_nftables(key)
    if "process" in kinds:
        applier.start_processes(key, [op for op in phases[Phase.PROCESSES] if isinstance(op, Process)])


def _restore_links(
    handle: LabHandle, plan: Plan, desired: dict[Ns, NsDesired], key: str, phases: dict[Phase, list[Op]]
) -> None:
    """Links and addresses, then the prefix routes an address implies (a flush takes them and no
    operation makes them; replacing one that is there changes nothing), then the planned routes,
    whose gateways need those prefix routes. Every step ensures, over netlink."""
    namespaces = {op.ns for op in plan.steps[key]} | {Ns(key)}
    steps: list[Step] = [op for op in phases[Phase.LINKS] if isinstance(op, NetlinkOp)]
    steps += [route for ns in namespaces for route in (desired[ns].connected if ns in desired else [])]
    steps += [op for op in phases[Phase.ROUTES] if isinstance(op, Route)]
    steps += [RestoreLinkLocal(ns) for ns in sorted(namespaces, key=lambda ns: ns.netns or "")]
    handle.netlink(steps)


def target(
    engine: Engine, name: str, lab_file: str | None = None, wake: bool = True
) -> tuple[LabHandle, Plan, str | None]:
    """(handle, plan, spec text to write back) for a running lab: from its own spec copy, or from
    `lab_file` when the copy is lost (a crash before `up` wrote it). A stopped router (after an
    engine restart) is started to read the copy, unless `wake` is off (diff only reads)."""
    handle = engine.lab(name)
    if not handle.exists():
        raise LabError(f"no lab named {name} on {engine.where}", hint="`labbuilder ls` lists the labs")
    if lab_file:
        spec, resolved = resolve_file(lab_file, name)
        return handle, compile_plan(resolved.lab), spec_text(spec)
    if ROUTER not in handle.containers or not handle.containers[ROUTER].running:
        # The copy lives in the router: start it (or say how to proceed without it).
        if ROUTER not in handle.containers:
            raise LabError(
                f"lab {name} has lost its router, and with it the copy of its lab file",
                hint=f"`labbuilder reset {name} --file LAB.yaml` or `labbuilder up LAB.yaml` rebuilds it",
            )
        if not wake:
            raise LabError(f"lab {name} is stopped (its router is not running)", hint=f"`labbuilder reset {name}`")
        handle.start(ROUTER)
    return handle, compile_plan(handle.model()), None


def reset_lab(
    name: str,
    lab_file: str | None = None,
    dry_run: bool = False,
    progress: Progress = _quiet,
    engine: Engine | None = None,
) -> ResetResult:
    """`labbuilder reset`: under the lab's lock, bring it back to its plan (and its spec copy back)."""
    with lab_lock(name, "reset", progress=progress):
        handle, plan, text = target(engine or Engine(), name, lab_file)
        result = reset(handle, plan, dry_run=dry_run, progress=progress)
        if text is not None and not dry_run:
            handle.put_files(ROUTER, {SPEC_COPY: text})
        return result

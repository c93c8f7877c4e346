"""`up`: create a lab, or converge one that exists — sequencing the engine's effects.

`up` loads and resolves the whole spec before it creates anything, so a bad file creates
nothing; if applying fails, what this `up` created is removed again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from labbuilder.compile.labels import LABEL_FLEET
from labbuilder.compile.ops import ROUTER
from labbuilder.compile.paths import SPEC_COPY
from labbuilder.compile.plan import Plan, compile_plan
from labbuilder.engine.apply import Applier
from labbuilder.engine.runtime import Engine, LabHandle, churn, in_threads
from labbuilder.errors import LabError
from labbuilder.lifecycle.lock import lab_lock
from labbuilder.lifecycle.progress import Counts, Tally, pods, rules
from labbuilder.lifecycle.ready import wait_until_serving
from labbuilder.spec.lab_file import resolve_file
from labbuilder.spec.load import spec_text
from labbuilder.spec.model import Lab

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class UpResult:
    lab: Lab
    created: bool  # False when an existing lab was converged


def up(
    path: str,
    name: str | None = None,
    progress: Progress = _quiet,
    engine: Engine | None = None,
    labels: dict[str, str] | None = None,
    counts: Counts | None = None,
) -> UpResult:
    """Create lab `path` (or converge it: after a crash, an engine restart, a second `up`); `labels`
    go on its containers besides the plan's own (a fleet's name). `progress` gets lines; `counts`,
    when given, how far each kind of work is (lifecycle.progress)."""
    engine = engine or Engine()
    spec, resolved = resolve_file(path, name, engine.kernel())  # the facts of the engine's kernel
    plan = compile_plan(resolved.lab)
    tag = engine.ensure_image(progress)
    with lab_lock(plan.lab.name, "up", progress=progress):
        handle = engine.lab(plan.lab.name)
        existing = handle.containers
        foreign = sorted(c.name for c in existing.values() if c.spec_hash != plan.digest)
        if foreign:
            raise LabError(
                f"lab {plan.lab.name} is already up from a different lab file ({', '.join(foreign)})",
                hint=f"`labbuilder down {plan.lab.name}` removes it; `up --name OTHER` starts a second copy beside it",
            )
        if existing:
            progress(f"lab {plan.lab.name} exists: converging")
        new = [c.key for c in plan.containers if c.key not in existing]
        try:
            if existing:
                ensure_containers(handle, plan, progress, tag, spec_text(spec), labels, counts)
                apply_plan(handle, plan, new, progress, counts)
            else:
                build_fresh(handle, plan, tag, spec_text(spec), progress, counts, labels)
        except BaseException:
            if new:
                progress(f"failed: removing what this run created in lab {plan.lab.name}")
                handle.remove(new)  # only containers this run created: never another command's
            raise
    return UpResult(plan.lab, created=not existing)


def apply_plan(
    handle: LabHandle,
    plan: Plan,
    fresh: Sequence[str] = (),
    progress: Progress = _quiet,
    counts: Counts | None = None,
) -> None:
    """The router first (its bridge holds the uplinks' other ends), then every node in parallel;
    containers in `fresh` (created by this run) are built, the others converged."""
    applier = Applier(handle)
    keys = [c.key for c in plan.containers]
    configured = Tally("nodes", len(keys), counts)
    rules_of = {key: rules(plan, key) for key in keys} if counts else {}
    in_place = Tally("rules", sum(rules_of.values()), counts)
    serving = Tally("pods", sum(pods(plan, key) for key in plan.nodes), counts)

    def one(key: str) -> None:
        (applier.build if key in fresh else applier.apply)(key, plan.steps[key])
        if counts is None:
            progress(f"{key}: configured")
        configured.add()
        in_place.add(rules_of.get(key, 0))

    one(ROUTER)
    # The uplinks of the new nodes, made from the router's side in one go; existing nodes
    # converge theirs over netlink with the rest of their operations.
    uplinks = [op for key in plan.nodes if key in fresh for op in plan.steps[key] if op.ns.container == ROUTER]
    applier.uplinks(ROUTER, uplinks)
    in_threads(one, plan.nodes)
    # Return a lab that answers, not one that starts.
    wait_until_serving(handle, plan, plan.nodes, served=lambda key: serving.add(pods(plan, key)))


def build_fresh(
    handle: LabHandle,
    plan: Plan,
    image: str,
    spec_copy: str,
    progress: Progress = _quiet,
    counts: Counts | None = None,
    labels: dict[str, str] | None = None,
) -> None:
    """A new lab, each container configured as soon as what it needs exists: the router as soon as
    it is created, a node's uplink and build as soon as the node is created and the router built.
    Configuring overlaps Docker's creation of the other containers (the floor of `up`), instead of
    waiting for all of them. The result is `ensure_containers` + `apply_plan`'s, operation for
    operation; only the order across containers differs."""
    applier = Applier(handle)
    keys = [c.key for c in plan.containers]
    progress(f"creating {len(keys)} containers")
    created = Tally("containers", len(keys), counts)
    configured = Tally("nodes", len(keys), counts)
    rules_of = {key: rules(plan, key) for key in keys} if counts else {}
    in_place = Tally("rules", sum(rules_of.values()), counts)
    serving = Tally("pods", sum(pods(plan, key) for key in plan.nodes), counts)
    router_built = threading.Event()
    router_failed = False

    def make(key: str) -> None:
        spec = plan.container(key)
        with churn("create", handle.engine.name):  # creations against removals (see churn), not the whole build
            handle.create(spec, plan.labels(spec) | (labels or {}), image)
        created.add()

    def configured_now(key: str) -> None:
        if counts is None:
            progress(f"{key}: configured")
        configured.add()
        in_place.add(rules_of.get(key, 0))

    def router() -> None:
        nonlocal router_failed
        try:
            make(ROUTER)
            applier.build(ROUTER, plan.steps[ROUTER])
        except BaseException:
            router_failed = True
            raise
        finally:
            router_built.set()
        # The spec copy right after: the nodes wait for the router's build, not for this write.
        handle.put_files(ROUTER, {SPEC_COPY: spec_copy})
        configured_now(ROUTER)

    def node(key: str) -> None:
        make(key)
        router_built.wait()
        if router_failed:
            return  # the router's own error is the one to report
        applier.uplinks(ROUTER, [op for op in plan.steps[key] if op.ns.container == ROUTER])
        applier.build(key, plan.steps[key])
        configured_now(key)
        # Return a lab that answers: each node waits for its own pods while the others build.
        wait_until_serving(handle, plan, [key], served=lambda key: serving.add(pods(plan, key)))

    in_threads(lambda key: router() if key == ROUTER else node(key), keys, workers=8)


def ensure_containers(
    handle: LabHandle,
    plan: Plan,
    progress: Progress = _quiet,
    tag: str | None = None,
    spec_copy: str | None = None,
    labels: dict[str, str] | None = None,
    counts: Counts | None = None,
) -> None:
    """Every container of the plan, running; `spec_copy` goes into the router the moment it exists,
    so a lab interrupted after that point can always be reset from its own copy. A container made
    again (by `reset`) takes the fleet label of its lab's others: the fleet is remembered by labels."""
    found = handle.containers
    fleets = {info.fleet for info in found.values() if info.fleet}
    extra = ({LABEL_FLEET: min(fleets)} if fleets else {}) | (labels or {})
    missing = [c.key for c in plan.containers if c.key not in found]
    created = Tally("containers", len(plan.containers), counts)
    created.add(len(plan.containers) - len(missing))
    if missing:
        image = tag or handle.engine.ensure_image(progress)
        progress(f"creating {len(missing)} containers")

        def make(key: str) -> None:
            spec = plan.container(key)
            handle.create(spec, plan.labels(spec) | extra, image)
            if key == ROUTER and spec_copy is not None:
                handle.put_files(ROUTER, {SPEC_COPY: spec_copy})
            created.add()

        with churn("create", handle.engine.name):
            in_threads(make, missing, workers=8)
    stopped = [key for key, info in found.items() if not info.running]
    if stopped:
        progress(f"starting {len(stopped)} stopped containers")
        with churn("create", handle.engine.name):
            in_threads(handle.start, stopped, workers=8)
    if spec_copy is not None and ROUTER not in missing:
        handle.put_files(ROUTER, {SPEC_COPY: spec_copy})

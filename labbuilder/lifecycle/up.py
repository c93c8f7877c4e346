"""`up`: create a lab, or converge one that exists — sequencing the engine's effects.

`up` loads and resolves the whole spec before it creates anything, so a bad file creates
nothing; if applying fails, what this `up` created is removed again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from labbuilder.compile.ops import ROUTER
from labbuilder.compile.paths import SPEC_COPY
from labbuilder.compile.plan import LABEL_FLEET, Plan, compile_plan
from labbuilder.engine.apply import Applier
from labbuilder.engine.runtime import Engine, LabHandle, churn, in_threads
from labbuilder.errors import LabError
from labbuilder.lifecycle.lock import lab_lock
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
) -> UpResult:
    """Create lab `path` (or converge it: after a crash, an engine restart, a second `up`); `labels`
    go on its containers besides the plan's own (a fleet's name)."""
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
            ensure_containers(handle, plan, progress, tag, spec_copy=spec_text(spec), labels=labels)
            apply_plan(handle, plan, new, progress)
        except BaseException:
            if new:
                progress(f"failed: removing what this run created in lab {plan.lab.name}")
                handle.remove(new)  # only containers this run created: never another command's
            raise
    return UpResult(plan.lab, created=not existing)


def apply_plan(handle: LabHandle, plan: Plan, fresh: Sequence[str] = (), progress: Progress = _quiet) -> None:
    """The router first (its bridge holds the uplinks' other ends), then every node in parallel;
    containers in `fresh` (created by this run) are built, the others converged."""
    applier = Applier(handle)

    def one(key: str) -> None:
        (applier.build if key in fresh else applier.apply)(key, plan.steps[key])
        progress(f"{key}: configured")

    one(ROUTER)
    # The uplinks of the new nodes, made from the router's side in one go; existing nodes
    # converge theirs over netlink with the rest of their operations.
    uplinks = [op for key in plan.nodes if key in fresh for op in plan.steps[key] if op.ns.container == ROUTER]
    applier.uplinks(ROUTER, uplinks)
    in_threads(one, plan.nodes)
    wait_until_serving(handle, plan, plan.nodes)  # return a lab that answers, not one that starts


def ensure_containers(
    handle: LabHandle,
    plan: Plan,
    progress: Progress = _quiet,
    tag: str | None = None,
    spec_copy: str | None = None,
    labels: dict[str, str] | None = None,
) -> None:
    """Every container of the plan, running; `spec_copy` goes into the router the moment it exists,
    so a lab interrupted after that point can always be reset from its own copy. A container made
    again (by `reset`) takes the fleet label of its lab's others: the fleet is remembered by labels."""
    found = handle.containers
    fleets = {info.fleet for info in found.values() if info.fleet}
    extra = ({LABEL_FLEET: min(fleets)} if fleets else {}) | (labels or {})
    missing = [c.key for c in plan.containers if c.key not in found]
    if missing:
        image = tag or handle.engine.ensure_image(progress)
        progress(f"creating {len(missing)} containers")

        def make(key: str) -> None:
            spec = plan.container(key)
            handle.create(spec, plan.labels(spec) | extra, image)
            if key == ROUTER and spec_copy is not None:
                handle.put_files(ROUTER, {SPEC_COPY: spec_copy})

        with churn("create", handle.engine.name):
            in_threads(make, missing, workers=8)
    stopped = [key for key, info in found.items() if not info.running]
    if stopped:
        progress(f"starting {len(stopped)} stopped containers")
        with churn("create", handle.engine.name):
            in_threads(handle.start, stopped, workers=8)
    if spec_copy is not None and ROUTER not in missing:
        handle.put_files(ROUTER, {SPEC_COPY: spec_copy})

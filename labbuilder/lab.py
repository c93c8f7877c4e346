"""Lab lifecycle: up (create or converge), down, status — the only module that sequences effects.

`up` loads and resolves the whole spec before it creates anything, so a bad file creates
nothing; if applying fails, everything created so far is removed again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import docker.errors
import yaml
from docker.models.containers import Container

from labbuilder import image as node_image
from labbuilder.apply import Applier
from labbuilder.errors import LabError
from labbuilder.model import Lab
from labbuilder.plan import ROUTER, Plan, compile_plan
from labbuilder.resolve import Resolved, build_model
from labbuilder.runtime.docker import LABEL_LAB, LABEL_NODE, LABEL_ROLE, LABEL_SPEC, DockerRuntime
from labbuilder.spec import Spec, load, load_text

Progress = Callable[[str], None]
SPEC_COPY = "/etc/labbuilder/lab.yaml"  # inside the router: lets status/get work without the file


def _quiet(_: str) -> None:
    pass


def resolve_file(path: str, name: str | None = None) -> tuple[Spec, Resolved]:
    spec = load(path)
    if name:
        spec.data["name"] = name
    return spec, build_model(spec)


def plan_hash(plan: Plan) -> str:
    text = "\n".join(f"{key}: {op.describe()}" for key, op in plan.ops())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class UpResult:
    lab: Lab
    created: bool  # False when an existing lab was converged


def up(
    path: str, name: str | None = None, progress: Progress = _quiet, runtime: DockerRuntime | None = None
) -> UpResult:
    spec, resolved = resolve_file(path, name)
    lab = resolved.lab
    plan = compile_plan(lab)
    runtime = runtime or DockerRuntime()
    tag = node_image.ensure_image(runtime.client, on_progress=progress)
    lab = replace(lab, image=tag)
    digest = plan_hash(plan)
    existing = runtime.lab_containers(lab.name)
    if existing:
        hashes = {c.labels.get(LABEL_SPEC) for c in existing}
        if hashes != {digest} or len(existing) != len(plan.containers):
            raise LabError(
                f"lab {lab.name} is already up, from a different spec or only partly",
                hint=f"`labbuilder reset {lab.name}` repairs it, `labbuilder down {lab.name}` removes it; "
                "`up --name OTHER` starts a second copy",
            )
        progress(f"lab {lab.name} is already up: converging")
    try:
        containers, _ = ensure_containers(runtime, plan, progress, tag)
        pids = {key: runtime.pid(c) for key, c in containers.items()}
        runtime.put_files(containers[ROUTER], {SPEC_COPY: spec_text(spec)})
        applier = Applier(runtime, containers, pids)
        progress("router: node network and routes")
        applier.apply(ROUTER, plan.steps[ROUTER])
        nodes = [key for key in plan.steps if key != ROUTER]
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(nodes)))) as pool:
            futures = {key: pool.submit(applier.apply, key, plan.steps[key]) for key in nodes}
            for key, future in futures.items():
                future.result()
                progress(f"{key}: configured")
    except BaseException:
        if not existing:
            progress(f"failed: removing the half-built lab {lab.name}")
            runtime.remove_lab(lab.name)
        raise
    return UpResult(lab, created=not existing)


def spec_text(spec: Spec) -> str:
    """The spec as YAML: what a lab keeps in its router, and what `render` writes there."""
    return yaml.safe_dump(spec.data, sort_keys=False)


def ensure_containers(
    runtime: DockerRuntime, plan: Plan, progress: Progress = _quiet, tag: str | None = None
) -> tuple[dict[str, Container], list[str]]:
    """Every container of the plan, running; returns them and the keys it had to create or start."""
    found = {c.labels.get(LABEL_NODE): c for c in runtime.lab_containers(plan.lab.name)}
    missing = [c for c in plan.containers if c.key not in found]
    touched = [c.key for c in missing]
    if missing:
        tag = tag or node_image.ensure_image(runtime.client, on_progress=progress)
        digest = plan_hash(plan)
        progress(f"creating {len(missing)} containers")
        with ThreadPoolExecutor(max_workers=4) as pool:
            made = pool.map(lambda c: (c.key, runtime.create(c, plan.lab.name, tag, digest)), missing)
            found.update(dict(made))
    for key, container in found.items():
        container.reload()
        if container.status != "running":
            container.start()
            touched.append(str(key))
    return {c.key: found[c.key] for c in plan.containers}, touched


def down(name: str, runtime: DockerRuntime | None = None) -> list[str]:
    """Remove everything the lab owns, found by its label; works after a crash and without the file."""
    runtime = runtime or DockerRuntime()
    return runtime.remove_lab(name)


@dataclass
class ContainerStatus:
    name: str
    node: str
    role: str
    state: str


def status(name: str | None = None, runtime: DockerRuntime | None = None) -> dict[str, list[ContainerStatus]]:
    runtime = runtime or DockerRuntime()
    containers = runtime.lab_containers(name) if name else runtime.all_lab_containers()
    labs: dict[str, list[ContainerStatus]] = {}
    for c in containers:
        labs.setdefault(c.labels[LABEL_LAB], []).append(
            ContainerStatus(c.name, c.labels.get(LABEL_NODE, ""), c.labels.get(LABEL_ROLE, ""), c.status)
        )
    for entries in labs.values():
        entries.sort(key=lambda s: (s.node != ROUTER, s.name))
    return labs


def running_spec(name: str, runtime: DockerRuntime | None = None) -> Spec:
    """The spec of a running lab, from the copy its router holds; LabError when no such lab runs."""
    runtime = runtime or DockerRuntime()
    routers = [c for c in runtime.lab_containers(name) if c.labels.get(LABEL_NODE) == ROUTER]
    if not routers:
        raise LabError(f"no lab named {name} on this host", hint="`labbuilder ls` lists the labs")
    try:
        text = runtime.run(routers[0], ["cat", SPEC_COPY])
    except (LabError, docker.errors.APIError) as err:
        raise LabError(f"lab {name}: cannot read its spec copy: {err}") from None
    return load_text(text, f"{name}:{SPEC_COPY}")


def running_model(name: str, runtime: DockerRuntime | None = None) -> Lab:
    """The model of a running lab."""
    return build_model(running_spec(name, runtime)).lab

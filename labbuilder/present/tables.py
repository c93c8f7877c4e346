"""Tables a person reads: addressing, plans, lab status. Rendering only, no effects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from labbuilder.spec.model import ROUTER, Lab

if TYPE_CHECKING:  # `plan` and `up` print without rich's tables, and never load the engine for a type
    from rich.console import Console
    from rich.table import Table

    from labbuilder.compile.plan import Plan
    from labbuilder.observe.checks import Result


class ContainerRow(Protocol):
    """What a status row shows of a container (engine.runtime.ContainerInfo has it)."""

    @property
    def name(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def state(self) -> str: ...


def columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain aligned columns, two spaces apart, no trailing blanks: what kubectl's tabwriter
    prints. Written by hand because it must stay instant for a thousand rows (rich's tables
    take seconds there) and be pasteable."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


def _listing(items: Sequence[str], limit: int = 3) -> str:
    """`a, b, c + 997 more` (kubectl's ENDPOINTS style), or <none>."""
    if not items:
        return "<none>"
    shown = ", ".join(items[:limit])
    return shown + (f" + {len(items) - limit} more" if len(items) > limit else "")


def addressing_tables(lab: Lab, pods_limit: int | None = None) -> list[str]:
    """The lab's addressing as text blocks: nodes, pods (all, or a pointer past `pods_limit`), services."""
    nodes = [["router", "router", lab.router_name, str(lab.network.gateway), "-", "-"]]
    nodes += [
        [n.name, n.role, lab.container_name(n.name), str(n.ip), str(n.pod_cidr or "-"), str(len(n.pods))]
        for n in lab.nodes
    ]
    blocks = [f"lab {lab.name}: nodes\n" + columns(["NODE", "ROLE", "CONTAINER", "IP", "POD CIDR", "PODS"], nodes)]
    if pods_limit is not None and len(lab.pods) > pods_limit:
        blocks.append(f"pods: {len(lab.pods)} (list them with `labbuilder get pods {lab.name} -o wide`)")
    else:
        pods = [[p.namespace, p.name, p.node, str(p.ip), p.netns, p.host_veth] for p in lab.pods]
        blocks.append("pods\n" + columns(["NAMESPACE", "NAME", "NODE", "IP", "NETNS", "VETH"], pods))
    if lab.services:
        services = []
        for svc in lab.services:
            ports = ",".join(f"{p.port}{':' + str(p.node_port) if p.node_port else ''}/{p.protocol}" for p in svc.ports)
            endpoints = sorted({f"{e.ip}:{e.port}" for eps in svc.endpoints.values() for e in eps})
            outside = ",".join(map(str, (*svc.load_balancer_ips, *svc.external_ips)))
            outside = outside or ("<pending>" if svc.type == "LoadBalancer" else "<none>")
            row = [svc.namespace, svc.name, svc.type, str(svc.cluster_ip), outside, ports, _listing(endpoints)]
            services.append(row)
        headers = ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "ENDPOINTS"]
        blocks.append("services\n" + columns(headers, services))
    return blocks


def print_plan(console: Console, plan: Plan) -> None:
    out = console.file
    out.write("\n\n".join(addressing_tables(plan.lab)) + "\n")
    for key, ops in plan.steps.items():
        container = plan.lab.router_name if key == ROUTER else plan.lab.container_name(key)
        console.rule(f"{container} ({len(ops)} operations)")
        # verbatim, one write per container: thousands of small writes cost more than the text
        out.write("".join(f"{op.describe()}\n" for op in ops))


def status_table(labs: Mapping[str, Sequence[ContainerRow]]) -> Table:
    from rich.table import Table

    table = Table()
    for column in ("LAB", "CONTAINER", "NODE", "ROLE", "STATE"):
        table.add_column(column)
    for lab, entries in sorted(labs.items()):
        for e in entries:
            table.add_row(lab, e.name, e.key, e.role, e.state)
    return table


def labs_table(labs: Mapping[str, Sequence[ContainerRow]]) -> Table:
    from rich.table import Table

    table = Table()
    for column in ("LAB", "NODES", "RUNNING", "STATE"):
        table.add_column(column)
    for lab, entries in sorted(labs.items()):
        running = sum(e.state == "running" for e in entries)
        state = "up" if running == len(entries) else ("down" if running == 0 else "degraded")
        table.add_row(lab, str(len(entries) - 1), f"{running}/{len(entries)}", state)
    return table


def results_table(results: Sequence[Result]) -> Table:
    """`labbuilder check`: one row per check, PASS in green, FAIL in red."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold")
    for column in ("RESULT", "CHECK", "WHAT", "DETAIL"):
        table.add_column(column)
    for r in results:
        mark = Text("PASS", style="green") if r.passed else Text("FAIL", style="red")
        table.add_row(mark, Text(r.name), Text(r.description), Text(r.detail))
    return table

"""Tables a person reads: addressing, plans, lab status. Rendering only, no effects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from rich.console import Console
from rich.table import Table
from rich.text import Text

from labbuilder.compile.plan import Plan
from labbuilder.observe.checks import Result
from labbuilder.spec.model import ROUTER, Lab


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


def addressing_tables(lab: Lab) -> list[Table]:
    nodes = Table(title=f"lab {lab.name}: nodes", title_justify="left")
    for column in ("NODE", "ROLE", "CONTAINER", "IP", "POD CIDR", "PODS"):
        nodes.add_column(column)
    nodes.add_row("router", "router", lab.router_name, str(lab.network.gateway), "-", "-")
    for n in lab.nodes:
        nodes.add_row(n.name, n.role, lab.container_name(n.name), str(n.ip), str(n.pod_cidr or "-"), str(len(n.pods)))
    pods = Table(title="pods", title_justify="left")
    for column in ("NAMESPACE", "NAME", "NODE", "IP", "NETNS", "VETH"):
        pods.add_column(column)
    for p in lab.pods:
        pods.add_row(p.namespace, p.name, p.node, str(p.ip), p.netns, p.host_veth)
    tables = [nodes, pods]
    if lab.services:
        services = Table(title="services", title_justify="left")
        for column in ("NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "ENDPOINTS"):
            services.add_column(column)
        for s in lab.services:
            ports = ",".join(f"{p.port}{':' + str(p.node_port) if p.node_port else ''}/{p.protocol}" for p in s.ports)
            endpoints = sorted({f"{e.ip}:{e.port}" for eps in s.endpoints.values() for e in eps})
            services.add_row(s.namespace, s.name, s.type, str(s.cluster_ip), ports, ", ".join(endpoints) or "<none>")
        tables.append(services)
    return tables


def print_plan(console: Console, plan: Plan) -> None:
    for table in addressing_tables(plan.lab):
        console.print(table)
    for key, ops in plan.steps.items():
        container = plan.lab.router_name if key == ROUTER else plan.lab.container_name(key)
        console.rule(f"{container} ({len(ops)} operations)")
        for op in ops:
            console.print(Text(op.describe()), soft_wrap=True)


def status_table(labs: Mapping[str, Sequence[ContainerRow]]) -> Table:
    table = Table()
    for column in ("LAB", "CONTAINER", "NODE", "ROLE", "STATE"):
        table.add_column(column)
    for lab, entries in sorted(labs.items()):
        for e in entries:
            table.add_row(lab, e.name, e.key, e.role, e.state)
    return table


def labs_table(labs: Mapping[str, Sequence[ContainerRow]]) -> Table:
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
    table = Table(box=None, header_style="bold")
    for column in ("RESULT", "CHECK", "WHAT", "DETAIL"):
        table.add_column(column)
    for r in results:
        mark = Text("PASS", style="green") if r.passed else Text("FAIL", style="red")
        table.add_row(mark, Text(r.name), Text(r.description), Text(r.detail))
    return table

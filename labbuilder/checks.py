"""Declarative checks on a running lab: reach / no-reach, routes, DNS answers, NAT seen in conntrack.

A check is resolved against the lab model into a `Probe` (pure: which container, which netns,
which command, how to judge its output), then run with `docker exec`. Checks run in parallel.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, ip_address
from typing import Any
from xml.etree import ElementTree

from labbuilder.errors import LabError
from labbuilder.model import Check, Lab, Pod, Service
from labbuilder.plan import ROUTER

PROBE_TIMEOUT = 3  # seconds a reach probe waits


@dataclass(frozen=True)
class Place:
    """Where a probe runs: a container key (node name or ROUTER) and maybe a pod netns."""

    key: str
    netns: str | None = None
    label: str = ""
    ip: str | None = None  # the address probes leave from, for pods (NAT checks compare with it)


@dataclass(frozen=True)
class Target:
    ip: IPv4Address
    port: int | None
    label: str
    service: Service | None = None


@dataclass(frozen=True)
class Probe:
    check: Check
    place: Place
    argv: tuple[str, ...]
    description: str
    judge: Callable[[int, str], tuple[bool, str]] = field(compare=False)
    follow_up: tuple[str, ...] | None = None  # run in the place's node after argv (conntrack)


@dataclass
class Result:
    name: str
    kind: str
    description: str
    passed: bool
    detail: str


def check_from_spec(item: dict[str, Any], index: int) -> Check:
    name = item.get("name") or _default_name(item, index)
    return Check(
        name,
        item.get("from"),
        item.get("to"),
        item.get("expect", "reach"),
        item.get("protocol"),
        item.get("port"),
        item.get("nat"),
        item.get("on"),
        item.get("route"),
        item.get("dns"),
        item.get("answer"),
    )


def _default_name(item: dict[str, Any], index: int) -> str:
    if "route" in item:
        return f"route on {item['on']}"
    if "dns" in item:
        return f"dns {item['dns']}"
    return f"{item['from']} → {item['to']}"


# -- resolving names ----------------------------------------------------------------------
def find_pod(lab: Lab, name: str) -> Pod:
    """A pod by name or prefix, optionally `@node`; a prefix picks the first matching pod in lab order.

    `nginx@worker-2` is the first nginx pod on worker-2: it reads well and survives `up --name`,
    which changes the hashed part of pod names.
    """
    matches = lab.find_pods(name)
    if not matches:
        raise LabError(f"no pod named {name!r}", hint="pods are: " + ", ".join(f"{p.name}@{p.node}" for p in lab.pods))
    return matches[0]


def place(lab: Lab, ref: str) -> Place:
    kind, _, name = ref.partition("/")
    if ref == ROUTER:
        return Place(ROUTER, None, ROUTER)
    if kind == "pod":
        pod = find_pod(lab, name)
        return Place(pod.node, pod.netns, f"pod/{pod.name}", str(pod.ip))
    if kind == "node":
        if name not in {n.name for n in lab.nodes}:
            _unknown_node(lab, name)
        return Place(name, None, ref)
    raise LabError(f"{ref!r} is not a place to probe from", hint="use node/NAME, pod/NAME or router")


def _unknown_node(lab: Lab, name: str) -> None:
    raise LabError(f"no node named {name!r}", hint="nodes are: " + ", ".join(n.name for n in lab.nodes))


def find_service(lab: Lab, name: str) -> Service:
    svc_name, _, namespace = name.partition(".")
    for svc in lab.services:
        if svc.name == svc_name and (not namespace or svc.namespace == namespace):
            return svc
    raise LabError(f"no service named {name!r}", hint="services are: " + ", ".join(s.name for s in lab.services))


def target(lab: Lab, ref: str) -> Target:
    kind, _, name = ref.partition("/")
    if kind == "pod":
        pod = find_pod(lab, name)
        return Target(pod.ip, pod.ports[0].port if pod.ports else None, f"pod/{pod.name}")
    if kind == "node":
        if name == ROUTER:
            return Target(lab.network.gateway, None, ROUTER)
        node = next((n for n in lab.nodes if n.name == name), None)
        if node is None:
            _unknown_node(lab, name)
        assert node is not None
        return Target(node.ip, node.listen_ports[0] if node.listen_ports else None, ref)
    if kind == "service":
        svc = find_service(lab, name)
        return Target(svc.cluster_ip, svc.ports[0].port, f"service/{svc.ref}", svc)
    host, _, port = ref.partition(":")
    try:
        ip = ip_address(host)
    except ValueError:
        raise LabError(
            f"{ref!r} is not a target", hint="use node/NAME, pod/NAME, service/NAME, an IP or IP:PORT"
        ) from None
    assert isinstance(ip, IPv4Address)
    return Target(ip, int(port) if port else None, ref)


# -- probes ---------------------------------------------------------------------------------
def probe_for(lab: Lab, check: Check) -> Probe:
    """Resolve a check into the command that tests it. Raises LabError for unknown names."""
    if check.route is not None:
        where = place(lab, check.on or "")
        return Probe(
            check, where, ("ip", "route", "show"), f"{where.label}: route {check.route}", _judge_route(check.route)
        )
    source = place(lab, check.source or "")
    if check.dns is not None:
        answer = check.answer or _service_answer(lab, check.dns)
        return Probe(
            check, source, ("getent", "hosts", check.dns), f"{source.label}: resolve {check.dns}", _judge_dns(answer)
        )
    to = target(lab, check.target or "")
    protocol = check.protocol or ("tcp" if (check.port or to.port) else "icmp")
    port = check.port or to.port
    if protocol != "icmp" and port is None:
        raise LabError(f"check {check.name!r}: {to.label} has no port to probe", hint="add port: N")
    argv = {
        "icmp": ("ping", "-c", "1", "-W", str(PROBE_TIMEOUT), str(to.ip)),
        "tcp": ("nc", "-z", "-w", str(PROBE_TIMEOUT), str(to.ip), str(port)),
        "udp": ("sh", "-c", f"echo probe | nc -u -w {PROBE_TIMEOUT} {to.ip} {port} | head -c 200"),
    }[protocol]
    shown = f"{to.ip}:{port}" if protocol != "icmp" else str(to.ip)
    description = f"{source.label} → {to.label} ({protocol} {shown}) {check.expect}"
    follow_up = None
    if check.nat:
        # Only this protocol's entries: a ping and a connect from one pod to one IP may run together.
        follow_up = ("conntrack", "-L", "-p", protocol, "-d", str(to.ip))
        description += f", {check.nat} seen"
    return Probe(check, source, argv, description, _judge_reach(check.expect, protocol), follow_up)


def _service_answer(lab: Lab, name: str) -> str | None:
    short = name.removesuffix(f".svc.{lab.cluster.domain}").removesuffix(".svc")
    parts = short.split(".")
    for svc in lab.services:
        if parts[0] == svc.name and (len(parts) == 1 or parts[1] == svc.namespace):
            return str(svc.cluster_ip)
    return None


def _judge_reach(expect: str, protocol: str) -> Callable[[int, str], tuple[bool, str]]:
    def judge(code: int, output: str) -> tuple[bool, str]:
        reached = code == 0 and (protocol != "udp" or bool(output.strip()))
        detail = "reached" if reached else "no answer"
        return reached == (expect == "reach"), detail

    return judge


def _judge_route(route: str) -> Callable[[int, str], tuple[bool, str]]:
    wanted = route.split()

    def judge(code: int, output: str) -> tuple[bool, str]:
        for line in output.splitlines():
            if line.split()[: len(wanted)] == wanted:
                return True, line.strip()
        return False, "route missing"

    return judge


def _judge_dns(answer: str | None) -> Callable[[int, str], tuple[bool, str]]:
    def judge(code: int, output: str) -> tuple[bool, str]:
        got = output.split()[0] if code == 0 and output.split() else None
        if got is None:
            return False, "no answer"
        return (answer is None or got == answer), f"answered {got}" + (f", expected {answer}" if answer else "")

    return judge


CONNTRACK = re.compile(r"src=(\S+) dst=(\S+).*?src=(\S+) dst=(\S+)")


def judge_nat(nat: str, conntrack: str, source_ip: str | None) -> tuple[bool, str]:
    """From `conntrack -L -d TARGET`: snat = the reply goes to another address than the sender's;
    dnat = the reply comes from another address than the one dialled."""
    for line in conntrack.splitlines():
        match = CONNTRACK.search(line)
        if not match or (source_ip and match.group(1) != source_ip):
            continue
        src, dst, reply_src, reply_dst = match.groups()
        seen = "snat" if reply_dst != src else ("dnat" if reply_src != dst else "none")
        if reply_dst != src and nat == "snat":
            return True, f"{src} → {reply_dst} (SNAT)"
        if reply_src != dst and nat == "dnat":
            return True, f"{dst} → {reply_src} (DNAT)"
        if nat == "none" and seen == "none":
            return True, "no translation"
        return False, f"conntrack shows {seen}: {line.strip()}"
    return False, "no conntrack entry for the probe"


# -- running --------------------------------------------------------------------------------
Exec = Callable[[str, tuple[str, ...]], tuple[int, str]]  # (container key, argv) -> (code, output)


def run_probe(probe: Probe, exec_in: Exec, lab: Lab) -> Result:
    argv = ("ip", "netns", "exec", probe.place.netns, *probe.argv) if probe.place.netns else probe.argv
    code, output = exec_in(probe.place.key, argv)
    passed, detail = probe.judge(code, output)
    if passed and probe.follow_up and probe.check.nat:
        _, conntrack = exec_in(probe.place.key, probe.follow_up)
        passed, detail = judge_nat(probe.check.nat, conntrack, probe.place.ip)
    kind = "route" if probe.check.route else ("dns" if probe.check.dns else ("nat" if probe.check.nat else "reach"))
    return Result(probe.check.name, kind, probe.description, passed, detail)


def run_checks(lab: Lab, checks: Iterable[Check], exec_in: Exec) -> list[Result]:
    probes = [probe_for(lab, check) for check in checks]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda probe: run_probe(probe, exec_in, lab), probes))


def junit_xml(lab: str, results: list[Result]) -> str:
    suite = ElementTree.Element(
        "testsuite", name=f"labbuilder.{lab}", tests=str(len(results)), failures=str(sum(not r.passed for r in results))
    )
    for r in results:
        case = ElementTree.SubElement(suite, "testcase", classname=f"{lab}.{r.kind}", name=r.name)
        if not r.passed:
            ElementTree.SubElement(case, "failure", message=r.detail).text = r.description
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def as_json(results: list[Result]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]

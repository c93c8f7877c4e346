"""Declarative checks on a running lab: reach / no-reach, routes, DNS answers, NAT seen in conntrack,
HTTP(S) answers (curl in the source's namespace; `tls: {ca: lab}` verifies with the lab's CA).

A check is resolved against the lab model into a `Probe` (pure: which container, which netns,
which command, how to judge its output), then run with `docker exec`. Checks run in parallel.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

from labbuilder.compile.ops import Ns
from labbuilder.compile.pki import CA_PEM
from labbuilder.observe import matrix
from labbuilder.spec import refs
from labbuilder.spec.checks import probe_target
from labbuilder.spec.model import Check, HttpCheck, Lab
from labbuilder.spec.refs import Place

if TYPE_CHECKING:
    from labbuilder.engine.runtime import LabHandle

PROBE_TIMEOUT = 3  # seconds a reach probe waits


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


# -- probes ---------------------------------------------------------------------------------
def probe_for(lab: Lab, check: Check) -> Probe:
    """Resolve a check into the command that tests it. Raises LabError for unknown names."""
    if check.route is not None:
        where = refs.place(lab, check.on or "")
        return Probe(
            check, where, ("ip", "route", "show"), f"{where.ref}: route {check.route}", _judge_route(check.route)
        )
    source = refs.place(lab, check.source or "")
    if check.dns is not None:
        answers = (check.answer,) if check.answer else _expected_answers(lab, check.dns)
        return Probe(
            check, source, ("getent", "hosts", check.dns), f"{source.ref}: resolve {check.dns}", _judge_dns(answers)
        )
    to, protocol, port = probe_target(lab, check)
    if check.http is not None:
        http = check.http
        url = f"{'https' if http.tls else 'http'}://{http.host or to.ip}:{port}{http.path}"
        argv = curl_argv(http, url)
        description = f"{source.ref} → {to.ref} (GET {url}) HTTP {http.status}"
        if check.expect == "no-reach":
            description = f"{source.ref} → {to.ref} (GET {url}) no answer"
        follow_up = ("conntrack", "-L", "-p", "tcp", "-d", str(to.ip)) if check.nat else None
        if check.nat:
            description += f", {check.nat} seen"
        return Probe(check, source, argv, description, _judge_http(check.expect, http), follow_up)
    argv = {
        "icmp": ("ping", "-c", "1", "-W", str(PROBE_TIMEOUT), str(to.ip)),
        "tcp": ("nc", "-z", "-w", str(PROBE_TIMEOUT), str(to.ip), str(port)),
        "udp": ("sh", "-c", f"echo probe | nc -u -w {PROBE_TIMEOUT} {to.ip} {port} | head -c 200"),
    }[protocol]
    shown = f"{to.ip}:{port}" if protocol != "icmp" else str(to.ip)
    description = f"{source.ref} → {to.ref} ({protocol} {shown}) {check.expect}"
    follow_up = None
    if check.nat:
        # Only this protocol's entries: a ping and a connect from one pod to one IP may run together.
        follow_up = ("conntrack", "-L", "-p", protocol, "-d", str(to.ip))
        description += f", {check.nat} seen"
    return Probe(check, source, argv, description, _judge_reach(check.expect, protocol), follow_up)


HTTP_MARK = "@http "  # curl's -w line after the body: the status it got (000: no answer)


def curl_argv(http: HttpCheck, url: str) -> tuple[str, ...]:
    """curl as a learner would type it: `--cacert` the lab's CA (its path in every node), or `-k`."""
    tls: tuple[str, ...] = ()
    if http.tls:
        tls = ("--cacert", CA_PEM) if http.ca == "lab" else ("-k",)
    body = () if http.contains else ("-o", "/dev/null")
    timing = ("--max-time", str(PROBE_TIMEOUT))
    return ("curl", "-sS", *timing, *tls, *body, "-w", f"\n{HTTP_MARK}%{{http_code}}\n", url)


def _judge_http(expect: str, http: HttpCheck) -> Callable[[int, str], tuple[bool, str]]:
    def judge(code: int, output: str) -> tuple[bool, str]:
        body, _, rest = output.rpartition(f"\n{HTTP_MARK}")
        status = rest.split()[0] if rest.split() else "000"
        error = next((line.strip() for line in output.splitlines() if line.startswith("curl: (")), "")
        if status == "000":
            return expect == "no-reach", f"no answer: {error}" if error else "no answer"
        if expect == "no-reach":
            return False, f"answered HTTP {status}"
        if status != str(http.status):
            return False, f"HTTP {status}, expected {http.status}"
        if http.contains and http.contains not in body:
            return False, f"HTTP {status}, the body lacks {http.contains!r}"
        return True, f"HTTP {status}" + (f", body holds {http.contains!r}" if http.contains else "")

    return judge


POD_RECORD = re.compile(r"(\d{1,3})-(\d{1,3})-(\d{1,3})-(\d{1,3})\.[a-z0-9-]+\.pod\.")


def _expected_answers(lab: Lab, name: str) -> tuple[str, ...]:
    """What a name of the cluster resolves to: a service's ClusterIP, a headless service's pod IPs,
    the address a pod record spells; () for a name the lab does not know (any answer will do)."""
    domain = lab.cluster.domain
    pod_record = POD_RECORD.match(name)
    if pod_record and name.endswith(f".pod.{domain}"):
        return (".".join(pod_record.groups()),)
    short = name.removesuffix(f".svc.{domain}").removesuffix(".svc")
    parts = short.split(".")
    for svc in lab.services:
        if parts[0] == svc.name and (len(parts) == 1 or parts[1] == svc.namespace):
            if svc.cluster_ip is None:
                return tuple(sorted({str(e.ip) for eps in svc.endpoints.values() for e in eps}))
            return (str(svc.cluster_ip),)
    return ()


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


def _judge_dns(answers: tuple[str, ...]) -> Callable[[int, str], tuple[bool, str]]:
    expected = " or ".join(answers)

    def judge(code: int, output: str) -> tuple[bool, str]:
        got = output.split()[0] if code == 0 and output.split() else None
        if got is None:
            return False, "no answer"
        return (not answers or got in answers), f"answered {got}" + (f", expected {expected}" if answers else "")

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
# (place, argv) -> (exit code, output): the argv runs in the place's namespace. A LabHandle gives
# the real one; unit tests give their own.
Exec = Callable[[Place, tuple[str, ...]], tuple[int, str]]


def exec_in(handle: LabHandle) -> Exec:
    """Run probes through the lab's handle: in the place's container, under its pod netns if any."""

    def run(where: Place, argv: tuple[str, ...]) -> tuple[int, str]:
        result = handle.enter(Ns(where.key, where.netns), argv)
        return result.code, result.output

    return run


def run_probe(probe: Probe, exec_in: Exec, lab: Lab) -> Result:
    code, output = exec_in(probe.place, probe.argv)
    passed, detail = probe.judge(code, output)
    if passed and probe.follow_up and probe.check.nat:
        _, conntrack = exec_in(replace(probe.place, netns=None), probe.follow_up)  # the node's conntrack
        passed, detail = judge_nat(probe.check.nat, conntrack, probe.place.ip)
    check = probe.check
    kind = "route" if check.route else "dns" if check.dns else "nat" if check.nat else "http" if check.http else "reach"
    return Result(probe.check.name, kind, probe.description, passed, detail)


def run_checks(lab: Lab, checks: Iterable[Check], exec_in: Exec) -> list[Result]:
    """Every check, in their order; probes in parallel, matrices (themselves parallel) after them."""
    checks = list(checks)
    probes = [probe_for(lab, check) for check in checks if check.matrix is None]
    with ThreadPoolExecutor(max_workers=8) as pool:
        done = iter(list(pool.map(lambda probe: run_probe(probe, exec_in, lab), probes)))
    return [run_matrix(lab, check, exec_in) if check.matrix else next(done) for check in checks]


def run_matrix(lab: Lab, check: Check, exec_in: Exec) -> Result:
    spec = check.matrix
    assert spec is not None
    measured = matrix.measure(lab, spec.port, spec.protocol, exec_in, spec.group)
    passed, detail = matrix.judge(measured, matrix.expected(lab, spec))
    source = "the table given" if spec.expect is not None else "the table the NetworkPolicies imply"
    description = f"every pod to every pod on {spec.port}/{spec.protocol.lower()}: {source}"
    return Result(check.name, "matrix", description, passed, detail)


def junit_xml(lab: str, results: list[Result]) -> str:
    return ElementTree.tostring(_suite(lab, results), encoding="unicode", xml_declaration=True) + "\n"


def junit_suites(name: str, labs: list[tuple[str, list[Result]]]) -> str:
    """Several labs in one JUnit file: a <testsuites> of one <testsuite> per lab."""
    suites = ElementTree.Element(
        "testsuites",
        name=name,
        tests=str(sum(len(results) for _, results in labs)),
        failures=str(sum(not r.passed for _, results in labs for r in results)),
    )
    suites.extend(_suite(lab, results) for lab, results in labs)
    return ElementTree.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _suite(lab: str, results: list[Result]) -> ElementTree.Element:
    suite = ElementTree.Element(
        "testsuite", name=f"labbuilder.{lab}", tests=str(len(results)), failures=str(sum(not r.passed for r in results))
    )
    for r in results:
        case = ElementTree.SubElement(suite, "testcase", classname=f"{lab}.{r.kind}", name=r.name)
        if not r.passed:
            ElementTree.SubElement(case, "failure", message=r.detail).text = r.description
    return suite


def as_json(results: list[Result]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]

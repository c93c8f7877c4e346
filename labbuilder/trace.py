"""Follow one probe packet through a running lab, hop by hop, as the kernel handled it.

Nothing here is guessed from the spec. For the time of one probe, every namespace of the lab
(router, nodes, pod netns, as `ip netns list` finds them) gets a raw-table TRACE rule that matches
only the probe's DSCP, plus target-less mangle rules so INPUT/FORWARD/POSTROUTING show up even
where no filter or nat table exists; `xtables-monitor --trace` (iptables-nft) prints every table,
chain and rule the packet meets, with its addresses at each hook. The probe (templates/trace/
probe.py) sends one marked packet from the source namespace; its IP ID follows it through every
NAT. Hops are ordered by TTL (routing lowers it, bridging does not), then by what the namespace did
with the packet; `ip route get` in each namespace names the route the kernel chooses. Every rule
is removed afterwards, and a raw or mangle table that was not there before goes with it.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, ip_address
from typing import Any, Literal

from docker.models.containers import Container

from labbuilder.errors import LabError
from labbuilder.model import Lab, Pod
from labbuilder.plan import ROUTER
from labbuilder.resources import templates_dir
from labbuilder.runtime.docker import LABEL_NODE, DockerRuntime

Proto = Literal["tcp", "udp", "icmp"]
DSCP = 0x2A
TOS = DSCP << 2
MARK = "labbuilder-trace"
LIMIT = 60  # seconds a monitor may live if a trace is interrupted before it stops them
_RANK = {"sends": 0, "bridges": 1, "forwards": 2, "delivers": 3, "drops": 3}
_VERDICTS = {"0xfffffffb": "RETURN", "0xfffffffe": "BREAK", "0xffffffff": "CONTINUE"}


# -- what to trace ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Place:
    """A network namespace of the lab: a container's own, or a pod netns inside a node."""

    key: str  # node name or ROUTER
    netns: str | None
    label: str
    ip: str = ""


@dataclass(frozen=True)
class Target:
    ip: str
    port: int
    protocol: Proto
    label: str

    def __str__(self) -> str:
        return f"{self.ip} (ICMP echo)" if self.protocol == "icmp" else f"{self.ip}:{self.port}/{self.protocol}"


FORMS = "pod/NAME (a unique prefix will do), node/NAME, node/router, service/NAME, or an IP"


def _pod(lab: Lab, name: str) -> Pod:
    """A pod by name or unique prefix; `PREFIX@NODE` narrows to one node, as in checks."""
    found = lab.find_pods(name)
    if len(found) != 1:
        names = ", ".join(f"{p.name}@{p.node}" for p in found) if found else "none"
        raise LabError(f"pod/{name} matches {len(found)} pods ({names})", hint="give a longer prefix, or PREFIX@NODE")
    return found[0]


def _place(lab: Lab, kind: str, name: str) -> Place:
    if kind == "pod":
        pod = _pod(lab, name)
        return Place(pod.node, pod.netns, f"pod {pod.ref} on {pod.node}", str(pod.ip))
    if kind == "node" and name == ROUTER:
        return Place(ROUTER, None, "router", str(lab.network.gateway))
    if kind == "node":
        try:
            return Place(name, None, f"node {name}", str(lab.node(name).ip))
        except KeyError:
            raise LabError(f"lab {lab.name} has no node {name}", hint=FORMS) from None
    raise LabError(f"{kind}/{name}: cannot send packets", hint="trace FROM a pod, a node or the router")


def places(lab: Lab) -> dict[tuple[str, str | None], Place]:
    """Every namespace the model knows, by (container key, netns)."""
    found: dict[tuple[str, str | None], Place] = {(ROUTER, None): _place(lab, "node", ROUTER)}
    for node in lab.nodes:
        found[(node.name, None)] = _place(lab, "node", node.name)
        for pod in node.pods:
            found[(node.name, pod.netns)] = _place(lab, "pod", pod.ref)
    return found


def source_place(lab: Lab, text: str) -> Place:
    kind, slash, name = text.partition("/")
    if slash:
        return _place(lab, kind, name)
    if text == ROUTER:
        return _place(lab, "node", ROUTER)
    owners = [p for p in places(lab).values() if p.ip == text]
    if not owners:
        raise LabError(f"{text}: no namespace of lab {lab.name} holds that address", hint=FORMS)
    return owners[0]


def target(lab: Lab, text: str) -> Target:
    """`KIND/NAME[:PORT[/PROTO]]` or `IP[:PORT[/PROTO]]`; `:icmp` or no port means an ICMP echo,
    except for a service, whose first port is the default."""
    base, port, proto = text, None, None
    match = re.fullmatch(r"(.+?):(?:(\d+)(?:/(tcp|udp))?|(icmp))", text, re.IGNORECASE)
    if match:
        base, number, given, icmp = match.groups()
        port, proto = (None, "icmp") if icmp else (int(number), (given or "").lower() or None)
    kind, slash, name = base.partition("/")
    if slash and kind == "service":
        svc = next((s for s in lab.services if name in (s.name, s.ref)), None)
        if svc is None:
            raise LabError(f"lab {lab.name} has no service {name}", hint=", ".join(s.ref for s in lab.services))
        chosen = next((p for p in svc.ports if port in (None, p.port)), None)
        if proto != "icmp" and chosen is not None and port is None:
            port = chosen.port
        if proto is None:
            proto = chosen.protocol.lower() if chosen and chosen.port == port else "tcp"
        ip, label = str(svc.cluster_ip), f"service {svc.ref}"
    elif slash:
        place = _place(lab, kind, name)
        ip, label = place.ip, place.label
    else:
        try:
            ip = str(IPv4Address(base))
        except ValueError:
            raise LabError(f"{text}: not something to trace to", hint=FORMS) from None
        label = ip
    protocol: Proto = "icmp" if port is None or proto == "icmp" else ("udp" if proto == "udp" else "tcp")
    return Target(ip, port or 0, protocol, label)


# -- reading xtables-monitor -----------------------------------------------------------------
@dataclass(frozen=True)
class Hit:
    """One line of a trace: a rule the packet matched (or a chain's policy or end)."""

    table: str
    chain: str
    verdict: str  # ACCEPT, DROP, JUMP:CHAIN, RETURN, CONTINUE, policy ACCEPT, return
    rule: str = ""  # as iptables-save prints it: `-A CHAIN ...`; empty for a policy


@dataclass
class Visit:
    """The packet at one netfilter hook of one namespace: its addresses there, and the rules it met."""

    hook: str
    packet: dict[str, str]  # IN OUT SRC DST SPORT DPORT TTL ID ...
    hits: list[Hit] = field(default_factory=list)


def parse_monitor(text: str) -> list[Visit]:
    """`xtables-monitor --trace` output → visits in order; a trace id links TRACE lines to their PACKET."""
    visits: list[Visit] = []
    current: dict[str, Visit] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("PACKET:"):
            _, _, trace_id, *words = line.split()
            fields = dict(w.split("=", 1) for w in words if "=" in w)
            current[trace_id] = Visit("", fields)
            visits.append(current[trace_id])
        elif line.startswith("TRACE:"):
            head, _, rule = line.partition("  ")
            words = head.split()
            if len(words) < 4 or words[2] not in current:
                continue
            table, chain, kind, *rest = words[3].split(":")
            if kind == "rule":
                verdict = ":".join(rest[1:])
                verdict = _VERDICTS.get(verdict, verdict)
            elif kind == "policy":
                verdict = f"policy {rest[0] if rest else ''}".strip()
            else:
                verdict = kind
            rule = re.sub(r"^-4 -t \S+ ", "", rule.strip())
            visit = current[words[2]]
            visit.hook = visit.hook or chain
            visit.hits.append(Hit(table, chain, verdict, rule))
    return [v for v in visits if v.hook]


def follow(visits: list[Visit], ip_id: str) -> list[list[Visit]]:
    """The visits of one packet (by IP ID), merged per hook, split where the packet enters anew."""
    segments: list[list[Visit]] = []
    for visit in (v for v in visits if v.packet.get("ID") == ip_id):
        last = segments[-1][-1] if segments else None
        if last and last.hook == visit.hook:
            last.hits.extend(visit.hits)
            last.packet = {**visit.packet, **last.packet}  # as it entered the hook
        elif last is None or visit.hook in ("PREROUTING", "OUTPUT"):
            segments.append([Visit(visit.hook, dict(visit.packet), list(visit.hits))])
        else:
            segments[-1].append(Visit(visit.hook, dict(visit.packet), list(visit.hits)))
    return segments


# -- hops ------------------------------------------------------------------------------------
@dataclass
class Hop:
    place: Place
    visits: list[Visit]
    route_cmd: str = ""
    route: str = ""
    after: dict[str, str] = field(default_factory=dict)  # the packet as the next hop saw it (after SNAT)

    def visit(self, hook: str) -> Visit | None:
        return next((v for v in self.visits if v.hook == hook), None)

    @property
    def ttl(self) -> int:
        return int(self.visits[0].packet.get("TTL", 0)) if self.visits else 256

    @property
    def kind(self) -> str:
        forward = self.visit("FORWARD")
        if not self.visits or self.visits[0].hook == "OUTPUT":
            return "sends"
        if self.visit("INPUT"):
            return "delivers"
        if forward and self.visit("POSTROUTING"):
            return "bridges" if int(forward.packet.get("TTL", 0)) == self.ttl else "forwards"
        return "drops"

    def rules(self, table: str) -> list[Hit]:
        return [h for v in self.visits for h in v.hits if h.table == table and MARK not in h.rule]

    def dnat(self) -> str:
        """Where the nat table sent the packet: the DNAT target of the rule that matched."""
        for hit in self.rules("nat"):
            found = re.search(r"-j DNAT --to-destination (\S+)", hit.rule)
            if found:
                return found.group(1)
        return ""

    def snat(self) -> str:
        for hit in self.rules("nat"):
            found = re.search(r"-j (MASQUERADE|SNAT)(?: --to-source (\S+))?", hit.rule)
            if found and hit.verdict not in ("CONTINUE", "RETURN"):
                return found.group(2) or self.after.get("SRC") or "the address of the outgoing device"
        return ""

    def dropped_by(self) -> Hit | None:
        for hit in (h for v in self.visits for h in v.hits):
            if hit.verdict.endswith(("DROP", "REJECT")) or "-j REJECT" in hit.rule:
                return hit
        return None

    def destination(self) -> str:
        """The destination the kernel routes on here: after any DNAT at PREROUTING or OUTPUT."""
        for hook in ("POSTROUTING", "FORWARD", "INPUT"):
            visit = self.visit(hook)
            if visit and "DST" in visit.packet:
                return visit.packet["DST"]
        dnat = self.dnat()
        if dnat:
            return dnat.split(":")[0]
        return self.visits[0].packet.get("DST", "") if self.visits else ""


def order(hops: list[Hop]) -> list[Hop]:
    """Causal order: higher TTL first (routing lowers it); at equal TTL, what a namespace did."""
    return sorted(hops, key=lambda h: (-h.ttl, _RANK[h.kind]))


def endpoints(packet: dict[str, str]) -> str:
    src, dst = packet.get("SRC", "?"), packet.get("DST", "?")
    if "SPORT" in packet:
        src, dst = f"{src}:{packet['SPORT']}", f"{dst}:{packet.get('DPORT', '?')}"
    return f"{src} → {dst}"


# -- the trace -------------------------------------------------------------------------------
@dataclass
class Trace:
    lab: str
    source: Place
    target: Target
    outcome: str
    detail: str
    hops: list[Hop]
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for hop, raw in zip(self.hops, data["hops"], strict=True):
            raw["kind"] = hop.kind
            raw["dnat"] = hop.dnat()
            raw["snat"] = hop.snat()
        return data


def _probe_source() -> str:
    return (templates_dir() / "trace" / "probe.py").read_text()


def _in_ns(netns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


_EACH_NS = """for ns in - $(ip netns list | cut -d' ' -f1); do
  if [ "$ns" = - ]; then x=; else x="ip netns exec $ns"; fi
"""


def start_script(token: str) -> str:
    match = f"-m dscp --dscp {DSCP:#x} -m comment --comment {MARK}-{token}"
    return (
        "command -v xtables-monitor >/dev/null || { echo 'no xtables-monitor in the node image' >&2; exit 3; }\n"
        f"d=/run/labbuilder/{MARK}-{token}; mkdir -p $d\n"
        + _EACH_NS
        + f"""  $x iptables-save | sed -n 's/^\\*//p' > $d/$ns.tables
  $x iptables -t raw -I PREROUTING 1 {match} -j TRACE
  $x iptables -t raw -I OUTPUT 1 {match} -j TRACE
  for hook in INPUT FORWARD POSTROUTING; do $x iptables -t mangle -I $hook 1 {match}; done
  setsid $x timeout {LIMIT} stdbuf -oL xtables-monitor --trace </dev/null >$d/$ns.out 2>&1 &
  echo $! > $d/$ns.pid
done
sleep 0.3
"""
    )


def stop_script(token: str) -> str:
    """Stop the monitors, remove this trace's rules (and tables it created), print what was seen."""
    return (
        f"d=/run/labbuilder/{MARK}-{token}\n"
        'for f in $d/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null; done\n'
        + _EACH_NS
        + f"""  for t in raw mangle; do
    $x iptables-save -t $t | grep -e '--comment {MARK}-{token}' | sed 's/^-A /-D /' |
      while read -r rule; do $x iptables -t $t $rule; done
    if ! grep -qx $t $d/$ns.tables 2>/dev/null && ! $x iptables-save -t $t | grep -q '^-A '; then
      printf '*%s\\nCOMMIT\\n' $t | $x iptables-restore
    fi
  done
done
for f in $d/*.out; do [ -e "$f" ] && echo "=== ${{f##*/}}" && cat "$f"; done
rm -rf $d
"""
    )


def split_outputs(text: str) -> dict[str | None, str]:
    """`=== NS.out` sections → monitor output per netns (None: the container's own)."""
    found: dict[str | None, str] = {}
    for section in text.split("=== ")[1:]:
        head, _, body = section.partition("\n")
        name = head.removesuffix(".out")
        found[None if name == "-" else name] = body
    return found


class Tracer:
    def __init__(self, lab: Lab, runtime: DockerRuntime | None = None):
        self.lab = lab
        self.runtime = runtime or DockerRuntime()
        found = {c.labels.get(LABEL_NODE, ""): c for c in self.runtime.lab_containers(lab.name)}
        if not found:
            raise LabError(f"no lab named {lab.name} is running", hint="`labbuilder up` it first")
        down = sorted(c.name for c in found.values() if c.status != "running")
        if down:
            raise LabError(f"lab {lab.name}: not running: {', '.join(down)}", hint="`labbuilder up` converges it")
        self.containers: dict[str, Container] = found

    def _each(self, work: Callable[[Container], str]) -> dict[str, str]:
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = {key: pool.submit(work, c) for key, c in self.containers.items()}
            return {key: future.result() for key, future in futures.items()}

    def _sh(self, script: str, check: bool) -> Callable[[Container], str]:
        def run(container: Container) -> str:
            if check:
                return self.runtime.run(container, ["sh", "-c", script])
            return self.runtime.exec(container, ["sh", "-c", script]).output

        return run

    def run(self, source: Place, to: Target) -> Trace:
        if source.key not in self.containers:
            raise LabError(f"lab {self.lab.name} has no container for {source.label}")
        token = secrets.token_hex(4)
        outputs: dict[str, str] = {}
        try:
            self._each(self._sh(start_script(token), check=True))
            argv = ["python3", "-c", _probe_source(), to.protocol, to.ip, str(to.port), str(TOS)]
            answer = self.runtime.exec(self.containers[source.key], _in_ns(source.netns, argv)).output
            time.sleep(0.3)  # let the monitors print the last hops
        finally:
            outputs = self._each(self._sh(stop_script(token), check=False))
        try:
            probe = json.loads(answer.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise LabError(f"the probe in {source.label} failed: {answer.strip()[-300:]}") from None
        hops = self.hops(source, outputs)
        for hop in hops:
            self.route(hop, to.ip)
        trace = Trace(self.lab.name, source, to, probe["outcome"], probe["detail"], hops, [])
        trace.notes = notes(self.lab, trace)
        return trace

    def hops(self, source: Place, outputs: dict[str, str]) -> list[Hop]:
        known = places(self.lab)
        seen: dict[Place, list[Visit]] = {}
        for key, text in outputs.items():
            for netns, body in split_outputs(text).items():
                label = f"netns {netns} on {key}" if netns else key
                place = known.get((key, netns), Place(key, netns, label))
                seen[place] = parse_monitor(body)
        first = next((v for v in seen.get(source, []) if v.hook == "OUTPUT"), None)
        if first is None:  # the kernel refused to send it at all (no route in the source)
            return [Hop(source, [])]
        hops = [Hop(place, segment) for place, visits in seen.items() for segment in follow(visits, first.packet["ID"])]
        hops = order(hops)
        for hop, after in itertools.pairwise(hops):
            hop.after = after.visits[0].packet
        return hops

    def route(self, hop: Hop, default: str) -> None:
        """What `ip route get` says in the hop's namespace for the packet as it was there."""
        if hop.kind == "bridges":
            return
        dst = hop.destination() or default
        first = hop.visits[0].packet if hop.visits else {}
        argv = ["ip", "route", "get", dst]
        if hop.kind != "sends" and first.get("IN"):
            argv += ["from", first.get("SRC", ""), "iif", first["IN"]]
        hop.route_cmd = shlex.join(argv)
        result = self.runtime.exec(self.containers[hop.place.key], _in_ns(hop.place.netns, argv))
        hop.route = " ".join(result.output.split()).split(" cache")[0].replace(" uid 0", "")


# -- what it means ---------------------------------------------------------------------------
def notes(lab: Lab, trace: Trace) -> list[str]:
    found: list[str] = []
    hops = trace.hops
    last = hops[-1]
    in_services = ip_address(trace.target.ip) in lab.cluster.service_cidr
    if in_services and not any(h.dnat() for h in hops):
        svc = next((s for s in lab.services if str(s.cluster_ip) == trace.target.ip), None)
        ports = ", ".join(f"{p.port}/{p.protocol}" for p in svc.ports) if svc else "none"
        found.append(
            f"no rule DNATed the packet: kube-proxy's rules for {trace.target.ip} match only the service's "
            f"ports ({ports}); nothing else turns a ClusterIP into an endpoint, and no interface or route "
            "in the lab holds the ClusterIP itself"
        )
    for hop in hops:
        if hop.dnat():
            before = hop.visits[0].packet.get("DST", "")
            found.append(f"{hop.place.label}: DNAT {before} → {hop.dnat()} (the endpoint the nat rules picked)")
        if hop.snat():
            found.append(f"{hop.place.label}: source rewritten to {hop.snat()} (SNAT/MASQUERADE)")
    dropped = last.dropped_by()
    if dropped:
        found.append(f"the packet died in {last.place.label}: {dropped.table} {dropped.rule or dropped.verdict}")
    elif last.kind in ("drops", "sends") and (last.route.startswith("RTNETLINK") or not last.visits):
        found.append(f"the packet died in {last.place.label}: no route ({last.route or trace.detail})")
    elif last.kind in ("forwards", "bridges", "sends"):
        out = (last.visit("POSTROUTING") or last.visits[-1]).packet.get("OUT", "?") if last.visits else "?"
        found.append(
            f"the packet left {last.place.label} via {out} and no namespace of the lab saw it arrive: "
            f"check the next hop (`ip neigh` in {last.place.label})"
        )
    elif last.kind == "delivers":
        found.append(f"delivered to {last.place.label}")
    else:
        found.append(
            f"the packet died in {last.place.label}: taken in, routed ({last.route}), but neither forwarded nor "
            "delivered: check `sysctl net.ipv4.ip_forward` and rp_filter there"
        )
    return found


def _rule_lines(hop: Hop, visit: Visit) -> list[str]:
    """The rules a visit met, as iptables-save prints them; our own probe rules and the policies
    of the observation tables (raw, mangle) are left out."""
    shown = []
    for hit in visit.hits:
        if MARK in hit.rule or (hit.table in ("raw", "mangle") and not hit.rule):
            continue
        shown.append(f"{hit.table:<7}{hit.rule or f'{hit.chain}: {hit.verdict}'}")
    if visit.hook in ("PREROUTING", "OUTPUT") and hop.dnat():
        shown.append(f"⇒ DNAT: destination becomes {hop.dnat()}")
    if visit.hook == "POSTROUTING" and hop.snat():
        shown.append(f"⇒ SNAT: source becomes {hop.snat()}")
    return shown


def format_trace(trace: Trace) -> list[str]:
    """The trace as text: one block per hop, in the order the kernel hooks saw the packet."""
    to = "" if trace.target.label == trace.target.ip else f"{trace.target.label} "
    lines = [f"trace {trace.source.label} → {to}{trace.target} in lab {trace.lab}"]
    for number, hop in enumerate(trace.hops, 1):
        lines.append(f"{number:>2}  {hop.place.label}  [{hop.kind}]")
        rows: list[tuple[str, str]] = []
        first = hop.visits[0].packet if hop.visits else {}
        if first:
            rows.append(("in", f"{first.get('IN') or 'local'}  {endpoints(first)}  ttl {first.get('TTL', '?')}"))
        for visit in hop.visits:
            if visit.hook in ("FORWARD", "INPUT", "POSTROUTING") and not any(r[0] == "route" for r in rows):
                rows += _route_rows(hop)
            rows += [(visit.hook if i == 0 else "", text) for i, text in enumerate(_rule_lines(hop, visit))]
        if not any(r[0] in ("route", "bridge") for r in rows):
            rows += _route_rows(hop)
        post = hop.visit("POSTROUTING")
        if post and post.packet.get("OUT"):
            packet = {**post.packet, **{k: v for k, v in hop.after.items() if k in ("SRC", "SPORT")}}
            rows.append(("out", f"{post.packet['OUT']}  {endpoints(packet)}"))
        lines += [f"      {label:<12}{text}" for label, text in rows]
    lines.append(f"result: {trace.outcome}: {trace.detail}")
    lines += [f"  - {note}" for note in trace.notes]
    return lines


def _route_rows(hop: Hop) -> list[tuple[str, str]]:
    if hop.kind == "bridges":
        bridge = hop.visits[0].packet.get("IN", "")
        return [("bridge", f"{bridge} switches it at layer 2: no route lookup, TTL unchanged")]
    if not hop.route_cmd:
        return []
    return [("route", hop.route_cmd), ("", f"⇒ {hop.route or '(no answer)'}")]

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
from dataclasses import asdict, dataclass, field, replace
from ipaddress import ip_address
from typing import Any, Literal

from labbuilder.compile.kubeproxy.names import NFT_TABLE as NFT_PROXY_TABLE
from labbuilder.compile.netpol import names as netpol
from labbuilder.compile.ops import ROUTER, Ns
from labbuilder.engine.runtime import LabHandle, in_threads
from labbuilder.errors import LabError
from labbuilder.resources import templates_dir
from labbuilder.spec import refs
from labbuilder.spec.model import Lab
from labbuilder.spec.refs import Place, Target

Proto = Literal["tcp", "udp", "icmp"]
DSCP = 0x2A
TOS = DSCP << 2
MARK = "labbuilder-trace"
LIMIT = 60  # seconds a monitor may live if a trace is interrupted before it stops them
_RANK = {"sends": 0, "bridges": 1, "forwards": 2, "delivers": 3, "drops": 3}
_VERDICTS = {"0xfffffffb": "RETURN", "0xfffffffe": "BREAK", "0xffffffff": "CONTINUE"}


# -- what to trace ---------------------------------------------------------------------------
def places(lab: Lab) -> dict[tuple[str, str | None], Place]:
    """Every namespace the model knows, by (container key, netns)."""
    found: dict[tuple[str, str | None], Place] = {(ROUTER, None): refs.place(lab, ROUTER)}
    for node in lab.nodes:
        found[(node.name, None)] = refs.place(lab, f"node/{node.name}")
        for pod in node.pods:
            found[(node.name, pod.netns)] = refs.pod_place(pod)
    return found


def source_place(lab: Lab, text: str) -> Place:
    """FROM: any place of the refs grammar (a service is not one)."""
    return refs.place(lab, text)


def target(lab: Lab, text: str) -> Target:
    """TO: any target of the refs grammar; no port (or `:icmp`) means an ICMP echo."""
    to = refs.target(lab, text)
    if to.port is None or to.protocol == "icmp":
        return replace(to, port=None, protocol="icmp")
    return replace(to, protocol=to.protocol or "tcp")


# -- reading xtables-monitor -----------------------------------------------------------------
@dataclass(frozen=True)
class Hit:
    """One line of a trace: a rule the packet matched (or a chain's policy or end)."""

    table: str
    chain: str
    verdict: str  # ACCEPT, DROP, JUMP:CHAIN, RETURN, CONTINUE, policy ACCEPT, return
    rule: str = ""  # as iptables-save prints it: `-A CHAIN ...` (nft: as `nft list` does); empty for a policy
    nft: bool = False  # seen by `nft monitor trace` (a native nftables table: kube-proxy's nftables mode)


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


_NFT_TRACE = re.compile(r"^trace id (\S+) (\S+) (\S+) (\S+) (packet: |rule |policy |verdict )(.*)$")
_NFT_FIELDS = (
    ("IN", re.compile(r'\biif "([^"]+)"')),
    ("OUT", re.compile(r'\boif "([^"]+)"')),
    ("SRC", re.compile(r"\bip saddr (\S+)")),
    ("DST", re.compile(r"\bip daddr (\S+)")),
    ("TTL", re.compile(r"\bip ttl (\d+)")),
    ("ID", re.compile(r"\bip id (\d+)")),
    ("SPORT", re.compile(r"\b(?:tcp|udp) sport (\d+)")),
    ("DPORT", re.compile(r"\b(?:tcp|udp) dport (\d+)")),
)


def parse_nft_monitor(text: str, trace_table: str) -> list[Visit]:
    """`nft monitor trace` output → visits in order. Our own table `trace_table` has a chain at
    every hook, named `trace-HOOK`, that runs first: its `packet:` line opens the hook's visit
    (with the packet as it arrived there); every other table's rules and policies are its hits."""
    visits: list[Visit] = []
    current: dict[str, Visit] = {}
    for raw in text.splitlines():
        found = _NFT_TRACE.match(raw.strip())
        if not found:
            continue
        trace_id, _, table, chain, kind, rest = found.groups()
        if table == trace_table:
            if kind == "packet: ":
                fields = {name: m[1] for name, pattern in _NFT_FIELDS for m in [pattern.search(rest)] if m}
                current[trace_id] = Visit(chain.removeprefix("trace-").upper(), fields)
                visits.append(current[trace_id])
            continue
        visit = current.get(trace_id)
        if visit is None or kind == "packet: ":
            continue
        if kind == "rule ":
            rule, _, verdict = rest.rpartition(" (verdict ")
            visit.hits.append(Hit(table, chain, _nft_verdict(verdict.rstrip(") ")), rule.strip(), nft=True))
        elif kind == "policy ":
            visit.hits.append(Hit(table, chain, f"policy {rest.strip().upper()}", nft=True))
    return visits


def _nft_verdict(text: str) -> str:
    """`goto service-…` → GOTO:service-…, `accept` → ACCEPT: the words xtables-monitor uses."""
    word, _, target = text.strip().partition(" ")
    return f"{word.upper()}:{target}" if target else word.upper()


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
        for hit in self.nft_rules():
            found = re.search(r"\bdnat to (\S+)", hit.rule)
            if found and hit.verdict == "ACCEPT":
                return found.group(1)
        return ""

    def nft_rules(self) -> list[Hit]:
        return [h for v in self.visits for h in v.hits if h.nft]

    def snat(self) -> str:
        for hit in self.rules("nat"):
            found = re.search(r"-j (MASQUERADE|SNAT)(?: --to-source (\S+))?", hit.rule)
            if found and hit.verdict not in ("CONTINUE", "RETURN"):
                return found.group(2) or self.after.get("SRC") or "the address of the outgoing device"
        for hit in self.nft_rules():
            if re.search(r"\b(masquerade|snat to)\b", hit.rule) and hit.verdict == "ACCEPT":
                return self.after.get("SRC") or "the address of the outgoing device"
        return ""

    def dropped_by(self) -> Hit | None:
        for hit in (h for v in self.visits for h in v.hits):
            if (
                hit.verdict.endswith(("DROP", "REJECT"))
                or "-j REJECT" in hit.rule
                or (hit.nft and hit.rule == "reject")
            ):
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
        return {
            "lab": self.lab,
            "source": _place_dict(self.source),
            "target": {
                "ip": self.target.ip,
                "port": self.target.port or 0,
                "protocol": self.target.protocol,
                "label": self.target.label,
            },
            "outcome": self.outcome,
            "detail": self.detail,
            "hops": [
                {
                    "place": _place_dict(hop.place),
                    "visits": [asdict(v) for v in hop.visits],
                    "route_cmd": hop.route_cmd,
                    "route": hop.route,
                    "after": hop.after,
                    "kind": hop.kind,
                    "dnat": hop.dnat(),
                    "snat": hop.snat(),
                }
                for hop in self.hops
            ],
            "notes": self.notes,
        }


def _place_dict(place: Place) -> dict[str, Any]:
    return {"key": place.key, "netns": place.netns, "label": place.label, "ip": place.ip}


def _probe_source() -> str:
    return (templates_dir() / "trace" / "probe.py").read_text()


_EACH_NS = """for ns in - $(ip netns list | cut -d' ' -f1); do
  if [ "$ns" = - ]; then x=; else x="ip netns exec $ns"; fi
"""


def nft_trace_table(token: str) -> str:
    """Where kube-proxy's rules are nftables, nftables traces them: a chain at every hook, ahead of
    every other (priority -350), sets `nftrace` on the probe (its DSCP) where packets enter, and
    opens each hook's record in `nft monitor trace` (`parse_nft_monitor` reads it)."""
    chains = []
    for hook in ("prerouting", "input", "forward", "output", "postrouting"):
        action = "meta nftrace set 1" if hook in ("prerouting", "output") else "counter"
        chains.append(f"  chain trace-{hook} {{ type filter hook {hook} priority -350; ip dscp {DSCP:#x} {action}; }}")
    return f"table ip {MARK}-{token} {{\n" + "\n".join(chains) + "\n}"


def start_script(token: str) -> str:
    match = f"-m dscp --dscp {DSCP:#x} -m comment --comment {MARK}-{token}"
    return (
        "command -v xtables-monitor >/dev/null || { echo 'no xtables-monitor in the node image' >&2; exit 3; }\n"
        f"d=/run/labbuilder/{MARK}-{token}; mkdir -p $d\n"
        + _EACH_NS
        + f"""  if $x nft list table ip {NFT_PROXY_TABLE} >/dev/null 2>&1; then  # kube-proxy in nftables mode
    echo "#nft {MARK}-{token}" > $d/$ns.out; touch $d/$ns.nft
    $x nft -f - <<'EOF'
{nft_trace_table(token)}
EOF
    setsid $x timeout {LIMIT} stdbuf -oL nft monitor trace </dev/null >>$d/$ns.out 2>&1 &
    echo $! > $d/$ns.pid
    continue
  fi
  $x iptables-save | sed -n 's/^\\*//p' > $d/$ns.tables
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
        + f"""  if [ -e $d/$ns.nft ]; then $x nft delete table ip {MARK}-{token}; continue; fi
  for t in raw mangle; do
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
    def __init__(self, lab: Lab, handle: LabHandle):
        self.lab = lab
        self.handle = handle
        handle.require()
        self.keys = list(handle.containers)

    def _each(self, script: str, check: bool) -> dict[str, str]:
        def run(key: str) -> str:
            if check:
                return self.handle.run(key, ["sh", "-c", script])
            return self.handle.exec(key, ["sh", "-c", script]).output

        return in_threads(run, self.keys)

    def run(self, source: Place, to: Target) -> Trace:
        token = secrets.token_hex(4)
        outputs: dict[str, str] = {}
        try:
            self._each(start_script(token), check=True)
            argv = ["python3", "-c", _probe_source(), to.protocol or "icmp", to.ip, str(to.port or 0), str(TOS)]
            answer = self.handle.exec(Ns(source.key, source.netns), argv).output
            time.sleep(0.3)  # let the monitors print the last hops
        finally:
            outputs = self._each(stop_script(token), check=False)
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
                place = known.get((key, netns), Place(key, netns, label, label, ""))
                head, _, rest = body.partition("\n")
                nft = head.startswith("#nft ")
                seen[place] = parse_nft_monitor(rest, head.split()[1]) if nft else parse_monitor(body)
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
        result = self.handle.exec(Ns(hop.place.key, hop.place.netns), argv)
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
    found += policy_notes(lab, hops)
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


def _marks_matched(rule: str) -> bool:
    """The rule sets kube-router's 0x10000 mark: as iptables-save writes it, or as `nft monitor
    trace` shows the same iptables-nft rule (kube-proxy in nftables mode)."""
    return f"--set-xmark {netpol.MARK_MATCHED}" in rule or rule.rstrip().endswith("meta mark set mark or 0x10000")


def _rejects(rule: str) -> bool:
    return "-j REJECT" in rule or rule.rstrip().endswith(" reject")


def policy_notes(lab: Lab, hops: list[Hop]) -> list[str]:
    """What kube-router's chains decided: the policy rule that marked the packet (0x10000), the
    default chain that let an unisolated pod's traffic through, or the REJECT of a pod firewall."""
    if not lab.network_policies:
        return []
    policies = {netpol.policy_chain(p.namespace, p.name): p.ref for p in lab.network_policies}
    pods = {netpol.pod_chain(p.namespace, p.name): p.ref for p in lab.pods}
    found: list[str] = []
    for hop in hops:
        firewall = ""
        for hit in hop.rules("filter"):
            if hit.chain in pods:  # inside a pod's firewall: the policies it runs through come next
                firewall = hit.chain
            if hit.chain in policies and _marks_matched(hit.rule):
                found.append(
                    f"{hop.place.label}: policy {policies[hit.chain]} allows it ({hit.chain}, "
                    f"pod firewall {firewall} of {pods.get(firewall, '?')}): {hit.rule}"
                )
            elif hit.chain == netpol.DEFAULT and _marks_matched(hit.rule):
                found.append(
                    f"{hop.place.label}: no policy isolates {pods.get(firewall, '?')} this way: "
                    f"{netpol.DEFAULT} lets it through ({firewall})"
                )
            elif hit.chain in pods and _rejects(hit.rule):
                found.append(
                    f"{hop.place.label}: kube-router REJECTs it in {hit.chain}, the firewall of {pods[hit.chain]}: "
                    "no policy rule marked it 0x10000 (an NFLOG copy went to group 100)"
                )
    # kube-router jumps to a pod's firewall from a routed and a bridged rule, so a bridged packet
    # runs through it twice with the same verdict: say each decision once.
    return list(dict.fromkeys(found))


def _rule_lines(hop: Hop, visit: Visit) -> list[str]:
    """The rules a visit met, as iptables-save prints them; our own probe rules and the policies
    of the observation tables (raw, mangle) are left out."""
    shown = []
    for hit in visit.hits:
        if MARK in hit.rule or (hit.table in ("raw", "mangle") and not hit.rule):
            continue
        if hit.nft:  # nft names the chain apart from the rule, and the verdict says where it went
            plain = hit.verdict in ("CONTINUE", "RETURN") or hit.verdict.startswith("policy")
            word, _, target = hit.verdict.partition(":")
            verdict = "" if plain else f"  ⇒ {word.lower()} {target}".rstrip()
            shown.append(f"{hit.table} {hit.chain}: {hit.rule or hit.verdict.lower()}{verdict}")
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

"""One `docker exec` per node that prints everything `get` needs, and its parser.

The script prints `@section` lines, each followed by what the section's command printed. The
kernel's addresses come as `ip -j` JSON (iproute2's own structure, read with json.loads); the
pidfiles' processes, which no tool describes as JSON, as one `@pid` line each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Interface
from typing import Any

from labbuilder.compile.kubelet import ALIVE_SH
from labbuilder.compile.paths import PID_DIR

SNAPSHOT_SCRIPT = f"""exec 2>/dev/null
{ALIVE_SH}
echo "@now $(date +%s)"
echo "@kernel $(uname -r)"
echo "@os $(. /etc/os-release && echo "$PRETTY_NAME")"
echo "@eth0"
ip -j -4 addr show dev eth0
for ns in $(ip netns list | cut -d' ' -f1); do
  echo "@netns $ns $(stat -L -c %i "/run/netns/$ns" || echo -)"
  ip -j -n "$ns" -4 addr show dev eth0
  echo "@listen $ns"
  ip netns exec "$ns" ss -Hltun
done
for f in {PID_DIR}/*.pid; do
  [ -f "$f" ] || continue
  pid=$(cat "$f"); state=-; net=-
  case "$pid" in
    ''|*[!0-9]*) pid=- ;;
    *) state=$(awk '/^State:/ {{print $2}}' "/proc/$pid/status" || true); state=${{state:--}}
       alive "$f" || state=-  # a pid handed out again after a restart is not our process
       [ "$state" = - ] || net=$(readlink "/proc/$pid/ns/net" || echo '?') ;;
  esac
  echo "@pid $(basename "$f" .pid) $pid $(stat -c %Y "$f") $state $net"
done
if [ "$1" = iptables ]; then
  echo "@iptables"; iptables-save
  echo "@@nftables"; nft list table ip kube-proxy 2>/dev/null || true  # kube-proxy's nftables mode
fi
"""


def snapshot_argv(iptables: bool = False) -> list[str]:
    return ["sh", "-c", SNAPSHOT_SCRIPT, "snapshot", "iptables" if iptables else "-"]


@dataclass(frozen=True)
class NetnsState:
    name: str
    inode: int | None  # of /run/netns/<name>; None when it could not be read
    addresses: tuple[IPv4Interface, ...] = ()  # IPv4 on the pod's eth0
    listening: frozenset[tuple[str, int]] = frozenset()  # ("tcp", 80): sockets listening in it (ss)


@dataclass(frozen=True)
class ProcessState:
    """A pidfile under /run/labbuilder/pids and the process it names."""

    name: str  # the pidfile's stem: `<pod>.pause`, `<pod>`, `<pod>.dns`, `<node>.server`
    pid: int | None
    written: int | None  # the pidfile's mtime: when the process was started
    state: str  # from /proc/PID/status (S, R, D, Z, ...); "-" when there is no such process
    # The process's network namespace; None when unknown: not running, or not readable (a
    # process that made itself non-dumpable, as dnsmasq does, hides /proc/PID/ns without
    # CAP_SYS_PTRACE).
    netns_inode: int | None = None

    @property
    def running(self) -> bool:
        return self.state not in ("-", "Z", "X", "x")

    def inside(self, inode: int | None) -> bool:
        """Running in the namespace with this inode (trusted when either side is unknown)."""
        return self.running and (inode is None or self.netns_inode is None or self.netns_inode == inode)


@dataclass
class NodeSnapshot:
    now: int | None = None
    kernel: str = ""
    os_image: str = ""
    eth0: tuple[IPv4Interface, ...] = ()
    netns: dict[str, NetnsState] = field(default_factory=dict)
    processes: dict[str, ProcessState] = field(default_factory=dict)
    iptables: str | None = None  # iptables-save output, when asked for
    nftables: str | None = None  # `nft list table ip kube-proxy`, asked for with iptables ("" when absent)


def parse_ip_addresses(text: str) -> tuple[IPv4Interface, ...]:
    """The IPv4 addresses in `ip -j [-4] addr show` output, in the order shown.

    No output at all is no address: `ip` prints nothing for a device that does not exist.
    Raises ValueError when the output is not iproute2's JSON list of links.
    """
    if not text.strip():
        return ()
    try:
        links: Any = json.loads(text)
        return tuple(
            IPv4Interface(f"{a['local']}/{a['prefixlen']}")
            for link in links
            for a in link.get("addr_info", ())
            if a.get("family") == "inet"
        )
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"`ip -j addr show` printed no list of links ({err}): {text.strip()[:80]!r}") from None


def parse_listening(text: str) -> frozenset[tuple[str, int]]:
    """`ss -Hltun` lines (`tcp LISTEN 0 128 0.0.0.0:80 0.0.0.0:*`) → {("tcp", 80)}; ss has no JSON."""
    found = set()
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 5 and words[0] in ("tcp", "udp") and words[4].rpartition(":")[2].isdigit():
            found.add((words[0], int(words[4].rpartition(":")[2])))
    return frozenset(found)


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _netns_inode(link: str) -> int | None:
    """`net:[4026532834]` (readlink /proc/PID/ns/net) → 4026532834."""
    if not (link.startswith("net:[") and link.endswith("]")):
        return None  # "-" (not running) or "?" (not readable)
    return _int(link[len("net:[") : -1])


def _process(words: list[str]) -> ProcessState:
    """An `@pid NAME PID MTIME STATE NETNS` line's words (after `@pid`)."""
    name, pid, written, state, net = words[:5]
    return ProcessState(name, _int(pid), _int(written), state, _netns_inode(net))


def parse_snapshot(text: str) -> NodeSnapshot:
    """Parse the output of `SNAPSHOT_SCRIPT`; ValueError when an `ip -j` section is not JSON."""
    snap = NodeSnapshot()
    section, body = "", list[str]()
    netns_head: tuple[str, int | None] = ("", None)
    iptables: list[str] | None = None
    nftables: list[str] | None = None

    def flush() -> None:
        if section == "eth0":
            snap.eth0 = parse_ip_addresses("\n".join(body))
        elif section == "netns":
            name, inode = netns_head
            snap.netns[name] = NetnsState(name, inode, parse_ip_addresses("\n".join(body)))
        elif section == "listen" and netns_head[0] in snap.netns:
            name = netns_head[0]
            snap.netns[name] = replace(snap.netns[name], listening=parse_listening("\n".join(body)))

    for line in text.splitlines():
        if nftables is not None:
            nftables.append(line)
            continue
        if iptables is not None:  # iptables-save and nft are last, and kept verbatim
            if line == "@@nftables":
                nftables = []
            else:
                iptables.append(line)
            continue
        if not line.startswith("@"):
            body.append(line)
            continue
        flush()
        section, body = "", []
        head, _, rest = line[1:].partition(" ")
        words = rest.split()
        if head == "now":
            snap.now = _int(rest.strip())
        elif head == "kernel":
            snap.kernel = rest.strip()
        elif head == "os":
            snap.os_image = rest.strip()
        elif head == "eth0":
            section = "eth0"
        elif head == "netns" and words:
            section, netns_head = "netns", (words[0], _int(words[1]) if len(words) > 1 else None)
        elif head == "listen" and words and words[0] == netns_head[0]:
            section = "listen"
        elif head == "pid" and len(words) >= 5:
            snap.processes[words[0]] = _process(words)
        elif head == "iptables":
            iptables = []
    flush()
    if iptables is not None:
        snap.iptables = "\n".join(iptables) + "\n"
    if nftables is not None:
        snap.nftables = "\n".join(nftables).strip() + "\n" if any(nftables) else ""
    return snap

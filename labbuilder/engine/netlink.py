"""pyroute2 driver: links, addresses, routes, neighbours and FDB entries inside lab namespaces.

The main process never switches namespace: each netlink socket is opened inside its target
namespace by path (`/proc/PID/ns/net` for a container, `/proc/PID/root/run/netns/NAME` for a
pod), so nothing is ever created in the host's own namespace. Every function *ensures*: it
tolerates "already exists", so a second `up` converges instead of failing.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from ipaddress import IPv6Address
from socket import AF_INET6
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyroute2 import IPRoute

from labbuilder.compile.ops import Address, Bridge, Fdb, Hairpin, LinkUp, Master, Neighbour, Ns, Route, Veth, Vxlan
from labbuilder.errors import LabError

NetlinkOp = Veth | Bridge | Vxlan | Master | Hairpin | LinkUp | Address | Route | Neighbour | Fdb
NETLINK_OPS: tuple[type[NetlinkOp], ...] = (
    Veth,
    Bridge,
    Vxlan,
    Master,
    Hairpin,
    LinkUp,
    Address,
    Route,
    Neighbour,
    Fdb,
)


@dataclass(frozen=True)
class RestoreLinkLocal:
    """A step that is no operation of the plan: give back the IPv6 link-local addresses a flush
    took in `ns` (reset's last step per namespace)."""

    ns: Ns


Step = NetlinkOp | RestoreLinkLocal

NUD_PERMANENT = 0x80
IFF_UP = 1
RTNH_F_ONLINK = 4
RTPROT_BOOT = 3  # what `ip route add` sets: shown as no proto at all, as in the seeds
PROTOS = {"kernel": 2, "boot": RTPROT_BOOT}
SCOPES = {"host": 254, "link": 253, "universe": 0}


def eui64_link_local(mac: str) -> str:
    b = [int(x, 16) for x in mac.split(":")]
    eui = [b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]]
    return str(IPv6Address(bytes([0xFE, 0x80, 0, 0, 0, 0, 0, 0, *eui])))


@cache
def load_libc_for_namespace_children() -> None:
    """pyroute2 opens a socket in a namespace from a forked child, which loads libc through
    `ctypes.util.find_library` (a run of `ldconfig -p`) unless this process already has: load it
    once here, and every child inherits it — 6.7 → 4.2 ms per namespace opened, and no program
    started from the fork of a threaded process. `_get_libc` is pyroute2's own (private) loader:
    a pyroute2 without it only loses the head start."""
    from pyroute2 import netns

    getattr(netns, "_get_libc", lambda: None)()


class Netlink:
    """Per-thread set of netlink sockets, one per namespace, opened lazily and closed together."""

    def __init__(self, ns_path: Callable[[Ns], str]):
        self.ns_path = ns_path  # LabHandle.ns_path: where the host sees each namespace
        self._sockets: dict[str, IPRoute] = {}

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *_: object) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    def path(self, ns: Ns) -> str:
        return self.ns_path(ns)

    def ipr(self, ns: Ns) -> IPRoute:
        # pyroute2 takes ~0.1 s to import: only commands that change links pay for it.
        from pyroute2 import IPRoute

        path = self.path(ns)
        if path not in self._sockets:
            if not os.path.exists(path):
                raise LabError(f"namespace {path} does not exist", hint="is the lab's container running?")
            load_libc_for_namespace_children()
            self._sockets[path] = IPRoute(netns=path)
        return self._sockets[path]

    def index(self, ns: Ns, ifname: str) -> int:
        found = self.ipr(ns).link_lookup(ifname=ifname)
        if not found:
            raise LabError(f"{ns.container}{'/' + ns.netns if ns.netns else ''}: no link named {ifname}")
        return int(found[0])

    # -- reading state (for reset) -----------------------------------------------------------
    def _link_local_missing(self, ns: Ns) -> list[Any]:
        ipr = self.ipr(ns)
        v6 = list(ipr.addr("dump", family=AF_INET6))
        if not v6:  # IPv6 off in this namespace (lo would hold ::1)
            return []
        have = {m["index"] for m in v6 if m.get_attr("IFA_ADDRESS", "").startswith("fe80:")}
        return [
            link
            for link in ipr.link("dump")
            if link["index"] not in have
            and link.get_attr("IFLA_IFNAME") != "lo"
            and link.get_attr("IFLA_ADDRESS")
            and link["flags"] & IFF_UP
        ]

    def restore_link_local(self, ns: Ns) -> list[str]:
        """Give back the IPv6 link-local address a flush took (the kernel only makes one at link up).

        The address is the EUI-64 of the link's MAC, exactly what the kernel would have made.
        Returns the links it repaired.
        """
        repaired = []
        for link in self._link_local_missing(ns):
            self.ipr(ns).addr(
                "add",
                index=link["index"],
                address=eui64_link_local(link.get_attr("IFLA_ADDRESS")),
                prefixlen=64,
                family=AF_INET6,
                scope=SCOPES["link"],
            )
            repaired.append(link.get_attr("IFLA_IFNAME"))
        return repaired

    def veth(self, op: Veth) -> None:
        peer: dict[str, Any] = {"ifname": op.peer_name, "mtu": op.mtu}
        if op.peer_mac:
            peer["address"] = op.peer_mac
        extra = {"address": op.mac} if op.mac else {}
        if self.ipr(op.ns).link_lookup(ifname=op.name):
            return
        fd = os.open(self.path(op.peer_ns), os.O_RDONLY)
        try:
            peer["net_ns_fd"] = fd
            _tolerate(
                errno.EEXIST,
                lambda: self.ipr(op.ns).link("add", ifname=op.name, kind="veth", mtu=op.mtu, peer=peer, **extra),
            )
        finally:
            os.close(fd)

    def bridge(self, op: Bridge) -> None:
        extra = {"address": op.mac} if op.mac else {}
        _tolerate(
            errno.EEXIST,
            lambda: self.ipr(op.ns).link("add", ifname=op.name, kind="bridge", mtu=op.mtu, **extra),
        )

    def vxlan(self, op: Vxlan) -> None:
        extra = {"address": op.mac} if op.mac else {}
        _tolerate(
            errno.EEXIST,
            lambda: self.ipr(op.ns).link(
                "add",
                ifname=op.name,
                kind="vxlan",
                vxlan_id=op.vni,
                vxlan_local=op.local,
                vxlan_link=self.index(op.ns, op.dev),
                vxlan_port=op.port,
                vxlan_learning=0,
                mtu=op.mtu,
                **extra,
            ),
        )

    def master(self, op: Master) -> None:
        self.ipr(op.ns).link("set", index=self.index(op.ns, op.ifname), master=self.index(op.ns, op.master))

    def hairpin(self, op: Hairpin) -> None:
        # IFLA_BRPORT_MODE = 1 is hairpin, set through the port's bridge_slave link info.
        self.ipr(op.ns).link("set", index=self.index(op.ns, op.ifname), kind="bridge_slave", mode=1)

    def link_up(self, op: LinkUp) -> None:
        self.ipr(op.ns).link("set", index=self.index(op.ns, op.ifname), state="up")

    def address(self, op: Address) -> None:
        ip, prefix = op.cidr.split("/")
        _tolerate(
            errno.EEXIST,
            lambda: self.ipr(op.ns).addr("add", index=self.index(op.ns, op.ifname), address=ip, prefixlen=int(prefix)),
        )

    def route(self, op: Route) -> None:
        spec: dict[str, Any] = {
            "dst": "0.0.0.0/0" if op.dst == "default" else op.dst,
            "proto": PROTOS[op.proto or "boot"],
        }
        if op.via:
            spec["gateway"] = op.via
        if op.dev:
            spec["oif"] = self.index(op.ns, op.dev)
        if op.scope:
            spec["scope"] = SCOPES[op.scope]
        if op.src:
            spec["prefsrc"] = op.src
        if op.onlink:
            spec["flags"] = RTNH_F_ONLINK
        self.ipr(op.ns).route("replace", **spec)

    def neighbour(self, op: Neighbour) -> None:
        self.ipr(op.ns).neigh(
            "replace", dst=op.ip, lladdr=op.mac, ifindex=self.index(op.ns, op.dev), state=NUD_PERMANENT
        )

    def fdb(self, op: Fdb) -> None:
        _tolerate(
            errno.EEXIST,
            lambda: self.ipr(op.ns).fdb(
                "append", ifindex=self.index(op.ns, op.dev), lladdr=op.mac, dst=op.dst, state=NUD_PERMANENT
            ),
        )


def run_steps(nl: Netlink, steps: Sequence[Step]) -> list[str]:
    """Every step in order over `nl`'s sockets; returns the links whose link-local was restored.
    The one body of netlink work, run in this process or in a helper container beside the engine."""
    repaired: list[str] = []
    for step in steps:
        if isinstance(step, RestoreLinkLocal):
            repaired += nl.restore_link_local(step.ns)
        else:
            apply_netlink(nl, step)
    return repaired


def apply_netlink(nl: Netlink, op: NetlinkOp) -> None:
    """Apply one operation; a kernel refusal names the operation as the command a person would type."""
    from pyroute2.netlink.exceptions import NetlinkError  # imported with the first netlink socket anyway

    try:
        _dispatch(nl, op)
    except NetlinkError as err:
        where = op.ns.container + (f" ({op.ns.netns})" if op.ns.netns else "")
        raise LabError(f"{where}: `{op.describe()}` failed: {err.args[-1] if err.args else err}") from None


def _dispatch(nl: Netlink, op: NetlinkOp) -> None:
    match op:
        case Veth():
            nl.veth(op)
        case Bridge():
            nl.bridge(op)
        case Vxlan():
            nl.vxlan(op)
        case Master():
            nl.master(op)
        case Hairpin():
            nl.hairpin(op)
        case LinkUp():
            nl.link_up(op)
        case Address():
            nl.address(op)
        case Route():
            nl.route(op)
        case Neighbour():
            nl.neighbour(op)
        case Fdb():
            nl.fdb(op)


def _tolerate(code: int, action: Callable[[], object]) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        action()
    except NetlinkError as err:
        if err.code != code:
            raise

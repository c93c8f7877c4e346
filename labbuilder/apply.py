"""Apply a container's planned operations, in phases that keep Docker round trips few.

Within one container the phases are: create pod netns (one exec), links/addresses/routes
(pyroute2, in plan order), files and the iptables payload (one archive), iptables-restore (one
exec), processes (one exec). Each phase is idempotent, so applying twice converges.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from docker.models.containers import Container
from pyroute2.netlink.exceptions import NetlinkError

from labbuilder.errors import LabError
from labbuilder.kubelet import PID_DIR, STATE_DIR
from labbuilder.netlink import Netlink
from labbuilder.plan import (
    AddNetns,
    Address,
    Bridge,
    Fdb,
    Hairpin,
    Iptables,
    LinkUp,
    Master,
    Neighbour,
    Op,
    Process,
    Route,
    Veth,
    Vxlan,
    WriteFile,
)
from labbuilder.runtime.docker import DockerRuntime

RULES_FILE = f"{STATE_DIR}/iptables.rules"

NetlinkOp = Veth | Bridge | Vxlan | Master | Hairpin | LinkUp | Address | Route | Neighbour | Fdb


def apply_netlink(nl: Netlink, op: NetlinkOp) -> None:
    """Apply one operation; a kernel refusal names the operation as the command a person would type."""
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


class Applier:
    def __init__(self, runtime: DockerRuntime, containers: dict[str, Container], pids: dict[str, int]):
        self.runtime = runtime
        self.containers = containers
        self.pids = pids

    def apply(self, key: str, ops: Sequence[Op]) -> None:
        container = self.containers[key]
        self.add_netns(container, [op for op in ops if isinstance(op, AddNetns)])
        with Netlink(self.pids) as nl:
            for op in ops:
                if isinstance(op, NetlinkOp):
                    apply_netlink(nl, op)
        files = {op.path: op.content for op in ops if isinstance(op, WriteFile)}
        rules = [op.payload for op in ops if isinstance(op, Iptables)]
        if rules:
            files[RULES_FILE] = rules[-1]
        if files:
            self.runtime.put_files(container, files)
        if rules:
            self.runtime.run(container, ["iptables-restore", RULES_FILE])
        self.start_processes(container, [op for op in ops if isinstance(op, Process)])

    def add_netns(self, container: Container, ops: list[AddNetns]) -> None:
        names = [op.ns.netns for op in ops if op.ns.netns]
        if names:
            script = "; ".join(f"[ -e /run/netns/{n} ] || ip netns add {n}" for n in names)
            self.runtime.run(container, ["sh", "-ec", script])

    def start_processes(self, container: Container, ops: list[Process]) -> list[str]:
        """Start each process once: a live pid in its pidfile means it is already running.

        Returns the names of the processes it had to start.
        """
        if not ops:
            return []
        lines = [
            f"mkdir -p {PID_DIR}",
            'start() { f="$1"; shift; if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then return 0; fi; '
            'setsid "$@" </dev/null >/dev/null 2>&1 & echo $! > "$f"; echo "started ${f##*/}"; }',
        ]
        for op in ops:
            argv = ["ip", "netns", "exec", op.ns.netns, *op.argv] if op.ns.netns else list(op.argv)
            lines.append(f"start {PID_DIR}/{shlex.quote(op.name)}.pid {shlex.join(argv)}")
        output = self.runtime.run(container, ["sh", "-ec", "\n".join(lines)])
        return [
            line.removeprefix("started ").removesuffix(".pid")
            for line in output.splitlines()
            if line.startswith("started ")
        ]

"""Mininet's half of bench/bench_scale.py: N hosts on ONE LinuxBridge switch, no controller.

Run only inside a fresh network namespace, never in the host's; bench_scale.py starts it as

    unshare --net --mount --pid --fork --kill-child --mount-proc --propagation private -- \\
        /usr/bin/python3 bench/mininet_part.py N HOST_NETNS

HOST_NETNS is the caller's /proc/self/ns/net link (e.g. "net:[4026531840]"): the script refuses to
run when it finds itself in that namespace. In its own PID namespace "PID 1" is this script, so
even Mininet's `ip link add … netns 1` (used when a link has no second node) stays in here.
Everything Mininet makes (veths, the bridge, the hosts' shells and namespaces) disappears with
the process.

It prints one JSON line on stdout: {"hosts": N, "up": s, "down": s, "notes": [...]}.
`up` is build + start (Mininet(topo, build=True) and net.start()); `down` is net.stop().

Mininet's own setup (Mininet.init → fixLimits) also raises host-wide sysctls (kernel.pty.max,
fs.file-max) that no namespace isolates; this script replaces it with the per-process rlimits
only. No Open vSwitch tool is run: LinuxBridge, controller=None, and no `mn -c` cleanup.
Needs the Debian packages mininet and bridge-utils, for the system python (/usr/bin/python3).
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: mininet_part.py N HOST_NETNS", file=sys.stderr)
        return 2
    hosts = int(sys.argv[1])
    host_netns = sys.argv[2]
    here = os.readlink("/proc/self/ns/net")
    if here == host_netns:
        print(f"refusing to run: this is the host's network namespace ({here})", file=sys.stderr)
        return 3
    if os.getpid() != 1:
        print("refusing to run: not the init of a PID namespace of its own (use unshare --pid --fork)", file=sys.stderr)
        return 3

    from resource import RLIMIT_NOFILE, RLIMIT_NPROC

    import mininet.net
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.nodelib import LinuxBridge
    from mininet.topo import Topo
    from mininet.util import quietRun, rlimitTestAndSet

    def rlimits_only() -> None:
        rlimitTestAndSet(RLIMIT_NPROC, 8192)
        rlimitTestAndSet(RLIMIT_NOFILE, 16384)

    mininet.net.fixLimits = rlimits_only  # Mininet.init calls it; the sysctls it sets are host-wide
    setLogLevel("warning")

    class OneSwitch(Topo):
        def build(self, n: int = 1) -> None:  # type: ignore[override]
            switch = self.addSwitch("s1")
            for i in range(1, n + 1):
                self.addLink(self.addHost(f"h{i}"), switch)

    topo = OneSwitch(n=hosts)
    start = time.perf_counter()
    net = Mininet(topo=topo, switch=LinuxBridge, controller=None, build=True)
    net.start()
    up = time.perf_counter() - start
    ports = len(quietRun("ip -o link show master s1").splitlines())  # in this namespace only
    notes = [f"bridge s1 has {ports} ports for {hosts} hosts"]
    start = time.perf_counter()
    net.stop()
    down = time.perf_counter() - start
    notes.append("fixLimits replaced by rlimits only (its sysctls kernel.pty.max, fs.file-max are host-wide)")
    notes.append("no Open vSwitch: LinuxBridge switch, controller=None, no `mn -c` cleanup")
    left = len(quietRun("ip -o link show type veth").splitlines())
    notes.append(f"after stop: {left} veths left in the namespace")
    print(json.dumps({"hosts": hosts, "up": up, "down": down, "ports": ports, "netns": here, "notes": notes}))
    return 0 if ports == hosts else 4


if __name__ == "__main__":
    sys.exit(main())

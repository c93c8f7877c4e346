"""What the kubelet and container runtime do for pods, beyond the CNI plugin's wiring.

- the sandbox: a `/pause` process holding each pod's netns, as the pause container does;
- the pod's containers: a server answering on the pod's ports (pod name, pod IP, the client
  address it saw), or for the cluster DNS pod, dnsmasq answering for every service;
- the pod's `resolv.conf` (ip netns exec bind-mounts `/etc/netns/<netns>/resolv.conf`);
- node-level servers: the apiserver port :6443 on controllers.
"""

from __future__ import annotations

import shlex

from labbuilder.compile.ops import Ns, Op, Process, WriteFile
from labbuilder.compile.paths import PID_DIR, pidfile
from labbuilder.spec.model import Lab, Node, Pod


def pod_processes(lab: Lab, node: Node) -> list[Op]:
    ops: list[Op] = []
    for pod in node.pods:
        ns = Ns(node.name, pod.netns)
        ops.append(Process(ns, f"{pod.name}.pause", ("/pause", "infinity")))
        if pod.app == "dns":
            ops.append(Process(ns, f"{pod.name}.dns", dnsmasq_argv(lab)))
            # The pod's other container: the metrics port, answered like any pod port.
            ops.append(Process(ns, pod.name, server_argv(pod.name, str(pod.ip), tcp=[9153])))
        elif pod.ports:
            tcp = [p.port for p in pod.ports if p.protocol == "TCP"]
            udp = [p.port for p in pod.ports if p.protocol == "UDP"]
            ops.append(Process(ns, pod.name, server_argv(pod.name, str(pod.ip), tcp, udp)))
    if node.listen_ports:
        ops.append(
            Process(Ns(node.name), f"{node.name}.server", server_argv(node.name, str(node.ip), list(node.listen_ports)))
        )
    return ops


def server_argv(name: str, ip: str, tcp: list[int], udp: list[int] | None = None) -> tuple[str, ...]:
    argv = ["podserver", "--name", name, "--ip", ip]
    for port in tcp:
        argv += ["--tcp", str(port)]
    for port in udp or []:
        argv += ["--udp", str(port)]
    return tuple(argv)


def dnsmasq_argv(lab: Lab) -> tuple[str, ...]:
    """dnsmasq as the cluster DNS: an A record per service, nothing forwarded out of the lab."""
    argv = [
        "dnsmasq",
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        "--pid-file=",
        "--port=53",
        f"--local=/{lab.cluster.domain}/",
    ]
    for svc in lab.services:
        argv.append(f"--host-record={svc.name}.{svc.namespace}.svc.{lab.cluster.domain},{svc.cluster_ip}")
    return tuple(argv)


def resolv_conf(lab: Lab, pod: Pod) -> str:
    domain = lab.cluster.domain
    return (
        f"search {pod.namespace}.svc.{domain} svc.{domain} {domain}\nnameserver {lab.cluster.dns_ip}\noptions ndots:5\n"
    )


def resolv_files(lab: Lab, node: Node) -> list[Op]:
    if not lab.cluster.dns:
        return []
    return [WriteFile(Ns(node.name), f"/etc/netns/{pod.netns}/resolv.conf", resolv_conf(lab, pod)) for pod in node.pods]


STARTED = "started "  # what the start script prints for each process it had to start

# Shell functions shared by the start script and the state reader. A process counts as alive when
# the pid in its pidfile runs AND started when the `.start` file next to it says (field 22 of
# /proc/PID/stat): after a container restart, pids are handed out again from 1, and a stale
# pidfile must not mistake someone else's process for ours.
ALIVE_SH = (
    'started_at() { s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; set -- $s; echo "${20}"; }\n'
    'alive() { p=$(cat "$1" 2>/dev/null) || return 1; t=$(started_at "$p") || return 1; '
    '[ ! -f "${1%.pid}.start" ] || [ "$(cat "${1%.pid}.start")" = "$t" ]; }'
)


def start_script(processes: list[Process]) -> str:
    """The shell that starts each process once: a live process behind its pidfile means it runs.

    The one routine for `up`, `reset` and `render`; it prints `started NAME` per process started.
    """
    lines = [
        f"mkdir -p {PID_DIR}",
        ALIVE_SH,
        'start() { f="$1"; shift; if alive "$f"; then return 0; fi; '
        'setsid "$@" </dev/null >/dev/null 2>&1 & echo $! > "$f"; started_at $! > "${f%.pid}.start"; '
        f'echo "{STARTED}${{f##*/}}"; }}',
    ]
    for op in processes:
        argv = ["ip", "netns", "exec", op.ns.netns, *op.argv] if op.ns.netns else list(op.argv)
        lines.append(f"start {shlex.quote(pidfile(op.name))} {shlex.join(argv)}")
    return "\n".join(lines)


def started(output: str) -> list[str]:
    """The names of the processes a start script reports it started."""
    return [line.removeprefix(STARTED).removesuffix(".pid") for line in output.splitlines() if line.startswith(STARTED)]

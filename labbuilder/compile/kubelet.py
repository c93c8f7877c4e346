"""What the kubelet and container runtime do for pods, beyond the CNI plugin's wiring.

- the sandbox: a `/pause` process holding each pod's netns, as the pause container does;
- the pod's containers: a server answering on the pod's ports (pod name, pod IP, the client
  address it saw), or for the cluster DNS pod, dnsmasq answering for every service;
- the pod's `resolv.conf` (ip netns exec bind-mounts `/etc/netns/<netns>/resolv.conf`);
- node-level servers: the apiserver port :6443 on controllers, speaking TLS with the lab's
  `kubernetes` certificate (compile/pki.py) and answering as kube-apiserver does an anonymous user.

Every server of a node — its pods' and its own — is one `podserver` process that opens each
pod's sockets inside that pod's netns: one interpreter per node instead of one per pod, and
`ss -ltnp` in a pod still shows its listening sockets.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass

from labbuilder.compile import pki
from labbuilder.compile.ops import Ns, Op, Process, WriteFile
from labbuilder.compile.paths import AGENT, AGENT_DIR, DNSMASQ_CONF, PID_DIR, PODSERVER_CONF, pidfile
from labbuilder.spec.model import Lab, Node, Pod, Service

METRICS_PORT = 9153  # CoreDNS's metrics: the DNS pod's second container, answered like any pod port


@dataclass(frozen=True)
class PodContainer:
    """A container of a pod as `get pods` shows it, and what shows it is alive."""

    name: str
    process: str  # the pidfile stem of the process that runs it
    ports: tuple[tuple[str, int], ...] = ()  # ("tcp", 80): what listens for it inside the pod
    own_process: bool = True  # its process lives in the pod's netns; False: the node's podserver


def ready_file(process: str) -> str:
    """Where a podserver writes its pid once every pod it serves listens (see lifecycle/ready.py)."""
    return f"{PID_DIR}/{process}.ready"


def podserver_name(node: Node) -> str:
    return f"{node.name}.podserver"


def pod_containers(node: Node, pod: Pod) -> list[PodContainer]:
    """The containers of a pod beyond its sandbox; none for a pod that only sleeps (busybox-like)."""
    name = pod.workload or "server"
    if pod.app == "dns":
        dns = PodContainer("dns", f"{pod.name}.dns", (("udp", 53), ("tcp", 53)))
        return [dns, PodContainer(name, podserver_name(node), (("tcp", METRICS_PORT),), own_process=False)]
    if pod.ports:
        ports = tuple((p.protocol.lower(), p.port) for p in pod.ports)
        return [PodContainer(name, podserver_name(node), ports, own_process=False)]
    return []


# What kube-apiserver's /version says beyond gitVersion. The lab builds nothing, so the commit is a
# hash of the version (40 hex, like a git commit, the same for the same version) and the build date
# and Go version are fixed: those of v1.33.0, the default.
BUILD_DATE = "2025-04-23T00:00:00Z"
GO_VERSION = "go1.24.2"


def apiserver_version(lab: Lab) -> dict[str, str]:
    """The JSON `GET /version` answers, shaped like kube-apiserver's (k8s.io/apimachinery version.Info)."""
    git_version = lab.cluster.version
    major, minor = git_version.removeprefix("v").split("-")[0].split("+")[0].split(".")[:2]
    return {
        "major": major,
        "minor": minor,
        "gitVersion": git_version,
        "gitCommit": hashlib.sha1(f"kubernetes {git_version}".encode()).hexdigest(),
        "gitTreeState": "clean",
        "buildDate": BUILD_DATE,
        "goVersion": GO_VERSION,
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def podserver_config(lab: Lab, node: Node) -> list[dict[str, object]]:
    """What the node's podserver serves: each pod's ports in its netns (plain), and the node's own
    (a controller's :6443: TLS with the `kubernetes` certificate, answering as the apiserver)."""
    served: list[dict[str, object]] = []
    for pod in node.pods:
        ports = [port for c in pod_containers(node, pod) if not c.own_process for port in c.ports]
        if ports:
            tcp = [p for proto, p in ports if proto == "tcp"]
            udp = [p for proto, p in ports if proto == "udp"]
            served.append({"name": pod.name, "ip": str(pod.ip), "netns": pod.netns, "tcp": tcp, "udp": udp})
    if node.listen_ports:
        served.append(
            {
                "name": node.name,
                "ip": str(node.ip),
                "netns": None,
                "tcp": list(node.listen_ports),
                "tls": {"cert": pki.KUBERNETES_PEM, "key": pki.KUBERNETES_KEY},
                "apiserver": {"version": apiserver_version(lab)},
            }
        )
    return served


def pod_processes(lab: Lab, node: Node) -> list[Op]:
    ops: list[Op] = []
    for pod in node.pods:
        ns = Ns(node.name, pod.netns)
        ops.append(Process(ns, f"{pod.name}.pause", ("/pause", "infinity")))
        if pod.app == "dns":
            ops.append(WriteFile(Ns(node.name), DNSMASQ_CONF, dnsmasq_conf(lab)))
            ops.append(Process(ns, f"{pod.name}.dns", dnsmasq_argv(lab)))
    served = podserver_config(lab, node)
    if served:
        here = Ns(node.name)
        ops.append(WriteFile(here, PODSERVER_CONF, json.dumps(served, indent=1) + "\n"))
        name = podserver_name(node)
        ops.append(Process(here, name, ("podserver", "--config", PODSERVER_CONF, "--ready", ready_file(name))))
    return ops


DNS_TTL = 5  # seconds, CoreDNS's kubernetes plugin default


def dnsmasq_argv(lab: Lab) -> tuple[str, ...]:
    """dnsmasq as the cluster DNS: authoritative for the cluster domain (an unknown name there is
    NXDOMAIN), nothing forwarded out of the lab; the records are in DNSMASQ_CONF (`dns_records`),
    a file rather than arguments, as they grow with the lab's pods and one argument of a process is
    at most 128 KiB."""
    return (
        "dnsmasq",
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        "--pid-file=",
        "--port=53",
        f"--local=/{lab.cluster.domain}/",
        f"--local-ttl={DNS_TTL}",
        f"--conf-file={DNSMASQ_CONF}",
    )


def dashed(ip: object) -> str:
    """10.200.0.2 → 10-200-0-2: how CoreDNS names a pod, or an endpoint without a hostname."""
    return str(ip).replace(".", "-")


def _srv_weight(count: int) -> int:
    """CoreDNS's SRV weight: each of `count` records of one priority gets floor(100 / count)."""
    return 100 // count if count else 100


def service_records(lab: Lab, svc: Service) -> list[str]:
    """A service's records as CoreDNS's kubernetes plugin answers them.

    ClusterIP: `svc.ns.svc.DOMAIN` A → the ClusterIP; `_port._proto.svc.ns.svc.DOMAIN` SRV → that
    name and the port, per named port. Headless (clusterIP: None): `svc.ns.svc.DOMAIN` A → every
    endpoint's pod IP, each endpoint also `a-b-c-d.svc.ns.svc.DOMAIN`, and one SRV per endpoint.
    """
    name = f"{svc.name}.{svc.namespace}.svc.{lab.cluster.domain}"
    if svc.cluster_ip is not None:
        lines = [f"host-record={name},{svc.cluster_ip}"]
        for port in svc.ports:
            if port.name:
                srv = f"_{port.name}._{port.protocol.lower()}.{name}"
                lines.append(f"srv-host={srv},{name},{port.port},0,{_srv_weight(1)}")
        return lines
    endpoints = {e.ip: e for eps in svc.endpoints.values() for e in eps}
    lines = [f"host-record={name},{ip}" for ip in sorted(endpoints)]
    lines += [f"host-record={dashed(ip)}.{name},{ip}" for ip in sorted(endpoints)]
    for port in svc.ports:
        if not port.name:
            continue
        eps = svc.endpoints.get(port.name, ())
        srv = f"_{port.name}._{port.protocol.lower()}.{name}"
        lines += [f"srv-host={srv},{dashed(e.ip)}.{name},{e.port},0,{_srv_weight(len(eps))}" for e in eps]
    return lines


def dns_records(lab: Lab) -> list[str]:
    """Every record of the cluster DNS, as dnsmasq options: the services', then a record per pod
    (`a-b-c-d.ns.pod.DOMAIN` A → a.b.c.d, CoreDNS's `pods` records)."""
    lines = [line for svc in lab.services for line in service_records(lab, svc)]
    lines += [f"host-record={dashed(pod.ip)}.{pod.namespace}.pod.{lab.cluster.domain},{pod.ip}" for pod in lab.pods]
    return lines


def dnsmasq_conf(lab: Lab) -> str:
    head = "# The cluster DNS's records, as CoreDNS's kubernetes plugin answers (written by labbuilder)\n"
    return head + "\n".join(dns_records(lab)) + "\n"


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
    # `read`, not `$(cat ...)`: a thousand pods' processes are looked at without a process each
    'start_time() { read -r s 2>/dev/null <"/proc/$1/stat" || return 1; s=${s##*) }; set -- $s; T=${20}; }\n'
    'started_at() { start_time "$1" && echo "$T"; }\n'
    'alive() { read -r p 2>/dev/null <"$1" || return 1; start_time "$p" || return 1; '
    '[ ! -f "${1%.pid}.start" ] || { read -r w <"${1%.pid}.start" && [ "$w" = "$T" ]; }; }'
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
        lines.append(f"start {shlex.quote(pidfile(op.name))} {shlex.join(op.command())}")
    return "\n".join(lines)


def started(output: str) -> list[str]:
    """The names of the processes a start script reports it started."""
    return [line.removeprefix(STARTED).removesuffix(".pid") for line in output.splitlines() if line.startswith(STARTED)]


NO_AGENT = 125  # what `through_agent` exits with when the node runs no agent (see `through_agent`)
AGENT_START = 105  # polls (5 of 10 ms, then 50 ms each): five seconds for a starting agent to make its fifo
JOB_TIMEOUT = 60  # seconds for a job, then give up loudly
# Polling costs a `sleep` process per look, which ten labs starting at once pay dearly for: the
# first looks come fast, the later ones slowly (10 ms five times, then 50 ms).
BACKOFF = "sleep 0.0$(( n < 5 ? 1 : 5 ))"


def poll(condition: str, tries: int, each: str = "", give_up: str = "break") -> str:
    """The shell loop that waits until `condition` holds: `each` runs before every look after the
    first, `give_up` after `tries` looks, BACKOFF between them."""
    body = f"{each}; " if each else ""
    return f"n=0; until {condition}; do {body}n=$((n+1)); [ $n -lt {tries} ] || {give_up}; {BACKOFF}; done"


def through_agent(script: str) -> str:
    """The shell that hands the script at path `script` to the node's agent and waits for it,
    printing its output and exiting with its status.

    The agent (templates/node/agent.sh, the node's main process) runs the job as its own child:
    what it starts lives in the node's cgroup with the node's capabilities and seccomp profile, as
    `docker exec` would start it, but a short command entered into the node can hand it over in
    milliseconds instead of a `docker exec` round trip (≈60 ms alone, ≈250 ms when seven nodes ask
    at once). Exits NO_AGENT when the node runs none (a container of an older labbuilder): callers
    then use `docker exec`."""
    return agent_submit(script) + "\n" + agent_collect()


def runs_no_agent(init: str = "/proc/1") -> str:
    """The shell test that holds when the node's init (process `init`) is not and will not become
    the agent. The order of the looks matters (CI once met a node "without" an agent): while
    `runc init` execs the node's init, the kernel swaps the memory `cmdline` is read from, renames
    the process (`comm`), and only then writes the new command line. So a process still named
    runc's, or a command line not yet written, is a node starting; only a written command line
    without the agent is a node without one."""
    return f"! grep -qxF 'runc:[2:INIT]' {init}/comm && grep -qa . {init}/cmdline && ! grep -qaF {AGENT} {init}/cmdline"


def agent_submit(script: str) -> str:
    """The first half of `through_agent`: hand the job over (it runs meanwhile). A node whose
    init runs the agent, or is still becoming it (`runc init` execs it a moment after the start
    returns), gets a moment to make its fifo: a node just started is asked at once. The job's
    exit status will come back through the fifo `JOB.rc`, held open here (fd 9)."""
    d = shlex.quote(AGENT_DIR)
    return "\n".join(
        [
            poll(
                f"[ -p {d}/in ]",
                AGENT_START,
                each=f'if {runs_no_agent()}; then echo "no {AGENT} runs in this node" >&2; exit {NO_AGENT}; fi',
                give_up=f'{{ echo "{AGENT} made no {d}/in in 5 s" >&2; exit 124; }}',
            ),
            f'job={d}/job.$$; rm -f "$job".*; mkfifo "$job.rc"; exec 9<>"$job.rc"',
            f'cp {shlex.quote(script)} "$job.sh"; echo "$job" > {d}/in',
        ]
    )


def agent_collect() -> str:
    """The second half: wait for the job's status (a blocking read, not a poll), print its
    output, stop here if it failed."""
    return "\n".join(
        [
            f"rc=$(timeout {JOB_TIMEOUT} sh -c 'read -r rc && echo \"$rc\"' <&9) || rc=124; exec 9<&-",
            'cat "$job.out" 2>/dev/null; rm -f "$job.sh" "$job.out" "$job.rc"',
            f'[ "$rc" != 124 ] || echo "{AGENT} did not finish $job in {JOB_TIMEOUT} s" >&2',
            '[ "$rc" = 0 ] || exit "$rc"',
        ]
    )

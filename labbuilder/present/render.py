"""The lab as a shell script: the `docker run`, `ip`, `iptables-restore` and `nft` commands that build it by hand.

The study artefact: what `labbuilder up` does, in the order it does it, as commands a person could
type. Each container's operations come from `plan.describe()`, in the phases `apply` uses (pod
netns, links/addresses/routes, files, iptables, processes). The one thing no container can do on
its own is a veth between two containers; the script does it from the host with
`nsenter -t $ROUTER_PID -n ip link add … netns $NODE_PID`, which creates the pair inside the router
with its peer placed straight into the node: no link ever exists in the host's namespace.
"""

from __future__ import annotations

import posixpath
import re
import shlex

from labbuilder.compile import kubelet
from labbuilder.compile.ops import ROUTER, Ipsets, Iptables, Nftables, Op, Phase, Process, Veth, WriteFile, by_phase
from labbuilder.compile.paths import IPSETS_FILE, NFT_FILE, RULES_FILE, SPEC_COPY, STATE_DIR
from labbuilder.compile.plan import ContainerSpec, Plan, compile_plan
from labbuilder.spec.model import Lab

HOST = ""  # the key of lines run on the host itself


def pid_var(key: str) -> str:
    return re.sub(r"\W", "_", key).upper() + "_PID"


def docker_run(plan: Plan, spec: ContainerSpec) -> str:
    """The `docker run` that LabHandle.create performs: sealed, labelled, explicit capabilities."""
    labels = plan.labels(spec)
    lines = [
        f"docker run -d --name {shlex.quote(spec.name)} --hostname {shlex.quote(spec.hostname)}",
        " ".join(f"--label {shlex.quote(f'{k}={v}')}" for k, v in labels.items()),
        "--network none " + " ".join(f"--cap-add {cap}" for cap in spec.caps),
        " ".join(f"--sysctl {k}={v}" for k, v in spec.sysctls.items()),
        '--init --stop-signal SIGKILL "$IMAGE" labbuilder-agent',
    ]
    return " \\\n    ".join(line for line in lines if line)


def heredoc(command: str, body: str, marker: str = "EOF") -> str:
    return f"{command} <<'{marker}'\n{body.rstrip()}\n{marker}"


def op_lines(op: Op) -> list[tuple[str, str]]:
    """(where, command) pairs for one operation; `where` is a container key, or HOST."""
    if isinstance(op, Veth) and op.ns.container != op.peer_ns.container:
        if op.ns.netns or op.peer_ns.netns:
            raise ValueError(f"cannot render a cross-container veth between pod namespaces: {op}")
        command = op.describe().replace(
            f"netns <pid of {op.peer_ns.container}>", f'netns "${pid_var(op.peer_ns.container)}"'
        )
        why = (
            f"# {op.peer_name} of {op.peer_ns.container}: a veth made inside {op.ns.container}, its peer placed"
            " straight into the other container;\n# nsenter enters only the network namespace: no link ever exists"
            " in the host's"
        )
        return [(HOST, f'{why}\nnsenter -t "${pid_var(op.ns.container)}" -n {command}')]
    if isinstance(op, WriteFile):
        return [(op.ns.container, f"mkdir -p {shlex.quote(posixpath.dirname(op.path))}\n{op.describe()}")]
    if isinstance(op, Iptables):
        return [
            (op.ns.container, f"mkdir -p {STATE_DIR}\n{heredoc(f'cat > {RULES_FILE}', op.payload)}"),
            (op.ns.container, f"iptables-restore {RULES_FILE}"),
        ]
    if isinstance(op, Ipsets):
        return [
            (op.ns.container, f"mkdir -p {STATE_DIR}\n{heredoc(f'cat > {IPSETS_FILE}', op.payload)}"),
            (op.ns.container, f"ipset restore -exist -file {IPSETS_FILE}"),
        ]
    if isinstance(op, Nftables):  # kube-proxy's table, replaced whole in one transaction
        return [
            (op.ns.container, f"mkdir -p {STATE_DIR}\n{heredoc(f'cat > {NFT_FILE}', op.payload)}"),
            (op.ns.container, f"nft -f {NFT_FILE}"),
        ]
    return [(op.ns.container, op.describe())]


def blocks(plan: Plan, lines: list[tuple[str, str]]) -> list[str]:
    """Consecutive commands for one container become one `docker exec -i … sh -es` block."""
    out: list[str] = []
    run: list[str] = []
    where = None
    for key, command in [*lines, (None, "")]:
        if key != where or key == HOST:
            if run and where == HOST:
                out += run
            elif run and where is not None:
                name = plan.lab.router_name if where == ROUTER else plan.lab.container_name(where)
                out.append(heredoc(f"docker exec -i {name} sh -es", "\n".join(run), "EOS"))
            run, where = [], key
        if key is not None:
            run.append(command)
    return out


def render_sh(lab: Lab, spec_text: str, image: str) -> str:
    plan = compile_plan(lab)
    name = lab.name
    out = [
        "#!/bin/sh",
        f"# Lab {name}, built by hand: the commands `labbuilder up` performs, in its order.",
        "# Run as root on a host with Docker and the node image; remove the lab with",
        f"# `labbuilder down {name}` (it finds the containers by their labbuilder.lab label).",
        "set -eu",
        f'IMAGE="${{IMAGE:-{image}}}"  # `labbuilder image build` makes it',
        'docker image inspect "$IMAGE" >/dev/null 2>&1 ||',
        '    { echo "no image $IMAGE: run labbuilder image build" >&2; exit 1; }',
        "",
        "# 1. The containers: no network at all (--network none), three capabilities, never a privileged container.",
        *(docker_run(plan, spec) for spec in plan.containers),
        "",
        "# Their PIDs: the host-side handles of their network namespaces (/proc/PID/ns/net).",
        *(f"{pid_var(s.key)}=$(docker inspect -f '{{{{.State.Pid}}}}' {s.name})" for s in plan.containers),
        "",
        "# The lab file, kept in the router: `labbuilder status`, `graph` and `trace` read it there.",
        heredoc(
            f"docker exec -i {lab.router_name} sh -c 'mkdir -p {posixpath.dirname(SPEC_COPY)} && cat > {SPEC_COPY}'",
            spec_text,
        ),
    ]
    for number, (key, ops) in enumerate(plan.steps.items(), 2):
        container = lab.router_name if key == ROUTER else lab.container_name(key)
        out += ["", f"# {number}. {container}"]
        lines: list[tuple[str, str]] = []
        phases = by_phase(ops)
        for phase, phase_ops in phases.items():
            if phase == Phase.PROCESSES:
                continue
            for op in phase_ops:
                lines += op_lines(op)
        processes = [op for op in phases[Phase.PROCESSES] if isinstance(op, Process)]
        if processes:  # the same start routine `up` runs: each process once, its pid in a pidfile
            lines.append((key, kubelet.start_script(processes)))
        out += blocks(plan, lines)
    out += ["", f'echo "lab {name} is up: try docker exec {lab.container_name(lab.nodes[-1].name)} ip route"', ""]
    return "\n".join(out)

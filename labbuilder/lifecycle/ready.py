"""Wait until a lab serves: every port its pods (and controllers) listen on is listening.

Starting a process returns at once; a Python podserver then needs a moment to open its sockets in
every pod's netns. A learner's `labbuilder up && labbuilder check`, or a grader right after
`reset`, must not meet "connection refused" in that moment: `up` and `reset` return only when
what the plan serves is served, as a kubelet reports a pod Ready only after its probe passes.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from labbuilder.compile.kubelet import pod_containers
from labbuilder.compile.plan import Plan
from labbuilder.engine.runtime import LabHandle, in_threads

TRIES = 200  # times 50 ms: at most 10 s per socket, then give up quietly (check will tell)


def listeners(plan: Plan, key: str) -> list[tuple[str | None, str, int]]:
    """(pod netns or None, protocol, port) that container `key` serves once its processes run."""
    try:
        node = plan.lab.node(key)
    except KeyError:
        return []  # the router serves nothing
    found: list[tuple[str | None, str, int]] = [(None, "tcp", port) for port in node.listen_ports]
    for pod in node.pods:
        found += [(pod.netns, proto, port) for c in pod_containers(node, pod) for proto, port in c.ports]
    return found


def wait_script(wanted: Sequence[tuple[str | None, str, int]]) -> str:
    lines = []
    for netns, proto, port in wanted:
        where = f"ip netns exec {shlex.quote(netns)} " if netns else ""
        flag = "-t" if proto == "tcp" else "-u"
        probe = f"{where}ss -Hln {flag} 'sport = :{port}' | grep -q ."
        lines.append(f"n=0; until {probe}; do n=$((n+1)); [ $n -ge {TRIES} ] && break; sleep 0.05; done")
    return "\n".join(["exec 2>/dev/null", *lines, "true"])


def wait_until_serving(handle: LabHandle, plan: Plan, keys: Sequence[str]) -> None:
    """One short process per container, polling its sockets; containers in parallel."""
    work = {key: listeners(plan, key) for key in keys}
    busy = [key for key, wanted in work.items() if wanted]
    in_threads(lambda key: handle.enter(key, ["sh", "-c", wait_script(work[key])]), busy)

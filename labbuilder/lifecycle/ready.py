"""Wait until a lab serves: every port its pods (and controllers) listen on is listening.

Starting a process returns at once; a Python podserver then needs a moment to open its sockets in
every pod's netns. A learner's `labbuilder up && labbuilder check`, or a grader right after
`reset`, must not meet "connection refused" in that moment: `up` and `reset` return only when
what the plan serves is served, as a kubelet reports a pod Ready only after its probe passes.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence

from labbuilder.compile.kubelet import pod_containers, podserver_config, podserver_name, poll, ready_file
from labbuilder.compile.paths import pidfile
from labbuilder.compile.plan import Plan
from labbuilder.engine.runtime import LabHandle, in_threads

TRIES = 205  # looks, 5 after 10 ms and the rest 50 ms apart (kubelet.BACKOFF): at most 10 s per
# socket, then give up quietly (check will tell)


def listeners(plan: Plan, key: str) -> list[tuple[str | None, str, int]]:
    """(pod netns, protocol, port) that container `key`'s own pod processes serve (dnsmasq); what
    the node's podserver serves is waited for through its ready file instead (`podserver`)."""
    try:
        node = plan.lab.node(key)
    except KeyError:
        return []  # the router serves nothing
    return [
        (pod.netns, proto, port)
        for pod in node.pods
        for c in pod_containers(node, pod)
        if c.own_process
        for proto, port in c.ports
    ]


def podserver(plan: Plan, key: str) -> str | None:
    """The node's podserver (its pidfile stem), when it serves anything."""
    try:
        node = plan.lab.node(key)
    except KeyError:
        return None
    return podserver_name(node) if podserver_config(plan.lab, node) else None


def wait_script(wanted: Sequence[tuple[str | None, str, int]], server: str | None = None) -> str:
    """Poll until each socket listens (one `ss` in its netns, entered with `nsenter --net`), and the
    podserver's ready file holds the pid its pidfile holds (a stale one from a restart does not)."""
    lines = []
    if server:
        # `read`, not `$(cat ...)`: a look costs no process
        ready = (
            f"{{ read -r a < {shlex.quote(ready_file(server))} && read -r b < {shlex.quote(pidfile(server))} "
            '&& [ "$a" = "$b" ]; }'
        )
        lines.append(poll(ready, TRIES))
    for netns, proto, port in wanted:
        where = f"nsenter --net=/run/netns/{shlex.quote(netns)} " if netns else ""
        flag = "-t" if proto == "tcp" else "-u"
        probe = f"{where}ss -Hln {flag} 'sport = :{port}' | grep -q ."
        lines.append(poll(probe, TRIES))
    return "\n".join(["exec 2>/dev/null", *lines, "true"])


def wait_until_serving(
    handle: LabHandle, plan: Plan, keys: Sequence[str], served: Callable[[str], None] | None = None
) -> None:
    """One short process per container, polling; containers in parallel. `served(key)` is told
    as each container's wait ends (at once for those that serve nothing)."""
    work = {key: (listeners(plan, key), podserver(plan, key)) for key in keys}
    busy = [key for key, (wanted, server) in work.items() if wanted or server]
    tell = served or (lambda _: None)
    for key in keys:
        if key not in busy:
            tell(key)

    def wait(key: str) -> None:
        handle.enter(key, ["sh", "-c", wait_script(*work[key])])
        tell(key)

    in_threads(wait, busy)

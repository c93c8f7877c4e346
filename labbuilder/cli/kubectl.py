"""kubectl-shaped commands over a running lab: `get nodes|pods|services|endpoints` and `exec`.

`get` reads the lab back (observe.readback) and prints kubectl's columns and objects
(present.kubectl); `exec` runs a command in a node container or in a pod's netns inside its node,
through the docker client. readback and present.kubectl are imported when a command runs (start-up).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import click

from labbuilder.cli.tools import console, errors, lab_handle, user_errors
from labbuilder.errors import LabError

if TYPE_CHECKING:
    from labbuilder.observe.readback import LabReading, ServiceView

OUTPUTS = ["wide", "json", "yaml", "name"]


# --------------------------------------------------------------------------------------------
# Printing and selecting.
# --------------------------------------------------------------------------------------------
def emit(text: str) -> None:
    click.echo(text, file=console.file)


def print_objects(output: str, objects: list[dict[str, Any]], single: bool) -> None:
    import yaml

    from labbuilder.present import kubectl as shapes

    data: dict[str, Any] = objects[0] if single and len(objects) == 1 else shapes.as_list(objects)
    if output == "json":
        emit(json.dumps(data, indent=4))
    elif output == "yaml":
        emit(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
    else:  # name
        kind = {
            "Node": "node",
            "Pod": "pod",
            "Service": "service",
            "Endpoints": "endpoints",
            "NetworkPolicy": "networkpolicy.networking.k8s.io",
        }
        for obj in objects:
            emit(f"{kind[obj['kind']]}/{obj['metadata']['name']}")


def nothing_found(namespace: str | None) -> None:
    where = f" in {namespace} namespace" if namespace else ""
    errors.print(f"No resources found{where}.", highlight=False)


def select(items: list[Any], names: Sequence[str], kind: str, name_of: Callable[[Any], str]) -> list[Any]:
    """Keep the items named (all when no names), erroring like kubectl on an unknown name."""
    if not names:
        return items
    by_name = {name_of(item): item for item in items}
    missing = [n for n in names if n not in by_name]
    if missing:
        known = ", ".join(sorted(by_name)) or "none"
        raise LabError(f'{kind} "{missing[0]}" not found', hint=f"{kind} here: {known}")
    return [by_name[n] for n in names]


def in_namespace(namespace: str, all_namespaces: bool) -> Callable[[str], bool]:
    return lambda ns: all_namespaces or ns == namespace


# --------------------------------------------------------------------------------------------
# get
# --------------------------------------------------------------------------------------------
class _Resources(click.Group):
    """kubectl's short names and singulars: `get po`, `get svc`, `get ep`, `get node`."""

    ALIASES: ClassVar[dict[str, str]] = {
        "no": "nodes",
        "node": "nodes",
        "po": "pods",
        "pod": "pods",
        "svc": "services",
        "service": "services",
        "ep": "endpoints",
        "endpoint": "endpoints",
        "netpol": "networkpolicies",
        "networkpolicy": "networkpolicies",
    }

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.ALIASES.get(cmd_name, cmd_name))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        _, command, rest = super().resolve_command(ctx, args)
        return (command.name if command else None), command, rest


@click.group(cls=_Resources)
def get() -> None:
    """Show the nodes, pods, services, endpoints or networkpolicies of a running lab, with kubectl's columns.

    Everything is read back from the lab itself, not from its file: node addresses from eth0
    in each node, pod addresses and readiness from each pod's netns and processes, services
    and endpoints from kube-proxy's rules in a node's iptables-save, network policies from the
    lab's own copy of its file (what an apiserver stores). Break something inside the lab and
    `get` shows it.

    \b
    Examples:
      labbuilder get nodes kthw -o wide
      labbuilder get pods kthw -o wide
      labbuilder get svc kthw -A
      labbuilder get endpoints kthw
      labbuilder get pods kthw -o json | jq -r '.items[].status.podIP'
    """


def _output_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-o",
        "--output",
        type=click.Choice(OUTPUTS),
        help="wide: more columns; json/yaml: kubectl-shaped objects; name: kind/name only",
    )(func)


def _namespace_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("-A", "--all-namespaces", is_flag=True, help="every namespace, with a NAMESPACE column")(func)
    return click.option("-n", "--namespace", default="default", show_default=True, help="the namespace to list")(func)


def _node_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--node",
        "proxy_node",
        metavar="NODE",
        help="read kube-proxy's rules on this node (default: the first running worker)",
    )(func)


@get.command("nodes")
@click.argument("lab")
@click.argument("names", nargs=-1)
@_output_option
@user_errors
def get_nodes(lab: str, names: tuple[str, ...], output: str | None) -> None:
    """The nodes of LAB: Ready when the container runs and eth0 has an address.

    \b
    Examples:
      labbuilder get nodes kthw
      labbuilder get nodes kthw -o wide       # INTERNAL-IP, POD-CIDR, OS, kernel
    """
    from labbuilder.observe import readback
    from labbuilder.present import kubectl as shapes

    reading = readback.open_lab(lab_handle(lab))
    states = select(readback.read_nodes(reading), names, "nodes", lambda s: s.node.name)
    states.sort(key=lambda s: s.node.name)
    runtime = f"docker://{reading.handle.engine.version()}" if output in ("wide", "json", "yaml") else ""
    if not states:
        nothing_found(None)
    elif output in ("json", "yaml", "name"):
        print_objects(output, [shapes.node_object(reading.lab, s, runtime) for s in states], len(names) == 1)
    else:
        headers = shapes.NODE_HEADERS + (shapes.NODE_WIDE if output == "wide" else [])
        emit(shapes.render_table(headers, shapes.node_rows(states, output == "wide", runtime)))


@get.command("pods")
@click.argument("lab")
@click.argument("names", nargs=-1)
@_output_option
@_namespace_options
@user_errors
def get_pods(lab: str, names: tuple[str, ...], output: str | None, namespace: str, all_namespaces: bool) -> None:
    """The pods of LAB: Running when the netns has its address and every process is alive.

    READY counts a pod's processes alive in its netns (the pause process stands in for pods
    that run nothing else); `-o yaml` says what is wrong with a pod that is not Running.

    \b
    Examples:
      labbuilder get pods kthw -o wide
      labbuilder get pods kthw -A
      labbuilder get pods kthw -n kube-system -o yaml
    """
    from labbuilder.observe import readback
    from labbuilder.present import kubectl as shapes

    reading = readback.open_lab(lab_handle(lab))
    wanted = in_namespace(namespace, all_namespaces)
    states = [s for s in readback.read_pods(reading) if wanted(s.pod.namespace)]
    states = select(states, names, "pods", lambda s: s.pod.name)
    states.sort(key=lambda s: (s.pod.namespace, s.pod.name))
    if not states:
        nothing_found(None if all_namespaces else namespace)
    elif output in ("json", "yaml", "name"):
        print_objects(output, [shapes.pod_object(reading.lab, s) for s in states], len(names) == 1)
    else:
        emit(shapes.render_table(*shapes.pod_rows(states, output == "wide", all_namespaces)))


def _services(
    lab: str, names: Sequence[str], namespace: str, all_namespaces: bool, node: str | None, kind: str
) -> tuple[LabReading, list[ServiceView], str]:
    from labbuilder.observe import readback

    reading = readback.open_lab(lab_handle(lab))
    views, warnings, read_from = readback.read_services(reading, node)
    for warning in warnings:
        errors.print(f"warning: {warning}")
    wanted = in_namespace(namespace, all_namespaces)
    views = select([v for v in views if wanted(v.namespace)], names, kind, lambda v: v.name)
    views.sort(key=lambda v: (v.namespace, v.name))
    return reading, views, read_from


def _show_services(
    lab: str,
    names: Sequence[str],
    output: str | None,
    namespace: str,
    all_namespaces: bool,
    proxy_node: str | None,
    kind: str,
) -> None:
    """`get services` and `get endpoints`: one reading of kube-proxy's rules, two shapes."""
    from labbuilder.present import kubectl as shapes

    reading, views, read_from = _services(lab, names, namespace, all_namespaces, proxy_node, kind)
    created = reading.started("router")
    to_object = shapes.service_object if kind == "services" else shapes.endpoints_object
    rows = shapes.service_rows if kind == "services" else shapes.endpoint_rows
    if not views:
        nothing_found(None if all_namespaces else namespace)
    elif output in ("json", "yaml", "name"):
        objects = [to_object(v, created) for v in views]
        for obj in objects:
            obj["metadata"]["annotations"] = {"labbuilder/read-from": read_from}
        print_objects(output, objects, len(names) == 1)
    else:
        emit(shapes.render_table(*rows(views, output == "wide", all_namespaces, shapes.age(created))))


@get.command("services")
@click.argument("lab")
@click.argument("names", nargs=-1)
@_output_option
@_namespace_options
@_node_option
@user_errors
def get_services(
    lab: str, names: tuple[str, ...], output: str | None, namespace: str, all_namespaces: bool, proxy_node: str | None
) -> None:
    """The services of LAB, as kube-proxy programmed them (KUBE-SERVICES, KUBE-NODEPORTS).

    \b
    Examples:
      labbuilder get services kthw
      labbuilder get svc kthw -A -o wide       # with each service's selector
      labbuilder get svc kthw --node worker-2  # kube-proxy's rules on another node
    """
    _show_services(lab, names, output, namespace, all_namespaces, proxy_node, "services")


@get.command("endpoints")
@click.argument("lab")
@click.argument("names", nargs=-1)
@_output_option
@_namespace_options
@_node_option
@user_errors
def get_endpoints(
    lab: str, names: tuple[str, ...], output: str | None, namespace: str, all_namespaces: bool, proxy_node: str | None
) -> None:
    """The endpoints of LAB's services: the DNAT targets of kube-proxy's KUBE-SEP chains.

    \b
    Examples:
      labbuilder get endpoints kthw
      labbuilder get ep kthw -A -o wide        # every address, not just the first three
      labbuilder get ep kthw nginx -o yaml     # with the pod behind each address
    """
    _show_services(lab, names, output, namespace, all_namespaces, proxy_node, "endpoints")


@get.command("networkpolicies")
@click.argument("lab")
@click.argument("names", nargs=-1)
@_output_option
@_namespace_options
@user_errors
def get_network_policies(
    lab: str, names: tuple[str, ...], output: str | None, namespace: str, all_namespaces: bool
) -> None:
    """The NetworkPolicies of LAB, as the apiserver would return them (policyTypes and protocols
    defaulted), from the lab's own copy of its file.

    \b
    Examples:
      labbuilder get networkpolicies netpol -A
      labbuilder get netpol netpol -n x
      labbuilder get netpol netpol -n x default-deny-ingress -o yaml
    """
    from labbuilder.present import kubectl as shapes

    model = lab_handle(lab).model()
    wanted = in_namespace(namespace, all_namespaces)
    policies = [p for p in model.network_policies if wanted(p.namespace)]
    policies = select(policies, names, "networkpolicies.networking.k8s.io", lambda p: p.name)
    policies.sort(key=lambda p: (p.namespace, p.name))
    if not policies:
        nothing_found(None if all_namespaces else namespace)
    elif output in ("json", "yaml", "name"):
        print_objects(output, [shapes.network_policy_object(p) for p in policies], len(names) == 1)
    else:
        emit(shapes.render_table(*shapes.network_policy_rows(policies, all_namespaces)))


# --------------------------------------------------------------------------------------------
# exec
# --------------------------------------------------------------------------------------------
_FLAGS = {"-i": "i", "--interactive": "i", "-t": "t", "--tty": "t", "-it": "it", "-ti": "it"}


def split_exec_args(args: Sequence[str]) -> tuple[str, list[str], set[str]]:
    """`[-it] TARGET [-it] [--] COMMAND...` → (target, command, flags {"i", "t"}).

    Our flags are recognised only before the command starts, so `iptables -t nat -S` after
    the target stays the command's own.
    """
    flags: set[str] = set()
    rest = list(args)
    while rest and rest[0] in _FLAGS:
        flags.update(_FLAGS[rest.pop(0)])
    if not rest or rest[0] == "--":
        raise LabError("no NODE or NODE/POD to run in", hint="e.g. `labbuilder exec kthw worker-0 -- ip route`")
    target = rest.pop(0)
    while rest and rest[0] in _FLAGS:
        flags.update(_FLAGS[rest.pop(0)])
    if rest and rest[0] == "--":
        rest.pop(0)
    return target, rest, flags


def docker_exec_argv(
    container: str, netns: str | None, command: Sequence[str], flags: set[str], engine: Sequence[str] = ()
) -> list[str]:
    argv = ["docker", *engine, "exec"]
    if flags:
        argv.append("-" + "".join(sorted(flags)))
    argv.append(container)
    if netns:
        argv += ["ip", "netns", "exec", netns]
    return [*argv, *command]


def default_shell(pod: str | None) -> list[str]:
    """An interactive shell; in a pod, with a prompt that says so (the hostname is the node's)."""
    if pod is None:
        return ["bash"]
    return ["env", f"PS1=[pod {pod}] \\w# ", "bash", "--norc"]


@click.command(
    "exec",
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
)
@click.option("-i", "--interactive", is_flag=True, help="keep stdin open (as docker exec -i)")
@click.option("-t", "--tty", is_flag=True, help="allocate a terminal; `-it` with no command opens a shell")
@click.argument("lab")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="NODE[/POD] [--] [COMMAND]...")
@user_errors
def exec_command(interactive: bool, tty: bool, lab: str, args: tuple[str, ...]) -> None:
    """Run COMMAND in a node of LAB, or in a pod's network namespace inside its node.

    A pod is named by its full name or a unique prefix, with or without its node
    (`worker-0/nginx`, `nginx-7d9c`); the command then runs under `ip netns exec <netns>` in
    the node container, so it sees the pod's interfaces, routes and resolv.conf. The exit
    status is the command's.

    \b
    Examples:
      labbuilder exec kthw worker-0 -- ip route
      labbuilder exec kthw worker-0/nginx -- curl -s 10.32.0.2
      labbuilder exec kthw router -- ip route          # the lab's VPC router
      labbuilder exec -it kthw worker-1/busybox        # a shell in the pod
    """
    target, command, flags = split_exec_args(args)
    if interactive:
        flags.add("i")
    if tty:
        flags.add("t")
    container, netns, pod = resolve_exec_target(lab, target)
    if not command:
        if not flags:
            raise LabError(
                f"no command to run in {target}",
                hint=f"`labbuilder exec {lab} {target} -- ip addr`, or `-it` for a shell",
            )
        command = default_shell(pod)
    if "t" in flags and not sys.stdin.isatty():
        raise LabError("-t needs a terminal, and stdin is not one", hint="drop -t; -i alone pipes input in")
    if shutil.which("docker") is None:
        raise LabError("the docker client is not installed", hint="`apt-get install docker.io` (or docker-ce-cli)")
    from labbuilder.engine.runtime import Engine

    argv = docker_exec_argv(container, netns, command, flags, Engine().endpoint.cli_args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)  # the terminal, signals and the exit status are docker exec's


def resolve_exec_target(lab: str, target: str) -> tuple[str, str | None, str | None]:
    """(container, pod netns or None, pod name or None) for any place of the refs grammar."""
    from labbuilder.spec import refs

    handle = lab_handle(lab)
    try:
        where = refs.place(handle.model(), target)
        handle.require([where.key])
        return handle.containers[where.key].name, where.netns, where.pod.name if where.pod else None
    finally:
        handle.engine.close()  # exec replaces this process: no exit handler would remove a helper


COMMANDS: list[click.Command] = [get, exec_command]

"""Commands to see a lab: `graph` (a picture), `trace` (a packet's path, from the kernel), `render` (a script)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from labbuilder.cli.tools import console, lab_handle, user_errors
from labbuilder.errors import LabError

if TYPE_CHECKING:  # the CLI starts without loading the pipeline; commands import it when they run
    from labbuilder.spec.load import Spec
    from labbuilder.spec.model import Lab, Protocol


def _running_spec(name: str) -> Spec | None:
    """The spec of a running lab of that name, or None (no such lab, or no engine here)."""
    try:
        return lab_handle(name).spec()
    except LabError:  # LAB can still be a file or a shipped lab
        return None


def load_lab(target: str, name: str | None = None) -> tuple[Lab, str]:
    """LAB as a lab file, the name of a running lab, or a shipped lab name — in that order.

    Returns the model and the spec text (renamed when `name` is given).
    """
    from labbuilder.spec.load import load, spec_text
    from labbuilder.spec.resolve import build_model

    running = None if Path(target).exists() or "/" in target else _running_spec(target)
    spec = running or load(target)
    if name:
        spec.data["name"] = name
    return build_model(spec).lab, spec_text(spec)


@click.command()
@click.argument("lab")
@click.option("-o", "--format", "fmt", type=click.Choice(["html", "dot", "mermaid"]), default="html", show_default=True)
@click.option("--output", "output", metavar="FILE", help="where to write; default LAB.html for html, stdout for text")
@click.option("--services/--no-services", default=True, show_default=True, help="dot/mermaid: draw services")
@click.option(
    "--policies",
    metavar="PORT[/PROTO]",
    help="draw the pod-to-pod connections the NetworkPolicies allow on this port (e.g. 80/tcp)",
)
@user_errors
def graph(lab: str, fmt: str, output: str | None, services: bool, policies: str | None) -> None:
    """Draw LAB: router, node network, nodes, bridges, pods and services with their endpoints.

    LAB is a lab file, a shipped lab name, or the name of a running lab. The HTML page is
    self-contained (no script, nothing fetched): open it in any browser; a checkbox hides the
    services. Hover a box for its details.

    \b
    Examples:
      labbuilder graph labs/kthw.yaml                 # writes kthw.html
      labbuilder graph kthw -o dot | dot -Tsvg > kthw.svg
      labbuilder graph mylab -o mermaid --output mylab.mmd
      labbuilder graph netpol --policies 80/tcp       # green arrows: what the policies allow
    """
    from labbuilder.present.graph import render

    model, _ = load_lab(lab)
    text = render(model, fmt, services, _port_protocol(policies) if policies else None)
    target = output or (f"{model.name}.html" if fmt == "html" else "-")
    if target == "-":
        click.echo(text, nl=False)
        return
    Path(target).write_text(text)
    console.print(f"wrote {target} ({fmt}, {len(model.nodes)} nodes, {len(model.pods)} pods)")


def _port_protocol(text: str) -> tuple[int, Protocol]:
    """`80`, `80/tcp`, `53/UDP` → (80, "TCP")."""
    port, _, proto = text.partition("/")
    protocol = (proto or "tcp").upper()
    if not port.isdigit() or not 0 < int(port) < 65536 or protocol not in ("TCP", "UDP"):
        raise click.BadParameter(
            f"{text!r}: give PORT or PORT/tcp or PORT/udp, such as 80/tcp", param_hint="--policies"
        )
    return int(port), "TCP" if protocol == "TCP" else "UDP"


@click.command()
@click.argument("lab")
@click.argument("source", metavar="FROM")
@click.argument("destination", metavar="TO[:PORT[/PROTO]]")
@click.option("-o", "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@user_errors
def trace(lab: str, source: str, destination: str, fmt: str) -> None:
    """Send one probe packet FROM → TO in the running LAB and show every hop the kernel took.

    For each namespace on the way: the interface it came in on, every iptables rule it met
    (KUBE-SERVICES → KUBE-SVC-… → KUBE-SEP-… → DNAT, MASQUERADE …), the route `ip route get`
    chooses, and where it left — or where it died. Read from the kernel (iptables TRACE and
    xtables-monitor, scoped to the probe and removed afterwards), so it stays true after you
    change a route or a rule.

    FROM and TO use the one grammar of places every command shares: a pod by name, unique
    prefix or NAME@NODE (`busybox@worker-0`; `labbuilder get pods LAB` lists them), NODE/POD,
    node/NAME, router, an IP of the lab, and for TO also service/NAME[.NS]. Without a port
    the probe goes to the target's first port (a service's, a pod's, a controller's 6443);
    an IP or a target without ports gets an ICMP echo; `:icmp` forces one, `:PORT/udp` UDP.

    \b
    Examples:
      labbuilder trace kthw busybox@worker-0 service/nginx
      labbuilder trace kthw busybox-jvhtx7kssg-q8dkv 10.32.0.2      # ICMP to a ClusterIP
      labbuilder trace kthw node/worker-0 nginx@worker-1:80/tcp -o json
    """
    from labbuilder.observe.tracer import Tracer, format_trace, source_place, target

    handle = lab_handle(lab)
    model = handle.model()
    result = Tracer(model, handle).run(source_place(model, source), target(model, destination))
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    for line in format_trace(result):
        console.print(line, soft_wrap=True)


@click.command()
@click.argument("lab")
@click.option("--format", "fmt", type=click.Choice(["sh"]), default="sh", show_default=True)
@click.option("--name", help="render a copy of the lab under another name")
@click.option("--output", metavar="FILE", help="write the script here (default: stdout)")
@click.option("--image", help="node image tag the script uses (default: this labbuilder's)")
@user_errors
def render(lab: str, fmt: str, name: str | None, output: str | None, image: str | None) -> None:
    """Print the shell commands that build LAB by hand: docker run, ip, iptables-restore, nft.

    The same lab `labbuilder up` builds, as a script to read or run (as root, with Docker and
    the node image). Its containers carry the labbuilder.lab label, so `labbuilder down`
    removes them; `status`, `graph` and `trace` work on it too.

    \b
    Examples:
      labbuilder render labs/kthw.yaml | less
      labbuilder render kthw --name byhand --output byhand.sh && sudo sh byhand.sh
    """
    from labbuilder.engine.image import image_tag
    from labbuilder.present.render import render_sh

    del fmt  # one format so far
    model, spec_text = load_lab(lab, name)
    script = render_sh(model, spec_text, image or image_tag())
    if output:
        Path(output).write_text(script)
        Path(output).chmod(0o755)
        console.print(f"wrote {output}")
    else:
        click.echo(script, nl=False)


COMMANDS: list[click.Command] = [graph, trace, render]

"""Commands to see a lab: `graph` (a picture), `trace` (a packet's path, from the kernel), `render` (a script)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from labbuilder.clitools import console, user_errors
from labbuilder.errors import LabError
from labbuilder.model import Lab
from labbuilder.spec import Spec


def _running_spec(name: str) -> Spec | None:
    """The spec of a running lab of that name, or None (no such lab, or no engine here)."""
    from labbuilder.lab import running_spec

    try:
        return running_spec(name)
    except LabError:  # LAB can still be a file or a shipped lab
        return None


def load_lab(target: str, name: str | None = None) -> tuple[Lab, str]:
    """LAB as a lab file, the name of a running lab, or a shipped lab name — in that order.

    Returns the model and the spec text (renamed when `name` is given).
    """
    from labbuilder.lab import spec_text
    from labbuilder.resolve import build_model
    from labbuilder.spec import load

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
@user_errors
def graph(lab: str, fmt: str, output: str | None, services: bool) -> None:
    """Draw LAB: router, node network, nodes, bridges, pods and services with their endpoints.

    LAB is a lab file, a shipped lab name, or the name of a running lab. The HTML page is
    self-contained (no script, nothing fetched): open it in any browser; a checkbox hides the
    services. Hover a box for its details.

    \b
    Examples:
      labbuilder graph labs/kthw.yaml                 # writes kthw.html
      labbuilder graph kthw -o dot | dot -Tsvg > kthw.svg
      labbuilder graph mylab -o mermaid --output mylab.mmd
    """
    from labbuilder.graph import render

    model, _ = load_lab(lab)
    text = render(model, fmt, services)
    target = output or (f"{model.name}.html" if fmt == "html" else "-")
    if target == "-":
        click.echo(text, nl=False)
        return
    Path(target).write_text(text)
    console.print(f"wrote {target} ({fmt}, {len(model.nodes)} nodes, {len(model.pods)} pods)")


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

    FROM and TO: pod/NAME (a unique prefix will do, or PREFIX@NODE; `labbuilder get pods LAB` lists them),
    node/NAME, node/router, service/NAME (TO only), or an IP. Without a port the probe is an
    ICMP echo, except to a service, whose first port is used; `:icmp` forces an echo.

    \b
    Examples:
      labbuilder trace kthw pod/busybox-jvhtx7kssg-q8dkv service/nginx
      labbuilder trace kthw pod/busybox-jvhtx7kssg-q 10.32.0.2      # ICMP to a ClusterIP
      labbuilder trace kthw node/worker-0 pod/nginx-wmjscfk4d4-hnxjq:80/tcp -o json
    """
    from labbuilder.lab import running_model
    from labbuilder.trace import Tracer, format_trace, source_place, target

    model = running_model(lab)
    result = Tracer(model).run(source_place(model, source), target(model, destination))
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    for line in format_trace(result):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@click.command()
@click.argument("lab")
@click.option("--format", "fmt", type=click.Choice(["sh"]), default="sh", show_default=True)
@click.option("--name", help="render a copy of the lab under another name")
@click.option("--output", metavar="FILE", help="write the script here (default: stdout)")
@click.option("--image", help="node image tag the script uses (default: this labbuilder's)")
@user_errors
def render(lab: str, fmt: str, name: str | None, output: str | None, image: str | None) -> None:
    """Print the shell commands that build LAB by hand: docker run, ip, iptables-restore.

    The same lab `labbuilder up` builds, as a script to read or run (as root, with Docker and
    the node image). Its containers carry the labbuilder.lab label, so `labbuilder down`
    removes them; `status`, `graph` and `trace` work on it too.

    \b
    Examples:
      labbuilder render labs/kthw.yaml | less
      labbuilder render kthw --name byhand --output byhand.sh && sudo sh byhand.sh
    """
    from labbuilder import image as node_image
    from labbuilder.render import render_sh

    del fmt  # one format so far
    model, spec_text = load_lab(lab, name)
    script = render_sh(model, spec_text, image or node_image.image_tag())
    if output:
        Path(output).write_text(script)
        Path(output).chmod(0o755)
        console.print(f"wrote {output}")
    else:
        click.echo(script, nl=False)

"""labbuilder's command line: kubectl- and docker-shaped verbs over the lab pipeline."""

from __future__ import annotations

import os
import sys

import click

from labbuilder import __version__
from labbuilder.cli.tools import bold, console, live_progress, progress_printer, user_errors


def _debug(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        os.environ["LABBUILDER_DEBUG"] = "1"


def _where() -> str:
    """ "this host", or "engine NAME" when --context chose another engine."""
    from labbuilder.engine.runtime import Engine

    return Engine().where


def _context(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    # Every command makes its Engine() late; the choice reaches them all through the environment.
    if value:
        os.environ["LABBUILDER_CONTEXT"] = value


# Wide enough that addresses and names never get cut when output is piped or captured.
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="labbuilder")
@click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_debug,
    help="on an error, also print the engine's own message or the traceback",
)
@click.option(
    "--context",
    metavar="NAME",
    envvar="LABBUILDER_CONTEXT",
    expose_value=False,
    is_eager=True,
    callback=_context,
    help="the Docker context (engine) to work on; default: DOCKER_HOST, or Docker's current context",
)
def main() -> None:
    """Build Kubernetes-shaped network labs from Docker containers — without Kubernetes.

    A lab file describes the node network, the nodes, their podCIDRs, the service range and
    the CNI mode. Nodes become sealed containers; pods become network namespaces inside them,
    wired with veths, bridges, routes and iptables rules shaped like the CNI bridge plugin's
    and kube-proxy's.

    \b
    Typical session:
      labbuilder validate labs/kthw.yaml
      labbuilder up labs/kthw.yaml
      docker exec kthw-worker-0 ip route
      labbuilder down kthw
    """


@main.command()
@click.argument("lab_file")
@user_errors
def validate(lab_file: str) -> None:
    """Check a lab file and print `ok` or every problem with its line.

    \b
    Example:
      labbuilder validate labs/kthw.yaml
    """
    from labbuilder.engine.kernel import host_kernel
    from labbuilder.spec.lab_file import resolve_file

    # This host's kernel facts: validate and plan touch no engine (`up` asks the engine's own).
    _, resolved = resolve_file(lab_file, kernel=host_kernel())
    for warning in resolved.warnings:
        click.echo(str(warning), err=True)
    click.echo("ok")  # what rich would print, without importing it


@main.command()
@click.argument("lab_file")
@click.option("--name", help="plan a copy of the lab under another name")
@user_errors
def plan(lab_file: str, name: str | None) -> None:
    """Print the addressing and every operation per node, touching nothing.

    \b
    Example:
      labbuilder plan labs/kthw.yaml | less -R
    """
    from labbuilder.compile.plan import compile_plan
    from labbuilder.engine.kernel import host_kernel
    from labbuilder.present.tables import print_plan
    from labbuilder.spec.lab_file import resolve_file

    _, resolved = resolve_file(lab_file, name, host_kernel())
    print_plan(console, compile_plan(resolved.lab))


@main.command()
@click.argument("lab_file")
@click.option("--name", help="bring the lab up under another name (a second copy beside the first)")
@click.option("-q", "--quiet", is_flag=True, help="no progress lines or bars")
@user_errors
def up(lab_file: str, name: str | None, quiet: bool) -> None:
    """Create the lab (or converge a running one) and print a summary.

    Builds the node image first when it is missing. If anything fails, whatever was created
    is removed again.

    \b
    Examples:
      labbuilder up labs/kthw.yaml
      labbuilder up kthw                       # a lab shipped with labbuilder, by name
      labbuilder up labs/kthw.yaml --name kthw2
    """
    from labbuilder.lifecycle import up as lifecycle
    from labbuilder.present.tables import addressing_tables

    with live_progress(quiet) as (lines, counts):  # bars on a terminal, plain lines in a pipe
        result = lifecycle.up(lab_file, name, lines, counts=counts)
    console.file.write("\n\n".join(addressing_tables(result.lab, pods_limit=50)) + "\n\n")
    verb = "is up" if result.created else "was already up and has converged"
    console.print(
        "lab ",
        bold(result.lab.name),
        f" {verb}. Try: docker exec {result.lab.container_name(result.lab.nodes[-1].name)} ip route",
        sep="",
    )


@main.command()
@click.argument("lab")
@user_errors
def down(lab: str) -> None:
    """Remove every container of LAB (found by its labels), and nothing else.

    Works without the lab file and after an interrupted `up`.

    \b
    Example:
      labbuilder down kthw
    """
    from labbuilder.lifecycle import lab as lifecycle

    removed = lifecycle.down(lab, progress=progress_printer())
    if removed:
        console.print(f"removed {len(removed)} containers of lab {lab}")
    else:
        console.print(f"no containers of lab {lab}: nothing to do")


@main.command()
@click.argument("lab")
@click.option("--dry-run", is_flag=True, help="say what would be repaired, change nothing")
@click.option(
    "--file",
    "lab_file",
    metavar="LAB.yaml",
    help="reset to this lab file (when the lab's own copy is lost, e.g. after a crash during `up`)",
)
@click.option("-q", "--quiet", is_flag=True, help="print only the count of repairs")
@user_errors
def reset(lab: str, dry_run: bool, lab_file: str | None, quiet: bool) -> None:
    """Put a running LAB back to its pristine state, and say what was repaired.

    Reads the lab back, compares it with its plan (`labbuilder diff` shows the same
    comparison), removes what a learner added (netns, links, addresses, routes), restores
    what was lost (veths, addresses, routes, iptables tables, files, dead workloads, stopped
    or removed containers) and leaves intact parts alone. Needs no lab file: the lab
    remembers its spec.

    \b
    Examples:
      docker exec kthw-worker-0 ip route flush table main   # break something
      labbuilder reset kthw --dry-run                        # what would be repaired
      labbuilder reset kthw
    """
    from labbuilder.lifecycle.reset import reset_lab

    result = reset_lab(lab, lab_file, dry_run=dry_run, progress=progress_printer(quiet))
    verb = "would repair" if dry_run else "repaired"
    if not quiet:
        for line in result.repairs:
            console.print(f"  {verb}  {line}")
    count = len(result.repairs)
    if dry_run:
        console.print(f"lab {lab}: {count or 'nothing'} to repair" + ("" if count else " — it is intact"))
    else:
        console.print(f"lab {lab}: {count or 'nothing'} repaired" + ("" if count else " — it was intact"))


@main.command()
@click.argument("lab")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@user_errors
def diff(lab: str, output: str) -> None:
    """Show what differs in running LAB from its pristine state: what a learner changed.

    Routes, links, addresses, pod namespaces, iptables tables, files labbuilder wrote,
    processes and containers — each as `WHERE: WHAT STATE` (missing, added, changed, down,
    stopped). Exit status 1 when anything differs, 0 when the lab is pristine, so a script
    or a grader can ask "did they touch it?". `labbuilder reset` repairs exactly this list.

    \b
    Examples:
      labbuilder diff kthw
      labbuilder diff kthw -o json | jq '.[] | select(.kind == "route")'
    """
    import json

    from labbuilder.engine.runtime import Engine
    from labbuilder.lifecycle.diff import diff as lab_diff
    from labbuilder.lifecycle.reset import target
    from labbuilder.observe.state import observe

    handle, plan, _ = target(Engine(), lab, wake=False)
    differences = lab_diff(plan, observe(handle, plan))
    if output == "json":
        rows = [
            {"where": d.key, "netns": d.ns.netns if d.ns else None, "kind": d.kind, "what": d.what, "change": d.change}
            for d in differences
        ]
        click.echo(json.dumps(rows, indent=2))
    else:
        for d in differences:
            console.print(str(d))
        console.print(f"lab {lab}: " + (f"{len(differences)} differences from pristine" if differences else "pristine"))
    if differences:
        sys.exit(1)


@main.command()
@click.argument("lab", required=False)
@user_errors
def status(lab: str | None) -> None:
    """Show the containers of LAB (or of every lab) and their state.

    \b
    Example:
      labbuilder status kthw
    """
    from labbuilder.lifecycle import lab as lifecycle
    from labbuilder.present.tables import status_table

    labs = lifecycle.status(lab)
    if not labs:
        where = _where()
        console.print(f"no lab named {lab} on {where}" if lab else f"no labs on {where}")
        if lab:
            sys.exit(1)
        return
    console.print(status_table(labs))


@main.command("ls")
@user_errors
def list_labs() -> None:
    """List the labs on this host and whether they are up.

    \b
    Example:
      labbuilder ls
    """
    from labbuilder.lifecycle import lab as lifecycle
    from labbuilder.present.tables import labs_table

    labs = lifecycle.status()
    if not labs:
        console.print(f"no labs on {_where()}")
        return
    console.print(labs_table(labs))


@main.group()
def image() -> None:
    """The node image every lab container runs."""


@image.command("build")
@click.option(
    "--method",
    type=click.Choice(["auto", "mmdebstrap", "dockerfile"]),
    default="auto",
    show_default=True,
    help="mmdebstrap needs no registry; dockerfile needs debian:bookworm-slim from a registry",
)
@click.option("--force", is_flag=True, help="rebuild even when the image exists")
@user_errors
def image_build(method: str, force: bool) -> None:
    """Build labbuilder/node:<recipe hash> when missing.

    \b
    Example:
      labbuilder image build
    """
    from labbuilder.engine import image as node_image
    from labbuilder.engine.runtime import Engine

    client = Engine().client
    if not force and node_image.image_exists(client):
        console.print(f"{node_image.image_tag()} is present")
        return
    tag = node_image.build_image(client, method=method, on_progress=progress_printer())  # type: ignore[arg-type]
    console.print(f"built {tag}")


def _register_commands() -> None:
    """Commands that live in their own modules beside this one."""
    from labbuilder.cli import fleet, instructor, kubectl, see, serve

    for module in (instructor, kubectl, see, fleet, serve):
        for command in module.COMMANDS:
            main.add_command(command)


_register_commands()

if __name__ == "__main__":
    main()

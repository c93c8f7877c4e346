"""labbuilder's command line: kubectl- and docker-shaped verbs over the lab pipeline."""

from __future__ import annotations

import sys

import click

from labbuilder import __version__
from labbuilder.clitools import console, progress_printer, user_errors


# Wide enough that addresses and names never get cut when output is piped or captured.
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="labbuilder")
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
    from labbuilder.lab import resolve_file

    _, resolved = resolve_file(lab_file)
    for warning in resolved.warnings:
        click.echo(str(warning), err=True)
    console.print("ok")


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
    from labbuilder.lab import resolve_file
    from labbuilder.plan import compile_plan
    from labbuilder.views import print_plan

    _, resolved = resolve_file(lab_file, name)
    print_plan(console, compile_plan(resolved.lab))


@main.command()
@click.argument("lab_file")
@click.option("--name", help="bring the lab up under another name (a second copy beside the first)")
@click.option("-q", "--quiet", is_flag=True, help="no progress lines")
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
    from labbuilder import lab as lifecycle
    from labbuilder.views import addressing_tables

    result = lifecycle.up(lab_file, name, progress_printer(quiet))
    for table in addressing_tables(result.lab):
        console.print(table)
    verb = "is up" if result.created else "was already up and has converged"
    console.print(
        f"lab [bold]{result.lab.name}[/bold] {verb}. Try: "
        f"docker exec {result.lab.container_name(result.lab.nodes[-1].name)} ip route"
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
    from labbuilder import lab as lifecycle

    removed = lifecycle.down(lab)
    if removed:
        console.print(f"removed {len(removed)} containers of lab {lab}")
    else:
        console.print(f"no containers of lab {lab}: nothing to do")


@main.command()
@click.argument("lab")
@click.option("-q", "--quiet", is_flag=True, help="print only the count of repairs")
@user_errors
def reset(lab: str, quiet: bool) -> None:
    """Put a running LAB back to its pristine state, and say what was repaired.

    Removes what a learner added (netns, links, addresses, routes), restores what was lost
    (veths, addresses, routes, iptables tables, files, dead workloads, stopped containers)
    and leaves intact parts alone. Needs no lab file: the lab remembers its spec.

    \b
    Example:
      docker exec kthw-worker-0 ip route flush table main   # break something
      labbuilder reset kthw
    """
    from labbuilder.reset import reset as reset_lab

    repairs = reset_lab(lab, progress=progress_printer(quiet))
    if not quiet:
        for line in repairs:
            console.print(f"  repaired  {line}", markup=False, highlight=False)
    console.print(f"lab {lab}: {len(repairs) or 'nothing'} repaired" + ("" if repairs else " — it was intact"))


@main.command()
@click.argument("lab", required=False)
@user_errors
def status(lab: str | None) -> None:
    """Show the containers of LAB (or of every lab) and their state.

    \b
    Example:
      labbuilder status kthw
    """
    from labbuilder import lab as lifecycle
    from labbuilder.views import status_table

    labs = lifecycle.status(lab)
    if not labs:
        console.print(f"no lab named {lab} on this host" if lab else "no labs on this host")
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
    from labbuilder import lab as lifecycle
    from labbuilder.views import labs_table

    labs = lifecycle.status()
    if not labs:
        console.print("no labs on this host")
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
    from labbuilder import image as node_image
    from labbuilder.runtime.docker import connect

    client = connect()
    if not force and node_image.image_exists(client):
        console.print(f"{node_image.image_tag()} is present")
        return
    tag = node_image.build_image(client, method=method, on_progress=progress_printer())  # type: ignore[arg-type]
    console.print(f"built {tag}")


def _register_commands() -> None:
    """Commands that live in their own modules under labbuilder/commands/."""
    from labbuilder.commands import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_register_commands()

if __name__ == "__main__":
    main()

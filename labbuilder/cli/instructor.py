"""The instructor's commands: grade a lab with checks, start an exercise, hand out the lab's PKI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from labbuilder.cli.tools import bold, console, lab_handle, user_errors

if TYPE_CHECKING:
    from labbuilder.engine.runtime import LabHandle
    from labbuilder.spec.model import Lab


@click.command()
@click.argument("lab")
@click.option(
    "--exercise",
    "exercise_file",
    type=click.Path(dir_okay=False),
    help="grade the checks of this exercise file instead of the lab's own",
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False), help="also write a JUnit XML report here")
@click.option("--matrix", is_flag=True, help="measure who reaches whom: every pod serving --port to every other")
@click.option("--port", "port", default="80/tcp", show_default=True, metavar="PORT[/tcp|udp]", help="with --matrix")
@click.option(
    "--expect", is_flag=True, help="with --matrix: beside it the table the NetworkPolicies imply; exit 1 if they differ"
)
@click.option(
    "--group",
    type=click.Choice(["pods", "namespaces"]),
    default="pods",
    show_default=True,
    help="with --matrix: a row per pod (x/a), or per namespace",
)
@user_errors
def check(
    lab: str,
    exercise_file: str | None,
    output: str,
    junit_file: str | None,
    matrix: bool,
    port: str,
    expect: bool,
    group: str,
) -> None:
    """Run the lab's checks (or an exercise's) against running LAB; exit 1 if any fails.

    Checks: reach / no-reach between pods, nodes, services and IP:PORT (icmp, tcp, udp), a
    route present on a node, NAT seen in conntrack, a DNS answer, a reachability matrix. They
    run in parallel.

    With --matrix, the truth table of every pod to every other on one port, measured with
    packets and printed as the Kubernetes network-policy e2e suite prints it: rows from, columns
    to, `.` reached, `X` blocked. --expect puts the table the NetworkPolicies imply beside it.

    \b
    Examples:
      labbuilder check kthw
      labbuilder check kthw --exercise labs/exercises/kthw-pod-routes.yaml --junit grades.xml
      labbuilder check kthw -o json
      labbuilder check netpol --matrix --port 81/tcp --expect
    """
    from labbuilder.observe import checks as grading
    from labbuilder.present.tables import results_table
    from labbuilder.spec.exercise import load_exercise

    handle = lab_handle(lab)
    model = handle.model()
    if matrix:
        _matrix(handle, model, _port(port), expect, group, output)
        return
    to_run = load_exercise(exercise_file, model).checks if exercise_file else model.checks
    if not to_run:
        console.print(f"lab {lab} has no checks" + ("" if exercise_file else " (add `checks:` or use --exercise)"))
        return
    results = grading.run_checks(model, to_run, grading.exec_in(handle))
    if junit_file:
        Path(junit_file).write_text(grading.junit_xml(lab, results))
    if output == "json":
        click.echo(json.dumps(grading.as_json(results), indent=2))
    else:
        table = results_table(results)
        console.print(table)
        failed = sum(not r.passed for r in results)
        console.print(f"{len(results) - failed} passed, {failed} failed")
    if any(not r.passed for r in results):
        sys.exit(1)


def _port(text: str) -> tuple[int, str]:
    number, _, protocol = text.partition("/")
    if not number.isdigit() or not 1 <= int(number) <= 65535 or protocol.lower() not in ("", "tcp", "udp"):
        raise click.BadParameter(f"{text!r} is not PORT[/tcp|udp]", param_hint="--port")
    return int(number), (protocol or "tcp").upper()


def _matrix(handle: LabHandle, model: Lab, port: tuple[int, str], expect: bool, group: str, output: str) -> None:
    """`check --matrix`: measure; with --expect, compare with what the policies imply (exit 1 on a difference)."""
    from labbuilder.compile.cni import mode_for
    from labbuilder.compile.netpol.semantics import expected_matrix
    from labbuilder.errors import LabError
    from labbuilder.observe import checks as grading
    from labbuilder.observe.matrix import measure
    from labbuilder.present.matrix import differences_text, side_by_side
    from labbuilder.spec.checks import validate_matrix
    from labbuilder.spec.model import MatrixCheck

    number, protocol = port
    spec = MatrixCheck(number, protocol, group)  # type: ignore[arg-type]  # checked by _port and click
    try:
        validate_matrix(model, spec)
    except LabError as err:
        raise LabError(f"lab {model.name}: {err.message}", hint=err.hint) from None
    measured = measure(model, number, spec.protocol, grading.exec_in(handle), spec.group)
    wanted = expected_matrix(model, number, spec.protocol, spec.group) if expect else None
    if output == "json":
        found: dict[str, object] = {"port": number, "protocol": protocol, "froms": measured.froms, "tos": measured.tos}
        found["measured"] = measured.marks
        if wanted is not None:
            found["expected"] = wanted.marks
            found["differences"] = [list(d) for d in measured.differences(wanted)]
        click.echo(json.dumps(found, indent=2))
    elif wanted is None:
        click.echo(measured.pretty())
    else:
        where = f"{number}/{protocol.lower()}"
        click.echo(side_by_side(measured, wanted, (f"measured ({where})", "expected (NetworkPolicies)")))
        click.echo("\n" + differences_text(measured, wanted))
        if measured.differences(wanted) and model.network_policies and mode_for(model).hides_pod_sources(model):
            click.echo(
                "note: cni.ipMasq masquerades pod traffic between nodes in this CNI mode: a pod on another"
                " node arrives as its node's address, which no pod or namespace selector matches"
                " (set cni.ipMasq: false, as a kube-router cluster has it)"
            )
    if wanted is not None and measured.differences(wanted):
        sys.exit(1)


@click.command()
@click.argument("lab")
@click.argument("exercise_file", type=click.Path(exists=True, dir_okay=False))
@user_errors
def exercise(lab: str, exercise_file: str) -> None:
    """Start an exercise on running LAB: print its task and run its setup (what it breaks).

    \b
    Example:
      labbuilder exercise kthw labs/exercises/kthw-pod-routes.yaml
      ...fix it...
      labbuilder check kthw --exercise labs/exercises/kthw-pod-routes.yaml
      labbuilder reset kthw
    """
    from labbuilder.lifecycle.exercise import start_exercise

    ex = start_exercise(lab_handle(lab), exercise_file)
    console.print(bold(ex.title), "\n")
    console.print(ex.task.strip())
    console.print(f"\nWhen you are done: labbuilder check {lab} --exercise {exercise_file}")


@click.command()
@click.argument("lab")
@click.option("--out", "out", required=True, metavar="DIR", help="folder to write ca.pem, ca-key.pem, kubernetes*.pem")
@click.option("--name", help="the PKI of a copy of the lab under another name (`up --name`)")
@user_errors
def pki(lab: str, out: str, name: str | None) -> None:
    """Write LAB's CA and apiserver certificate, as KTHW's "Provisioning a CA" makes them.

    LAB is a lab file, a shipped lab name, or the name of a running lab. The files are the ones
    every node holds in /var/lib/kubernetes (plus the CA's key, which no node holds): the same
    lab name always gives the same bytes, so they match a lab that is up. Keys are written 0600.

    \b
    Examples:
      labbuilder pki kthw --out pki/
      openssl x509 -in pki/kubernetes.pem -noout -ext subjectAltName
      docker exec kthw-router curl --cacert /var/lib/kubernetes/ca.pem https://10.240.0.10:6443/version
    """
    from labbuilder.cli.see import load_lab
    from labbuilder.compile.pki import lab_pki

    model, _ = load_lab(lab, name)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for file, text in lab_pki(model).files().items():
        path = folder / file
        mode = 0o600 if file.endswith("-key.pem") else 0o644
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)  # a key is never readable by others
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        console.print(f"wrote {path}")
    ca, cert = folder / "ca.pem", folder / "kubernetes.pem"
    console.print(f"the PKI of lab {model.name}; check it: openssl verify -CAfile {ca} {cert}")


COMMANDS: list[click.Command] = [check, exercise, pki]

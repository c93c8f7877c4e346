"""The instructor's commands: grade a lab with checks, start an exercise, hand out the lab's PKI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from labbuilder.cli.tools import bold, console, lab_handle, user_errors


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
@user_errors
def check(lab: str, exercise_file: str | None, output: str, junit_file: str | None) -> None:
    """Run the lab's checks (or an exercise's) against running LAB; exit 1 if any fails.

    Checks: reach / no-reach between pods, nodes, services and IP:PORT (icmp, tcp, udp), a
    route present on a node, NAT seen in conntrack, a DNS answer. They run in parallel.

    \b
    Examples:
      labbuilder check kthw
      labbuilder check kthw --exercise labs/exercises/kthw-pod-routes.yaml --junit grades.xml
      labbuilder check kthw -o json
    """
    from labbuilder.observe import checks as grading
    from labbuilder.present.tables import results_table
    from labbuilder.spec.exercise import load_exercise

    handle = lab_handle(lab)
    model = handle.model()
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

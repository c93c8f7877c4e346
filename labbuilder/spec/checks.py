"""The `checks:` of a lab or exercise file: from YAML items to `Check`s whose names all resolve.

Resolution is the refs grammar's (spec/refs.py); building and running the probes is
observe/checks.py's. A check names what it tests: a `route` on a place, a `dns` name from a
place, or reach from a place to a target — with `http:`, an HTTP(S) request answered with a status.
"""

from __future__ import annotations

from typing import Any

from labbuilder.spec import defaults, refs, truthtable
from labbuilder.spec.model import Check, HttpCheck, Lab, MatrixCheck
from labbuilder.spec.refs import RefError, Target


def check_from_spec(given: dict[str, Any], index: int) -> Check:
    item = defaults.of("checks.*", given)
    name = item.get("name") or _default_name(item, index)
    return Check(
        str(name),
        item.get("from"),
        item.get("to"),
        item["expect"],
        item.get("protocol"),
        item.get("port"),
        item.get("nat"),
        item.get("on"),
        item.get("route"),
        item.get("dns"),
        item.get("answer"),
        _http(item["http"]) if "http" in item else None,
        _matrix(item["matrix"]) if "matrix" in item else None,
    )


def _matrix(given: dict[str, Any]) -> MatrixCheck:
    item = defaults.of("checks.*.matrix", given)
    return MatrixCheck(item["port"], item["protocol"].upper(), item["group"], item.get("expect"))


def _http(given: dict[str, Any]) -> HttpCheck:
    item = defaults.of("checks.*.http", given)
    tls = item.get("tls")
    return HttpCheck(
        item["path"],
        item["status"],
        tls is not None,
        tls.get("ca") if tls else None,
        item.get("host"),
        item.get("contains"),
    )


def _default_name(item: dict[str, Any], index: int) -> str:
    if isinstance(item.get("matrix"), dict):
        matrix = defaults.of("checks.*.matrix", item["matrix"])
        return f"matrix {matrix['port']}/{matrix['protocol']}"
    if "route" in item:
        return f"route on {item.get('on', '?')}"
    if "dns" in item:
        return f"dns {item['dns']}"
    if "from" in item or "to" in item:
        path = f" {item['http'].get('path', '/')}" if isinstance(item.get("http"), dict) else ""
        return f"{item.get('from', '?')} → {item.get('to', '?')}{path}"
    return f"check {index + 1}"


def probe_target(lab: Lab, check: Check) -> tuple[Target, str, int | None]:
    """Where a reach check goes: the target, its protocol and port (None for ICMP)."""
    to = refs.target(lab, check.target or "")
    port = check.port or (None if to.protocol == "icmp" else to.port)
    if port is None and check.http is not None and to.protocol != "icmp":
        port = 443 if check.http.tls else 80  # an address without a port: the scheme's, as curl dials
    protocol = check.protocol or to.protocol or ("tcp" if port or check.http else "icmp")
    if protocol != "icmp" and port is None:
        raise RefError(f"{to.ref} has no port to probe", hint="add port: N, or protocol: icmp")
    return to, protocol, None if protocol == "icmp" else port


def validate_check(lab: Lab, check: Check) -> None:
    """RefError unless every name the check uses resolves to exactly one thing in the lab."""
    if check.matrix is not None:
        validate_matrix(lab, check.matrix)
        return
    if check.route is not None:
        if check.on is None:
            raise RefError("a route check needs `on:`, the place whose table holds the route", hint="on: node/NAME")
        refs.place(lab, check.on)
        return
    if check.source is None:
        raise RefError("a check needs `from:`, the place it starts from", hint="from: pod/NAME")
    refs.place(lab, check.source)
    if check.dns is None:
        if check.target is None:
            raise RefError("a reach check needs `to:`", hint="to: service/NAME, pod/NAME, node/NAME or IP:PORT")
        _, protocol, _ = probe_target(lab, check)
        if check.http is not None and protocol != "tcp":
            raise RefError(f"an http check goes over tcp, not {protocol}", hint="leave protocol out, or use tcp")


def validate_matrix(lab: Lab, matrix: MatrixCheck) -> None:
    """RefError unless some pod serves the port, and an expected table names exactly the pods (or
    namespaces) the measured one will."""
    pods = truthtable.matrix_pods(lab, matrix.port, matrix.protocol)
    if not pods:
        raise RefError(
            f"no pod serves {matrix.port}/{matrix.protocol.lower()}",
            hint="a matrix probes the pods whose workloads list that port",
        )
    if matrix.expect is None:
        return
    try:
        table = truthtable.parse(matrix.expect)
    except ValueError as err:
        raise RefError(f"expect: {err}", hint="paste the table `labbuilder check LAB --matrix` prints") from None
    names = list(pods)
    if matrix.group == "namespaces":
        names = list(dict.fromkeys(truthtable.namespace_of(names).values()))
    for what, given in (("rows", table.froms), ("columns", table.tos)):
        if list(given) != names:
            raise RefError(
                f"expect: the {what} are {' '.join(given) or 'none'}, the lab's are {' '.join(names)}",
                hint="in this order: the table `labbuilder check LAB --matrix` prints",
            )
